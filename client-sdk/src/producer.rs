//! The producer: key partitioning and per-partition batching.
//!
//! Each partition the producer writes to gets a queue and a sender task. The
//! task takes everything queued (up to the batch limits) as one batch, sends
//! it to the leader, and resolves every record's future with its offset.
//! One batch per partition is in flight at a time, so records from one
//! producer land in a partition in the order they were sent; while a batch
//! is in flight the next one fills, which is where throughput comes from.
//!
//! Idempotence (on by default): every batch carries a producer id (from the
//! controller) and the sequence number of its first record. When a retry
//! reaches a partition that already holds the batch — its acknowledgement
//! was lost to a failover — the partition answers with the original offset
//! instead of appending it again. After a batch fails for good, the sender
//! takes a new producer id, so a batch that may or may not have landed can
//! never be confused with the next one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use replog_proto::batch::{self, Record};
use replog_proto::pb::Acks;
use tokio::sync::{mpsc, oneshot};

use crate::client::Client;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// Most records in one batch.
    pub batch_max_records: usize,
    /// Most encoded bytes in one batch (keep below the broker's limit).
    pub batch_max_bytes: usize,
    /// How long a sender waits for more records before sending a batch
    /// that is not full. Zero sends whatever is queued at once.
    pub linger: Duration,
    /// Records queued per partition before `send` waits (back-pressure).
    pub queue_capacity: usize,
    /// Tag batches with a producer id and sequence so that retries are
    /// never appended twice.
    pub idempotent: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            batch_max_records: 10_000,
            batch_max_bytes: 1 << 20,
            linger: Duration::from_millis(2),
            queue_capacity: 100_000,
            idempotent: true,
        }
    }
}

struct Pending {
    record: Record,
    /// The record's offset; `None` when the broker assigned none (acks=none).
    reply: oneshot::Sender<Result<Option<u64>>>,
}

#[derive(Default)]
struct State {
    queues: HashMap<(String, u32), mpsc::Sender<Pending>>,
    round_robin: HashMap<String, u32>,
}

/// Sends records to topics. Cheap to clone.
#[derive(Clone)]
pub struct Producer {
    client: Client,
    config: ProducerConfig,
    state: Arc<Mutex<State>>,
}

/// A record accepted by the producer, resolving to the broker's answer for
/// its batch.
pub struct SendHandle {
    partition: u32,
    rx: oneshot::Receiver<Result<Option<u64>>>,
}

/// The broker's answer for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub partition: u32,
    /// The record's offset in the partition. `None` with acks=none: the
    /// broker answers before the batch is in the log, so no offset exists
    /// yet (and the record may never be appended).
    pub offset: Option<u64>,
}

impl SendHandle {
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Waits for the broker's answer for the record's batch, whatever the
    /// producer's acks setting.
    pub async fn ack(self) -> Result<Ack> {
        let offset = self.rx.await.map_err(|_| Error::Transport {
            addr: String::new(),
            message: "producer dropped before the batch was acknowledged".into(),
        })??;
        Ok(Ack { partition: self.partition, offset })
    }

    /// Waits for the record's acknowledgement with acks=all and returns
    /// `(partition, offset)`. With acks=none there is no offset to return:
    /// use [`SendHandle::ack`]; this fails with `InvalidArgument` once the
    /// broker has answered.
    pub async fn wait(self) -> Result<(u32, u64)> {
        let ack = self.ack().await?;
        let offset = ack.offset.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "partition {}: acks=none assigns no offset when the broker answers; use SendHandle::ack",
                ack.partition
            ))
        })?;
        Ok((ack.partition, offset))
    }
}

pub use replog_proto::now_ms;

impl Producer {
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        Producer { client, config, state: Arc::default() }
    }

    /// Sends one record and waits for its acknowledgement (acks=all; see
    /// [`SendHandle::wait`]). The partition is chosen by key hash, or
    /// round-robin when there is no key.
    pub async fn send(&self, topic: &str, key: Option<Bytes>, value: Bytes) -> Result<(u32, u64)> {
        self.enqueue(topic, None, Record::new(key, value, now_ms())).await?.wait().await
    }

    /// Queues one record and returns at once with a handle to its result.
    /// Records queued one after another for the same partition are written
    /// in that order.
    pub async fn enqueue(&self, topic: &str, partition: Option<u32>, record: Record) -> Result<SendHandle> {
        // A record the batch format cannot hold would make its whole batch
        // corrupt: refuse it alone, here.
        record.check_encodable().map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let partitions = self.client.topic(topic).await?.partitions.len() as u32;
        if partitions == 0 {
            return Err(Error::InvalidArgument(format!("topic {topic:?} has no partitions")));
        }
        let partition = match partition {
            Some(p) => p,
            None => match &record.key {
                Some(k) => partition_for_key(k, partitions),
                None => {
                    let mut st = self.state.lock().expect("producer lock");
                    let rr = st.round_robin.entry(topic.to_string()).or_insert(0);
                    *rr = rr.wrapping_add(1);
                    *rr % partitions
                }
            },
        };
        if partition >= partitions {
            return Err(Error::Broker {
                code: replog_proto::codes::ErrorCode::UnknownPartition,
                message: format!("topic {topic:?} has {partitions} partitions; {partition} is out of range"),
                leader: None,
            });
        }
        let tx = self.queue(topic, partition);
        let (reply, rx) = oneshot::channel();
        tx.send(Pending { record, reply })
            .await
            .map_err(|_| Error::Transport { addr: String::new(), message: "producer queue closed".into() })?;
        Ok(SendHandle { partition, rx })
    }

    fn queue(&self, topic: &str, partition: u32) -> mpsc::Sender<Pending> {
        let mut st = self.state.lock().expect("producer lock");
        st.queues
            .entry((topic.to_string(), partition))
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(self.config.queue_capacity);
                tokio::spawn(run_partition(self.client.clone(), self.config.clone(), topic.to_string(), partition, rx));
                tx
            })
            .clone()
    }
}

/// The idempotence state of one partition sender.
#[derive(Default)]
struct Sequence {
    /// `(producer id, epoch)`, taken on first use and after a failure.
    id: Option<(i64, i16)>,
    next: i32,
}

async fn run_partition(
    client: Client,
    cfg: ProducerConfig,
    topic: String,
    partition: u32,
    mut rx: mpsc::Receiver<Pending>,
) {
    let mut seq = Sequence::default();
    while let Some(first) = rx.recv().await {
        // The limit is on the encoded batch, header included.
        let mut size = batch::HEADER_LEN + first.record.encoded_len();
        let mut pending = vec![first];
        let linger_until = tokio::time::Instant::now() + cfg.linger;
        while pending.len() < cfg.batch_max_records && size < cfg.batch_max_bytes {
            let next = match rx.try_recv() {
                Ok(p) => p,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => match tokio::time::timeout_at(linger_until, rx.recv()).await {
                    Ok(Some(p)) => p,
                    _ => break,
                },
            };
            let len = next.record.encoded_len();
            if size + len > cfg.batch_max_bytes {
                // Too big for this batch: it starts the next one.
                send_batch(&client, &cfg, &mut seq, &topic, partition, std::mem::take(&mut pending)).await;
                size = batch::HEADER_LEN;
            }
            size += len;
            pending.push(next);
        }
        send_batch(&client, &cfg, &mut seq, &topic, partition, pending).await;
    }
}

async fn send_batch(
    client: &Client,
    cfg: &ProducerConfig,
    seq: &mut Sequence,
    topic: &str,
    partition: u32,
    pending: Vec<Pending>,
) {
    if pending.is_empty() {
        return;
    }
    let count = pending.len() as i32;
    let mut b = batch::BatchBuilder::with_capacity(pending.iter().map(|p| p.record.encoded_len()).sum());
    let mut tagged = false;
    // As in Kafka, idempotence needs acks=all: with acks=none the producer
    // never learns whether a batch landed, so it cannot keep its sequence.
    if cfg.idempotent && cfg.acks == Acks::All {
        if seq.id.is_none() || seq.next.checked_add(count).is_none() {
            match client.init_producer().await {
                Ok(id) => *seq = Sequence { id: Some(id), next: 0 },
                Err(e) => {
                    for p in pending {
                        let _ = p.reply.send(Err(e.clone()));
                    }
                    return;
                }
            }
        }
        if let Some((producer_id, epoch)) = seq.id {
            b = b.producer(batch::ProducerInfo { producer_id, epoch, base_sequence: seq.next });
            tagged = true;
        }
    }
    for p in &pending {
        b.push(&p.record);
    }
    let result = client.produce_batch(topic, partition, b.build(), cfg.acks).await;
    if tagged {
        match &result {
            Ok(_) => seq.next += count,
            // Whether it landed is unknown: start a fresh sequence space.
            Err(_) => seq.id = None,
        }
    }
    for (i, p) in pending.into_iter().enumerate() {
        let r = match &result {
            Ok(resp) => Ok(resp.base_offset.map(|base| base + i as u64)),
            Err(e) => Err(e.clone()),
        };
        let _ = p.reply.send(r);
    }
}

/// The partition for a key: murmur2 of the key, made positive, modulo the
/// partition count — the same choice Kafka's default partitioner makes, so
/// keyed data lands alike in both.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h = SEED ^ len as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rem = chunks.remainder();
    if rem.len() >= 3 {
        h ^= (rem[2] as u32) << 16;
    }
    if rem.len() >= 2 {
        h ^= (rem[1] as u32) << 8;
    }
    if !rem.is_empty() {
        h ^= rem[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_reference_values() {
        // Reference values from Kafka's Utils.murmur2 (as signed ints).
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32, -58897971);
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }

    #[test]
    fn same_key_same_partition() {
        for n in 1..20 {
            assert_eq!(partition_for_key(b"user-42", n), partition_for_key(b"user-42", n));
            assert!(partition_for_key(b"user-42", n) < n);
        }
    }
}
