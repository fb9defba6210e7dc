//! Event notification: the order service announces that an order was
//! placed with a small event — the order's id and when, nothing more — and
//! a shipping service that cares asks the order service for the details.
//! The event's JSON Schema (`schemas/order_placed.json`) is registered
//! under the subject `<TOPIC>-value`, and the topic is bound to it, so the
//! brokers refuse any record that does not fit.
//!
//! ```text
//! cargo run -p replog-client --example event_notification -- TOPIC [COUNT]
//! ```
//!
//! Both services run in this one process, the order service's store
//! standing in for its own API. Against `make run`'s cluster by default;
//! `REPLOG_BOOTSTRAP` names other nodes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use replog_client::schema::{JsonCodec, SchemaRegistry, TypedConsumer, TypedProducer};
use replog_client::{AutoOffsetReset, Client, ErrorCode, GroupConsumer, GroupConsumerConfig, Producer};
use serde::{Deserialize, Serialize};

const SCHEMA: &str = include_str!("schemas/order_placed.json");

/// The notification: small, and stable as the order service evolves.
#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: String,
    placed_at_ms: i64,
}

/// What only the order service knows.
#[derive(Debug, Clone)]
struct Order {
    items: Vec<&'static str>,
    address: String,
}

/// The order service's own state, queried by id ("ask the source").
#[derive(Clone, Default)]
struct OrderService {
    orders: Arc<Mutex<HashMap<String, Order>>>,
}

impl OrderService {
    fn place(&self, id: &str, order: Order) {
        self.orders.lock().expect("orders").insert(id.to_string(), order);
    }

    fn details(&self, id: &str) -> Option<Order> {
        self.orders.lock().expect("orders").get(id).cloned()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().ok_or_else(|| anyhow::anyhow!("usage: event_notification TOPIC [COUNT]"))?;
    let count: usize = args.next().map_or(Ok(5), |n| n.parse())?;
    let subject = format!("{topic}-value");

    let client = Client::connect(replog_client::bootstrap_from_env()).await?;
    let registry = SchemaRegistry::new(client.clone());
    let producer = TypedProducer::new(
        Producer::new(client.clone(), Default::default()),
        registry.clone(),
        &subject,
        JsonCodec::<OrderPlaced>::new(SCHEMA),
    )?;
    // Register first: a topic binds only to a subject that has a version.
    let id = producer.serializer().schema_id().await?;
    bind(&client, &topic, &subject).await?;
    println!("schema {subject} id {id}; topic {topic} bound to it");

    let orders = OrderService::default();
    for i in 0..count {
        let order_id = format!("ord-{i}");
        orders.place(&order_id, Order { items: vec!["book", "lamp"], address: format!("{i} Main St") });
        let (p, o) =
            producer.send(&topic, None, &OrderPlaced { order_id, placed_at_ms: replog_client::now_ms() }).await?;
        println!("notified ord-{i} -> {topic}/{p} @{o}");
    }
    // An event that breaks the contract never leaves the producer.
    let bad = OrderPlaced { order_id: "not-an-order".into(), placed_at_ms: 0 };
    match producer.send(&topic, None, &bad).await {
        Err(e) if e.code() == Some(ErrorCode::InvalidRecord) => println!("refused before sending: {e}"),
        other => anyhow::bail!("an invalid event was not refused: {other:?}"),
    }

    // The shipping service: reacts to each notification by asking for details.
    let config = GroupConsumerConfig { auto_offset_reset: AutoOffsetReset::Earliest, ..Default::default() };
    let group = GroupConsumer::new(client.clone(), &format!("{topic}-shipping"), config);
    let mut shipping = TypedConsumer::new(group, registry, &subject, JsonCodec::<OrderPlaced>::new(SCHEMA))?;
    shipping.consumer().subscribe(&[&topic]).await?;
    let mut seen = 0;
    while seen < count {
        for (record, event) in shipping.poll().await? {
            let event = event?;
            let order = orders
                .details(&event.order_id)
                .ok_or_else(|| anyhow::anyhow!("the order service does not know {}", event.order_id))?;
            println!(
                "shipping {} (offset {}): {} items to {}",
                event.order_id,
                record.offset,
                order.items.len(),
                order.address
            );
            seen += 1;
        }
    }
    shipping.into_inner().close().await?;
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
