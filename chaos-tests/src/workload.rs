//! The workload of a chaos run: producers and consumers that record
//! everything they see, topics created and deleted under the faults, and the
//! final reads after the faults heal.
//!
//! - **Producers** ([`Workload::start`]): `producers` SDK [`Producer`]s with
//!   acks=all, each sending the unique values `w-<p>-<seq>`
//!   ([`value_name`]) round-robin over the partitions at a bounded rate
//!   (or as fast as they can, for measuring peak throughput), with at most
//!   `max_in_flight` sends outstanding (so an outage slows the producer
//!   instead of queueing without bound). Each producer picks the partition
//!   itself and numbers its sends per partition (`seq`), so that the
//!   checker can hold it to its send order. Every attempt is recorded with
//!   its [`Outcome::from_send`]: acknowledged at an offset, refused, or
//!   indeterminate. The idempotent producer is on unless
//!   [`WorkloadConfig::idempotent`] turns it off. Values can be padded to a
//!   record size ([`padded`]); the history keeps the short value.
//! - **Consumers**: one per partition, polling from offset 0 at the leader
//!   for the whole run, recording every non-empty poll. A failed poll keeps
//!   the position and tries again, so one consumer is one reading session.
//! - **Topic churn** ([`ChurnConfig`]): one client that, in a loop, creates
//!   a topic under one of a few reused names, writes to every partition,
//!   reads it all back from the leader (`before-delete`), deletes it, waits
//!   until every node that answers has dropped the name (recording what
//!   each node says, [`TopicState`]), and tries one more write to the
//!   deleted name. Each create of a name is a new incarnation
//!   (`generation`), so a re-created topic must start empty.
//! - **Final reads** ([`final_reads`]): once the cluster is healed and every
//!   partition has a leader, each partition is read over its whole log from
//!   its leader and from every replica (`from_replica`), the replicas once
//!   their high watermark has caught up with the leader's (awaited,
//!   bounded); [`settle_topic_states`] records what every node says about
//!   the churned names.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use replog_client::producer::now_ms;
use replog_client::{
    Client, Error as SdkError, ErrorCode, FetchOptions, PartitionInfo, PartitionReader, Producer, ProducerConfig,
    Record,
};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::history::{
    FinalRead, Outcome, PollOp, ReadRecord, Recorder, SendOp, TopicAction, TopicOp, TopicOutcome, TopicSeen,
    TopicState, padded, read_records, read_records_with_digest, value_name,
};

/// Workload parameters.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub topic: String,
    pub partitions: u32,
    /// Number of producers (values `w-<first_producer>-*` on).
    pub producers: u32,
    /// Sends per second per producer; 0 sends as fast as `max_in_flight`
    /// allows (to measure peak throughput).
    pub rate: u32,
    /// Outstanding sends per producer at most.
    pub max_in_flight: usize,
    /// The SDK's idempotent producer (producer id + sequence per batch, so
    /// a retried batch is never appended twice). Off, a retry after an
    /// indeterminate failure may land twice: the checker reports that as
    /// a `duplicate`.
    pub idempotent: bool,
    /// Bytes per record value: the short value padded ([`padded`]); 0
    /// sends the short value alone.
    pub record_size: usize,
    /// Topics created and deleted during the run, if any.
    pub churn: Option<ChurnConfig>,
    /// One consumer per partition for the whole run (off to measure pure
    /// produce throughput).
    pub consumers: bool,
    /// The number of the first producer (values `w-<first>-*` on): two
    /// workloads on one topic need producers of their own.
    pub first_producer: u32,
}

/// The topic-churn client: which names, how big, how much to write.
#[derive(Debug, Clone)]
pub struct ChurnConfig {
    /// Names used in turn, `churn-0` … `churn-<names-1>`: each comes back
    /// every `names` cycles, as a new incarnation of the name.
    pub names: u32,
    pub partitions: u32,
    pub replication: u32,
    /// Records written to each incarnation (spread over its partitions).
    pub records: u32,
    /// Every node's address, to ask each for its metadata.
    pub nodes: Vec<String>,
}

/// The name of churned topic `i`.
pub fn churn_name(i: u32) -> String {
    format!("churn-{i}")
}

/// Counters shared by the workload's tasks.
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    /// Bytes of acknowledged record values.
    pub acked_bytes: AtomicU64,
    pub in_flight: AtomicUsize,
    pub polls: AtomicU64,
    pub poll_errors: AtomicU64,
    /// Topic incarnations created and deleted (acknowledged).
    pub topics_created: AtomicU64,
    pub topics_deleted: AtomicU64,
}

/// What the churn client left behind when it stopped.
#[derive(Debug, Default, Clone)]
pub struct ChurnEnd {
    /// Incarnations that may still exist: `(name, generation, certain)`;
    /// `certain` is false when the create's outcome was unknown.
    pub live: Vec<(String, u32, bool)>,
    /// Every name the client used.
    pub names: Vec<String>,
    /// Things worth a look that are not anomalies by themselves.
    pub notes: Vec<String>,
}

/// Running producer, consumer and churn tasks.
pub struct Workload {
    stop_producers: watch::Sender<bool>,
    stop_consumers: watch::Sender<bool>,
    producers: Vec<JoinHandle<()>>,
    consumers: Vec<JoinHandle<Vec<String>>>,
    churn: Option<JoinHandle<ChurnEnd>>,
    pub counters: Arc<Counters>,
}

impl Workload {
    /// Starts the producers, the consumers and the churn client.
    pub fn start(client: Client, rec: Recorder, cfg: WorkloadConfig) -> Workload {
        let (stop_producers, sp) = watch::channel(false);
        let (stop_consumers, sc) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let first = cfg.first_producer;
        let producers = (first..first + cfg.producers)
            .map(|p| tokio::spawn(produce(p, client.clone(), rec.clone(), cfg.clone(), sp.clone(), counters.clone())))
            .collect();
        let consumers = (0..if cfg.consumers { cfg.partitions } else { 0 })
            .map(|p| {
                tokio::spawn(consume(p, client.clone(), rec.clone(), cfg.topic.clone(), sc.clone(), counters.clone()))
            })
            .collect();
        let churn = cfg
            .churn
            .clone()
            .map(|c| tokio::spawn(churn(client.clone(), rec.clone(), c, cfg.idempotent, sp.clone(), counters.clone())));
        Workload { stop_producers, stop_consumers, producers, consumers, churn, counters }
    }

    /// Stops sending (and churning topics) and waits until every
    /// outstanding send has resolved (bounded by the client's retry
    /// deadline) and the churn client has finished its current step.
    pub async fn stop_producers(&mut self) -> ChurnEnd {
        let _ = self.stop_producers.send(true);
        for h in self.producers.drain(..) {
            let _ = h.await;
        }
        match self.churn.take() {
            Some(h) => h.await.unwrap_or_else(|e| ChurnEnd {
                notes: vec![format!("topic churn task failed: {e}")],
                ..ChurnEnd::default()
            }),
            None => ChurnEnd::default(),
        }
    }

    /// Stops the consumers; returns what went wrong while polling that
    /// deserves a look (corrupt data, unexpected errors), if anything.
    pub async fn stop_consumers(&mut self) -> Vec<String> {
        let _ = self.stop_consumers.send(true);
        let mut notes = Vec::new();
        for h in self.consumers.drain(..) {
            if let Ok(n) = h.await {
                notes.extend(n);
            }
        }
        notes
    }
}

/// At most this much of a rate's backlog is caught up after a stall; the
/// rest is dropped, so an outage does not end in a burst.
const MAX_BACKLOG: Duration = Duration::from_millis(100);

async fn produce(
    p: u32,
    client: Client,
    rec: Recorder,
    cfg: WorkloadConfig,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    let producer = Producer::new(client, ProducerConfig { idempotent: cfg.idempotent, ..ProducerConfig::default() });
    let permits = Arc::new(Semaphore::new(cfg.max_in_flight));
    // Paced by the clock rather than by a timer per send: tokio's timer
    // has millisecond resolution, below what high rates need. `due` sends
    // are owed by `now`, counted from `origin`, which moves forward after a
    // stall so that at most MAX_BACKLOG of missed sends is made up.
    let (mut origin, mut owed_at_origin) = (tokio::time::Instant::now(), 0u64);
    let backlog = (MAX_BACKLOG.as_secs_f64() * cfg.rate as f64).max(1.0) as u64;
    let mut seq = 0u64;
    let mut per_partition = vec![0u64; cfg.partitions.max(1) as usize];
    let mut tasks = Vec::new();
    loop {
        if cfg.rate > 0 {
            let now = tokio::time::Instant::now();
            let due = owed_at_origin + ((now - origin).as_secs_f64() * cfg.rate as f64) as u64;
            if due > seq + backlog {
                (origin, owed_at_origin) = (now, seq + backlog);
            }
            if seq >= due {
                let next = origin + Duration::from_secs_f64((seq + 1 - owed_at_origin) as f64 / cfg.rate as f64);
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep_until(next) => {}
                }
                continue;
            }
        }
        if *stop.borrow() {
            break;
        }
        let permit = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore open"),
        };
        let partition = (seq % cfg.partitions.max(1) as u64) as u32;
        let pseq = per_partition[partition as usize];
        per_partition[partition as usize] += 1;
        let value = value_name(p, seq);
        seq += 1;
        let start_us = rec.now_us();
        counters.sent.fetch_add(1, Ordering::Relaxed);
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let bytes = padded(&value, cfg.record_size);
        let size = bytes.len() as u64;
        let record = Record::new(None, Bytes::from(bytes), now_ms());
        let handle = producer.enqueue(&cfg.topic, Some(partition), record).await;
        let (rec, topic, counters) = (rec.clone(), cfg.topic.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let result: Result<(u32, u64), SdkError> = match handle {
                Ok(h) => h.wait().await,
                Err(e) => Err(e),
            };
            let outcome = Outcome::from_send(&result);
            if outcome.is_ok() {
                counters.acked.fetch_add(1, Ordering::Relaxed);
                counters.acked_bytes.fetch_add(size, Ordering::Relaxed);
            }
            rec.record(SendOp {
                producer: format!("p{p}"),
                topic,
                partition: Some(partition),
                value,
                outcome,
                start_us,
                end_us: rec.now_us(),
                generation: 0,
                seq: Some(pseq),
            });
            counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        }));
        if tasks.len() > 2 * cfg.max_in_flight {
            tasks.retain(|t| !t.is_finished());
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn consume(
    partition: u32,
    client: Client,
    rec: Recorder,
    topic: String,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) -> Vec<String> {
    let consumer = format!("c{partition}");
    let mut reader = PartitionReader::new(client, &topic, partition, 0).with_options(FetchOptions {
        max_bytes: 1 << 20,
        max_records: 1000,
        max_wait_ms: 500,
        min_bytes: 0,
    });
    let mut notes = Vec::new();
    loop {
        let start_us = rec.now_us();
        let r = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            r = reader.poll() => r,
        };
        match r {
            Ok(records) => {
                counters.polls.fetch_add(1, Ordering::Relaxed);
                if !records.is_empty() {
                    rec.record(PollOp {
                        consumer: consumer.clone(),
                        topic: topic.clone(),
                        partition,
                        records: read_records(&records),
                        start_us,
                        end_us: rec.now_us(),
                        generation: 0,
                    });
                }
            }
            Err(e) => {
                counters.poll_errors.fetch_add(1, Ordering::Relaxed);
                if matches!(e, SdkError::Corrupt(_)) && notes.len() < 20 {
                    // The reader refuses a response whose offsets do not
                    // follow on: the position may be past records a later
                    // read will show, so this deserves a look.
                    notes.push(format!("consumer {consumer} at offset {}: {e}", reader.position()));
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    notes
}

/// Between two churn cycles: a few incarnations a second is plenty, and
/// each one starts and stops a Raft group per partition on every replica.
const CYCLE_PAUSE: Duration = Duration::from_millis(500);
/// After a refused step: the refusal (say, a replica node down) usually
/// lasts as long as a fault window.
const REFUSED_PAUSE: Duration = Duration::from_secs(1);
/// How long one topic create or delete may keep retrying.
const TOPIC_OP_LIMIT: Duration = Duration::from_secs(30);
/// How long to wait for every node to drop a deleted name, or to agree on
/// a name at the end: well above a fault window (3–7 s) plus the time a
/// healed node takes to catch up with the controller.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// Per-node metadata questions are short, so that a paused node costs
/// little; a node that does not answer says nothing about the topic.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// Whether an SDK error leaves a topic operation's outcome open.
fn indeterminate(e: &SdkError) -> bool {
    match e {
        SdkError::Broker { code, .. } => !matches!(
            code,
            ErrorCode::TopicAlreadyExists
                | ErrorCode::UnknownTopic
                | ErrorCode::InvalidTopicName
                | ErrorCode::InvalidPartitions
                | ErrorCode::InvalidReplicationFactor
                | ErrorCode::InvalidRequest
        ),
        SdkError::InvalidArgument(_) => false,
        _ => true,
    }
}

/// Asks single nodes for their metadata of a name (each node's own view,
/// not the cluster's), as the run's client: with its TLS and credentials.
pub struct MetadataProbe {
    client: Client,
}

impl MetadataProbe {
    pub fn new(client: Client) -> MetadataProbe {
        MetadataProbe { client }
    }

    /// What node `addr` says about `topic`: `Ok(None)` when it does not know
    /// the name; `Err` when it did not answer.
    pub async fn topic_at(&mut self, addr: &str, topic: &str) -> Result<Option<TopicSeen>, String> {
        let resp =
            self.client.metadata_at(addr, &[topic.to_string()], PROBE_TIMEOUT).await.map_err(|e| e.to_string())?;
        Ok(resp
            .topics
            .iter()
            .find(|t| t.name == topic)
            .map(|t| TopicSeen { topic_id: t.topic_id, partitions: t.partitions.len() as u32 }))
    }

    /// Every answering node's view of `topic`.
    async fn views(&mut self, nodes: &[String], topic: &str) -> Vec<(String, Option<TopicSeen>)> {
        let mut out = Vec::new();
        for n in nodes {
            if let Ok(seen) = self.topic_at(n, topic).await {
                out.push((n.clone(), seen));
            }
        }
        out
    }

    /// Asks every node about `topic` until `settled` holds for the answers
    /// (or `limit` passes), then records each answering node's last answer.
    async fn settle(
        &mut self,
        rec: &Recorder,
        nodes: &[String],
        topic: &str,
        limit: Duration,
        settled: impl Fn(&[(String, Option<TopicSeen>)]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let views = self.views(nodes, topic).await;
            let ok = !views.is_empty() && settled(&views);
            if ok || Instant::now() >= deadline {
                let at_us = rec.now_us();
                for (node, present) in views {
                    rec.record(TopicState { node, topic: topic.to_string(), present, at_us });
                }
                return ok;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Records, for each name, what every node says once they agree (or after
/// `limit`): the end-of-run view the checker holds against the creates and
/// deletes.
pub async fn settle_topic_states(
    client: &Client,
    rec: &Recorder,
    nodes: &[String],
    names: &[String],
    limit: Duration,
) -> Vec<String> {
    let mut probe = MetadataProbe::new(client.clone());
    let mut notes = Vec::new();
    for name in names {
        let agreed = probe
            .settle(rec, nodes, name, limit, |v| v.len() == nodes.len() && v.windows(2).all(|w| w[0].1 == w[1].1))
            .await;
        if !agreed {
            notes
                .push(format!("topic {name}: nodes did not agree on it within {limit:?} (see the topic-state events)"));
        }
    }
    notes
}

/// The churn client's memory of one name.
struct Incarnation {
    generation: u32,
    /// The create was acknowledged (not only possibly done).
    certain: bool,
    /// A delete of it may have happened (an earlier attempt's outcome is
    /// unknown): UNKNOWN_TOPIC then means that delete landed.
    maybe_deleted: bool,
}

struct Churn {
    client: Client,
    rec: Recorder,
    cfg: ChurnConfig,
    idempotent: bool,
    stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
    probe: MetadataProbe,
    live: BTreeMap<String, Incarnation>,
    generations: BTreeMap<String, u32>,
    notes: Vec<String>,
}

async fn churn(
    client: Client,
    rec: Recorder,
    cfg: ChurnConfig,
    idempotent: bool,
    stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) -> ChurnEnd {
    let probe = MetadataProbe::new(client.clone());
    let mut c = Churn {
        client,
        rec,
        cfg,
        idempotent,
        stop,
        counters,
        probe,
        live: BTreeMap::new(),
        generations: BTreeMap::new(),
        notes: Vec::new(),
    };
    let mut cycle = 0u32;
    while !c.stopped() {
        let name = churn_name(cycle % c.cfg.names.max(1));
        cycle += 1;
        let pause = if c.cycle(&name).await { CYCLE_PAUSE } else { REFUSED_PAUSE };
        let mut stop = c.stop.clone();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
    ChurnEnd {
        live: c.live.iter().map(|(n, i)| (n.clone(), i.generation, i.certain)).collect(),
        names: c.generations.keys().cloned().collect(),
        notes: c.notes,
    }
}

impl Churn {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    fn record_op(&self, action: TopicAction, topic: &str, generation: u32, outcome: TopicOutcome, start_us: u64) {
        self.rec.record(TopicOp {
            client: "t1".into(),
            action,
            topic: topic.to_string(),
            generation,
            partitions: if action == TopicAction::Create { self.cfg.partitions } else { 0 },
            outcome,
            start_us,
            end_us: self.rec.now_us(),
        });
    }

    /// One incarnation of `name`: create, write, read back, delete. False
    /// when the cluster refused a step (e.g. too few nodes alive for the
    /// replication factor), so that the next cycle waits longer.
    async fn cycle(&mut self, name: &str) -> bool {
        // A name left behind by an earlier cycle (its delete unconfirmed)
        // is deleted first: a name is only created again once it is gone.
        if self.live.contains_key(name) && !self.delete(name).await {
            return false;
        }
        if self.stopped() {
            return true;
        }
        let generation = {
            let g = self.generations.entry(name.to_string()).or_insert(0);
            *g += 1;
            *g
        };
        let Some(certain) = self.create(name, generation).await else { return false };
        self.live.insert(name.to_string(), Incarnation { generation, certain, maybe_deleted: false });
        if !certain || self.stopped() {
            return true;
        }
        self.write(name, generation).await;
        self.read_back(name, generation).await;
        if self.stopped() {
            // Left for the final reads.
            return true;
        }
        self.delete(name).await
    }

    /// Creates incarnation `generation` of `name`. `Some(true)`: created;
    /// `Some(false)`: perhaps; `None`: not.
    async fn create(&mut self, name: &str, generation: u32) -> Option<bool> {
        let start_us = self.rec.now_us();
        let deadline = Instant::now() + TOPIC_OP_LIMIT;
        let mut open = false;
        loop {
            let result = self.client.create_topic(name, self.cfg.partitions, self.cfg.replication).await;
            let e = match result {
                Ok(info) => {
                    self.counters.topics_created.fetch_add(1, Ordering::Relaxed);
                    let outcome = TopicOutcome::Ok { topic_id: info.topic_id };
                    self.record_op(TopicAction::Create, name, generation, outcome, start_us);
                    return Some(true);
                }
                Err(e) => e,
            };
            if e.code() == Some(ErrorCode::TopicAlreadyExists) && !matches!(e, SdkError::DeadlineExceeded { .. }) {
                // `Indeterminate`: an earlier attempt of the SDK's own
                // retries broke off, so that one may be what exists.
                if open || matches!(e, SdkError::Indeterminate { .. }) {
                    // An earlier attempt of this create landed.
                    let topic_id = self.client.describe_topic(name).await.map(|t| t.topic_id).unwrap_or(0);
                    self.counters.topics_created.fetch_add(1, Ordering::Relaxed);
                    self.record_op(TopicAction::Create, name, generation, TopicOutcome::Ok { topic_id }, start_us);
                    return Some(true);
                }
                // The name was confirmed gone before this create: something
                // still holds it. What each node lists goes on record.
                let outcome = TopicOutcome::Fail { error: e.to_string() };
                self.record_op(TopicAction::Create, name, generation, outcome, start_us);
                self.notes.push(format!("create of {name} (g{generation}) refused: {e}"));
                let nodes = self.cfg.nodes.clone();
                self.probe.settle(&self.rec, &nodes, name, SETTLE_LIMIT, |_| false).await;
                let previous = self.live.remove(name);
                self.live.insert(
                    name.to_string(),
                    Incarnation {
                        generation: previous.as_ref().map_or(generation - 1, |p| p.generation),
                        certain: false,
                        maybe_deleted: false,
                    },
                );
                return None;
            }
            if !indeterminate(&e) {
                self.record_op(
                    TopicAction::Create,
                    name,
                    generation,
                    TopicOutcome::Fail { error: e.to_string() },
                    start_us,
                );
                return None;
            }
            open = true;
            if self.stopped() || Instant::now() >= deadline {
                let outcome = TopicOutcome::Unknown { error: e.to_string() };
                self.record_op(TopicAction::Create, name, generation, outcome, start_us);
                return Some(false);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Writes the incarnation's records, each producer-numbered per
    /// partition, with a producer of its own (so that idempotence state
    /// never spans two incarnations).
    async fn write(&mut self, name: &str, generation: u32) {
        let producer = Producer::new(
            self.client.clone(),
            ProducerConfig { idempotent: self.idempotent, ..ProducerConfig::default() },
        );
        let partitions = self.cfg.partitions.max(1);
        let mut handles = Vec::new();
        for i in 0..self.cfg.records {
            let partition = i % partitions;
            let value = format!("{name}-g{generation}-{i}");
            let start_us = self.rec.now_us();
            let record = Record::new(None, Bytes::from(value.clone()), now_ms());
            let handle = producer.enqueue(name, Some(partition), record).await;
            handles.push((value, partition, (i / partitions) as u64, start_us, handle));
        }
        for (value, partition, seq, start_us, handle) in handles {
            let result = match handle {
                Ok(h) => h.wait().await,
                Err(e) => Err(e),
            };
            self.rec.record(SendOp {
                producer: "t1".into(),
                topic: name.to_string(),
                partition: Some(partition),
                value,
                outcome: Outcome::from_send(&result),
                start_us,
                end_us: self.rec.now_us(),
                generation,
                seq: Some(seq),
            });
        }
    }

    /// Reads every partition of the incarnation from its leader before it
    /// is deleted, so that its acknowledged writes are checked too.
    async fn read_back(&mut self, name: &str, generation: u32) {
        for partition in 0..self.cfg.partitions {
            let start_us = self.rec.now_us();
            let deadline = Instant::now() + TOPIC_OP_LIMIT;
            match read_log(&self.client, name, partition, 0, None, deadline).await {
                Ok((records, end)) => self.rec.record(FinalRead {
                    reader: "before-delete".into(),
                    topic: name.to_string(),
                    partition,
                    start_offset: 0,
                    high_watermark: end,
                    records,
                    start_us,
                    end_us: self.rec.now_us(),
                    generation,
                }),
                Err(e) => {
                    self.notes.push(format!("{name} (g{generation}) / {partition}: read before delete failed: {e}"))
                }
            }
        }
    }

    /// Deletes the live incarnation of `name`; true once the name is gone
    /// (the delete acknowledged, or the name found absent), after waiting
    /// for every answering node to drop it.
    async fn delete(&mut self, name: &str) -> bool {
        let Some(inc) = self.live.get(name) else { return true };
        let (generation, mut open) = (inc.generation, inc.maybe_deleted);
        let start_us = self.rec.now_us();
        let deadline = Instant::now() + TOPIC_OP_LIMIT;
        let outcome = loop {
            let e = match self.client.delete_topic(name).await {
                Ok(()) => break TopicOutcome::Ok { topic_id: 0 },
                Err(e) => e,
            };
            if e.code() == Some(ErrorCode::UnknownTopic) && !matches!(e, SdkError::DeadlineExceeded { .. }) {
                if open || matches!(e, SdkError::Indeterminate { .. }) {
                    // An earlier attempt landed.
                    break TopicOutcome::Ok { topic_id: 0 };
                }
                // Nothing to delete: the create never landed, or the topic
                // vanished (which the topic states will show).
                break TopicOutcome::Fail { error: e.to_string() };
            }
            if !indeterminate(&e) {
                break TopicOutcome::Fail { error: e.to_string() };
            }
            open = true;
            if self.stopped() || Instant::now() >= deadline {
                break TopicOutcome::Unknown { error: e.to_string() };
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let absent = matches!(&outcome, TopicOutcome::Fail { error } if error.contains("UNKNOWN_TOPIC"));
        let done = matches!(outcome, TopicOutcome::Ok { .. });
        self.record_op(TopicAction::Delete, name, generation, outcome, start_us);
        if !done && !absent {
            if let Some(inc) = self.live.get_mut(name) {
                inc.maybe_deleted |= open;
            }
            return false;
        }
        if done {
            self.counters.topics_deleted.fetch_add(1, Ordering::Relaxed);
        }
        self.live.remove(name);
        let nodes = self.cfg.nodes.clone();
        let gone =
            self.probe.settle(&self.rec, &nodes, name, SETTLE_LIMIT, |v| v.iter().all(|(_, p)| p.is_none())).await;
        if !gone {
            self.notes.push(format!("{name} (g{generation}): still listed {SETTLE_LIMIT:?} after its delete"));
        }
        if done && gone {
            self.write_after_delete(name, generation).await;
        }
        true
    }

    /// One more send to the deleted incarnation: it must be refused.
    async fn write_after_delete(&mut self, name: &str, generation: u32) {
        let producer = Producer::new(self.client.clone(), ProducerConfig { idempotent: false, ..Default::default() });
        let value = format!("{name}-g{generation}-after-delete");
        let start_us = self.rec.now_us();
        let record = Record::new(None, Bytes::from(value.clone()), now_ms());
        let result = match producer.enqueue(name, Some(0), record).await {
            Ok(h) => h.wait().await,
            Err(e) => Err(e),
        };
        self.rec.record(SendOp {
            producer: "t1".into(),
            topic: name.to_string(),
            partition: Some(0),
            value,
            outcome: Outcome::from_send(&result),
            start_us,
            end_us: self.rec.now_us(),
            generation,
            seq: None,
        });
    }
}

/// What the final reads found beside the records: replicas that did not
/// catch up, reads that failed.
#[derive(Debug, Default)]
pub struct FinalReadNotes {
    pub notes: Vec<String>,
    /// Records read, over every reader.
    pub records: u64,
}

/// The high watermark node `addr` (or the leader, when `None`) reports for
/// a partition.
async fn high_watermark(client: &Client, topic: &str, partition: u32, addr: Option<&str>) -> Result<u64, SdkError> {
    let mut r = PartitionReader::new(client.clone(), topic, partition, 0).with_options(FetchOptions {
        max_bytes: 1,
        max_records: 1,
        max_wait_ms: 0,
        min_bytes: 0,
    });
    if let Some(a) = addr {
        r = r.from_replica(a);
    }
    r.poll().await?;
    Ok(r.high_watermark())
}

/// Reads a partition from `from` to the high watermark of its first fetch,
/// at the leader or at `addr`, retrying transient failures (from where it
/// got to) until `deadline`. Records are turned into [`ReadRecord`]s
/// (with digests) fetch by fetch, so that a long log of large records is
/// never held in memory whole. Returns the records and the end offset.
async fn read_log(
    client: &Client,
    topic: &str,
    partition: u32,
    from: u64,
    addr: Option<&str>,
    deadline: Instant,
) -> Result<(Vec<ReadRecord>, u64), SdkError> {
    let mut out = Vec::new();
    let mut end: Option<u64> = None;
    let mut position = from;
    loop {
        let mut r = PartitionReader::new(client.clone(), topic, partition, position).with_options(FetchOptions {
            max_bytes: 4 << 20,
            max_records: 10_000,
            max_wait_ms: 0,
            min_bytes: 0,
        });
        if let Some(a) = addr {
            r = r.from_replica(a);
        }
        let failure = loop {
            match r.poll().await {
                Ok(records) => {
                    let end = *end.get_or_insert(r.high_watermark());
                    out.extend(read_records_with_digest(&records));
                    position = r.position();
                    if position >= end {
                        return Ok((out, end));
                    }
                    if records.is_empty() {
                        break SdkError::Corrupt(format!(
                            "{topic}/{partition}: no records at {position} below the high watermark {end}"
                        ));
                    }
                }
                Err(e) => break e,
            }
        };
        if matches!(failure, SdkError::Corrupt(_)) || Instant::now() >= deadline {
            return Err(failure);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many partitions [`final_reads`] reads at once: the reads of a long
/// log are CPU-bound (decoding, digests, the history's JSON) and each holds
/// one partition's records until it is recorded.
const FINAL_READ_PARTITIONS: usize = 3;

/// Reads every partition of `topic` (incarnation `generation`) over its
/// whole log from its leader and from every replica, and records the
/// reads; up to [`FINAL_READ_PARTITIONS`] partitions at a time. `addrs`
/// maps node ids to addresses. A replica is read once its high watermark
/// equals the leader's (awaited up to `limit`); one that never catches up
/// is read anyway and named in the notes.
pub async fn final_reads(
    client: &Client,
    rec: &Recorder,
    topic: &str,
    generation: u32,
    addrs: &BTreeMap<u64, String>,
    limit: Duration,
) -> Result<FinalReadNotes> {
    let info = client.describe_topic(topic).await?;
    let permits = Arc::new(Semaphore::new(FINAL_READ_PARTITIONS));
    let mut tasks = tokio::task::JoinSet::new();
    for p in info.partitions {
        let (client, rec, topic, addrs, permits) =
            (client.clone(), rec.clone(), topic.to_string(), addrs.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            final_reads_of(&client, &rec, &topic, generation, p, &addrs, limit).await
        });
    }
    let mut notes = FinalReadNotes::default();
    while let Some(done) = tasks.join_next().await {
        let n = done.map_err(|e| anyhow::anyhow!("final reads of {topic}: {e}"))?;
        notes.notes.extend(n.notes);
        notes.records += n.records;
    }
    Ok(notes)
}

/// [`final_reads`] of one partition.
async fn final_reads_of(
    client: &Client,
    rec: &Recorder,
    topic: &str,
    generation: u32,
    p: PartitionInfo,
    addrs: &BTreeMap<u64, String>,
    limit: Duration,
) -> FinalReadNotes {
    let mut notes = FinalReadNotes::default();
    let partition = p.partition;
    let deadline = Instant::now() + limit;
    // Wait until every replica has what the leader has. The replica set is
    // looked up again each time: the balancer may still be moving replicas
    // after the nodes came back (more nodes than replicas).
    let mut replicas = p.replicas.clone();
    loop {
        if let Some(now) = client
            .describe_topic(topic)
            .await
            .ok()
            .and_then(|t| t.partitions.into_iter().find(|x| x.partition == partition))
        {
            replicas = now.replicas;
        }
        let leader_hw = high_watermark(client, topic, partition, None).await;
        let mut behind = Vec::new();
        if let Ok(hw) = &leader_hw {
            for r in &replicas {
                match high_watermark(client, topic, partition, Some(&addrs[r])).await {
                    Ok(h) if h == *hw => {}
                    Ok(h) => behind.push(format!("node {r} at {h} of {hw}")),
                    Err(e) => behind.push(format!("node {r}: {e}")),
                }
            }
        }
        let lag = match leader_hw {
            Ok(_) if behind.is_empty() => break,
            Ok(_) => behind.join(", "),
            Err(e) => format!("leader: {e}"),
        };
        if Instant::now() >= deadline {
            notes.notes.push(format!("{topic}/{partition}: replicas not caught up after {limit:?}: {lag}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut readers: Vec<(String, Option<&str>)> = vec![("leader".into(), None)];
    for r in &replicas {
        readers.push((format!("replica-{r}"), Some(addrs[r].as_str())));
    }
    // The whole retained log: from the log start offset on.
    let from = p.log_start_offset;
    for (name, addr) in readers {
        let start_us = rec.now_us();
        let until = deadline.max(Instant::now() + Duration::from_secs(10));
        match read_log(client, topic, partition, from, addr, until).await {
            Ok((records, end)) => {
                notes.records += records.len() as u64;
                rec.record(FinalRead {
                    reader: name,
                    topic: topic.to_string(),
                    partition,
                    start_offset: from,
                    high_watermark: end,
                    records,
                    start_us,
                    end_us: rec.now_us(),
                    generation,
                })
            }
            Err(e) => notes.notes.push(format!("{topic}/{partition}: final read ({name}) failed: {e}")),
        }
    }
    notes
}
