//! The queue workload of a chaos run (`CHAOS_WORKLOAD=queue`, and every
//! third run of the default mix) and its checker: exactly-once settlement
//! of a queue group under faults (invariant 5 of the design).
//!
//! **Workload** ([`run_queue_once`]): a producer appends the values
//! `q-<seq>` in batches, round-robin over the partitions of `chaos-queue`,
//! at `CHAOS_RATE × CHAOS_PRODUCERS` events per second; `CHAOS_PRODUCERS`
//! queue consumers of one queue group (2 s locks, no renewal, the default
//! 5 deliveries) receive and settle them while the nemesis runs. Drawn
//! from the run's seed, a consumer now and then *crashes* (drops what it
//! holds and comes back under a new id), releases a batch, rejects an
//! event (to the dead-letter topic), or works past its lock before it
//! acks (the ack then fails with QUEUE_LOCK_EXPIRED). After the faults
//! heal the producer stops and the consumers drain the queue until every
//! partition is settled up to its high watermark; then the dead-letter
//! topic is read and each partition described. Everything is kept in a
//! [`QueueHistory`] (`run-<n>.queue.jsonl`).
//!
//! **Checker** ([`check_queue`]) — anomalies:
//! - `redelivered-after-ack`: an event delivered by a receive that started
//!   after an ack of it had been acknowledged;
//! - `double-settle`: two acks of one event both acknowledged as settling
//!   it (neither answered "settled already"), or an event both acked and in
//!   the dead-letter topic;
//! - `two-holders`: an event locked to a second consumer while the first
//!   one's lock was live by the leader's clock and it had not released it;
//! - `never-settled`: after the drain, an event of the log neither acked
//!   nor dead-lettered, or a partition not settled to its high watermark;
//! - `wrong-value`: a delivered or dead-lettered event whose value is not
//!   the one acknowledged at its offset.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use replog_client::{Acks, Client, PartitionReader, QueueConfig, QueueConsumer, QueueMessage, Record};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::checker::Report;
use crate::history::Recorder;
use crate::nemesis::{Nemesis, schedule};
use crate::runner::{RunConfig, RunResult, start_run};

pub const QUEUE_TOPIC: &str = "chaos-queue";
const GROUP: &str = "chaos-group";
const LOCK: Duration = Duration::from_secs(2);
/// How long the consumers get to settle everything once the faults healed.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
/// Events per produced batch at most.
const BATCH: usize = 10;

/// How a settle call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SettleOutcome {
    Ok { already_settled: Vec<u64> },
    Fail { error: String },
    Unknown { error: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Ack,
    Release,
    Reject,
}

/// One event of a queue run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum QueueEvent {
    /// An acknowledged append of `value` at `offset`.
    Produced { value: String, partition: u32, offset: u64 },
    /// An event handed to `consumer` by a receive that ran from `start_us`.
    Delivered {
        consumer: String,
        partition: u32,
        offset: u64,
        value: String,
        delivery_count: u32,
        /// The lock's deadline and length, by the leader's clock (ms).
        deadline_ms: i64,
        lock_ms: u64,
        start_us: u64,
        end_us: u64,
    },
    Settle {
        consumer: String,
        action: Action,
        partition: u32,
        offsets: Vec<u64>,
        outcome: SettleOutcome,
        /// Wall clock (ms) when the call was made, comparable with lock deadlines.
        start_ms: i64,
        start_us: u64,
        end_us: u64,
    },
    /// A record of the dead-letter topic, by the origin its headers name.
    DeadLetter { partition: u32, offset: u64, value: String, delivery_count: u32, reason: String },
    /// The group on a partition after the drain.
    Final { partition: u32, settled_below: u64, high_watermark: u64, dead_letter_pending: u64 },
}

/// A queue run's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueHistory {
    pub events: Vec<QueueEvent>,
}

impl QueueHistory {
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
        for e in &self.events {
            serde_json::to_writer(&mut w, e)?;
            w.write_all(b"\n")?;
        }
        w.flush()
    }

    pub fn load(path: &std::path::Path) -> std::io::Result<QueueHistory> {
        let text = std::fs::read_to_string(path)?;
        let events = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .map_err(std::io::Error::other)?;
        Ok(QueueHistory { events })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueAnomalyKind {
    RedeliveredAfterAck,
    DoubleSettle,
    TwoHolders,
    NeverSettled,
    WrongValue,
}

impl QueueAnomalyKind {
    pub fn name(self) -> &'static str {
        match self {
            QueueAnomalyKind::RedeliveredAfterAck => "redelivered-after-ack",
            QueueAnomalyKind::DoubleSettle => "double-settle",
            QueueAnomalyKind::TwoHolders => "two-holders",
            QueueAnomalyKind::NeverSettled => "never-settled",
            QueueAnomalyKind::WrongValue => "wrong-value",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAnomaly {
    pub kind: QueueAnomalyKind,
    pub partition: u32,
    pub offset: u64,
    pub detail: String,
}

impl fmt::Display for QueueAnomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}@{}: {}", self.kind.name(), QUEUE_TOPIC, self.partition, self.offset, self.detail)
    }
}

/// The queue checker's verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueReport {
    pub produced: usize,
    pub deliveries: usize,
    pub redeliveries: usize,
    /// Events settled by an acknowledged ack.
    pub acked: usize,
    /// Distinct events in the dead-letter topic.
    pub dead_lettered: usize,
    pub anomalies: Vec<QueueAnomaly>,
}

impl fmt::Display for QueueReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "queue: produced={} deliveries={} redeliveries={} acked={} dead_lettered={} anomalies={}",
            self.produced,
            self.deliveries,
            self.redeliveries,
            self.acked,
            self.dead_lettered,
            self.anomalies.len()
        )
    }
}

/// Checks a queue history; see the module docs for the anomalies.
pub fn check_queue(h: &QueueHistory) -> QueueReport {
    type Key = (u32, u64);
    let mut r = QueueReport::default();
    let mut anomaly = |kind, (partition, offset): Key, detail: String| {
        r.anomalies.push(QueueAnomaly { kind, partition, offset, detail });
    };
    let mut produced: BTreeMap<Key, &str> = BTreeMap::new();
    // Per event: when an ack of it was first acknowledged (end_us), and by whom.
    let mut acked_at: BTreeMap<Key, u64> = BTreeMap::new();
    let mut settled_by: BTreeMap<Key, Vec<&str>> = BTreeMap::new();
    // Events of acks whose outcome is unknown: maybe settled by them.
    let mut maybe_acked: std::collections::BTreeSet<Key> = std::collections::BTreeSet::new();
    let mut deliveries: BTreeMap<Key, Vec<&QueueEvent>> = BTreeMap::new();
    // Releases acknowledged or unknown: (consumer, key) -> wall-clock start.
    let mut released: BTreeMap<(&str, Key), Vec<i64>> = BTreeMap::new();
    let mut dead: BTreeMap<Key, Vec<(&str, u32)>> = BTreeMap::new();
    let mut finals = Vec::new();
    for e in &h.events {
        match e {
            QueueEvent::Produced { value, partition, offset } => {
                produced.insert((*partition, *offset), value);
            }
            QueueEvent::Delivered { partition, offset, .. } => {
                deliveries.entry((*partition, *offset)).or_default().push(e);
            }
            QueueEvent::Settle { consumer, action, partition, offsets, outcome, start_ms, end_us, .. } => {
                match (action, outcome) {
                    (Action::Ack, SettleOutcome::Ok { already_settled }) => {
                        for o in offsets {
                            let k = (*partition, *o);
                            let t = acked_at.entry(k).or_insert(*end_us);
                            *t = (*t).min(*end_us);
                            if !already_settled.contains(o) {
                                settled_by.entry(k).or_default().push(consumer);
                            }
                        }
                    }
                    (Action::Ack, SettleOutcome::Unknown { .. }) => {
                        maybe_acked.extend(offsets.iter().map(|o| (*partition, *o)));
                    }
                    (Action::Release, SettleOutcome::Ok { .. } | SettleOutcome::Unknown { .. }) => {
                        for o in offsets {
                            released.entry((consumer, (*partition, *o))).or_default().push(*start_ms);
                        }
                    }
                    _ => {}
                }
            }
            QueueEvent::DeadLetter { partition, offset, value, delivery_count, .. } => {
                dead.entry((*partition, *offset)).or_default().push((value, *delivery_count));
            }
            QueueEvent::Final { .. } => finals.push(e),
        }
    }
    r.produced = produced.len();
    r.acked = settled_by.len();
    r.dead_lettered = dead.len();
    for (k, ds) in &deliveries {
        r.deliveries += ds.len();
        let mut ds = ds.clone();
        ds.sort_by_key(|d| match d {
            QueueEvent::Delivered { deadline_ms, lock_ms, .. } => deadline_ms - *lock_ms as i64,
            _ => 0,
        });
        let mut prev: Option<(&str, i64)> = None;
        for d in ds {
            let QueueEvent::Delivered { consumer, value, delivery_count, deadline_ms, lock_ms, start_us, .. } = d
            else {
                continue;
            };
            if *delivery_count > 1 {
                r.redeliveries += 1;
            }
            if let Some(&want) = produced.get(k)
                && want != value
            {
                anomaly(QueueAnomalyKind::WrongValue, *k, format!("delivered {value:?}, produced {want:?}"));
            }
            if let Some(t) = acked_at.get(k)
                && start_us > t
            {
                anomaly(
                    QueueAnomalyKind::RedeliveredAfterAck,
                    *k,
                    format!(
                        "delivery {delivery_count} to {consumer} by a receive from {:.3}s; an ack was acknowledged at {:.3}s",
                        *start_us as f64 / 1e6,
                        *t as f64 / 1e6
                    ),
                );
            }
            let lock_start = deadline_ms - *lock_ms as i64;
            if let Some((held_by, held_until)) = prev
                && lock_start < held_until
            {
                let let_go = released.get(&(held_by, *k)).is_some_and(|ts| ts.iter().any(|t| *t <= lock_start));
                if !let_go {
                    anomaly(
                        QueueAnomalyKind::TwoHolders,
                        *k,
                        format!(
                            "locked to {consumer} at {lock_start} ms while {held_by} held it until {held_until} ms"
                        ),
                    );
                }
            }
            prev = Some((consumer, *deadline_ms));
        }
    }
    for (k, who) in &settled_by {
        if who.len() > 1 {
            anomaly(QueueAnomalyKind::DoubleSettle, *k, format!("acked as settling it by {who:?}"));
        }
        if dead.contains_key(k) {
            anomaly(QueueAnomalyKind::DoubleSettle, *k, format!("acked by {who:?} and in the dead-letter topic"));
        }
    }
    for (k, letters) in &dead {
        if let Some(&want) = produced.get(k) {
            for (value, _) in letters {
                if *value != want {
                    anomaly(QueueAnomalyKind::WrongValue, *k, format!("dead letter {value:?}, produced {want:?}"));
                }
            }
        }
    }
    for f in finals {
        let QueueEvent::Final { partition, settled_below, high_watermark, dead_letter_pending } = f else {
            continue;
        };
        if settled_below < high_watermark || *dead_letter_pending > 0 {
            anomaly(
                QueueAnomalyKind::NeverSettled,
                (*partition, *settled_below),
                format!(
                    "settled below {settled_below} of high watermark {high_watermark}, {dead_letter_pending} dead letters pending"
                ),
            );
        }
        for o in 0..*high_watermark {
            let k = (*partition, o);
            // An ack of unknown outcome may be what settled it; the
            // partition's settled floor above still vouches for it.
            if !acked_at.contains_key(&k) && !dead.contains_key(&k) && !maybe_acked.contains(&k) {
                anomaly(QueueAnomalyKind::NeverSettled, k, "neither acked nor dead-lettered".into());
            }
        }
    }
    r.anomalies.sort_by_key(|a| (a.kind, a.partition, a.offset));
    r
}

/// Shared, appendable history of a running workload.
#[derive(Clone)]
struct Log {
    events: Arc<std::sync::Mutex<Vec<QueueEvent>>>,
    clock: Recorder,
}

impl Log {
    fn push(&self, e: QueueEvent) {
        self.events.lock().expect("queue log").push(e);
    }
}

fn outcome<T>(r: &replog_client::Result<T>, already: impl FnOnce(&T) -> Vec<u64>) -> SettleOutcome {
    match r {
        Ok(v) => SettleOutcome::Ok { already_settled: already(v) },
        Err(e) if e.is_indeterminate() => SettleOutcome::Unknown { error: e.to_string() },
        Err(e) => SettleOutcome::Fail { error: e.to_string() },
    }
}

/// Produces `q-<seq>` in batches round-robin until `stop`.
async fn producer(client: Client, log: Log, partitions: u32, rate: u32, stop: Arc<AtomicBool>) {
    let mut seq = 0u64;
    let mut p = 0u32;
    let per_batch = (rate as usize / 10).clamp(1, BATCH);
    let every = Duration::from_secs_f64(per_batch as f64 / rate.max(1) as f64);
    let mut tick = tokio::time::interval(every);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let values: Vec<String> = (0..per_batch).map(|i| format!("q-{}", seq + i as u64)).collect();
        seq += per_batch as u64;
        let records: Vec<Record> =
            values.iter().map(|v| Record::new(None, Bytes::from(v.clone()), replog_proto::now_ms())).collect();
        let batch = replog_proto::batch::encode(&records);
        if let Ok(resp) = client.produce_batch(QUEUE_TOPIC, p, batch, Acks::All).await
            && let Some(base) = resp.base_offset
        {
            for (i, v) in values.into_iter().enumerate() {
                log.push(QueueEvent::Produced { value: v, partition: p, offset: base + i as u64 });
            }
        }
        p = (p + 1) % partitions;
    }
}

async fn new_consumer(client: &Client, id: &str) -> Option<QueueConsumer> {
    let mut cfg = QueueConfig::new(GROUP);
    cfg.consumer_id = id.to_string();
    cfg.lock = LOCK;
    cfg.auto_renew = false;
    QueueConsumer::new(client.clone(), QUEUE_TOPIC, cfg).await.ok()
}

/// One queue consumer with the faults of its own drawn from `seed`.
async fn consumer(client: Client, log: Log, n: u32, seed: u64, stop: Arc<AtomicBool>, settled: Arc<AtomicU64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut generation = 0;
    let id = |g: u32| format!("c{n}-{g}");
    let mut q = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = q.as_mut() else {
            q = new_consumer(&client, &id(generation)).await;
            if q.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            continue;
        };
        let me = c.consumer_id().to_string();
        let start_us = log.clock.now_us();
        let msgs: Vec<QueueMessage> = match c.receive(20, Duration::from_millis(500)).await {
            Ok(m) => m,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let end_us = log.clock.now_us();
        for m in &msgs {
            log.push(QueueEvent::Delivered {
                consumer: me.clone(),
                partition: m.partition,
                offset: m.offset,
                value: String::from_utf8_lossy(&m.value).into_owned(),
                delivery_count: m.delivery_count,
                deadline_ms: m.lock_deadline_ms,
                lock_ms: LOCK.as_millis() as u64,
                start_us,
                end_us,
            });
        }
        if msgs.is_empty() {
            continue;
        }
        let roll: f64 = rng.r#gen();
        if roll < 0.03 {
            // Crash: what it holds is abandoned; it comes back as someone new.
            generation += 1;
            q = None;
            continue;
        }
        if roll < 0.05 {
            // Slow: the locks run out before the ack.
            tokio::time::sleep(LOCK + Duration::from_millis(300)).await;
        }
        let mut by_partition: BTreeMap<u32, Vec<&QueueMessage>> = BTreeMap::new();
        for m in &msgs {
            by_partition.entry(m.partition).or_default().push(m);
        }
        let release = roll < 0.10;
        for (p, ms) in by_partition {
            let (reject, rest): (Vec<&QueueMessage>, Vec<&QueueMessage>) =
                ms.into_iter().partition(|_| !release && rng.r#gen::<f64>() < 0.01);
            if !reject.is_empty() {
                let owned: Vec<QueueMessage> = reject.iter().map(|m| (*m).clone()).collect();
                settle(&log, &me, Action::Reject, p, &owned, async { c.reject(&owned, "chaos reject").await }).await;
            }
            if rest.is_empty() {
                continue;
            }
            let owned: Vec<QueueMessage> = rest.iter().map(|m| (*m).clone()).collect();
            if release {
                settle(&log, &me, Action::Release, p, &owned, async { c.release(&owned).await }).await;
            } else {
                let offsets: Vec<u64> = owned.iter().map(|m| m.offset).collect();
                let start_ms = replog_proto::now_ms();
                let start_us = log.clock.now_us();
                let r = c.ack_offsets(p, offsets.clone()).await;
                if r.is_ok() {
                    settled.fetch_add(offsets.len() as u64, Ordering::Relaxed);
                }
                log.push(QueueEvent::Settle {
                    consumer: me.clone(),
                    action: Action::Ack,
                    partition: p,
                    offsets,
                    outcome: outcome(&r, |a| a.clone()),
                    start_ms,
                    start_us,
                    end_us: log.clock.now_us(),
                });
            }
        }
    }
}

/// Makes the settling `call` (a release or a reject of `msgs`) and logs it
/// with the moment it was made.
///
/// The clock is read before the call: the leader applies a release at some
/// moment between the call and its answer, and a lock applied after the
/// release carries a leader clock at least the release's own, itself at
/// least `start_ms`. A time read after the answer instead would be later
/// than such a lock, and the checker would call a second consumer taking a
/// released event within those milliseconds a two-holders anomaly.
async fn settle<F>(log: &Log, me: &str, action: Action, p: u32, msgs: &[QueueMessage], call: F)
where
    F: std::future::Future<Output = replog_client::Result<()>>,
{
    let start_ms = replog_proto::now_ms();
    let start_us = log.clock.now_us();
    let r = call.await;
    log.push(QueueEvent::Settle {
        consumer: me.to_string(),
        action,
        partition: p,
        offsets: msgs.iter().map(|m| m.offset).collect(),
        outcome: outcome(&r, |_| Vec::new()),
        start_ms,
        start_us,
        end_us: log.clock.now_us(),
    });
}

/// Whether every partition is settled up to its high watermark.
async fn drained(client: &Client) -> bool {
    match client.queue_describe(QUEUE_TOPIC, GROUP).await {
        Ok(s) => {
            let partitions = client.topic(QUEUE_TOPIC).await.map(|t| t.partitions.len()).unwrap_or(0);
            s.len() == partitions && s.iter().all(|p| p.settled_below >= p.high_watermark && p.dead_letter_pending == 0)
        }
        Err(_) => false,
    }
}

/// Reads every record of the dead-letter topic (if it exists) into the log.
async fn read_dead_letters(client: &Client, log: &Log) -> Result<()> {
    let dlq = format!("{QUEUE_TOPIC}.dlq");
    let Ok(t) = client.describe_topic(&dlq).await else { return Ok(()) };
    for p in t.partitions {
        let mut r = PartitionReader::new(client.clone(), &dlq, p.partition, p.log_start_offset);
        while r.position() < p.high_watermark {
            for rec in r.poll().await.context("read the dead-letter topic")? {
                let h = |n: &str| {
                    rec.headers
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                log.push(QueueEvent::DeadLetter {
                    partition: h("replog-dlq-partition").parse().unwrap_or(u32::MAX),
                    offset: h("replog-dlq-offset").parse().unwrap_or(u64::MAX),
                    value: String::from_utf8_lossy(&rec.value).into_owned(),
                    delivery_count: h("replog-dlq-delivery-count").parse().unwrap_or(0),
                    reason: h("replog-dlq-reason"),
                });
            }
        }
    }
    Ok(())
}

/// One queue run: cluster, topic, producer and queue consumers under the
/// nemesis, heal, drain, check. The log checker's report is empty but for
/// the counts of produced events; the queue's verdict is in `queue`.
pub async fn run_queue_once(cfg: &RunConfig) -> Result<RunResult> {
    let out = &cfg.out_dir;
    let history_path: PathBuf = out.join(format!("run-{}.queue.jsonl", cfg.run));
    let report_path = out.join(format!("run-{}.report.txt", cfg.run));

    let windows = schedule(cfg.seed, &cfg.faults, Duration::from_secs(cfg.seconds));
    let (mut cluster, net, client) = start_run(cfg, QUEUE_TOPIC).await?;

    let clock = Recorder::new();
    let log = Log { events: Arc::default(), clock: clock.clone() };
    let stop_producer = Arc::new(AtomicBool::new(false));
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let settled = Arc::new(AtomicU64::new(0));
    let producer_task = tokio::spawn(producer(
        client.clone(),
        log.clone(),
        cfg.partitions,
        cfg.rate * cfg.producers.max(1),
        stop_producer.clone(),
    ));
    let consumers: Vec<JoinHandle<()>> = (0..cfg.producers.max(2))
        .map(|n| {
            tokio::spawn(consumer(
                client.clone(),
                log.clone(),
                n,
                cfg.seed.wrapping_add(n as u64),
                stop_consumers.clone(),
                settled.clone(),
            ))
        })
        .collect();

    let mut nemesis = Nemesis::new(net, QUEUE_TOPIC, cfg.partitions, clock.clone());
    let t0 = tokio::time::Instant::now();
    let nemesis_result = nemesis.run(&mut cluster, &windows, t0).await;
    tokio::time::sleep_until(t0 + Duration::from_secs(cfg.seconds)).await;
    let mut problems = Vec::new();
    let heal = nemesis.heal_all(&mut cluster);
    if let Err(e) = nemesis_result.and(heal) {
        problems.push(format!("nemesis failed: {e:#}"));
        let _ = nemesis.heal_all(&mut cluster);
    }
    let ready = async {
        cluster.wait_ready(RECOVERY_LIMIT).await?;
        cluster.wait_leaders(&client, QUEUE_TOPIC, RECOVERY_LIMIT).await
    }
    .await;
    if let Err(e) = &ready {
        problems.push(format!("after healing: {e:#}"));
    }
    stop_producer.store(true, Ordering::Relaxed);
    if let Err(e) = producer_task.await {
        problems.push(format!("producer task: {e}"));
    }
    let drain_until = tokio::time::Instant::now() + DRAIN_LIMIT;
    while !drained(&client).await {
        if tokio::time::Instant::now() >= drain_until {
            problems.push(format!("the queue was not drained within {DRAIN_LIMIT:?} after healing"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop_consumers.store(true, Ordering::Relaxed);
    for c in consumers {
        if let Err(e) = c.await {
            problems.push(format!("consumer task: {e}"));
        }
    }
    if let Err(e) = read_dead_letters(&client, &log).await {
        problems.push(format!("{e:#}"));
    }
    match client.queue_describe(QUEUE_TOPIC, GROUP).await {
        Ok(stats) => {
            for s in stats {
                log.push(QueueEvent::Final {
                    partition: s.partition,
                    settled_below: s.settled_below,
                    high_watermark: s.high_watermark,
                    dead_letter_pending: s.dead_letter_pending,
                });
            }
        }
        Err(e) => problems.push(format!("describe the queue group: {e}")),
    }
    problems.extend(nemesis.crashes.iter().cloned());
    for (id, status) in cluster.exited() {
        problems.push(format!("node {id} exited on its own ({status})"));
    }
    let events = nemesis.events().to_vec();
    drop(nemesis);
    drop(cluster);

    let history = QueueHistory { events: std::mem::take(&mut *log.events.lock().expect("queue log")) };
    history.save(&history_path)?;
    let queue = check_queue(&history);
    let mut report = Report::empty();
    report.sends = queue.produced;
    report.acknowledged = queue.produced;
    let mut text = format!(
        "run {} (queue workload) seed {} faults {} seconds {}\n{queue}\nnemesis:\n",
        cfg.run,
        cfg.seed,
        cfg.faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(","),
        cfg.seconds
    );
    for e in &events {
        text.push_str(&format!("  {e}\n"));
    }
    for p in &problems {
        text.push_str(&format!("problem: {p}\n"));
    }
    for a in &queue.anomalies {
        text.push_str(&format!("  {a}\n"));
    }
    std::fs::write(&report_path, text)?;
    Ok(RunResult { report, events, problems, history_path, report_path, queue: Some(queue) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(consumer: &str, offset: u64, count: u32, deadline_ms: i64, start_us: u64) -> QueueEvent {
        QueueEvent::Delivered {
            consumer: consumer.into(),
            partition: 0,
            offset,
            value: format!("q-{offset}"),
            delivery_count: count,
            deadline_ms,
            lock_ms: 1000,
            start_us,
            end_us: start_us + 10,
        }
    }

    fn ack(consumer: &str, offsets: &[u64], already: &[u64], end_us: u64) -> QueueEvent {
        QueueEvent::Settle {
            consumer: consumer.into(),
            action: Action::Ack,
            partition: 0,
            offsets: offsets.to_vec(),
            outcome: SettleOutcome::Ok { already_settled: already.to_vec() },
            start_ms: 0,
            start_us: end_us - 5,
            end_us,
        }
    }

    fn produced(n: u64) -> Vec<QueueEvent> {
        (0..n).map(|o| QueueEvent::Produced { value: format!("q-{o}"), partition: 0, offset: o }).collect()
    }

    fn fin(hw: u64, settled: u64) -> QueueEvent {
        QueueEvent::Final { partition: 0, settled_below: settled, high_watermark: hw, dead_letter_pending: 0 }
    }

    fn kinds(h: Vec<QueueEvent>) -> Vec<QueueAnomalyKind> {
        check_queue(&QueueHistory { events: h }).anomalies.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn a_clean_history_with_a_redelivery_and_a_dead_letter_passes() {
        let mut h = produced(3);
        h.extend([
            delivered("a", 0, 1, 2000, 100),
            delivered("a", 1, 1, 2000, 100),
            // a's lock on 1 expired at 2000; b took it at 2500.
            delivered("b", 1, 2, 3500, 300),
            ack("a", &[0], &[], 200),
            ack("b", &[1], &[], 400),
            delivered("b", 2, 1, 3500, 300),
            QueueEvent::DeadLetter {
                partition: 0,
                offset: 2,
                value: "q-2".into(),
                delivery_count: 1,
                reason: "x".into(),
            },
            fin(3, 3),
        ]);
        let r = check_queue(&QueueHistory { events: h });
        assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
        assert_eq!((r.acked, r.dead_lettered, r.redeliveries), (2, 1, 1));
    }

    /// A release answered a few milliseconds after the leader applied it,
    /// and a second consumer locking the released event in between (as a
    /// consumer woken by the release does): not two holders. Logging the
    /// release with a time read after its answer made this an anomaly in
    /// queue runs (delivery 2 to the second consumer, the release logged
    /// a few milliseconds after that lock).
    #[tokio::test]
    async fn a_release_counts_from_the_moment_it_was_made() {
        let log = Log { events: Arc::default(), clock: crate::history::Recorder::new() };
        let lock_ms = 1000;
        let a_deadline = replog_proto::now_ms() + lock_ms;
        let held = QueueMessage {
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key: None,
            value: Bytes::from_static(b"q-0"),
            headers: Vec::new(),
            delivery_count: 1,
            lock_deadline_ms: a_deadline,
        };
        let applied = std::sync::Mutex::new(0i64);
        settle(&log, "a", Action::Release, 0, std::slice::from_ref(&held), async {
            // The leader applies the release, b's lock follows at once…
            let t = replog_proto::now_ms();
            *applied.lock().unwrap() = t;
            // …and the answer reaches the consumer on a later millisecond.
            while replog_proto::now_ms() <= t + 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(())
        })
        .await;
        let b_lock_start = *applied.lock().unwrap();
        let mut h = produced(1);
        h.push(delivered("a", 0, 1, a_deadline, 100));
        h.extend(log.events.lock().unwrap().drain(..));
        h.extend([delivered("b", 0, 2, b_lock_start + lock_ms, 150), ack("b", &[0], &[], 400), fin(1, 1)]);
        assert_eq!(kinds(h), vec![], "b took the event after a's release");
    }

    #[test]
    fn planted_violations_are_each_caught() {
        // Delivered again after an acknowledged ack.
        let mut h = produced(1);
        h.extend([
            delivered("a", 0, 1, 2000, 100),
            ack("a", &[0], &[], 200),
            delivered("b", 0, 2, 9000, 300),
            fin(1, 1),
        ]);
        assert!(kinds(h).contains(&QueueAnomalyKind::RedeliveredAfterAck));
        // Two consumers settle one event.
        let mut h = produced(1);
        h.extend([ack("a", &[0], &[], 200), ack("b", &[0], &[], 300), fin(1, 1)]);
        assert_eq!(kinds(h), vec![QueueAnomalyKind::DoubleSettle]);
        // A retried ack that says "settled already" is fine.
        let mut h = produced(1);
        h.extend([ack("a", &[0], &[], 200), ack("a", &[0], &[0], 300), fin(1, 1)]);
        assert!(kinds(h).is_empty());
        // Locked to b at 1500 while a held it until 2000, and a never released it.
        let mut h = produced(1);
        h.extend([
            delivered("a", 0, 1, 2000, 100),
            delivered("b", 0, 2, 2500, 150),
            ack("b", &[0], &[], 400),
            fin(1, 1),
        ]);
        assert_eq!(kinds(h), vec![QueueAnomalyKind::TwoHolders]);
        // ... unless a released it first.
        let mut h = produced(1);
        h.extend([
            delivered("a", 0, 1, 2000, 100),
            QueueEvent::Settle {
                consumer: "a".into(),
                action: Action::Release,
                partition: 0,
                offsets: vec![0],
                outcome: SettleOutcome::Ok { already_settled: vec![] },
                start_ms: 1200,
                start_us: 120,
                end_us: 130,
            },
            delivered("b", 0, 2, 2500, 150),
            ack("b", &[0], &[], 400),
            fin(1, 1),
        ]);
        assert!(kinds(h).is_empty());
        // An ack of unknown outcome may have settled an event.
        let mut h = produced(1);
        h.push(QueueEvent::Settle {
            consumer: "a".into(),
            action: Action::Ack,
            partition: 0,
            offsets: vec![0],
            outcome: SettleOutcome::Unknown { error: "timeout".into() },
            start_ms: 0,
            start_us: 1,
            end_us: 2,
        });
        h.push(fin(1, 1));
        assert!(kinds(h).is_empty());
        // Never settled, and a wrong value.
        let mut h = produced(2);
        h.extend([
            QueueEvent::Delivered {
                consumer: "a".into(),
                partition: 0,
                offset: 0,
                value: "other".into(),
                delivery_count: 1,
                deadline_ms: 10,
                lock_ms: 5,
                start_us: 1,
                end_us: 2,
            },
            ack("a", &[0], &[], 200),
            fin(2, 1),
        ]);
        let k = kinds(h);
        assert!(k.contains(&QueueAnomalyKind::NeverSettled) && k.contains(&QueueAnomalyKind::WrongValue), "{k:?}");
    }
}
