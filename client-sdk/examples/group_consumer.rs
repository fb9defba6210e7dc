//! A member of a consumer group: prints the records of the partitions the
//! coordinator gives it, commits after each batch it processed (with a
//! note of its own as metadata), and reports every rebalance.
//!
//! ```text
//! cargo run -p replog-client --example group_consumer -- TOPIC GROUP [MAX_RECORDS]
//! ```
//!
//! Start it two or three times with the same GROUP: the partitions are
//! shared among the running members, and move when one stops. Stop it
//! with Ctrl-C (it commits and leaves) or after MAX_RECORDS; a new run of
//! the same group continues after the last commit. Against `make run`'s
//! cluster by default; `REPLOG_BOOTSTRAP` names other nodes.

use std::pin::pin;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use replog_client::{AutoOffsetReset, Client, GroupConsumer, GroupConsumerConfig, RebalanceEvent};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || anyhow::anyhow!("usage: group_consumer TOPIC GROUP [MAX_RECORDS]");
    let topic = args.next().ok_or_else(usage)?;
    let group = args.next().ok_or_else(usage)?;
    let max: u64 = args.next().map_or(Ok(u64::MAX), |n| n.parse())?;

    let client = Client::connect(replog_client::bootstrap_from_env()).await?;
    let config = GroupConsumerConfig {
        // Commit by hand, after processing: at least once.
        auto_commit: false,
        // A group that never committed starts at the first record.
        auto_offset_reset: AutoOffsetReset::Earliest,
        ..Default::default()
    };
    let mut consumer = GroupConsumer::new(client, &group, config);
    let mut events = pin!(consumer.rebalance_events());
    consumer.subscribe(&[&topic]).await?;
    eprintln!("joined group {group} as {}", consumer.member_id().unwrap_or_default());

    let mut seen = 0u64;
    let mut stop = pin!(tokio::signal::ctrl_c());
    while seen < max {
        // What changed since the last batch: an application keeping state
        // per partition would flush it on Revoked and drop it on Lost.
        while let Some(Some(e)) = events.next().now_or_never() {
            match e {
                RebalanceEvent::Assigned { generation, partitions } => {
                    eprintln!("generation {generation}: assigned {partitions:?}")
                }
                RebalanceEvent::Revoked { generation, partitions } => {
                    eprintln!("generation {generation}: revoked {partitions:?}")
                }
                RebalanceEvent::Lost { partitions } => eprintln!("lost {partitions:?}"),
            }
        }
        let records = tokio::select! {
            r = consumer.poll_for(Duration::from_millis(500)) => r?,
            _ = &mut stop => break,
        };
        for r in records.iter().take((max - seen) as usize) {
            println!("{}/{} @{}: {}", r.topic, r.partition, r.offset, String::from_utf8_lossy(&r.value));
        }
        if records.len() as u64 > max - seen {
            // Commit only what was printed: the rest is the next run's.
            let printed = &records[..(max - seen) as usize];
            let mut last = std::collections::BTreeMap::new();
            for r in printed {
                last.insert((r.topic.to_string(), r.partition), r.offset + 1);
            }
            let offsets: Vec<_> = last
                .into_iter()
                .map(|((t, p), o)| replog_client::OffsetCommit::new(t, p, o).with_metadata("group_consumer example"))
                .collect();
            consumer.commit_offsets(&offsets).await?;
            seen = max;
            break;
        }
        seen += records.len() as u64;
        if !records.is_empty() {
            consumer.commit_with_metadata("group_consumer example").await?;
        }
    }
    // Leaving hands the partitions to the other members at once.
    consumer.close().await?;
    eprintln!("consumed {seen} records");
    Ok(())
}
