//! `replog consume TOPIC [--partition P] [--from-beginning | --offset O]
//! [--max-messages N] [--timeout-ms T]`.

use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::Output;
use crate::{Client, ConsumedRecord, Error, PartitionReader};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Read only this partition (default: all).
    #[arg(long)]
    pub partition: Option<u32>,
    /// Start at the first retained record (default: only new records).
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset in each partition read.
    #[arg(long)]
    pub offset: Option<u64>,
    /// Stop after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Stop when no record arrives for this long.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

pub async fn run(client: Client, args: ConsumeArgs, out: Output) -> anyhow::Result<()> {
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
