//! `replog consume TOPIC [--partition P] [--group G] [--from-beginning |
//! --offset O] [--max-messages N] [--timeout-ms T]`.
//!
//! With `--group` the tool is a member of the consumer group: it reads the
//! partitions the coordinator assigns it, commits the records it printed
//! as it goes (every second) and when it stops, and leaves the group — so
//! a second run of the same group continues where the first stopped.

use std::pin::pin;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use serde_json::json;

use super::Output;
use crate::{AutoOffsetReset, Client, ConsumedRecord, Error, GroupConsumer, GroupConsumerConfig, PartitionReader};

/// How often `consume --group` commits what it printed.
const GROUP_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Read only this partition (default: all).
    #[arg(long, conflicts_with = "group")]
    pub partition: Option<u32>,
    /// Consume as a member of this consumer group, committing as it goes.
    #[arg(long)]
    pub group: Option<String>,
    /// Start at the first retained record (default: only new records). With
    /// `--group`: where the group has no committed offset yet.
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset in each partition read.
    #[arg(long, conflicts_with = "group")]
    pub offset: Option<u64>,
    /// Stop after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Stop when no record arrives for this long.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

pub async fn run(client: Client, args: ConsumeArgs, out: Output) -> anyhow::Result<()> {
    if let Some(group) = args.group.clone() {
        return run_group(client, &group, args, out).await;
    }
    let topic = client.describe_topic(&args.topic).await?;
    let partitions: Vec<_> = match args.partition {
        Some(p) => {
            let info = topic.partitions.get(p as usize).ok_or_else(|| {
                Error::InvalidArgument(format!("topic {} has {} partitions", topic.name, topic.partitions.len()))
            })?;
            vec![info.clone()]
        }
        None => topic.partitions.clone(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<ConsumedRecord>, Error>>(64);
    for p in partitions {
        let start = match (args.from_beginning, args.offset) {
            (true, _) => p.log_start_offset,
            (_, Some(o)) => o,
            _ => p.high_watermark,
        };
        let mut reader = PartitionReader::new(client.clone(), &args.topic, p.partition, start);
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                let r = reader.poll().await;
                let stop = r.is_err();
                if tx.send(r).await.is_err() || stop {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut printed = 0u64;
    let max = args.max_messages.unwrap_or(u64::MAX);
    let idle = args.timeout_ms.map(Duration::from_millis);
    let mut last = tokio::time::Instant::now();
    while printed < max {
        let next = match idle {
            Some(d) => match tokio::time::timeout_at(last + d, rx.recv()).await {
                Ok(v) => v,
                Err(_) => break,
            },
            None => rx.recv().await,
        };
        let Some(batch) = next else { break };
        let batch = batch?;
        if !batch.is_empty() {
            last = tokio::time::Instant::now();
        }
        for r in batch {
            if printed >= max {
                break;
            }
            print_record(&r, out);
            printed += 1;
        }
    }
    Ok(())
}

/// `consume --group`: records one at a time, so that what is committed is
/// exactly what was printed.
async fn run_group(client: Client, group: &str, args: ConsumeArgs, out: Output) -> anyhow::Result<()> {
    let cfg = GroupConsumerConfig {
        client_id: format!("replog-cli-{}", std::process::id()),
        auto_commit_interval: GROUP_COMMIT_INTERVAL,
        auto_offset_reset: if args.from_beginning { AutoOffsetReset::Earliest } else { AutoOffsetReset::Latest },
        ..Default::default()
    };
    let mut consumer = GroupConsumer::new(client, group, cfg);
    consumer.subscribe(&[&args.topic]).await?;
    let max = args.max_messages.unwrap_or(u64::MAX);
    let idle = args.timeout_ms.map(Duration::from_millis);
    let mut printed = 0u64;
    let result = {
        let mut records = pin!(consumer.stream());
        let mut interrupt = pin!(tokio::signal::ctrl_c());
        loop {
            if printed >= max {
                break Ok(());
            }
            let next = async {
                match idle {
                    Some(d) => tokio::time::timeout(d, records.next()).await.ok().flatten(),
                    None => records.next().await,
                }
            };
            let r = tokio::select! {
                r = next => r,
                _ = &mut interrupt => break Ok(()),
            };
            match r {
                None => break Ok(()),
                Some(Ok(r)) => {
                    print_record(&r, out);
                    printed += 1;
                }
                Some(Err(e)) => break Err(e),
            }
        }
    };
    // The last record printed counts as processed: closing commits up to it.
    let closed = consumer.close().await;
    result?;
    closed?;
    Ok(())
}

fn print_record(r: &ConsumedRecord, out: Output) {
    let value = String::from_utf8_lossy(&r.value);
    match out {
        Output::Text => println!("{value}"),
        Output::Json => {
            let key = r.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned());
            println!(
                "{}",
                json!({"partition": r.partition, "offset": r.offset, "key": key, "value": value, "timestamp": r.timestamp_ms})
            );
        }
    }
}
