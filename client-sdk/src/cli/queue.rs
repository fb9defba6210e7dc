//! `replog queue consume|describe|reset`: queue groups from the command
//! line.
//!
//! `consume` prints each event it receives and settles it: with `--ack
//! auto` (the default) it acknowledges every event once printed; with
//! `--ack manual` it reads one decision per event from standard input —
//! `ack` (or an empty line), `release`, `reject REASON`, or `skip` (leave
//! it locked until its lock expires) — and at the end of input releases
//! what it still holds and stops.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::Output;
use crate::{Client, Error, QueueConfig, QueueConsumer, QueueMessage};

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Receive events of a topic as a member of a queue group.
    Consume(ConsumeArgs),
    /// Per partition: events in flight, acknowledged, redelivered, dead-lettered.
    Describe(DescribeArgs),
    /// Redeliver from an offset: earlier events count as settled, later
    /// ones are delivered again; locks are dropped.
    Reset(ResetArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AckMode {
    Auto,
    Manual,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    pub topic: String,
    #[arg(long)]
    pub group: String,
    #[arg(long, value_enum, default_value_t = AckMode::Auto)]
    pub ack: AckMode,
    /// Stop after this many events.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Stop when no event arrives for this long.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// How long a received event stays locked to this consumer.
    #[arg(long, default_value_t = 30_000)]
    pub lock_ms: u64,
    /// Deliveries before an event goes to the dead-letter topic (the
    /// group's setting; broker default 5).
    #[arg(long)]
    pub max_deliveries: Option<u32>,
    /// The group's dead-letter topic (default `<topic>.dlq`).
    #[arg(long)]
    pub dead_letter_topic: Option<String>,
    /// This consumer's id (default: random).
    #[arg(long)]
    pub consumer_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    pub topic: String,
    #[arg(long)]
    pub group: String,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    pub topic: String,
    #[arg(long)]
    pub group: String,
    #[arg(long)]
    pub offset: u64,
    /// Only this partition (default: every partition).
    #[arg(long)]
    pub partition: Option<u32>,
}

pub async fn run(client: Client, cmd: QueueCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        QueueCmd::Consume(a) => consume(client, a, out).await,
        QueueCmd::Describe(a) => {
            let stats = client.queue_describe(&a.topic, &a.group).await?;
            match out {
                Output::Json => println!("{}", json!({"topic": a.topic, "group": a.group, "partitions": stats})),
                Output::Text => {
                    println!("queue group {} on {}", a.group, a.topic);
                    println!(
                        "{:>9} {:>9} {:>9} {:>11} {:>13} {:>13} {:>14}",
                        "partition",
                        "in_flight",
                        "acked",
                        "redelivered",
                        "dead_lettered",
                        "settled_below",
                        "high_watermark"
                    );
                    for s in stats {
                        println!(
                            "{:>9} {:>9} {:>9} {:>11} {:>13} {:>13} {:>14}",
                            s.partition,
                            s.in_flight,
                            s.acked,
                            s.redelivered,
                            s.dead_lettered,
                            s.settled_below,
                            s.high_watermark
                        );
                    }
                }
            }
            Ok(())
        }
        QueueCmd::Reset(a) => {
            let n = client.topic(&a.topic).await?.partitions.len() as u32;
            let parts: Vec<u32> = match a.partition {
                Some(p) if p < n => vec![p],
                Some(p) => {
                    return Err(Error::InvalidArgument(format!("topic {} has {n} partitions; no {p}", a.topic)).into());
                }
                None => (0..n).collect(),
            };
            for p in parts {
                client.queue_reset(&a.topic, p, &a.group, a.offset).await?;
                match out {
                    Output::Json => println!("{}", json!({"partition": p, "offset": a.offset})),
                    Output::Text => println!("partition {p}: queue group {} redelivers from {}", a.group, a.offset),
                }
            }
            Ok(())
        }
    }
}

async fn consume(client: Client, a: ConsumeArgs, out: Output) -> anyhow::Result<()> {
    let mut config = QueueConfig::new(&a.group);
    config.lock = Duration::from_millis(a.lock_ms);
    config.max_deliveries = a.max_deliveries;
    config.dead_letter_topic = a.dead_letter_topic;
    if let Some(id) = a.consumer_id {
        config.consumer_id = id;
    }
    let mut q = QueueConsumer::new(client, &a.topic, config).await?;
    let max = a.max_messages.unwrap_or(u64::MAX);
    let idle = a.timeout_ms.map(Duration::from_millis);
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut done = 0u64;
    let mut last = tokio::time::Instant::now();
    while done < max {
        let wait = match idle {
            Some(d) => (last + d).saturating_duration_since(tokio::time::Instant::now()),
            None => Duration::from_secs(5),
        };
        if idle.is_some() && wait.is_zero() {
            break;
        }
        let want = (max - done).min(100) as usize;
        let msgs = q.receive(want, wait.min(Duration::from_secs(5))).await?;
        if msgs.is_empty() {
            continue;
        }
        last = tokio::time::Instant::now();
        match a.ack {
            AckMode::Auto => {
                for m in &msgs {
                    print(m, out);
                }
                q.ack(&msgs).await?;
                done += msgs.len() as u64;
            }
            AckMode::Manual => {
                for (i, m) in msgs.iter().enumerate() {
                    print(m, out);
                    let Some(line) = stdin.next_line().await? else {
                        // End of input: hand back everything still held.
                        q.release(&msgs[i..]).await?;
                        return Ok(());
                    };
                    let line = line.trim();
                    let one = std::slice::from_ref(m);
                    match line.split_once(' ').map_or((line, ""), |(c, r)| (c, r.trim())) {
                        ("" | "ack" | "a", _) => q.ack(one).await?,
                        ("release" | "r", _) => q.release(one).await?,
                        ("reject" | "x", reason) => q.reject(one, reason).await?,
                        ("skip" | "s", _) => {}
                        (other, _) => {
                            q.release(&msgs[i..]).await?;
                            return Err(Error::InvalidArgument(format!(
                                "unknown decision {other:?}: ack, release, reject REASON or skip"
                            ))
                            .into());
                        }
                    }
                    done += 1;
                }
            }
        }
    }
    Ok(())
}

fn print(m: &QueueMessage, out: Output) {
    let value = String::from_utf8_lossy(&m.value);
    match out {
        Output::Text => println!("{value}"),
        Output::Json => {
            let key = m.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned());
            println!(
                "{}",
                json!({"partition": m.partition, "offset": m.offset, "key": key, "value": value,
                    "timestamp": m.timestamp_ms, "delivery_count": m.delivery_count})
            );
        }
    }
}
