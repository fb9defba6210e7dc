//! The producer: key partitioning, a bounded buffer, per-partition batching,
//! pipelined sending that keeps order, and compression.
//!
//! ```text
//! enqueue ──► buffer (bytes and records, bounded: wait or fail when full)
//!               │ one queue per partition
//!               ▼
//!             batcher task ── forms a batch when the window has room,
//!               │              encodes and compresses it
//!               ▼
//!             sender task ─── up to `max_in_flight` batches outstanding,
//!                              settled strictly in send order
//! ```
//!
//! **Order.** Records enqueued one after another for one partition are
//! written in that order. With several batches in flight the broker may
//! receive them out of order; the idempotent producer's sequence numbers
//! (producer id, epoch, base sequence per batch; checked in the partition's
//! state machine) make the partition refuse a batch that would leave a gap
//! (`OUT_OF_ORDER_SEQUENCE`). The sender settles its window front first:
//! a batch refused that way while an earlier one was still outstanding is
//! sent again, byte for byte, once everything before it is settled — if an
//! earlier attempt of it did land after all, the partition recognises the
//! sequence and answers with the original offset. Without idempotence (or
//! with acks=none, where the producer never learns whether a batch landed)
//! nothing can restore order, so such a producer keeps one batch in flight
//! per partition.
//!
//! **Failures.** The client retries NOT_LEADER / UNAVAILABLE / transport
//! errors within its deadline. When the batch at the front of the window
//! fails for good, its records get the error (indeterminate if an attempt's
//! outcome is unknown) and the sender *fences* its sequence: it moves to the
//! next epoch of its producer id, which the partition treats as a new
//! sequence space and which makes it refuse any batch of the old epoch that
//! arrives late. The batches behind the failed one are then settled in
//! order: one that landed keeps its offset; one the partition definitely
//! refused is re-stamped with the new epoch and sent again (it cannot have
//! landed); one whose outcome is unknown is reported indeterminate — never
//! re-sent under the new epoch, which could write it twice. No batch of the
//! new epoch is sent while one of the old is unsettled, so nothing sent
//! later can land before something sent earlier. The partition accepts any
//! sequence as the start of a new epoch (or of a producer it does not
//! know), so the first batch of a sequence space is sent alone, and the
//! window opens once it has landed.
//!
//! **Memory.** Every record holds its encoded size in the buffer from
//! `enqueue` until its batch is settled. When the buffer is full, `enqueue`
//! waits (at most [`OnFull::Block`]'s timeout) or fails at once
//! ([`OnFull::Fail`]) with [`Error::BufferFull`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use replog_proto::batch::{self, Compression, ProducerInfo, Record};
use replog_proto::codes::ErrorCode;
use replog_proto::pb::{self, Acks};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::client::Client;
use crate::error::{Error, Result};

/// Most batches in flight per partition with idempotence: the partition
/// remembers the last 5 batches of each producer, so a retry of the oldest
/// batch in flight is still recognised when the 4 after it have landed.
pub const MAX_IN_FLIGHT_IDEMPOTENT: usize = 5;

/// What `enqueue` does when the buffer has no room for a record.
///
/// ```
/// use std::time::Duration;
/// use replog_client::{Error, OnFull, Producer, ProducerConfig, Record};
///
/// // Wait up to 100 ms for room, then fail.
/// let patient =
///     ProducerConfig { on_full: OnFull::Block { timeout: Duration::from_millis(100) }, ..Default::default() };
/// // Never wait: a caller that must not stall sheds what does not fit.
/// let shedding = ProducerConfig { on_full: OnFull::Fail, ..Default::default() };
/// assert!(patient.validate().is_ok() && shedding.validate().is_ok());
///
/// async fn send_or_shed(producer: &Producer, record: Record, shed: &mut u64) -> replog_client::Result<()> {
///     match producer.enqueue("metrics", None, record).await {
///         Ok(_handle) => Ok(()), // dropping the handle does not cancel the record
///         Err(Error::BufferFull { .. }) => {
///             *shed += 1;
///             Ok(())
///         }
///         Err(e) => Err(e),
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Wait for room, at most this long, then fail with [`Error::BufferFull`].
    Block { timeout: Duration },
    /// Fail at once with [`Error::BufferFull`].
    Fail,
}

/// Producer settings. The defaults suit most uses.
///
/// ```
/// use std::time::Duration;
/// use replog_client::{Compression, OnFull, ProducerConfig};
/// let cfg = ProducerConfig {
///     compression: Compression::Lz4,
///     buffer_bytes: 64 << 20,
///     on_full: OnFull::Block { timeout: Duration::from_secs(5) },
///     ..ProducerConfig::default()
/// };
/// assert!(cfg.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// Most records in one batch.
    pub batch_max_records: usize,
    /// Most encoded bytes in one batch, header included, before
    /// compression. A broker refuses batches above its `max_batch_bytes`
    /// (1 MiB by default), compressed or not, so keep this at or below it;
    /// a record that cannot fit a batch is refused at `enqueue`.
    pub batch_max_bytes: usize,
    /// How long a partition's batch waits for more records once it has
    /// one, if it is not full. Zero sends whatever is queued at once.
    pub linger: Duration,
    /// Most encoded record bytes held by the producer, from `enqueue` until
    /// the record's batch is answered (32 MiB by default).
    pub buffer_bytes: usize,
    /// Most records held by the producer, likewise.
    pub buffer_records: usize,
    /// What `enqueue` does when the buffer is full.
    pub on_full: OnFull,
    /// Most batches sent to one partition and not yet answered. Above 1
    /// only with idempotence and acks=all, and at most
    /// [`MAX_IN_FLIGHT_IDEMPOTENT`]; otherwise 1 is used, since nothing
    /// else keeps order.
    pub max_in_flight: usize,
    /// Codec for the records of each batch. The broker stores batches as
    /// sent; consumers decompress.
    pub compression: Compression,
    /// Tag batches with a producer id and sequence so that retries are
    /// never appended twice and pipelined batches keep their order.
    pub idempotent: bool,
    /// Records without a key (and without a chosen partition) go to one
    /// partition of their topic until this many encoded bytes have gone
    /// there, then to the next (see [`DEFAULT_STICKY_BYTES`]).
    pub sticky_bytes: usize,
}

/// How many bytes of keyless records go to one partition before the next
/// takes over ("uniform sticky" partitioning, as in Kafka's producer).
/// Spreading each record over the partitions in turn would give every
/// partition a small batch per linger, and each batch costs every replica
/// a Raft entry, an fsync'd append and an apply; sticking to one partition
/// makes one larger batch instead, while over time every partition gets
/// the same share. On 3 local nodes at 10,000 records/s of 100 B over
/// 6 partitions (2 producers): 3,150–3,290 batches in 10 s instead of
/// 9,430–9,460 and half the nodes' CPU; with the 2 ms linger, p99
/// 6.0–6.9 ms against 11.6–12.6 ms before (each record to the next
/// partition, 5 ms linger).
///
/// The run is one full batch (`batch_max_bytes`' default, 1 MiB), the
/// rule of Kafka's partitioner: at saturation a longer run lets more of a
/// partition's records wait for the batch in flight, so batches grow. On
/// the same nodes, 3,000,000 records of 100 B from 4 producers as fast as
/// they go: 533,003 and 535,633 records/s with 1 MiB runs against
/// 389,726 and 402,206 with 64 KiB, the nodes' CPU 5.5 s against 9.1 s
/// (about 1,300 records per batch against 470). At 100,000 records/s the
/// p99 was 6.8–7.3 ms against 7.7–8.2 ms; at 10,000/s 5.8–6.5 ms against
/// 6.3–6.4 ms.
pub const DEFAULT_STICKY_BYTES: usize = 1 << 20;

/// How long a batch waits for more records by default. At a steady load
/// a longer linger makes fewer, larger batches, and each batch costs every
/// replica a Raft entry, an fsync'd append and an apply; a shorter one
/// keeps records waiting less. With keyless records sticking to one
/// partition at a time (see [`DEFAULT_STICKY_BYTES`]), on 3 local nodes
/// at 10,000 records/s of 100 B over 6 partitions: p50 / p99 of 3.0 /
/// 5.6 ms at 1 ms of linger, 4.0 / 6.7 ms at 2 ms and 5.5 / 9.5 ms at 5 ms;
/// at 100,000 records/s 4.4 / 11.8, 4.7 / 8.8 and 6.7 / 14.7 ms. A lone
/// record waits that long; set `linger` to zero to send at once.
///
/// (Those figures are from tokio's timer, which ended a 2 ms linger
/// after 2–3 ms. The linger is now timed to tens of microseconds (see
/// `clock`): at 10,000 records/s p50 / p99 2.74–2.77 / 5.9–6.0 ms
/// against 3.40–3.47 / 6.0–7.0, at 100,000/s 3.0 / 5.3–6.1 against
/// 4.1 / 6.7 ms, for about a third more batches and a quarter more of
/// the nodes' CPU; a 3 ms linger timed so gives what 2 ms gave before.)
pub const DEFAULT_LINGER: Duration = Duration::from_millis(2);

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            batch_max_records: 10_000,
            batch_max_bytes: 1 << 20,
            linger: DEFAULT_LINGER,
            buffer_bytes: 32 << 20,
            buffer_records: 1_000_000,
            on_full: OnFull::Block { timeout: Duration::from_secs(60) },
            max_in_flight: MAX_IN_FLIGHT_IDEMPOTENT,
            compression: Compression::None,
            idempotent: true,
            sticky_bytes: DEFAULT_STICKY_BYTES,
        }
    }
}

impl ProducerConfig {
    /// Checks fields against each other.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.batch_max_records == 0 {
            return Err("batch_max_records must be at least 1".into());
        }
        if self.batch_max_bytes <= batch::HEADER_LEN {
            return Err(format!("batch_max_bytes must exceed the {}-byte batch header", batch::HEADER_LEN));
        }
        if self.buffer_bytes == 0 || self.buffer_bytes > u32::MAX as usize {
            return Err("buffer_bytes must be 1 byte to 4 GiB".into());
        }
        if self.buffer_records == 0 || self.buffer_records > u32::MAX as usize {
            return Err("buffer_records must be 1 to 4 billion".into());
        }
        if self.max_in_flight == 0 {
            return Err("max_in_flight must be at least 1".into());
        }
        if self.sticky_bytes == 0 {
            return Err("sticky_bytes must be at least 1".into());
        }
        if self.sequenced() && self.max_in_flight > MAX_IN_FLIGHT_IDEMPOTENT {
            return Err(format!(
                "max_in_flight is at most {MAX_IN_FLIGHT_IDEMPOTENT} with idempotence: \
                 the broker recognises retries among a producer's last {MAX_IN_FLIGHT_IDEMPOTENT} batches"
            ));
        }
        Ok(())
    }

    /// Whether batches carry a producer id and sequence. As with Kafka,
    /// idempotence needs acks=all: with acks=none the producer never learns
    /// whether a batch landed, so it cannot keep its sequence.
    fn sequenced(&self) -> bool {
        self.idempotent && self.acks == Acks::All
    }

    /// The window actually used: order needs sequences beyond one batch.
    fn window(&self) -> usize {
        if self.sequenced() { self.max_in_flight } else { 1 }
    }
}

/// Counters of one producer, for dashboards and tests. Read them with the
/// methods of the same names; [`Producer::stats`] gives a producer's.
///
/// ```
/// use replog_client::{Producer, ProducerStats};
///
/// fn summary(s: &ProducerStats) -> String {
///     format!(
///         "{} records ({} B) buffered, {} batches in flight, {} sent, {} resent, {} fences",
///         s.buffered_records(),
///         s.buffered_bytes(),
///         s.batches_in_flight(),
///         s.batches_sent(),
///         s.batches_resent(),
///         s.fences(),
///     )
/// }
/// # fn report(producer: &Producer) {
/// println!("{}", summary(producer.stats()));
/// # }
/// assert_eq!(
///     summary(&ProducerStats::default()),
///     "0 records (0 B) buffered, 0 batches in flight, 0 sent, 0 resent, 0 fences"
/// );
/// ```
#[derive(Debug, Default)]
pub struct ProducerStats {
    /// Records held in the buffer now (queued, batched or in flight).
    pub buffered_records: AtomicU64,
    /// Their encoded bytes.
    pub buffered_bytes: AtomicU64,
    /// Batches sent and not yet answered, over all partitions.
    pub batches_in_flight: AtomicU64,
    /// Batches sent for the first time.
    pub batches_sent: AtomicU64,
    /// Batches sent again after the partition refused them as out of
    /// sequence, or re-stamped after a fence.
    pub batches_resent: AtomicU64,
    /// Fences: a batch failed for good and its partition's sender moved to
    /// a new epoch.
    pub fences: AtomicU64,
    /// Most batches ever in flight at once to one partition.
    pub max_in_flight_seen: AtomicU64,
}

impl ProducerStats {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn buffered_records(&self) -> u64 {
        Self::get(&self.buffered_records)
    }

    pub fn buffered_bytes(&self) -> u64 {
        Self::get(&self.buffered_bytes)
    }

    pub fn batches_in_flight(&self) -> u64 {
        Self::get(&self.batches_in_flight)
    }

    pub fn batches_sent(&self) -> u64 {
        Self::get(&self.batches_sent)
    }

    pub fn batches_resent(&self) -> u64 {
        Self::get(&self.batches_resent)
    }

    pub fn fences(&self) -> u64 {
        Self::get(&self.fences)
    }

    pub fn max_in_flight_seen(&self) -> u64 {
        Self::get(&self.max_in_flight_seen)
    }
}

/// The buffer every record holds room in until its batch is answered.
struct Buffer {
    bytes: Arc<Semaphore>,
    records: Arc<Semaphore>,
    stats: Arc<ProducerStats>,
    /// Woken whenever the buffer empties.
    drained: Notify,
}

/// A record's room in the buffer, given back when dropped.
struct Reservation {
    buffer: Arc<Buffer>,
    bytes: u64,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let s = &self.buffer.stats;
        s.buffered_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        if s.buffered_records.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.buffer.drained.notify_waiters();
        }
    }
}

struct Pending {
    record: Record,
    waiter: Waiter,
}

/// A record's caller, once the record is encoded into its batch.
struct Waiter {
    /// The record's offset; `None` when the broker assigned none (acks=none).
    reply: oneshot::Sender<Result<Option<u64>>>,
    /// Released once the reply is sent.
    _room: Option<Reservation>,
}

#[derive(Default)]
struct State {
    /// Each topic's partition queues, by partition (looked up by `&str`
    /// for every record, so without building a key).
    queues: HashMap<String, HashMap<u32, mpsc::UnboundedSender<Pending>>>,
    sticky: HashMap<String, Sticky>,
}

/// Where a topic's keyless records go now, and how many bytes of them
/// have gone there.
struct Sticky {
    partition: u32,
    bytes: usize,
}

impl Sticky {
    /// The first partition is drawn at random, so that producers starting
    /// together spread out.
    fn new() -> Sticky {
        Sticky { partition: rand::random::<u32>(), bytes: 0 }
    }

    /// The partition for a keyless record of `size` bytes: each partition
    /// takes `limit` bytes in turn.
    fn pick(&mut self, partitions: u32, size: usize, limit: usize) -> u32 {
        if self.bytes >= limit {
            *self = Sticky { partition: self.partition.wrapping_add(1), bytes: 0 };
        }
        // Kept in range as the topic's partition count is now.
        self.partition %= partitions;
        self.bytes += size;
        self.partition
    }
}

/// Sends records to topics. Cheap to clone; clones share the buffer, the
/// partition senders and the stats.
///
/// ```no_run
/// # async fn demo() -> replog_client::Result<()> {
/// use bytes::Bytes;
/// use replog_client::{Client, Producer, ProducerConfig, Record};
/// let client = Client::connect(["127.0.0.1:7001"]).await?;
/// let producer = Producer::new(client, ProducerConfig::default());
/// // One await: queued, sent, acknowledged.
/// let (partition, offset) = producer.send("events", Some(Bytes::from("user-42")), Bytes::from("signed up")).await?;
/// // Two steps: enqueue returns once the record holds its place in the
/// // order of its partition; the handle resolves when its batch is answered.
/// let record = Record::new(None, Bytes::from("clicked"), replog_client::producer::now_ms())
///     .with_header("trace-id", Bytes::from("5f2c"));
/// let handle = producer.enqueue("events", None, record).await?;
/// let ack = handle.await?;
/// # let _ = (partition, offset, ack); Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    client: Client,
    config: ProducerConfig,
    /// Why `config` is unusable, reported by every enqueue.
    config_error: Option<String>,
    buffer: Arc<Buffer>,
    state: Arc<Mutex<State>>,
}

/// A record accepted by the producer: a future of the broker's answer for
/// its batch (an [`Ack`]). Dropping it does not cancel the record.
///
/// Enqueueing many records before awaiting any lets the producer batch and
/// pipeline them:
///
/// ```no_run
/// use bytes::Bytes;
/// use replog_client::{Producer, Record, now_ms};
///
/// # async fn run(producer: Producer) -> replog_client::Result<()> {
/// let mut handles = Vec::new();
/// for i in 0..1_000 {
///     let key = Bytes::from(format!("user-{}", i % 10));
///     let record = Record::new(Some(key), Bytes::from(format!("event {i}")), now_ms());
///     handles.push(producer.enqueue("events", None, record).await?);
/// }
/// for handle in handles {
///     let (partition, offset) = handle.wait().await?;
///     println!("events/{partition} @{offset}");
/// }
/// # Ok(()) }
/// ```
pub struct SendHandle {
    partition: u32,
    rx: oneshot::Receiver<Result<Option<u64>>>,
}

/// The broker's answer for one record.
///
/// ```no_run
/// use replog_client::{Acks, Client, Producer, ProducerConfig, Record};
///
/// # async fn run(client: Client) -> replog_client::Result<()> {
/// // acks=none: the leader answers before the batch is in the log.
/// let producer = Producer::new(client, ProducerConfig { acks: Acks::None, ..Default::default() });
/// let record = Record::new(None, "ping".into(), replog_client::now_ms());
/// let ack = producer.enqueue("heartbeats", None, record).await?.ack().await?;
/// match ack.offset {
///     Some(offset) => println!("heartbeats/{} @{offset}", ack.partition),
///     None => println!("heartbeats/{}: accepted, no offset yet", ack.partition),
/// }
/// # Ok(()) }
/// ```
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
    /// producer's acks setting. The same as awaiting the handle.
    pub async fn ack(self) -> Result<Ack> {
        self.await
    }

    /// Waits for the record's acknowledgement with acks=all and returns
    /// `(partition, offset)`. With acks=none there is no offset to return:
    /// use [`SendHandle::ack`]; this fails with `InvalidArgument` once the
    /// broker has answered.
    pub async fn wait(self) -> Result<(u32, u64)> {
        let ack = self.await?;
        let offset = ack.offset.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "partition {}: acks=none assigns no offset when the broker answers; use SendHandle::ack",
                ack.partition
            ))
        })?;
        Ok((ack.partition, offset))
    }
}

impl Future for SendHandle {
    type Output = Result<Ack>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Ack>> {
        let partition = self.partition;
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            let offset = r.map_err(|_| Error::Transport {
                addr: String::new(),
                message: "producer dropped before the batch was acknowledged".into(),
            })??;
            Ok(Ack { partition, offset })
        })
    }
}

pub use replog_proto::now_ms;

impl Producer {
    /// A producer over `client`. An invalid `config` (see
    /// [`ProducerConfig::validate`]) makes every `enqueue` fail with
    /// `InvalidArgument`.
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        let config_error = config.validate().err();
        let stats = Arc::new(ProducerStats::default());
        let clamp = |n: usize| n.clamp(1, u32::MAX as usize);
        let buffer = Arc::new(Buffer {
            bytes: Arc::new(Semaphore::new(clamp(config.buffer_bytes))),
            records: Arc::new(Semaphore::new(clamp(config.buffer_records))),
            stats,
            drained: Notify::new(),
        });
        Producer { client, config, config_error, buffer, state: Arc::default() }
    }

    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }

    /// The producer's counters (shared by its clones).
    pub fn stats(&self) -> &ProducerStats {
        &self.buffer.stats
    }

    /// Sends one record and waits for its acknowledgement (acks=all; see
    /// [`SendHandle::wait`]). The partition is chosen by key hash
    /// ([`partition_for_key`]), or the sticky partition when there is no
    /// key (see [`DEFAULT_STICKY_BYTES`]).
    pub async fn send(&self, topic: &str, key: Option<Bytes>, value: Bytes) -> Result<(u32, u64)> {
        self.enqueue(topic, None, Record::new(key, value, now_ms())).await?.wait().await
    }

    /// Queues one record and returns a handle to its result — a future of
    /// its [`Ack`] — once the record holds room in the buffer and its place
    /// in its partition's order: records enqueued one after another (each
    /// `enqueue` awaited before the next) for one partition are written in
    /// that order. Waits while the buffer is full, as `on_full` says.
    ///
    /// The partition is `partition` if given, else [`partition_for_key`]
    /// of the key, else the topic's sticky partition (see
    /// [`DEFAULT_STICKY_BYTES`]). A record that the batch format cannot
    /// hold, or that is larger than `batch_max_bytes` or the buffer, is
    /// refused here with `InvalidArgument`, before anything is sent.
    pub async fn enqueue(&self, topic: &str, partition: Option<u32>, record: Record) -> Result<SendHandle> {
        if let Some(e) = &self.config_error {
            return Err(Error::InvalidArgument(format!("producer config: {e}")));
        }
        // A record the batch format cannot hold would make its whole batch
        // corrupt: refuse it alone, here.
        record.check_encodable().map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let size = record.encoded_len();
        let most = (self.config.batch_max_bytes - batch::HEADER_LEN).min(self.config.buffer_bytes);
        if size > most {
            return Err(Error::InvalidArgument(format!(
                "record of {size} bytes encoded is larger than the producer takes ({most} bytes: \
                 batch_max_bytes {} less the batch header, buffer_bytes {})",
                self.config.batch_max_bytes, self.config.buffer_bytes
            )));
        }
        let partitions = self.client.partition_count(topic).await?;
        if partitions == 0 {
            return Err(Error::InvalidArgument(format!("topic {topic:?} has no partitions")));
        }
        let partition = match partition {
            Some(p) => p,
            None => match &record.key {
                Some(k) => partition_for_key(k, partitions),
                None => {
                    let mut st = self.state.lock().expect("producer lock");
                    if !st.sticky.contains_key(topic) {
                        st.sticky.insert(topic.to_string(), Sticky::new());
                    }
                    st.sticky.get_mut(topic).expect("inserted").pick(partitions, size, self.config.sticky_bytes)
                }
            },
        };
        if partition >= partitions {
            return Err(Error::Broker {
                code: ErrorCode::UnknownPartition,
                message: format!("topic {topic:?} has {partitions} partitions; {partition} is out of range"),
                leader: None,
            });
        }
        let room = self.reserve(size).await?;
        let tx = self.queue(topic, partition);
        let (reply, rx) = oneshot::channel();
        tx.send(Pending { record, waiter: Waiter { reply, _room: Some(room) } })
            .map_err(|_| Error::Transport { addr: String::new(), message: "producer queue closed".into() })?;
        Ok(SendHandle { partition, rx })
    }

    /// Waits until every record in the buffer has been answered (records
    /// enqueued meanwhile are waited for too).
    pub async fn flush(&self) {
        loop {
            let drained = self.buffer.drained.notified();
            if self.buffer.stats.buffered_records() == 0 {
                return;
            }
            drained.await;
        }
    }

    /// Takes room for a record of `size` bytes in the buffer.
    async fn reserve(&self, size: usize) -> Result<Reservation> {
        let b = &self.buffer;
        // `size` fits u32: it is at most buffer_bytes, which validate bounds.
        let acquire = async {
            let records = b.records.clone().acquire_many_owned(1).await;
            let bytes = b.bytes.clone().acquire_many_owned(size as u32).await;
            records.and_then(|r| bytes.map(|b| (r, b)))
        };
        let full = |waited: Duration| Error::BufferFull {
            record_bytes: size,
            buffer_bytes: self.config.buffer_bytes,
            buffer_records: self.config.buffer_records,
            waited_ms: waited.as_millis() as u64,
        };
        // Room at once (the usual case) takes no timer: this runs for
        // every record.
        let now = b
            .records
            .clone()
            .try_acquire_many_owned(1)
            .ok()
            .zip(b.bytes.clone().try_acquire_many_owned(size as u32).ok());
        let permits = match (now, self.config.on_full) {
            (Some(permits), _) => {
                // Still a yield point now and then, as waiting on the
                // semaphore would be, so that a caller enqueueing in a loop
                // lets the batchers on its thread run.
                tokio::task::consume_budget().await;
                permits
            }
            (None, OnFull::Fail) => return Err(full(Duration::ZERO)),
            (None, OnFull::Block { timeout }) => {
                let t0 = Instant::now();
                tokio::time::timeout(timeout, acquire)
                    .await
                    .map_err(|_| full(t0.elapsed()))?
                    .map_err(|_| Error::Transport { addr: String::new(), message: "producer closed".into() })?
            }
        };
        b.stats.buffered_records.fetch_add(1, Ordering::AcqRel);
        b.stats.buffered_bytes.fetch_add(size as u64, Ordering::Relaxed);
        Ok(Reservation { buffer: b.clone(), bytes: size as u64, _permits: permits })
    }

    fn queue(&self, topic: &str, partition: u32) -> mpsc::UnboundedSender<Pending> {
        let mut st = self.state.lock().expect("producer lock");
        if let Some(tx) = st.queues.get(topic).and_then(|q| q.get(&partition)) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let target = Target { topic: topic.to_string(), partition };
        spawn_partition(self.client.clone(), self.config.clone(), target, rx, self.buffer.stats.clone());
        st.queues.entry(topic.to_string()).or_default().insert(partition, tx.clone());
        tx
    }
}

/// What the partition senders need from a cluster: in production the
/// [`Client`]; in tests, a stand-in that can reorder and lose requests.
trait Broker: Clone + Send + Sync + 'static {
    fn produce(
        &self,
        target: &Target,
        batch: Bytes,
        acks: Acks,
    ) -> impl Future<Output = Result<pb::ProduceResponse>> + Send + 'static;
    fn init_producer(&self) -> impl Future<Output = Result<(i64, i16)>> + Send;
}

impl Broker for Client {
    fn produce(
        &self,
        target: &Target,
        batch: Bytes,
        acks: Acks,
    ) -> impl Future<Output = Result<pb::ProduceResponse>> + Send + 'static {
        let (client, topic, partition) = (self.clone(), target.topic.clone(), target.partition);
        async move { client.produce_batch(&topic, partition, batch, acks).await }
    }

    fn init_producer(&self) -> impl Future<Output = Result<(i64, i16)>> + Send {
        Client::init_producer(self)
    }
}

#[derive(Debug, Clone)]
struct Target {
    topic: String,
    partition: u32,
}

/// Starts the batcher and the sender of one partition.
fn spawn_partition<B: Broker>(
    broker: B,
    cfg: ProducerConfig,
    target: Target,
    rx: mpsc::UnboundedReceiver<Pending>,
    stats: Arc<ProducerStats>,
) {
    let window = Arc::new(Semaphore::new(cfg.window()));
    let (batches_tx, batches_rx) = mpsc::unbounded_channel();
    tokio::spawn(run_batcher(cfg.clone(), rx, window.clone(), batches_tx));
    tokio::spawn(Sender::new(broker, cfg, target, stats).run(batches_rx));
}

/// A batch formed by the batcher: its records and their encoding (without
/// producer identity; the sender stamps it), holding a window slot.
struct NewBatch {
    pending: Vec<Waiter>,
    bytes: Bytes,
    slot: OwnedSemaphorePermit,
}

/// Forms batches: waits for a first record and for room in the window,
/// then takes what is queued up to the batch limits, lingering for more
/// while the batch is not full. Waiting for the window before taking
/// records lets a batch grow while earlier ones are in flight.
async fn run_batcher(
    cfg: ProducerConfig,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    window: Arc<Semaphore>,
    out: mpsc::UnboundedSender<NewBatch>,
) {
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let linger_until = tokio::time::Instant::now() + cfg.linger;
        let Ok(slot) = window.clone().acquire_owned().await else { return };
        // The limit is on the encoded batch, header included.
        let mut size = batch::HEADER_LEN + first.record.encoded_len();
        let mut pending = vec![first];
        // Asked for on the first wait only, once per batch.
        let linger = crate::clock::sleep_until(linger_until);
        tokio::pin!(linger);
        while pending.len() < cfg.batch_max_records && size < cfg.batch_max_bytes {
            let next = match rx.try_recv() {
                Ok(p) => p,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                // Past the linger (or without one), whatever is queued.
                Err(mpsc::error::TryRecvError::Empty) if tokio::time::Instant::now() >= linger_until => break,
                Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                    biased;
                    p = rx.recv() => match p {
                        Some(p) => p,
                        None => break,
                    },
                    _ = &mut linger => break,
                },
            };
            let len = next.record.encoded_len();
            if size + len > cfg.batch_max_bytes {
                // Too big for this batch: it starts the next one.
                carry = Some(next);
                break;
            }
            size += len;
            pending.push(next);
        }
        let mut b = batch::BatchBuilder::with_capacity(size - batch::HEADER_LEN).compression(cfg.compression);
        for p in &pending {
            b.push(&p.record);
        }
        // The records live on in the encoded batch only.
        let pending = pending.into_iter().map(|p| p.waiter).collect();
        if out.send(NewBatch { pending, bytes: b.build(), slot }).is_err() {
            return;
        }
    }
}

/// The sequence space a partition sender stamps batches in.
#[derive(Debug, Default, Clone, Copy)]
struct Sequence {
    /// `(producer id, epoch)`: taken on first use; the epoch moves on at a
    /// fence, a fresh id is taken when the epoch or the sequence runs out.
    id: Option<(i64, i16)>,
    next: i32,
}

enum SlotState {
    /// Formed, not yet stamped or sent.
    Unsent,
    InFlight,
    Done(Result<pb::ProduceResponse>),
}

/// One batch in a partition sender's window.
struct Slot {
    key: u64,
    pending: Vec<Waiter>,
    bytes: Bytes,
    /// The producer identity the batch was last sent with (None: untagged).
    tag: Option<ProducerInfo>,
    state: SlotState,
    /// Sent while a batch before it was unsettled, so a refusal as out of
    /// sequence may only mean that the earlier one had not landed yet.
    sent_behind: bool,
    /// The sender's resend count when this batch was last sent.
    generation: u64,
    /// Requests sent for this batch so far.
    requests: u32,
    /// The first of them whose outcome is unknown, and its number.
    unknown: Option<(u32, Error)>,
    _slot: OwnedSemaphorePermit,
}

/// The sender of one partition: owns the window, stamps and sends
/// batches, settles answers front first.
struct Sender<B: Broker> {
    broker: B,
    cfg: ProducerConfig,
    target: Target,
    stats: Arc<ProducerStats>,
    window: VecDeque<Slot>,
    requests: JoinSet<Result<pb::ProduceResponse>>,
    /// The slot each request task answers for.
    tasks: HashMap<tokio::task::Id, u64>,
    next_key: u64,
    seq: Sequence,
    /// Batches sent again after an out-of-sequence refusal, so far.
    resends: u64,
}

impl<B: Broker> Sender<B> {
    fn new(broker: B, cfg: ProducerConfig, target: Target, stats: Arc<ProducerStats>) -> Self {
        Sender {
            broker,
            cfg,
            target,
            stats,
            window: VecDeque::new(),
            requests: JoinSet::new(),
            tasks: HashMap::new(),
            next_key: 0,
            seq: Sequence::default(),
            resends: 0,
        }
    }

    async fn run(mut self, mut batches: mpsc::UnboundedReceiver<NewBatch>) {
        let mut open = true;
        loop {
            self.settle().await;
            if !open && self.window.is_empty() {
                return;
            }
            tokio::select! {
                biased;
                Some(done) = self.requests.join_next_with_id(), if !self.requests.is_empty() => {
                    let (id, result) = match done {
                        Ok((id, result)) => (id, result),
                        // A request task that panicked: its outcome is unknown.
                        Err(e) => (e.id(), Err(Error::Transport { addr: String::new(), message: e.to_string() })),
                    };
                    self.stats.batches_in_flight.fetch_sub(1, Ordering::Relaxed);
                    let key = self.tasks.remove(&id);
                    if let Some(s) = self.window.iter_mut().find(|s| Some(s.key) == key) {
                        s.state = SlotState::Done(result);
                    }
                }
                b = batches.recv(), if open => match b {
                    Some(b) => {
                        self.window.push_back(Slot {
                            key: self.next_key,
                            pending: b.pending,
                            bytes: b.bytes,
                            tag: None,
                            state: SlotState::Unsent,
                            sent_behind: false,
                            generation: 0,
                            requests: 0,
                            unknown: None,
                            _slot: b.slot,
                        });
                        self.next_key += 1;
                    }
                    None => open = false,
                },
            }
        }
    }

    fn current(&self) -> Option<(i64, i16)> {
        self.seq.id
    }

    /// Whether a slot was stamped in an earlier sequence space than the
    /// current one (a fence happened after it was sent).
    fn stale(&self, s: &Slot) -> bool {
        s.tag.is_some_and(|t| Some((t.producer_id, t.epoch)) != self.current())
    }

    /// Settles the window front first, then sends what may be sent.
    async fn settle(&mut self) {
        while let Some(front) = self.window.front_mut() {
            if !matches!(front.state, SlotState::Done(_)) {
                break;
            }
            let SlotState::Done(result) = std::mem::replace(&mut front.state, SlotState::InFlight) else {
                break;
            };
            match result {
                Ok(resp) => {
                    let slot = self.window.pop_front().expect("front");
                    complete(slot.pending, |i| Ok(resp.base_offset.map(|base| base + i as u64)));
                }
                Err(e) => {
                    let front = self.window.front_mut().expect("front");
                    if e.is_indeterminate() && front.unknown.is_none() {
                        front.unknown = Some((front.requests, e.clone()));
                    }
                    let out_of_sequence = e.code() == Some(ErrorCode::OutOfOrderSequence);
                    let front = self.window.front().expect("front");
                    let stale = self.stale(front);
                    if front.tag.is_some() && !stale && out_of_sequence && front.sent_behind {
                        // The batch before it had not landed yet: the same
                        // bytes again, now that everything before is settled.
                        self.stats.batches_resent.fetch_add(1, Ordering::Relaxed);
                        self.resends += 1;
                        self.send_front_again(None);
                        break;
                    }
                    // A refusal after an earlier request of this batch whose
                    // outcome is unknown (it may still land) is no refusal.
                    let e = match &front.unknown {
                        Some((earlier_attempt, earlier)) if !e.is_indeterminate() => Error::Indeterminate {
                            attempts: front.requests,
                            earlier_attempt: *earlier_attempt,
                            earlier: Box::new(earlier.clone()),
                            last: Box::new(e),
                        },
                        _ => e,
                    };
                    if stale && !e.is_indeterminate() {
                        // Refused for certain under the old epoch: it never
                        // landed, so it goes again in the current space.
                        match self.stamp().await {
                            Ok(tag) => {
                                self.stats.batches_resent.fetch_add(1, Ordering::Relaxed);
                                self.send_front_again(Some(tag));
                                break;
                            }
                            Err(init) => {
                                let slot = self.window.pop_front().expect("front");
                                complete(slot.pending, |_| Err(init.clone()));
                                continue;
                            }
                        }
                    }
                    let slot = self.window.pop_front().expect("front");
                    let fence = slot.tag.is_some() && !stale;
                    complete(slot.pending, |_| Err(e.clone()));
                    if fence {
                        self.fence();
                    }
                }
            }
        }
        self.send_unsent().await;
    }

    /// Sends the front slot again, re-stamped with `tag` if given.
    fn send_front_again(&mut self, tag: Option<ProducerInfo>) {
        let front = self.window.front_mut().expect("front");
        if let Some(tag) = tag {
            match batch::with_producer(&front.bytes, tag) {
                Ok(b) => front.bytes = b,
                Err(e) => {
                    front.state = SlotState::Done(Err(Error::Corrupt(format!("re-stamping a batch: {e}"))));
                    return;
                }
            }
            front.tag = Some(tag);
        }
        front.sent_behind = false;
        let key = front.key;
        let bytes = front.bytes.clone();
        self.dispatch(key, bytes);
    }

    /// Stamps and sends every unsent slot that may go: none while a slot
    /// of an older sequence space is unsettled (it must land first, or
    /// be refused for good, or its records would be overtaken).
    async fn send_unsent(&mut self) {
        // After a resend, the batches sent before it are ahead of it and
        // will be refused as out of sequence too; new batches sent now
        // would be as well. So nothing new goes until those are settled
        // and the window holds only batches sent since (as the resent
        // ones settle one by one at the front, the window drains to them
        // and opens again).
        if self.window.iter().any(|s| match &s.state {
            SlotState::InFlight => s.generation < self.resends,
            SlotState::Done(Err(e)) => e.code() == Some(ErrorCode::OutOfOrderSequence),
            _ => false,
        }) {
            return;
        }
        let mut i = 0;
        while i < self.window.len() {
            let s = &self.window[i];
            if self.stale(s) {
                return;
            }
            if !matches!(s.state, SlotState::Unsent) {
                i += 1;
                continue;
            }
            // The partition takes any sequence as the start of a new space
            // (a new epoch, or a producer it does not know): the first
            // batch of a space goes alone, or a later one could land first.
            if self.window.iter().take(i).any(|s| s.tag.is_some_and(|t| t.base_sequence == 0)) {
                return;
            }
            let count = s.pending.len() as i32;
            let tag = if self.cfg.sequenced() {
                // A new sequence space only behind a settled window.
                let exhausted = self.seq.next.checked_add(count).is_none();
                if (self.seq.id.is_none() || exhausted) && i > 0 {
                    return;
                }
                if exhausted {
                    self.seq.id = None;
                }
                match self.stamp_n(count).await {
                    Ok(tag) => Some(tag),
                    Err(e) => {
                        let slot = self.window.remove(i).expect("slot");
                        complete(slot.pending, |_| Err(e.clone()));
                        continue;
                    }
                }
            } else {
                None
            };
            let slot = &mut self.window[i];
            if let Some(tag) = tag {
                match batch::with_producer(&slot.bytes, tag) {
                    Ok(b) => slot.bytes = b,
                    Err(e) => {
                        let slot = self.window.remove(i).expect("slot");
                        complete(slot.pending, |_| Err(Error::Corrupt(format!("stamping a batch: {e}"))));
                        continue;
                    }
                }
            }
            slot.tag = tag;
            slot.sent_behind = i > 0;
            let (key, bytes) = (slot.key, slot.bytes.clone());
            self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
            self.dispatch(key, bytes);
            i += 1;
        }
    }

    /// The identity for the front slot, re-stamped after a fence.
    async fn stamp(&mut self) -> Result<ProducerInfo> {
        let count = self.window.front().map_or(0, |s| s.pending.len()) as i32;
        if self.seq.next.checked_add(count).is_none() {
            self.seq.id = None;
        }
        self.stamp_n(count).await
    }

    /// Takes `count` sequence numbers in the current space (opening one
    /// if there is none).
    async fn stamp_n(&mut self, count: i32) -> Result<ProducerInfo> {
        if self.seq.id.is_none() {
            let id = self.broker.init_producer().await?;
            self.seq = Sequence { id: Some(id), next: 0 };
        }
        let (producer_id, epoch) = self.seq.id.expect("opened above");
        let tag = ProducerInfo { producer_id, epoch, base_sequence: self.seq.next };
        self.seq.next += count;
        Ok(tag)
    }

    /// Moves to a new sequence space after a batch failed for good: the
    /// next epoch of the same producer id, which the partition takes as a
    /// fresh start and which fences off late batches of the old epoch.
    fn fence(&mut self) {
        self.stats.fences.fetch_add(1, Ordering::Relaxed);
        self.seq = match self.seq.id {
            Some((id, epoch)) if epoch < i16::MAX => Sequence { id: Some((id, epoch + 1)), next: 0 },
            _ => Sequence::default(),
        };
    }

    fn dispatch(&mut self, key: u64, bytes: Bytes) {
        let generation = self.resends;
        if let Some(s) = self.window.iter_mut().find(|s| s.key == key) {
            s.state = SlotState::InFlight;
            s.requests += 1;
            s.generation = generation;
        }
        self.stats.batches_in_flight.fetch_add(1, Ordering::Relaxed);
        let here = self.window.iter().filter(|s| matches!(s.state, SlotState::InFlight)).count() as u64;
        self.stats.max_in_flight_seen.fetch_max(here, Ordering::Relaxed);
        let request = self.broker.produce(&self.target, bytes, self.cfg.acks);
        let task = self.requests.spawn(request);
        self.tasks.insert(task.id(), key);
    }
}

/// Answers every record of a settled batch; record `i` gets `result(i)`.
fn complete(pending: Vec<Waiter>, result: impl Fn(usize) -> Result<Option<u64>>) {
    for (i, w) in pending.into_iter().enumerate() {
        let _ = w.reply.send(result(i));
    }
}

/// The partition for a key: `(murmur2(key) & 0x7fffffff) % partitions`,
/// the same choice Kafka's default partitioner makes, so keyed data lands
/// alike in both and any client that implements this hash agrees.
///
/// murmur2 here is MurmurHash2 (32-bit) with seed `0x9747b28c`, over the
/// key's bytes as given:
///
/// ```text
/// m = 0x5bd1e995, r = 24, h = seed ^ len
/// for each whole 4-byte chunk, read little-endian as k:
///     k *= m; k ^= k >> 24; k *= m; h *= m; h ^= k
/// tail (len % 4 bytes t[0..]): if 3: h ^= t[2] << 16
///                              if >= 2: h ^= t[1] << 8
///                              if >= 1: h ^= t[0]; h *= m
/// h ^= h >> 13; h *= m; h ^= h >> 15
/// ```
///
/// All arithmetic is on unsigned 32-bit integers, wrapping; `>>` is a
/// logical shift. Test vectors (more in `docs/producer.md`):
///
/// ```
/// use replog_client::producer::{murmur2, partition_for_key};
/// assert_eq!(murmur2(b""), 275_646_681);
/// assert_eq!(murmur2(b"user-42"), 1_459_644_460);
/// assert_eq!(partition_for_key(b"user-42", 6), 4);
/// assert_eq!(murmur2("été".as_bytes()), 2_193_773_721);
/// ```
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// MurmurHash2, 32-bit, seed `0x9747b28c` (see [`partition_for_key`]).
pub fn murmur2(data: &[u8]) -> u32 {
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
mod model;

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

    /// The vectors of `docs/producer.md`, checked against an independent
    /// implementation of Kafka's murmur2: key, hash (unsigned), and the
    /// partition among 1, 3, 6 and 100.
    const VECTORS: &[(&[u8], u32, [u32; 4])] = &[
        (b"", 275646681, [0, 0, 3, 81]),
        (b"a", 2731586172, [0, 1, 4, 24]),
        (b"ab", 316155434, [0, 2, 2, 34]),
        (b"abc", 479470107, [0, 0, 3, 7]),
        (b"abcd", 2971317748, [0, 2, 2, 0]),
        (b"21", 3321034988, [0, 0, 0, 40]),
        (b"foobar", 3504634814, [0, 0, 0, 66]),
        (b"user-42", 1459644460, [0, 1, 4, 60]),
        (b"order-1001", 297523878, [0, 0, 0, 78]),
        ("été".as_bytes(), 2193773721, [0, 1, 1, 73]),
        (&[0x00, 0xff, 0x80, 0x07, 0x01], 3123368315, [0, 0, 3, 67]),
    ];

    #[test]
    fn keyless_records_stick_to_a_partition_for_its_bytes_then_every_partition_takes_its_turn() {
        let mut s = Sticky::new();
        let first = s.pick(4, 100, 1000);
        let picks: Vec<u32> = (1..40).map(|_| s.pick(4, 100, 1000)).collect();
        // Ten records of 100 bytes per partition, partitions in turn.
        let want: Vec<u32> = (1..40).map(|i| (first + i / 10) % 4).collect();
        assert_eq!(picks, want);
        // The topic shrank (a stale count): still in range.
        assert!(s.pick(3, 100, 1000) < 3);
    }

    #[test]
    fn partition_for_key_matches_the_documented_vectors() {
        for (key, hash, partitions) in VECTORS {
            assert_eq!(murmur2(key), *hash, "murmur2({key:?})");
            for (n, want) in [1, 3, 6, 100].into_iter().zip(partitions) {
                assert_eq!(partition_for_key(key, n), *want, "{key:?} among {n}");
            }
        }
    }

    /// When the batcher's first record was taken, on the paused clock, and
    /// when its batch came out.
    async fn one_record_batch(linger: Duration) -> (tokio::time::Instant, tokio::time::Instant) {
        let cfg = ProducerConfig { linger, ..ProducerConfig::default() };
        let (tx, rx) = mpsc::unbounded_channel();
        let (out, mut batches) = mpsc::unbounded_channel();
        tokio::spawn(run_batcher(cfg, rx, Arc::new(Semaphore::new(1)), out));
        // Off the timer's millisecond grid, where a timer set for now fires
        // only at the next tick.
        tokio::time::advance(Duration::from_micros(300)).await;
        let (reply, _rx) = oneshot::channel();
        let record = Record::new(None, Bytes::from_static(b"v"), 0);
        let sent = tokio::time::Instant::now();
        tx.send(Pending { record, waiter: Waiter { reply, _room: None } }).expect("batcher runs");
        let batch = batches.recv().await.expect("a batch");
        assert_eq!(batch.pending.len(), 1);
        (sent, tokio::time::Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn without_linger_a_lone_record_goes_at_once_and_with_linger_after_it() {
        let (sent, out) = one_record_batch(Duration::ZERO).await;
        assert_eq!(out - sent, Duration::ZERO, "no linger: no wait on a timer");
        let (sent, out) = one_record_batch(Duration::from_millis(5)).await;
        assert!(out - sent >= Duration::from_millis(5), "the batch waited {:?} of a 5 ms linger", out - sent);
    }

    #[test]
    fn same_key_same_partition() {
        for n in 1..20 {
            assert_eq!(partition_for_key(b"user-42", n), partition_for_key(b"user-42", n));
            assert!(partition_for_key(b"user-42", n) < n);
        }
    }
}
