//! Event-carried state transfer: the customer service publishes each
//! customer as it stands after every change (`schemas/customer_state.avsc`,
//! Avro), keyed by customer id, and a consumer keeps its own copy of every
//! customer from the events alone — it never calls the customer service.
//! The subject is `<TOPIC>-value`, the topic bound to it.
//!
//! ```text
//! cargo run -p replog-client --example event_carried_state -- TOPIC [CUSTOMERS]
//! ```
//!
//! Against `make run`'s cluster by default; `REPLOG_BOOTSTRAP` names other
//! nodes.

use std::collections::BTreeMap;

use bytes::Bytes;
use replog_client::schema::{AvroCodec, SchemaRegistry, TypedConsumer, TypedProducer};
use replog_client::{AutoOffsetReset, Client, ErrorCode, GroupConsumer, GroupConsumerConfig, Producer};
use serde::{Deserialize, Serialize};

const SCHEMA: &str = include_str!("schemas/customer_state.avsc");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
enum Tier {
    BASIC,
    GOLD,
}

/// The whole customer: a consumer needs nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CustomerState {
    customer_id: String,
    name: String,
    email: String,
    tier: Tier,
    /// Bumped on every change; a copy keeps the highest it saw.
    version: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().ok_or_else(|| anyhow::anyhow!("usage: event_carried_state TOPIC [CUSTOMERS]"))?;
    let customers: usize = args.next().map_or(Ok(3), |n| n.parse())?;
    let subject = format!("{topic}-value");

    let client = Client::connect(replog_client::bootstrap_from_env()).await?;
    let registry = SchemaRegistry::new(client.clone());
    let producer = TypedProducer::new(
        Producer::new(client.clone(), Default::default()),
        registry.clone(),
        &subject,
        AvroCodec::<CustomerState>::new(SCHEMA),
    )?;
    let id = producer.serializer().schema_id().await?;
    bind(&client, &topic, &subject).await?;
    println!("schema {subject} id {id}; topic {topic} bound to it");

    // The customer service: each customer signs up, then moves to GOLD.
    let mut source = BTreeMap::new();
    let mut sent = 0;
    for change in [Tier::BASIC, Tier::GOLD] {
        for i in 0..customers {
            let c = CustomerState {
                customer_id: format!("cust-{i}"),
                name: format!("Customer {i}"),
                email: format!("c{i}@example.com"),
                tier: change,
                version: if change == Tier::BASIC { 1 } else { 2 },
            };
            producer.send(&topic, Some(Bytes::from(c.customer_id.clone())), &c).await?;
            source.insert(c.customer_id.clone(), c);
            sent += 1;
        }
    }
    println!("published {sent} state changes of {customers} customers");

    // The consumer's own copy, built from the events alone.
    let config = GroupConsumerConfig { auto_offset_reset: AutoOffsetReset::Earliest, ..Default::default() };
    let group = GroupConsumer::new(client.clone(), &format!("{topic}-replica"), config);
    let mut replica_reader = TypedConsumer::new(group, registry, &subject, AvroCodec::<CustomerState>::new(SCHEMA))?;
    replica_reader.consumer().subscribe(&[&topic]).await?;
    let mut replica: BTreeMap<String, CustomerState> = BTreeMap::new();
    let mut seen = 0;
    while seen < sent {
        for (_, state) in replica_reader.poll().await? {
            let state = state?;
            let newer = replica.get(&state.customer_id).is_none_or(|c| c.version < state.version);
            if newer {
                replica.insert(state.customer_id.clone(), state);
            }
            seen += 1;
        }
    }
    replica_reader.into_inner().close().await?;
    for c in replica.values() {
        println!("{} {} {:?} v{}", c.customer_id, c.email, c.tier, c.version);
    }
    anyhow::ensure!(replica == source, "the copy differs from the source");
    println!("copy matches the source: {} customers", replica.len());
    Ok(())
}

/// Creates the topic bound to `subject`, or binds an existing one.
async fn bind(client: &Client, topic: &str, subject: &str) -> anyhow::Result<()> {
    let rf = client.cluster_status().await?.nodes.len().clamp(1, 3) as u32;
    match client.create_topic_with(topic, 1, rf, &[("schema.subject", subject)]).await {
        Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {
            client.alter_topic_config(topic, &[("schema.subject", subject)], &[]).await?;
            Ok(())
        }
        r => r.map(|_| ()).map_err(Into::into),
    }
}
