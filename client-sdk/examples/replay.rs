//! Replays a topic from a point in time: a group member that, for every
//! partition it is given, seeks to the first record at or after the time.
//!
//! ```text
//! cargo run -p replog-client --example replay -- TOPIC SINCE_MS [MAX_RECORDS]
//! ```
//!
//! SINCE_MS is a timestamp in milliseconds since the epoch, or a negative
//! number of milliseconds before now (`-60000`: the last minute). The
//! member's group is named after the run, so it replays without moving
//! any other group's offsets; to move a whole group back instead, use
//! `replog group reset-offsets G --to-timestamp MS` while it has no
//! members. Against `make run`'s cluster by default; `REPLOG_BOOTSTRAP`
//! names other nodes.

use std::pin::pin;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use replog_client::{Client, GroupConsumer, GroupConsumerConfig, RebalanceEvent};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || anyhow::anyhow!("usage: replay TOPIC SINCE_MS [MAX_RECORDS]");
    let topic = args.next().ok_or_else(usage)?;
    let since: i64 = args.next().ok_or_else(usage)?.parse()?;
    let since = if since < 0 { replog_client::now_ms() + since } else { since };
    let max: usize = args.next().map_or(Ok(usize::MAX), |n| n.parse())?;

    let client = Client::connect(replog_client::bootstrap_from_env()).await?;
    // Nothing to commit: this run only reads.
    let config = GroupConsumerConfig { auto_commit: false, ..Default::default() };
    let group = format!("replay-{}", std::process::id());
    let mut consumer = GroupConsumer::new(client.clone(), &group, config);
    let mut events = pin!(consumer.rebalance_events());
    consumer.subscribe(&[&topic]).await?;

    let mut printed = 0;
    let mut idle = 0;
    while printed < max && idle < 3 {
        while let Some(Some(e)) = events.next().now_or_never() {
            if let RebalanceEvent::Assigned { partitions, .. } = e {
                consumer.seek_to_timestamp(since, &partitions).await?;
                for tp in &partitions {
                    eprintln!("{tp}: replaying from offset {:?}", consumer.position(tp));
                }
            }
        }
        let records = consumer.poll_for(Duration::from_secs(1)).await?;
        idle = if records.is_empty() { idle + 1 } else { 0 };
        for r in records.into_iter().take(max - printed) {
            println!(
                "{}/{} @{} t={}: {}",
                r.topic,
                r.partition,
                r.offset,
                r.timestamp_ms,
                String::from_utf8_lossy(&r.value)
            );
            printed += 1;
        }
    }
    consumer.close().await?;
    // The run's group held no offsets; leave nothing behind.
    client.delete_group(&group).await.or_else(|e| match e.code() {
        Some(replog_client::ErrorCode::UnknownGroup) => Ok(()),
        _ => Err(e),
    })?;
    eprintln!("replayed {printed} records since {since}");
    Ok(())
}
