//! The history of a chaos run: every send attempt, every poll, and the final
//! reads, in the order they completed.
//!
//! A history is stored as JSON lines, one [`Event`] per line, tagged by
//! `"type"`:
//!
//! ```text
//! {"type":"send","producer":"p1","topic":"chaos","partition":0,"value":"w-1-7","outcome":{"type":"ok","partition":0,"offset":41},"start_us":1200,"end_us":4810}
//! {"type":"send","producer":"p2","topic":"chaos","partition":null,"value":"w-2-9","outcome":{"type":"unknown","error":"transport error ..."},"start_us":1300,"end_us":9000}
//! {"type":"poll","consumer":"c1","topic":"chaos","partition":0,"records":[{"offset":41,"value":"w-1-7"}],"start_us":5000,"end_us":5020}
//! {"type":"final-read","reader":"leader","topic":"chaos","partition":0,"start_offset":0,"high_watermark":42,"records":[...],"start_us":90000,"end_us":90300}
//! {"type":"topic","client":"t1","action":"create","topic":"churn-0","generation":3,"partitions":2,"outcome":{"type":"ok","topic_id":17},"start_us":5100,"end_us":7900}
//! {"type":"topic-state","node":"127.0.0.12:40211","topic":"churn-0","present":{"topic_id":17,"partitions":2},"at_us":8100}
//! ```
//!
//! Optional fields, left out when they have their default:
//!
//! - `seq` (send): the send's place in its producer's order of sends to that
//!   partition (0, 1, 2, …), for the per-producer order check. Set only when
//!   the producer chose the partition itself.
//! - `generation` (send, poll, final read, topic): which incarnation of a
//!   topic name the operation was meant for. A topic that is deleted and
//!   created again under the same name is a new incarnation with an empty
//!   log, so offsets restart; the checker keeps incarnations apart. The
//!   workload's main topic, created once, is generation 0.
//! - `digest` (records of final reads): a hash of the whole record
//!   (timestamp, key, value, headers), so that replicas are compared on
//!   more than the value.
//!
//! Values are strings, unique per send attempt (see [`value_name`]): the
//! checker identifies a write by its value, so a value that is re-sent after
//! an indeterminate failure will be reported as a duplicate if both attempts
//! land. A consumer name stands for one continuous reading session of a
//! partition; a consumer that seeks on purpose must continue under a new
//! name, or the checker reports the jump as a poll-skip or nonmonotonic-poll.
//!
//! [`Recorder`] collects events from many tokio tasks at once (it is a cheap
//! clone of an `Arc<Mutex<..>>`) and can stream them to a file as they come.
//! A file whose name ends in `.zst` is written and read zstd-compressed (a
//! soak's history is gigabytes of JSON, a tenth of that compressed).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use replog_client::{ConsumedRecord, Error as SdkError, ErrorCode};
use serde::{Deserialize, Serialize};

/// The conventional value of a producer's `seq`-th write: `w-<producer>-<seq>`.
pub fn value_name(producer: u32, seq: u64) -> String {
    format!("w-{producer}-{seq}")
}

/// The byte that pads a record value up to a chosen size (see [`padded`]).
pub const PAD: u8 = b'.';

/// `value`, then a space, then [`PAD`] bytes up to `size` bytes in all (no
/// padding when `value` is already that long). Reads strip the padding
/// again (see [`ReadRecord`]), so histories keep the short value while the
/// cluster stores full-size records.
pub fn padded(value: &str, size: usize) -> Vec<u8> {
    let mut v = value.as_bytes().to_vec();
    if size > v.len() + 1 {
        v.push(b' ');
        v.resize(size, PAD);
    }
    v
}

/// The value a history keeps for record bytes: the bytes before the first
/// space when everything after it is padding, else the whole value (taken
/// as UTF-8, invalid bytes as U+FFFD), so that damaged padding shows up as a
/// value nobody sent.
pub fn unpadded(bytes: &[u8]) -> String {
    if let Some(i) = bytes.iter().position(|b| *b == b' ')
        && bytes[i + 1..].iter().all(|b| *b == PAD)
    {
        return String::from_utf8_lossy(&bytes[..i]).into_owned();
    }
    String::from_utf8_lossy(bytes).into_owned()
}

/// FNV-1a, 64 bits: a stable hash (the same in every build), enough to
/// tell two different records apart.
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The digest of a whole record: timestamp, key, value and headers, each
/// length-prefixed so that moving bytes between fields changes it.
pub fn record_digest(r: &ConsumedRecord) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    h = fnv1a(h, &r.timestamp_ms.to_le_bytes());
    match &r.key {
        Some(k) => {
            h = fnv1a(h, &(k.len() as u64).to_le_bytes());
            h = fnv1a(h, k);
        }
        None => h = fnv1a(h, &u64::MAX.to_le_bytes()),
    }
    h = fnv1a(h, &(r.value.len() as u64).to_le_bytes());
    h = fnv1a(h, &r.value);
    h = fnv1a(h, &(r.headers.len() as u64).to_le_bytes());
    for (k, v) in &r.headers {
        h = fnv1a(h, &(k.len() as u64).to_le_bytes());
        h = fnv1a(h, k.as_bytes());
        h = fnv1a(h, &(v.len() as u64).to_le_bytes());
        h = fnv1a(h, v);
    }
    h
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How one send attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Outcome {
    /// Acknowledged (acks=all): the record is at `offset` of `partition`.
    Ok { partition: u32, offset: u64 },
    /// Definitely not written: the broker refused it.
    Fail { error: String },
    /// Indeterminate (timeout, transport error, retries exhausted): the
    /// record may or may not have been written.
    Unknown { error: String },
}

impl Outcome {
    /// Classifies the result of `Producer::send` / `SendHandle::wait`.
    ///
    /// Conservative on purpose, because a `Fail` that is later read is
    /// reported as a phantom write: only refusals that the broker makes
    /// before appending anything, and that would repeat on every retry of
    /// the same batch (validation errors, unknown topic or partition), count
    /// as `Fail`. Everything else is `Unknown`, in particular
    /// `DeadlineExceeded` whatever its last error was (an earlier attempt in
    /// the SDK's retry loop may have been indeterminate), `NOT_LEADER` (a
    /// deposed leader may have appended the entry, which its successor can
    /// still commit), and `INTERNAL` / `STORAGE`.
    pub fn from_send(result: &Result<(u32, u64), SdkError>) -> Outcome {
        match result {
            Ok((partition, offset)) => Outcome::Ok { partition: *partition, offset: *offset },
            Err(e) => {
                let error = e.to_string();
                let refused = match e {
                    SdkError::InvalidArgument(_) => true,
                    SdkError::Broker { code, .. } => matches!(
                        code,
                        ErrorCode::UnknownTopic
                            | ErrorCode::UnknownPartition
                            | ErrorCode::RecordTooLarge
                            | ErrorCode::BatchTooLarge
                            | ErrorCode::InvalidTopicName
                            | ErrorCode::CorruptBatch
                            | ErrorCode::InvalidRequest
                    ),
                    _ => false,
                };
                if refused { Outcome::Fail { error } } else { Outcome::Unknown { error } }
            }
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }
}

/// One send attempt of one unique value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendOp {
    /// Who sent it, e.g. `"p1"`.
    pub producer: String,
    pub topic: String,
    /// The partition asked for; `None` when the producer chose (by key or
    /// round-robin). The acknowledged partition is in the outcome.
    pub partition: Option<u32>,
    pub value: String,
    pub outcome: Outcome,
    /// Microseconds since the recorder started ([`Recorder::now_us`]).
    #[serde(default)]
    pub start_us: u64,
    #[serde(default)]
    pub end_us: u64,
    /// The incarnation of `topic` the send was meant for (module docs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
    /// This send's index among the producer's sends to `partition` (which
    /// must then be set), in the order they were handed to the SDK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// One record as read: its offset and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRecord {
    pub offset: u64,
    pub value: String,
    /// [`record_digest`] of the record as read; kept by final reads, which
    /// compare replicas record by record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<u64>,
}

impl ReadRecord {
    pub fn new(offset: u64, value: impl Into<String>) -> ReadRecord {
        ReadRecord { offset, value: value.into(), digest: None }
    }

    pub fn with_digest(mut self, digest: u64) -> ReadRecord {
        self.digest = Some(digest);
        self
    }
}

impl From<&ConsumedRecord> for ReadRecord {
    /// The value is taken as UTF-8 with its padding stripped ([`unpadded`]);
    /// invalid bytes become U+FFFD, so garbage still shows up (as an
    /// unexpected value) instead of being dropped.
    fn from(r: &ConsumedRecord) -> ReadRecord {
        ReadRecord { offset: r.offset, value: unpadded(&r.value), digest: None }
    }
}

/// Converts what `PartitionReader::poll` / `read_to_end` returned.
pub fn read_records(records: &[ConsumedRecord]) -> Vec<ReadRecord> {
    records.iter().map(ReadRecord::from).collect()
}

/// As [`read_records`], each record with its [`record_digest`].
pub fn read_records_with_digest(records: &[ConsumedRecord]) -> Vec<ReadRecord> {
    records.iter().map(|r| ReadRecord::from(r).with_digest(record_digest(r))).collect()
}

/// One successful poll of one partition by one consumer, records in the
/// order returned. Empty polls may be recorded or left out; failed polls are
/// left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollOp {
    /// The reading session, e.g. `"c1"`.
    pub consumer: String,
    pub topic: String,
    pub partition: u32,
    pub records: Vec<ReadRecord>,
    #[serde(default)]
    pub start_us: u64,
    #[serde(default)]
    pub end_us: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
}

/// A full read of one partition at the end of the run, after the faults
/// healed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalRead {
    /// Which node or path served it, e.g. `"leader"` or `"replica-2"`. A
    /// partition may have several final reads (one per replica); each one
    /// must agree with the acknowledged writes on the offsets it covers.
    #[serde(default = "default_reader")]
    pub reader: String,
    pub topic: String,
    pub partition: u32,
    /// The first offset read (normally 0, or the log start offset).
    pub start_offset: u64,
    /// The end of the read, exclusive: the high watermark it read up to.
    /// The read covers `start_offset..high_watermark` (extended to the last
    /// record returned, should one lie beyond).
    pub high_watermark: u64,
    pub records: Vec<ReadRecord>,
    #[serde(default)]
    pub start_us: u64,
    #[serde(default)]
    pub end_us: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
}

fn default_reader() -> String {
    "leader".to_string()
}

impl FinalRead {
    /// The offsets this read vouches for: every offset in the range that is
    /// not in `records` is known to be empty.
    pub fn covered(&self) -> std::ops::Range<u64> {
        let end = self.records.iter().map(|r| r.offset + 1).max().unwrap_or(0).max(self.high_watermark);
        self.start_offset..end
    }
}

/// What a [`TopicOp`] asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopicAction {
    Create,
    Delete,
}

/// How a topic create or delete ended, after the workload's own retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum TopicOutcome {
    /// Done. For a create, the id the cluster gave the new topic.
    Ok {
        #[serde(default)]
        topic_id: u64,
    },
    /// Definitely not done (the cluster refused it).
    Fail { error: String },
    /// May or may not have been done.
    Unknown { error: String },
}

/// One topic create or delete, as one logical operation: retries after an
/// indeterminate attempt are part of it, so a create answered
/// TOPIC_ALREADY_EXISTS after an attempt that timed out is `Ok` (the first
/// attempt landed), and a delete answered UNKNOWN_TOPIC likewise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicOp {
    /// Who did it, e.g. `"t1"`.
    pub client: String,
    pub action: TopicAction,
    pub topic: String,
    /// The incarnation created (or deleted): the n-th create of this name.
    #[serde(default)]
    pub generation: u32,
    /// For a create: the partitions asked for.
    #[serde(default)]
    pub partitions: u32,
    pub outcome: TopicOutcome,
    #[serde(default)]
    pub start_us: u64,
    #[serde(default)]
    pub end_us: u64,
}

/// What a node's metadata said about a topic name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSeen {
    pub topic_id: u64,
    pub partitions: u32,
}

/// A settled observation of a topic name at one node: recorded only after
/// the workload waited for the nodes to agree (after a delete, until every
/// node that answers has dropped the name; at the end of a run, until every
/// node gives the same answer), so that metadata still propagating is not
/// mistaken for an anomaly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    /// The node that answered (its address).
    pub node: String,
    pub topic: String,
    /// `None`: the node does not know the name.
    pub present: Option<TopicSeen>,
    #[serde(default)]
    pub at_us: u64,
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    Send(SendOp),
    Poll(PollOp),
    FinalRead(FinalRead),
    Topic(TopicOp),
    TopicState(TopicState),
}

/// Each kind of operation is an [`Event`] of its own variant.
macro_rules! event_from {
    ($($op:ty => $variant:ident),* $(,)?) => {
        $(impl From<$op> for Event {
            fn from(op: $op) -> Event {
                Event::$variant(op)
            }
        })*
    };
}

event_from!(
    SendOp => Send,
    PollOp => Poll,
    FinalRead => FinalRead,
    TopicOp => Topic,
    TopicState => TopicState,
);

/// A whole run's events, in completion order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub events: Vec<Event>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    pub fn push(&mut self, event: impl Into<Event>) {
        self.events.push(event.into());
    }

    /// The events of one kind, in order.
    fn select<'a, T: 'a>(&'a self, pick: fn(&'a Event) -> Option<&'a T>) -> impl Iterator<Item = &'a T> + 'a {
        self.events.iter().filter_map(pick)
    }

    pub fn sends(&self) -> impl Iterator<Item = &SendOp> {
        self.select(|e| if let Event::Send(op) = e { Some(op) } else { None })
    }

    pub fn polls(&self) -> impl Iterator<Item = &PollOp> {
        self.select(|e| if let Event::Poll(op) = e { Some(op) } else { None })
    }

    pub fn final_reads(&self) -> impl Iterator<Item = &FinalRead> {
        self.select(|e| if let Event::FinalRead(op) = e { Some(op) } else { None })
    }

    pub fn topic_ops(&self) -> impl Iterator<Item = &TopicOp> {
        self.select(|e| if let Event::Topic(op) = e { Some(op) } else { None })
    }

    pub fn topic_states(&self) -> impl Iterator<Item = &TopicState> {
        self.select(|e| if let Event::TopicState(op) = e { Some(op) } else { None })
    }

    /// Writes the history as JSON lines.
    pub fn write_jsonl(&self, w: impl Write) -> io::Result<()> {
        let mut w = BufWriter::new(w);
        for e in &self.events {
            write_event(&mut w, e)?;
        }
        w.flush()
    }

    /// Reads JSON lines; blank lines are skipped. A bad line is an
    /// `InvalidData` error naming its line number.
    pub fn read_jsonl(r: impl io::Read) -> io::Result<History> {
        let mut events = Vec::new();
        for (i, line) in BufReader::new(r).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let e = serde_json::from_str(&line)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("history line {}: {e}", i + 1)))?;
            events.push(e);
        }
        Ok(History { events })
    }

    /// Writes the history to `path` (zstd-compressed for a `.zst` name).
    pub fn save(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let mut sink = Sink::create(path.as_ref())?;
        for e in &self.events {
            write_event(&mut sink, e)?;
        }
        sink.finish()
    }

    /// Reads a history written by [`History::save`] or a [`Recorder`].
    pub fn load(path: impl AsRef<Path>) -> io::Result<History> {
        History::read_jsonl(open_history(path.as_ref())?)
    }
}

/// Whether a history file is zstd-compressed: by its name.
fn compressed(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "zst")
}

/// A history file opened for reading, decompressed if it is compressed.
fn open_history(path: &Path) -> io::Result<Box<dyn io::Read>> {
    let file = File::open(path)?;
    Ok(if compressed(path) { Box::new(zstd::stream::read::Decoder::new(file)?) } else { Box::new(file) })
}

/// Where a recorder's events go: a plain file, or a zstd stream (level 1:
/// cheap next to the JSON it compresses).
enum Sink {
    Plain(BufWriter<File>),
    Zstd(Option<zstd::stream::write::Encoder<'static, BufWriter<File>>>),
}

const ZSTD_LEVEL: i32 = 1;

impl Sink {
    fn create(path: &Path) -> io::Result<Sink> {
        let w = BufWriter::new(File::create(path)?);
        Ok(if compressed(path) {
            Sink::Zstd(Some(zstd::stream::write::Encoder::new(w, ZSTD_LEVEL)?))
        } else {
            Sink::Plain(w)
        })
    }

    /// Makes everything written so far readable from the file: a zstd
    /// stream ends its frame and goes on in a new one (a reader takes the
    /// frames one after the other).
    fn finish(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Zstd(enc) => {
                let Some(e) = enc.take() else { return Err(io::Error::other("history stream broken earlier")) };
                let mut w = e.finish()?;
                w.flush()?;
                *enc = Some(zstd::stream::write::Encoder::new(w, ZSTD_LEVEL)?);
                Ok(())
            }
        }
    }
}

impl Drop for Sink {
    /// Ends a zstd stream's last frame, so that a run that stops early
    /// still leaves a readable file.
    fn drop(&mut self) {
        if let Sink::Zstd(enc) = self
            && let Some(e) = enc.take()
            && let Ok(mut w) = e.finish()
        {
            let _ = w.flush();
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Zstd(Some(e)) => e.write(buf),
            Sink::Zstd(None) => Err(io::Error::other("history stream broken earlier")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Zstd(Some(e)) => e.flush(),
            Sink::Zstd(None) => Ok(()),
        }
    }
}

/// Events that can be gone through more than once, in history order: a
/// [`History`] in memory, or a [`HistoryFile`] read line by line. The
/// checker works over this so that a long run's history never has to be in
/// memory whole.
pub trait Events {
    /// Calls `f` with every event, in order.
    fn scan(&self, f: &mut dyn FnMut(&Event)) -> io::Result<()>;
}

impl Events for History {
    fn scan(&self, f: &mut dyn FnMut(&Event)) -> io::Result<()> {
        self.events.iter().for_each(f);
        Ok(())
    }
}

/// A history stored as JSON lines, read one event at a time on each scan:
/// only the event being looked at is in memory (the largest are the final
/// reads, one partition's log each).
#[derive(Debug, Clone)]
pub struct HistoryFile {
    pub path: PathBuf,
}

impl HistoryFile {
    pub fn new(path: impl AsRef<Path>) -> HistoryFile {
        HistoryFile { path: path.as_ref().to_path_buf() }
    }
}

impl Events for HistoryFile {
    /// A bad line is an `InvalidData` error naming its line number, as in
    /// [`History::read_jsonl`].
    fn scan(&self, f: &mut dyn FnMut(&Event)) -> io::Result<()> {
        let mut r = BufReader::with_capacity(1 << 20, open_history(&self.path)?);
        let mut line = String::new();
        let mut n = 0usize;
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Ok(());
            }
            n += 1;
            if line.trim().is_empty() {
                continue;
            }
            let e: Event = serde_json::from_str(&line)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("history line {n}: {e}")))?;
            f(&e);
            if line.capacity() > 64 << 20 {
                // A final read of a long log: do not keep its buffer.
                line = String::new();
            }
        }
    }
}

fn write_event(w: &mut impl Write, e: &Event) -> io::Result<()> {
    serde_json::to_writer(&mut *w, e)?;
    w.write_all(b"\n")
}

/// Collects events from concurrent tasks. Clones share one history.
///
/// Recording never fails and never awaits (a short `std::sync::Mutex`
/// section); with [`Recorder::create`] each event is also appended to a
/// JSON-lines file through a buffer, and the first write error is returned
/// by [`Recorder::finish`]. [`Recorder::streaming`] writes the file only and
/// keeps nothing in memory, for runs too long to hold their history twice
/// (the events and, later, the checker's indexes).
#[derive(Clone)]
pub struct Recorder {
    started: Instant,
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    events: Vec<Event>,
    /// Whether `events` is kept; a streaming recorder only counts.
    keep: bool,
    count: usize,
    path: Option<PathBuf>,
    sink: Option<Sink>,
    sink_error: Option<io::Error>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder that keeps the history in memory only.
    pub fn new() -> Recorder {
        Recorder::with_sink(None, true)
    }

    /// A recorder that also streams every event to `path` (created or
    /// truncated), so a run that dies half-way still leaves its history.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Recorder> {
        let path = path.as_ref().to_path_buf();
        Ok(Recorder::with_sink(Some((Sink::create(&path)?, path)), true))
    }

    /// A recorder that writes every event to `path` and keeps none in
    /// memory; [`Recorder::finish`] reads the file back.
    pub fn streaming(path: impl AsRef<Path>) -> io::Result<Recorder> {
        let path = path.as_ref().to_path_buf();
        Ok(Recorder::with_sink(Some((Sink::create(&path)?, path)), false))
    }

    fn with_sink(sink: Option<(Sink, PathBuf)>, keep: bool) -> Recorder {
        let (sink, path) = match sink {
            Some((s, p)) => (Some(s), Some(p)),
            None => (None, None),
        };
        Recorder {
            started: Instant::now(),
            inner: Arc::new(Mutex::new(Inner { events: Vec::new(), keep, count: 0, path, sink, sink_error: None })),
        }
    }

    /// Microseconds since the recorder was created, for `start_us`/`end_us`.
    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Appends one event.
    pub fn record(&self, event: impl Into<Event>) {
        let event = event.into();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Inner { events, keep, count, sink, sink_error, .. } = &mut *inner;
        if let Some(w) = sink
            && sink_error.is_none()
            && let Err(e) = write_event(w, &event)
        {
            *sink_error = Some(e);
        }
        *count += 1;
        if *keep {
            events.push(event);
        }
    }

    /// How many events so far.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flushes the file (if any) and returns the first write error, if
    /// any: the file then holds every event recorded so far. For a
    /// streaming recorder, whose history is then checked from the file
    /// ([`HistoryFile`]) instead of being read back into memory.
    pub fn flush(&self) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = inner.sink_error.take() {
            return Err(e);
        }
        if let Some(w) = inner.sink.as_mut() {
            w.finish()?;
        }
        Ok(())
    }

    /// Flushes the file (if any) and returns the history. Call it once the
    /// tasks that record have finished; events recorded later still go to
    /// the recorder but not into the returned history.
    pub fn finish(&self) -> io::Result<History> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = inner.sink_error.take() {
            return Err(e);
        }
        if let Some(w) = inner.sink.as_mut() {
            w.finish()?;
        }
        match (&inner.path, inner.keep) {
            (Some(path), false) => History::load(path),
            _ => Ok(History { events: inner.events.clone() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        let mut h = History::new();
        h.push(SendOp {
            producer: "p1".into(),
            topic: "t".into(),
            partition: Some(0),
            value: value_name(1, 0),
            outcome: Outcome::Ok { partition: 0, offset: 0 },
            start_us: 1,
            end_us: 2,
            generation: 0,
            seq: Some(0),
        });
        h.push(SendOp {
            producer: "p1".into(),
            topic: "t".into(),
            partition: None,
            value: value_name(1, 1),
            outcome: Outcome::Unknown { error: "timeout".into() },
            start_us: 3,
            end_us: 4,
            generation: 2,
            seq: None,
        });
        h.push(PollOp {
            consumer: "c1".into(),
            topic: "t".into(),
            partition: 0,
            records: vec![ReadRecord::new(0, "w-1-0")],
            start_us: 5,
            end_us: 6,
            generation: 0,
        });
        h.push(FinalRead {
            reader: "leader".into(),
            topic: "t".into(),
            partition: 0,
            start_offset: 0,
            high_watermark: 1,
            records: vec![ReadRecord::new(0, "w-1-0").with_digest(42)],
            start_us: 7,
            end_us: 8,
            generation: 0,
        });
        h.push(TopicOp {
            client: "t1".into(),
            action: TopicAction::Create,
            topic: "churn-0".into(),
            generation: 1,
            partitions: 2,
            outcome: TopicOutcome::Ok { topic_id: 17 },
            start_us: 9,
            end_us: 10,
        });
        h.push(TopicState {
            node: "127.0.0.11:1".into(),
            topic: "churn-0".into(),
            present: Some(TopicSeen { topic_id: 17, partitions: 2 }),
            at_us: 11,
        });
        h
    }

    #[test]
    fn given_history_when_written_as_jsonl_and_read_back_then_it_is_unchanged() {
        let h = sample();
        let mut buf = Vec::new();
        h.write_jsonl(&mut buf).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert_eq!(text.lines().count(), 6);
        assert!(text.lines().next().unwrap().contains(r#""type":"send""#));
        assert!(text.contains(r#""type":"final-read""#));
        assert!(text.contains(r#""type":"topic","client":"t1","action":"create""#), "{text}");
        assert!(text.contains(r#""type":"topic-state""#), "{text}");
        // Defaults are left out, so older histories and tools read alike.
        let first = text.lines().next().unwrap();
        assert!(!first.contains("generation") && first.contains(r#""seq":0"#), "{first}");
        assert!(text.contains(r#""digest":42"#), "{text}");
        assert_eq!(History::read_jsonl(&buf[..]).unwrap(), h);
    }

    #[test]
    fn given_history_line_without_the_newer_fields_when_read_then_they_take_their_defaults() {
        let line = br#"{"type":"send","producer":"p1","topic":"t","partition":0,"value":"w-1-0","outcome":{"type":"ok","partition":0,"offset":0}}"#;
        let h = History::read_jsonl(&line[..]).unwrap();
        let op = h.sends().next().unwrap();
        assert_eq!((op.generation, op.seq), (0, None));
    }

    #[test]
    fn given_padded_value_when_read_back_then_history_keeps_the_short_value_and_damage_shows() {
        let v = padded("w-1-7", 64);
        assert_eq!(v.len(), 64);
        assert_eq!(unpadded(&v), "w-1-7");
        assert_eq!(padded("w-1-7", 0), b"w-1-7");
        assert_eq!(unpadded(b"w-1-7"), "w-1-7");
        let mut damaged = v.clone();
        damaged[40] = b'x';
        assert_ne!(unpadded(&damaged), "w-1-7");
    }

    #[test]
    fn given_records_differing_in_any_field_when_digested_then_digests_differ() {
        let base = ConsumedRecord {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp_ms: 1,
            key: Some(bytes::Bytes::from_static(b"k")),
            value: bytes::Bytes::from_static(b"v"),
            headers: vec![("h".into(), bytes::Bytes::from_static(b"1"))],
        };
        let d = record_digest(&base);
        assert_eq!(d, record_digest(&base.clone()));
        let variants = [
            ConsumedRecord { timestamp_ms: 2, ..base.clone() },
            ConsumedRecord { key: None, ..base.clone() },
            ConsumedRecord { value: bytes::Bytes::from_static(b"w"), ..base.clone() },
            ConsumedRecord { headers: vec![], ..base.clone() },
            // The same bytes moved from the key to the value.
            ConsumedRecord {
                key: Some(bytes::Bytes::from_static(b"")),
                value: bytes::Bytes::from_static(b"kv"),
                ..base.clone()
            },
        ];
        for v in &variants {
            assert_ne!(record_digest(v), d, "{v:?}");
        }
    }

    #[test]
    fn given_bad_line_when_reading_jsonl_then_error_names_the_line() {
        let err = History::read_jsonl(&b"\n{\"type\":\"nope\"}\n"[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn given_recorder_shared_by_tasks_when_finished_then_file_and_history_hold_every_event() {
        let path = std::env::temp_dir().join(format!("replog-chaos-history-{}.jsonl", std::process::id()));
        let rec = Recorder::create(&path).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        rt.block_on(async {
            let tasks: Vec<_> = (0..4u32)
                .map(|p| {
                    let rec = rec.clone();
                    tokio::spawn(async move {
                        for seq in 0..25u64 {
                            let start_us = rec.now_us();
                            rec.record(SendOp {
                                producer: format!("p{p}"),
                                topic: "t".into(),
                                partition: Some(p),
                                value: value_name(p, seq),
                                outcome: Outcome::Ok { partition: p, offset: seq },
                                start_us,
                                end_us: rec.now_us(),
                                generation: 0,
                                seq: Some(seq),
                            });
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        let h = rec.finish().unwrap();
        assert_eq!(h.sends().count(), 100);
        assert_eq!(History::load(&path).unwrap(), h);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn given_streaming_recorder_when_finished_then_history_comes_back_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let rec = Recorder::streaming(&path).unwrap();
        for e in sample().events {
            rec.record(e);
        }
        assert_eq!(rec.len(), sample().events.len());
        assert_eq!(rec.finish().unwrap(), sample());
    }

    #[test]
    fn given_zst_history_when_recorded_flushed_and_finished_then_it_reads_back_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl.zst");
        let rec = Recorder::streaming(&path).unwrap();
        let events = sample().events;
        let half = events.len() / 2;
        for e in &events[..half] {
            rec.record(e.clone());
        }
        // A flush makes what was recorded readable while recording goes on.
        rec.flush().unwrap();
        let mut seen = Vec::new();
        HistoryFile::new(&path).scan(&mut |e| seen.push(e.clone())).unwrap();
        assert_eq!(seen, events[..half]);
        for e in &events[half..] {
            rec.record(e.clone());
        }
        assert_eq!(rec.finish().unwrap(), sample());
        let raw = std::fs::read(&path).unwrap();
        assert_eq!(&raw[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
        // Saved and loaded the same way; recorded later, then dropped: the
        // drop ends the stream.
        let saved = dir.path().join("saved.jsonl.zst");
        sample().save(&saved).unwrap();
        assert_eq!(History::load(&saved).unwrap(), sample());
        let dropped = dir.path().join("dropped.jsonl.zst");
        let rec = Recorder::streaming(&dropped).unwrap();
        events.iter().for_each(|e| rec.record(e.clone()));
        drop(rec);
        assert_eq!(History::load(&dropped).unwrap(), sample());
    }

    #[test]
    fn given_sdk_errors_when_classified_then_only_deterministic_refusals_are_fail() {
        let broker = |code| SdkError::Broker { code, message: String::new(), leader: None };
        assert!(matches!(Outcome::from_send(&Err(broker(ErrorCode::RecordTooLarge))), Outcome::Fail { .. }));
        assert!(matches!(Outcome::from_send(&Err(broker(ErrorCode::Internal))), Outcome::Unknown { .. }));
        let transport = SdkError::Transport { addr: "a".into(), message: "reset".into() };
        assert!(matches!(Outcome::from_send(&Err(transport)), Outcome::Unknown { .. }));
        let deadline = SdkError::DeadlineExceeded {
            attempts: 3,
            elapsed_ms: 10,
            indeterminate: false,
            last: Box::new(broker(ErrorCode::NotLeader)),
        };
        assert!(matches!(Outcome::from_send(&Err(deadline)), Outcome::Unknown { .. }));
        assert_eq!(Outcome::from_send(&Ok((2, 9))), Outcome::Ok { partition: 2, offset: 9 });
    }
}
