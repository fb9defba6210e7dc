//! Sends records with keys and prints where each one went.
//!
//! ```text
//! cargo run -p replog-client --example producer -- TOPIC [COUNT]
//! ```
//!
//! Against `make run`'s cluster by default; `REPLOG_BOOTSTRAP` (host:port,
//! comma-separated) names other nodes. Records with the same key go to the
//! same partition, in the order they were sent.

use bytes::Bytes;
use replog_client::{Client, Producer, ProducerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().ok_or_else(|| anyhow::anyhow!("usage: producer TOPIC [COUNT]"))?;
    let count: u64 = args.next().map_or(Ok(10), |n| n.parse())?;

    let client = Client::connect(replog_client::bootstrap_from_env()).await?;
    let producer = Producer::new(client, ProducerConfig::default());
    // Enqueue everything first, then wait: the producer batches what is
    // queued, where awaiting each send in turn would send one at a time.
    let mut pending = Vec::new();
    for i in 0..count {
        let key = Bytes::from(format!("user-{}", i % 4));
        let value = Bytes::from(format!("event {i}"));
        let record = replog_client::Record::new(Some(key), value, replog_client::now_ms());
        pending.push(producer.enqueue(&topic, None, record).await?);
    }
    for (i, handle) in pending.into_iter().enumerate() {
        let (partition, offset) = handle.wait().await?;
        println!("event {i} -> {topic}/{partition} @{offset}");
    }
    Ok(())
}
