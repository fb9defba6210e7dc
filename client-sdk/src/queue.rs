//! Queue groups: each event of a topic to one consumer of the group, locked
//! to it until it acknowledges, releases or rejects it.
//!
//! ```no_run
//! # async fn f() -> replog_client::Result<()> {
//! use std::time::Duration;
//! use replog_client::{Client, QueueConfig, QueueConsumer};
//! let client = Client::connect(["127.0.0.1:7001"]).await?;
//! let mut q = QueueConsumer::new(client, "orders", QueueConfig::new("billing")).await?;
//! loop {
//!     for m in q.receive(100, Duration::from_secs(1)).await? {
//!         // … work on m.value; the lock is renewed while this runs …
//!         q.ack(&[m]).await?;
//!     }
//! }
//! # }
//! ```
//!
//! Delivery is at least once: an event whose lock expires before its ack
//! lands (the consumer died, was slow, or lost its connection) goes to
//! another consumer. An acknowledged event never comes back, and an event
//! that is never acknowledged comes back until `max_deliveries`, then goes
//! to the dead-letter topic.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use replog_proto::pb;
use tokio::task::{JoinHandle, JoinSet};

use crate::client::{Call, Client};
use crate::error::{Error, Result};

/// Settings of a queue consumer. [`QueueConfig::new`] gives the defaults
/// for a group.
///
/// ```
/// use std::time::Duration;
/// use replog_client::QueueConfig;
/// let config = QueueConfig {
///     lock: Duration::from_secs(120),
///     max_deliveries: Some(3),
///     dead_letter_topic: Some("orders.failed".into()),
///     ..QueueConfig::new("billing")
/// };
/// assert!(config.auto_renew, "locks are renewed while the work runs");
/// ```
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub group: String,
    /// Who holds the locks; unique per consumer (random by default).
    pub consumer_id: String,
    /// How long received events stay locked to this consumer.
    pub lock: Duration,
    /// Renew the locks of received events until they are settled, every
    /// third of `lock`: for work that takes longer than a lock.
    pub auto_renew: bool,
    /// The group's deliveries before an event is dead-lettered (broker
    /// default 5).
    pub max_deliveries: Option<u32>,
    /// The group's dead-letter topic (broker default `<topic>.dlq`).
    pub dead_letter_topic: Option<String>,
}

impl QueueConfig {
    pub fn new(group: &str) -> QueueConfig {
        QueueConfig {
            group: group.to_string(),
            consumer_id: format!("consumer-{:016x}", rand::random::<u64>()),
            lock: Duration::from_secs(30),
            auto_renew: true,
            max_deliveries: None,
            dead_letter_topic: None,
        }
    }
}

/// An event received from a queue group, locked to the consumer.
///
/// ```no_run
/// use std::time::Duration;
/// use replog_client::QueueConsumer;
///
/// # async fn handle(_: &[u8]) -> Result<(), String> { Ok(()) }
/// # async fn run(mut q: QueueConsumer) -> replog_client::Result<()> {
/// for m in q.receive(10, Duration::from_secs(1)).await? {
///     let tenant = m.header("tenant").map(|v| String::from_utf8_lossy(v).into_owned());
///     println!("{}@{} for {tenant:?}, delivery {}", m.partition, m.offset, m.delivery_count);
///     match handle(&m.value).await {
///         Ok(()) => q.ack(&[m]).await?,
///         Err(why) if m.delivery_count >= 3 => q.reject(&[m], &why).await?,
///         Err(_) => q.release(&[m]).await?,
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
    /// This delivery's number, from 1.
    pub delivery_count: u32,
    /// When the lock expires unless renewed (broker clock, ms since the epoch).
    pub lock_deadline_ms: i64,
}

impl QueueMessage {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// A queue group on one partition (`replog queue describe`), from
/// [`Client::queue_describe`].
///
/// ```
/// use replog_client::QueuePartitionStats;
///
/// /// Offsets from the first one not yet settled to the end of the partition.
/// fn backlog(s: &QueuePartitionStats) -> u64 {
///     s.high_watermark.saturating_sub(s.settled_below)
/// }
/// # async fn run(client: replog_client::Client) -> replog_client::Result<()> {
/// for s in client.queue_describe("orders", "billing").await? {
///     let (p, behind, locked) = (s.partition, backlog(&s), s.in_flight);
///     println!("orders/{p}: {behind} behind, {locked} locked, {} dead-lettered", s.dead_lettered);
///     for (consumer, locks) in &s.consumers {
///         println!("  {consumer} holds {locks}");
///     }
/// }
/// # Ok(()) }
/// # let s = QueuePartitionStats {
/// #     partition: 0, in_flight: 2, acked: 40, redelivered: 1, dead_lettered: 0, delivered: 43,
/// #     settled_below: 40, high_watermark: 50, dead_letter_pending: 0, max_deliveries: 5,
/// #     dead_letter_topic: "orders.dlq".into(), consumers: Default::default(),
/// # };
/// # assert_eq!(backlog(&s), 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueuePartitionStats {
    pub partition: u32,
    /// Events locked to consumers right now.
    pub in_flight: u64,
    pub acked: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    pub delivered: u64,
    /// Every offset below is settled.
    pub settled_below: u64,
    pub high_watermark: u64,
    pub dead_letter_pending: u64,
    pub max_deliveries: u32,
    pub dead_letter_topic: String,
    /// Live locks per consumer.
    pub consumers: BTreeMap<String, u64>,
}

/// Offsets this consumer holds, per partition, for the renewer.
type Held = Arc<Mutex<BTreeMap<u32, BTreeSet<u64>>>>;

/// Identifies a queue group and consumer on a topic; the calls at a
/// partition leader. Cheap to clone.
#[derive(Clone)]
struct Target {
    client: Client,
    topic: String,
    group: String,
    consumer: String,
}

impl Target {
    fn events(&self, partition: u32, offsets: Vec<u64>) -> pb::QueueEventsRequest {
        pb::QueueEventsRequest {
            topic: self.topic.clone(),
            partition,
            group: self.group.clone(),
            consumer: self.consumer.clone(),
            offsets,
            lock_ms: 0,
            reason: String::new(),
        }
    }

    async fn renew(&self, partition: u32, offsets: Vec<u64>, lock: Duration) -> Result<i64> {
        let timeout = self.client.config().request_timeout;
        let mut req = self.events(partition, offsets);
        req.lock_ms = lock.as_millis() as u32;
        let r = self
            .client
            .at_leader(&self.topic, partition, Call::Write, |mut c, _| {
                let mut r = tonic::Request::new(req.clone());
                r.set_timeout(timeout);
                async move { c.queue_renew(r).await }
            })
            .await?;
        Ok(r.lock_deadline_ms)
    }
}

/// Receives events of one topic as a member of a queue group. See the
/// [module documentation](self) for the delivery guarantee.
///
/// With `auto_renew` off, a lock lasts only while the work renews it:
///
/// ```no_run
/// use std::time::Duration;
/// use replog_client::{Client, QueueConfig, QueueConsumer};
///
/// # async fn resize(_: &replog_client::QueueMessage, _step: u32) {}
/// # async fn run() -> replog_client::Result<()> {
/// let client = Client::connect(["127.0.0.1:7001"]).await?;
/// let config = QueueConfig { auto_renew: false, lock: Duration::from_secs(10), ..QueueConfig::new("thumbnails") };
/// let mut q = QueueConsumer::new(client, "images", config).await?;
/// println!("consuming as {}", q.consumer_id());
/// let batch = q.receive(8, Duration::from_secs(5)).await?;
/// for step in 0..3 {
///     for m in &batch {
///         resize(m, step).await;
///     }
///     q.renew(&batch).await?; // another 10 s
/// }
/// q.ack(&batch).await?;
/// # Ok(()) }
/// ```
pub struct QueueConsumer {
    target: Target,
    config: QueueConfig,
    partitions: u32,
    /// Where the next sweep over partitions starts, so every partition gets
    /// its turn.
    next: u32,
    held: Held,
    renewer: Option<JoinHandle<()>>,
}

impl Drop for QueueConsumer {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }
}

impl QueueConsumer {
    pub async fn new(client: Client, topic: &str, config: QueueConfig) -> Result<QueueConsumer> {
        let lock_ms = config.lock.as_millis();
        if !(100..=3_600_000).contains(&lock_ms) {
            return Err(Error::InvalidArgument(format!("lock of {lock_ms} ms is outside 100..=3600000")));
        }
        let partitions = client.topic(topic).await?.partitions.len() as u32;
        let target = Target {
            client,
            topic: topic.to_string(),
            group: config.group.clone(),
            consumer: config.consumer_id.clone(),
        };
        let held = Held::default();
        let renewer = config.auto_renew.then(|| tokio::spawn(renew_loop(target.clone(), held.clone(), config.lock)));
        Ok(QueueConsumer { target, config, partitions, next: 0, held, renewer })
    }

    pub fn consumer_id(&self) -> &str {
        &self.target.consumer
    }

    /// Up to `max` events (at most 1000), waiting up to `wait` for the
    /// first. Partitions are swept in turn; with nothing anywhere, the
    /// consumer long-polls every partition at once.
    pub async fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<QueueMessage>> {
        let max = max.clamp(1, 1000);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut out = Vec::new();
            if self.partitions == 1 {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                out = self.receive_at(0, max, left).await?;
            } else {
                for i in 0..self.partitions {
                    let p = (self.next + i) % self.partitions;
                    out.extend(self.receive_at(p, max - out.len(), Duration::ZERO).await?);
                    if out.len() >= max {
                        self.next = (p + 1) % self.partitions;
                        break;
                    }
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !out.is_empty() || left.is_zero() {
                return Ok(out);
            }
            if self.partitions > 1 && !self.wait_any(left).await? {
                return Ok(Vec::new());
            }
        }
    }

    /// Long-polls every partition without locking anything; true once one
    /// has events available.
    async fn wait_any(&self, wait: Duration) -> Result<bool> {
        let mut set = JoinSet::new();
        for p in 0..self.partitions {
            let t = self.target.clone();
            let req = self.receive_request(p, 0, wait);
            set.spawn(async move { t.client.queue_receive_raw(&t.topic, p, req).await.map(|r| r.available) });
        }
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(true)) => return Ok(true),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(Error::Corrupt(format!("a long poll task failed: {e}"))),
            }
        }
        Ok(false)
    }

    fn receive_request(&self, partition: u32, max: usize, wait: Duration) -> pb::QueueReceiveRequest {
        pb::QueueReceiveRequest {
            topic: self.target.topic.clone(),
            partition,
            group: self.target.group.clone(),
            consumer: self.target.consumer.clone(),
            max_messages: max as u32,
            max_wait_ms: wait.as_millis() as u32,
            lock_ms: self.config.lock.as_millis() as u32,
            max_deliveries: self.config.max_deliveries.unwrap_or(0),
            dead_letter_topic: self.config.dead_letter_topic.clone().unwrap_or_default(),
        }
    }

    async fn receive_at(&self, partition: u32, max: usize, wait: Duration) -> Result<Vec<QueueMessage>> {
        let req = self.receive_request(partition, max, wait);
        let resp = self.target.client.queue_receive_raw(&self.target.topic, partition, req).await?;
        let msgs: Vec<QueueMessage> = resp
            .messages
            .into_iter()
            .map(|m| QueueMessage {
                partition,
                offset: m.offset,
                timestamp_ms: m.timestamp_ms,
                key: m.key,
                value: m.value,
                headers: m.headers.into_iter().map(|h| (h.name, h.value)).collect(),
                delivery_count: m.delivery_count,
                lock_deadline_ms: m.lock_deadline_ms,
            })
            .collect();
        if !msgs.is_empty() {
            self.held.lock().expect("held lock").entry(partition).or_default().extend(msgs.iter().map(|m| m.offset));
        }
        Ok(msgs)
    }

    fn by_partition(msgs: &[QueueMessage]) -> BTreeMap<u32, Vec<u64>> {
        let mut m: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for x in msgs {
            m.entry(x.partition).or_default().push(x.offset);
        }
        m
    }

    fn forget(&self, partition: u32, offsets: &[u64]) {
        if let Some(h) = self.held.lock().expect("held lock").get_mut(&partition) {
            for o in offsets {
                h.remove(o);
            }
        }
    }

    /// Settles `msgs`: they are never delivered again. Per partition all or
    /// none; QUEUE_EVENT_NOT_HELD or QUEUE_LOCK_EXPIRED when this consumer
    /// no longer holds one (it may be redelivered, or delivered already).
    pub async fn ack(&self, msgs: &[QueueMessage]) -> Result<()> {
        for (p, offsets) in Self::by_partition(msgs) {
            self.ack_offsets(p, offsets).await?;
        }
        Ok(())
    }

    /// Acks offsets of one partition; returns those that were settled
    /// already (a retried ack).
    pub async fn ack_offsets(&self, partition: u32, offsets: Vec<u64>) -> Result<Vec<u64>> {
        let req = self.target.events(partition, offsets);
        let timeout = self.target.client.config().request_timeout;
        let r = self.settle(req, timeout, |mut c, r| async move { c.queue_ack(r).await }).await?;
        Ok(r.already_settled)
    }

    /// Sends one settling request for its partition at the leader; the
    /// events are no longer held afterwards unless the outcome is unknown.
    async fn settle<T, F, Fut>(&self, req: pb::QueueEventsRequest, timeout: Duration, call: F) -> Result<T>
    where
        F: Fn(crate::client::Conn, tonic::Request<pb::QueueEventsRequest>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let (p, offsets) = (req.partition, req.offsets.clone());
        let r = self
            .target
            .client
            .at_leader(&self.target.topic, p, Call::Write, |c, _| {
                let mut r = tonic::Request::new(req.clone());
                r.set_timeout(timeout);
                call(c, r)
            })
            .await;
        self.forget_unless_retryable(p, &offsets, &r);
        r
    }

    fn forget_unless_retryable<T>(&self, partition: u32, offsets: &[u64], r: &Result<T>) {
        // After a definite refusal the events are not ours to renew either.
        if r.as_ref().is_ok() || r.as_ref().is_err_and(|e| !e.is_indeterminate()) {
            self.forget(partition, offsets);
        }
    }

    /// Makes `msgs` available to the group again at once.
    pub async fn release(&self, msgs: &[QueueMessage]) -> Result<()> {
        for (p, offsets) in Self::by_partition(msgs) {
            let req = self.target.events(p, offsets);
            let timeout = self.target.client.config().request_timeout;
            self.settle(req, timeout, |mut c, r| async move { c.queue_release(r).await }).await?;
        }
        Ok(())
    }

    /// Sends `msgs` to the group's dead-letter topic with `reason`.
    pub async fn reject(&self, msgs: &[QueueMessage], reason: &str) -> Result<()> {
        for (p, offsets) in Self::by_partition(msgs) {
            let mut req = self.target.events(p, offsets);
            req.reason = reason.to_string();
            // Writing the dead letter may take a round to another node.
            let timeout = self.target.client.config().request_timeout * 3;
            self.settle(req, timeout, |mut c, r| async move { c.queue_reject(r).await }).await?;
        }
        Ok(())
    }

    /// Extends the locks of `msgs` by the configured lock duration (the
    /// renewer does this by itself with `auto_renew`).
    pub async fn renew(&self, msgs: &[QueueMessage]) -> Result<()> {
        for (p, offsets) in Self::by_partition(msgs) {
            self.target.renew(p, offsets, self.config.lock).await?;
        }
        Ok(())
    }
}

/// Renews every held lock each third of the lock duration. An offset whose
/// renewal is refused for good (its lock expired, or it was reset) is no
/// longer held.
async fn renew_loop(t: Target, held: Held, lock: Duration) {
    let every = lock / 3;
    loop {
        tokio::time::sleep(every).await;
        let snapshot: Vec<(u32, Vec<u64>)> = held
            .lock()
            .expect("held lock")
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(p, s)| (*p, s.iter().copied().collect()))
            .collect();
        for (p, offsets) in snapshot {
            match t.renew(p, offsets.clone(), lock).await {
                Ok(_) => continue,
                Err(e) if e.is_retryable() || e.is_indeterminate() => continue,
                // One offset spoils the batch: renew one by one, dropping the lost.
                Err(_) => {}
            }
            for o in offsets {
                if let Err(e) = t.renew(p, vec![o], lock).await
                    && !e.is_retryable()
                    && !e.is_indeterminate()
                    && let Some(h) = held.lock().expect("held lock").get_mut(&p)
                {
                    h.remove(&o);
                }
            }
        }
    }
}

impl Client {
    /// One QueueReceive at the partition's leader.
    pub async fn queue_receive_raw(
        &self,
        topic: &str,
        partition: u32,
        req: pb::QueueReceiveRequest,
    ) -> Result<pb::QueueReceiveResponse> {
        let timeout = self.config().request_timeout + Duration::from_millis(req.max_wait_ms as u64);
        self.at_leader(topic, partition, Call::Write, |mut c, _| {
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(timeout);
            async move { c.queue_receive(r).await }
        })
        .await
    }

    /// A queue group on every partition of `topic`. UNKNOWN_QUEUE_GROUP if
    /// no partition knows it; partitions it has not received from yet are
    /// left out.
    pub async fn queue_describe(&self, topic: &str, group: &str) -> Result<Vec<QueuePartitionStats>> {
        let n = self.topic(topic).await?.partitions.len() as u32;
        let timeout = self.config().request_timeout;
        let mut out = Vec::new();
        let mut unknown = None;
        for p in 0..n {
            let req = pb::QueueDescribeRequest { topic: topic.to_string(), partition: p, group: group.to_string() };
            let r = self
                .at_leader(topic, p, Call::Read, |mut c, _| {
                    let mut r = tonic::Request::new(req.clone());
                    r.set_timeout(timeout);
                    async move { c.queue_describe(r).await }
                })
                .await;
            match r {
                Ok(d) => out.push(QueuePartitionStats {
                    partition: d.partition,
                    in_flight: d.in_flight,
                    acked: d.acked,
                    redelivered: d.redelivered,
                    dead_lettered: d.dead_lettered,
                    delivered: d.delivered,
                    settled_below: d.settled_below,
                    high_watermark: d.high_watermark,
                    dead_letter_pending: d.dead_letter_pending,
                    max_deliveries: d.max_deliveries,
                    dead_letter_topic: d.dead_letter_topic,
                    consumers: d.consumers.into_iter().map(|c| (c.consumer, c.locked)).collect(),
                }),
                Err(e) if e.code() == Some(crate::ErrorCode::UnknownQueueGroup) => unknown = Some(e),
                Err(e) => return Err(e),
            }
        }
        match unknown {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    /// Redelivers `topic`/`partition` to `group` from `offset`: everything
    /// before counts as settled, everything from it on is available again,
    /// and every lock is dropped.
    pub async fn queue_reset(&self, topic: &str, partition: u32, group: &str, offset: u64) -> Result<()> {
        let req = pb::QueueResetRequest { topic: topic.to_string(), partition, group: group.to_string(), offset };
        let timeout = self.config().request_timeout;
        self.at_leader(topic, partition, Call::Write, |mut c, _| {
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(timeout);
            async move { c.queue_reset(r).await }
        })
        .await
        .map(|_| ())
    }
}
