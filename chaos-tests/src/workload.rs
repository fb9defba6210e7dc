//! The workload of a chaos run: producers and consumers that record
//! everything they see, and the final reads after the faults heal.
//!
//! - **Producers** ([`Workload::start`]): `producers` SDK [`Producer`]s with
//!   acks=all, each sending the unique values `w-<p>-<seq>`
//!   ([`value_name`]) round-robin over the partitions at a bounded rate,
//!   with at most `max_in_flight` sends outstanding (so an outage slows the
//!   producer instead of queueing without bound). Every attempt is recorded
//!   with its [`Outcome::from_send`]: acknowledged at an offset, refused, or
//!   indeterminate. The idempotent producer is on unless
//!   [`WorkloadConfig::idempotent`] turns it off.
//! - **Consumers**: one per partition, polling from offset 0 at the leader
//!   for the whole run, recording every non-empty poll. A failed poll keeps
//!   the position and tries again, so one consumer is one reading session.
//! - **Final reads** ([`final_reads`]): once the cluster is healed and every
//!   partition has a leader, each partition is read in full from its leader
//!   and from every replica (`from_replica`), the replicas once their high
//!   watermark has caught up with the leader's (awaited, bounded).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use replog_client::producer::now_ms;
use replog_client::{Client, Error as SdkError, FetchOptions, PartitionReader, Producer, ProducerConfig, Record};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::history::{FinalRead, Outcome, PollOp, Recorder, SendOp, read_records, value_name};

/// Workload parameters.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub topic: String,
    pub partitions: u32,
    /// Number of producers (values `w-1-*` … `w-K-*`).
    pub producers: u32,
    /// Sends per second per producer.
    pub rate: u32,
    /// Outstanding sends per producer at most.
    pub max_in_flight: usize,
    /// The SDK's idempotent producer (producer id + sequence per batch, so
    /// a retried batch is never appended twice). Off, a retry after an
    /// indeterminate failure may land twice: the checker reports that as
    /// a `duplicate`.
    pub idempotent: bool,
}

/// Counters shared by the workload's tasks.
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub in_flight: AtomicUsize,
    pub polls: AtomicU64,
    pub poll_errors: AtomicU64,
}

/// Running producer and consumer tasks.
pub struct Workload {
    stop_producers: watch::Sender<bool>,
    stop_consumers: watch::Sender<bool>,
    producers: Vec<JoinHandle<()>>,
    consumers: Vec<JoinHandle<Vec<String>>>,
    pub counters: Arc<Counters>,
}

impl Workload {
    /// Starts the producers and consumers.
    pub fn start(client: Client, rec: Recorder, cfg: WorkloadConfig) -> Workload {
        let (stop_producers, sp) = watch::channel(false);
        let (stop_consumers, sc) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let producers = (1..=cfg.producers)
            .map(|p| tokio::spawn(produce(p, client.clone(), rec.clone(), cfg.clone(), sp.clone(), counters.clone())))
            .collect();
        let consumers = (0..cfg.partitions)
            .map(|p| {
                tokio::spawn(consume(p, client.clone(), rec.clone(), cfg.topic.clone(), sc.clone(), counters.clone()))
            })
            .collect();
        Workload { stop_producers, stop_consumers, producers, consumers, counters }
    }

    /// Stops sending and waits until every outstanding send has resolved
    /// (bounded by the client's retry deadline).
    pub async fn stop_producers(&mut self) {
        let _ = self.stop_producers.send(true);
        for h in self.producers.drain(..) {
            let _ = h.await;
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
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / cfg.rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut tasks = Vec::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        let permit = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore open"),
        };
        let value = value_name(p, seq);
        seq += 1;
        let start_us = rec.now_us();
        counters.sent.fetch_add(1, Ordering::Relaxed);
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let record = Record::new(None, Bytes::from(value.clone()), now_ms());
        let handle = producer.enqueue(&cfg.topic, None, record).await;
        let (rec, topic, counters) = (rec.clone(), cfg.topic.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let result: Result<(u32, u64), SdkError> = match handle {
                Ok(h) => h.wait().await,
                Err(e) => Err(e),
            };
            let outcome = Outcome::from_send(&result);
            if outcome.is_ok() {
                counters.acked.fetch_add(1, Ordering::Relaxed);
            }
            rec.record(SendOp {
                producer: format!("p{p}"),
                topic,
                partition: None,
                value,
                outcome,
                start_us,
                end_us: rec.now_us(),
            });
            counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        }));
        tasks.retain(|t| !t.is_finished());
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

/// What the final reads found beside the records: replicas that did not
/// catch up, reads that failed.
#[derive(Debug, Default)]
pub struct FinalReadNotes {
    pub notes: Vec<String>,
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

/// Reads a partition from 0 to its end, at the leader or at `addr`,
/// retrying transient failures until `deadline`.
async fn read_all(
    client: &Client,
    topic: &str,
    partition: u32,
    addr: Option<&str>,
    deadline: Instant,
) -> Result<(Vec<replog_client::ConsumedRecord>, u64), SdkError> {
    loop {
        let mut r = PartitionReader::new(client.clone(), topic, partition, 0);
        if let Some(a) = addr {
            r = r.from_replica(a);
        }
        match r.read_to_end().await {
            Ok(recs) => return Ok((recs, r.position())),
            Err(e) if Instant::now() < deadline && !matches!(e, SdkError::Corrupt(_)) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads every partition of `topic` from its leader and from every replica
/// and records the reads. `addrs` maps node ids to addresses. A replica is
/// read once its high watermark equals the leader's (awaited up to
/// `limit`); one that never catches up is read anyway and named in the
/// notes.
pub async fn final_reads(
    client: &Client,
    rec: &Recorder,
    topic: &str,
    addrs: &BTreeMap<u64, String>,
    limit: Duration,
) -> Result<FinalReadNotes> {
    let mut notes = FinalReadNotes::default();
    let info = client.describe_topic(topic).await?;
    for p in &info.partitions {
        let partition = p.partition;
        let deadline = Instant::now() + limit;
        // Wait until every replica has what the leader has.
        loop {
            let leader_hw = high_watermark(client, topic, partition, None).await;
            let mut behind = Vec::new();
            if let Ok(hw) = &leader_hw {
                for r in &p.replicas {
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
        for r in &p.replicas {
            readers.push((format!("replica-{r}"), Some(addrs[r].as_str())));
        }
        for (name, addr) in readers {
            let start_us = rec.now_us();
            match read_all(client, topic, partition, addr, deadline.max(Instant::now() + Duration::from_secs(10))).await
            {
                Ok((records, end)) => rec.record(FinalRead {
                    reader: name,
                    topic: topic.to_string(),
                    partition,
                    start_offset: 0,
                    high_watermark: end,
                    records: read_records(&records),
                    start_us,
                    end_us: rec.now_us(),
                }),
                Err(e) => notes.notes.push(format!("{topic}/{partition}: final read ({name}) failed: {e}")),
            }
        }
    }
    Ok(notes)
}
