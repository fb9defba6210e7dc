//! Checks a [`History`] and names what went wrong, after Jepsen's Kafka and
//! queue checkers.
//!
//! A write is identified by its value. Every place a value was seen — an
//! acknowledgement, a poll, a final read — is an observation of
//! `(topic incarnation, partition, offset) → value`. A topic name that is
//! deleted and created again is a new incarnation with a log of its own
//! (see [`crate::history`]); offsets are compared within one incarnation
//! only. The anomalies:
//!
//! | kind | meaning |
//! |---|---|
//! | `lost-write` | a write known to be committed — acknowledged, or returned by a poll (polls return committed records only) — is not at its offset in a final read that covers that offset |
//! | `unseen` | such a write lies beyond every final read of its partition (or the partition has no final read, unless its topic was deleted) |
//! | `duplicate` | one value read at two or more offsets |
//! | `inconsistent-offsets` | two observations (acks, polls, final reads, any replicas) give one offset different values |
//! | `nonmonotonic-poll` | a consumer read an offset at or below one it read before, within a poll or between successive polls of a partition |
//! | `poll-skip` | a consumer's next offset lies beyond the previous one + 1 while an offset in between is known to exist |
//! | `phantom-write` | a write whose every attempt was refused (`Fail`) was read |
//! | `unexpected` | a value that no producer ever sent to that topic was read |
//! | `nonmonotonic-send` | two acknowledged sends of one producer to one partition: the one sent later was acknowledged at an offset at or below the earlier one's |
//! | `send-skip` | one producer's sends to one partition landed out of send order, where at least one of the two is known from reads only (an indeterminate send that landed): the earlier send was passed over and written after the later one |
//! | `resurrected` | a value written to one incarnation of a topic was read from another incarnation of the same name (data of a deleted topic came back) |
//! | `undeleted-topic` | a topic whose delete was acknowledged is still listed by a node once metadata settled (with a deleted incarnation's id, or with a new id that no create of unknown outcome could have made), or acknowledged a write sent after the delete |
//! | `missing-topic` | a topic whose create was acknowledged (and not deleted) is missing from a node's settled metadata, or listed with another id or partition count |
//! | `replica-divergence` | two final reads of a partition (the leader's and each replica's, over the whole log) differ at some offset: a record on one and not the other, different records, or different ends |
//!
//! Indeterminate (`Unknown`) writes may be read or not; when read, they are
//! held to the same rules (at most one offset, agreement across reads, and —
//! once a poll returned them — present in the final read). Per-producer
//! order is checked for sends that carry a `seq` (the workload's producers
//! choose their partition and number their sends); the SDK keeps one batch
//! per partition in flight, so one producer's records land in the order it
//! sent them.
//!
//! Every anomaly counts: [`Report::is_valid`] is true only when there are
//! none.
//!
//! The checker is built for long histories (a soak holds millions of
//! records, each seen by an ack, a poll and four final reads): it borrows
//! every string from the history, keeps one small cell per offset with the
//! sources that saw it as a bit set, and builds detail text only for
//! anomalies.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

use crate::history::{
    Event, Events, FinalRead, History, Outcome, PollOp, SendOp, TopicAction, TopicOp, TopicOutcome, TopicState,
    value_name,
};

/// The kinds of anomaly, named as Jepsen names them where Jepsen has a
/// name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnomalyKind {
    LostWrite,
    Unseen,
    Duplicate,
    InconsistentOffsets,
    NonmonotonicPoll,
    PollSkip,
    PhantomWrite,
    Unexpected,
    NonmonotonicSend,
    SendSkip,
    Resurrected,
    UndeletedTopic,
    MissingTopic,
    ReplicaDivergence,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 14] = [
        AnomalyKind::LostWrite,
        AnomalyKind::Unseen,
        AnomalyKind::Duplicate,
        AnomalyKind::InconsistentOffsets,
        AnomalyKind::NonmonotonicPoll,
        AnomalyKind::PollSkip,
        AnomalyKind::PhantomWrite,
        AnomalyKind::Unexpected,
        AnomalyKind::NonmonotonicSend,
        AnomalyKind::SendSkip,
        AnomalyKind::Resurrected,
        AnomalyKind::UndeletedTopic,
        AnomalyKind::MissingTopic,
        AnomalyKind::ReplicaDivergence,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::LostWrite => "lost-write",
            AnomalyKind::Unseen => "unseen",
            AnomalyKind::Duplicate => "duplicate",
            AnomalyKind::InconsistentOffsets => "inconsistent-offsets",
            AnomalyKind::NonmonotonicPoll => "nonmonotonic-poll",
            AnomalyKind::PollSkip => "poll-skip",
            AnomalyKind::PhantomWrite => "phantom-write",
            AnomalyKind::Unexpected => "unexpected",
            AnomalyKind::NonmonotonicSend => "nonmonotonic-send",
            AnomalyKind::SendSkip => "send-skip",
            AnomalyKind::Resurrected => "resurrected",
            AnomalyKind::UndeletedTopic => "undeleted-topic",
            AnomalyKind::MissingTopic => "missing-topic",
            AnomalyKind::ReplicaDivergence => "replica-divergence",
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One anomaly: where, which values, which offsets, and a sentence saying
/// what was seen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub topic: String,
    /// The incarnation of `topic` (0 for a topic created once).
    #[serde(default)]
    pub generation: u32,
    /// The partition; 0 for the topic-level kinds (`undeleted-topic`,
    /// `missing-topic`).
    pub partition: u32,
    /// The offsets involved, in the order the detail names them (for
    /// `nonmonotonic-poll` and `poll-skip`: the previous offset, then the
    /// one read next; for the send-order kinds: the earlier send's, then the
    /// later send's). A `duplicate` across partitions lists every offset;
    /// the detail names the partitions. `replica-divergence` lists the first
    /// diverging offsets (at most [`SHOWN_OFFSETS`]); the detail has the
    /// count.
    pub offsets: Vec<u64>,
    /// The values involved: the write concerned, or for
    /// `inconsistent-offsets` every value seen at the offset, or for
    /// `poll-skip` the values skipped, or for the send-order kinds the
    /// earlier send, then the later one.
    pub values: Vec<String>,
    pub detail: String,
}

/// How many offsets a `replica-divergence` lists.
pub const SHOWN_OFFSETS: usize = 20;

/// `topic/partition`, or `topic(gN)/partition` for a later incarnation.
fn place(topic: &str, generation: u32, partition: u32) -> String {
    if generation == 0 { format!("{topic}/{partition}") } else { format!("{topic}(g{generation})/{partition}") }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if matches!(self.kind, AnomalyKind::UndeletedTopic | AnomalyKind::MissingTopic) {
            let topic =
                if self.generation == 0 { self.topic.clone() } else { format!("{}(g{})", self.topic, self.generation) };
            return write!(f, "{} {topic}: {}", self.kind, self.detail);
        }
        write!(
            f,
            "{} {} offsets={:?} values={:?}: {}",
            self.kind,
            place(&self.topic, self.generation, self.partition),
            self.offsets,
            self.values,
            self.detail
        )
    }
}

/// The checker's verdict on one history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Send attempts.
    pub sends: usize,
    /// Attempts acknowledged (`Ok`).
    pub acknowledged: usize,
    /// Attempts refused (`Fail`).
    pub failed: usize,
    /// Attempts with an indeterminate outcome (`Unknown`).
    pub indeterminate: usize,
    /// Of the indeterminate-only values, how many were read somewhere.
    pub indeterminate_read: usize,
    pub polls: usize,
    pub final_reads: usize,
    /// Topic creates and deletes ([`TopicOp`]s), and how many were
    /// acknowledged.
    #[serde(default)]
    pub topic_ops: usize,
    #[serde(default)]
    pub topic_ops_ok: usize,
    /// Anomalies per kind; every kind is present, most with 0.
    pub counts: BTreeMap<AnomalyKind, usize>,
    /// Every anomaly, sorted by kind, then place.
    pub anomalies: Vec<Anomaly>,
}

impl Report {
    /// A report of nothing: no operations, every kind at 0.
    pub fn empty() -> Report {
        Report {
            sends: 0,
            acknowledged: 0,
            failed: 0,
            indeterminate: 0,
            indeterminate_read: 0,
            polls: 0,
            final_reads: 0,
            topic_ops: 0,
            topic_ops_ok: 0,
            counts: AnomalyKind::ALL.iter().map(|k| (*k, 0)).collect(),
            anomalies: Vec::new(),
        }
    }
}

/// Column width of the table row; wide enough for five-digit counts.
const MIN_COL: usize = 6;

impl Report {
    /// Total number of anomalies.
    pub fn anomaly_count(&self) -> usize {
        self.anomalies.len()
    }

    pub fn count(&self, kind: AnomalyKind) -> usize {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// No anomaly of any kind.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// The anomalies of one kind.
    pub fn of_kind(&self, kind: AnomalyKind) -> impl Iterator<Item = &Anomaly> {
        self.anomalies.iter().filter(move |a| a.kind == kind)
    }

    fn columns(&self) -> Vec<(&'static str, usize)> {
        let mut cols = vec![
            ("acked", self.acknowledged),
            ("fail", self.failed),
            ("unknown", self.indeterminate),
            ("unk-read", self.indeterminate_read),
            ("topic-ops", self.topic_ops),
        ];
        cols.extend(AnomalyKind::ALL.iter().map(|k| (k.name(), self.count(*k))));
        cols.push(("anomalies", self.anomaly_count()));
        cols
    }

    /// The header line matching the [`Display`](fmt::Display) row.
    pub fn header() -> String {
        Report::empty()
            .columns()
            .iter()
            .map(|(name, _)| format!("{name:>w$}", w = name.len().max(MIN_COL)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for Report {
    /// One table row: counts aligned under [`Report::header`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row: Vec<String> =
            self.columns().iter().map(|(name, n)| format!("{n:>w$}", w = name.len().max(MIN_COL))).collect();
        f.write_str(&row.join(" "))
    }
}

/// One partition of one incarnation of a topic, as anomalies name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Tp<'a> {
    topic: &'a str,
    generation: u32,
    partition: u32,
}

type TpId = u32;
/// No id (of a partition, a topic) in the `u32` fields below.
const NONE: u32 = u32::MAX;

/// Strings given small ids: topic names, the names of producers, consumers
/// and readers, and values that are not the workload's `w-<p>-<s>`.
#[derive(Default)]
struct Names {
    list: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Names {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        let id = self.list.len() as u32;
        self.list.push(s.to_string());
        self.ids.insert(s.to_string(), id);
        id
    }

    fn name(&self, id: u32) -> &str {
        &self.list[id as usize]
    }
}

/// A value as the checker keeps it: 8 bytes instead of a string. The
/// workload's values `w-<producer>-<seq>` ([`value_name`]) are packed
/// (producer above bit [`SEQ_BITS`], seq below), so one producer's values
/// have neighbouring ids; any other string is interned, its index with the
/// top bit set.
type Vid = u64;
const INTERNED: Vid = 1 << 63;
const SEQ_BITS: u32 = 40;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// The packed id of `w-<p>-<s>` written exactly as [`value_name`] writes
/// it (no sign, no leading zero), so that unpacking gives the same string.
fn packed(value: &str) -> Option<Vid> {
    fn number(s: &str) -> Option<u64> {
        let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
        if canonical { s.parse().ok() } else { None }
    }
    let (p, s) = value.strip_prefix("w-")?.split_once('-')?;
    let (p, s) = (number(p)?, number(s)?);
    (p < 1 << (63 - SEQ_BITS) && s <= SEQ_MASK).then_some(p << SEQ_BITS | s)
}

/// Slots kept in chunks of `1 << CHUNK_BITS` by a 64-bit key (an offset, a
/// value id): dense keys cost one slot each, and a stray key far from the
/// others costs one chunk, not a table up to it.
const CHUNK_BITS: u32 = 12;
const CHUNK_MASK: u64 = (1 << CHUNK_BITS) - 1;

struct Chunked<T> {
    chunks: BTreeMap<u64, Box<[T]>>,
    empty: T,
}

impl<T: Copy> Chunked<T> {
    fn new(empty: T) -> Chunked<T> {
        Chunked { chunks: BTreeMap::new(), empty }
    }

    fn get(&self, key: u64) -> Option<&T> {
        self.chunks.get(&(key >> CHUNK_BITS)).map(|c| &c[(key & CHUNK_MASK) as usize])
    }

    fn entry(&mut self, key: u64) -> &mut T {
        let empty = self.empty;
        let chunk = self.chunks.entry(key >> CHUNK_BITS).or_insert_with(|| vec![empty; 1 << CHUNK_BITS].into());
        &mut chunk[(key & CHUNK_MASK) as usize]
    }

    /// Every slot of every chunk, with its key, in key order (empty slots
    /// too: the caller tells them apart).
    fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.chunks
            .iter()
            .flat_map(|(c, chunk)| chunk.iter().enumerate().map(move |(i, t)| (c << CHUNK_BITS | i as u64, t)))
    }

    /// As [`Chunked::iter`], keys in `lo..hi` only.
    fn range(&self, lo: u64, hi: u64) -> impl Iterator<Item = (u64, &T)> {
        let chunks = if lo < hi { lo >> CHUNK_BITS..=(hi - 1) >> CHUNK_BITS } else { 0..=0 };
        self.chunks
            .range(chunks)
            .flat_map(|(c, chunk)| chunk.iter().enumerate().map(move |(i, t)| (c << CHUNK_BITS | i as u64, t)))
            .filter(move |(k, _)| lo <= *k && *k < hi)
    }
}

/// A list that grows in blocks of fixed size, so that it never holds up to
/// twice its length while it grows, as a `Vec` does when it reallocates.
struct Blocks<T> {
    blocks: Vec<Vec<T>>,
}

impl<T> Default for Blocks<T> {
    fn default() -> Blocks<T> {
        Blocks { blocks: Vec::new() }
    }
}

impl<T> Blocks<T> {
    const BLOCK: usize = 4096;

    fn push(&mut self, t: T) {
        match self.blocks.last_mut() {
            Some(b) if b.len() < Self::BLOCK => b.push(t),
            _ => {
                let mut b = Vec::with_capacity(Self::BLOCK);
                b.push(t);
                self.blocks.push(b);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.blocks.iter().flatten()
    }
}

/// Everything known about one value: its send attempts and where it was
/// first acknowledged and first read. 40 bytes; further read places, rare,
/// are in [`Values::more_reads`].
#[derive(Clone, Copy)]
struct ValueInfo {
    ack_offset: u64,
    read_offset: u64,
    /// Where the first acknowledgement put it ([`NONE`]: never acknowledged).
    ack_tp: TpId,
    /// Where it was first read ([`NONE`]: never read).
    read_tp: TpId,
    /// The topic and incarnation of the first send ([`NONE`]: never sent).
    sent_topic: u32,
    sent_generation: u32,
    acks: u16,
    failed: u16,
    unknown: u16,
    used: bool,
}

impl ValueInfo {
    const EMPTY: ValueInfo = ValueInfo {
        ack_offset: 0,
        read_offset: 0,
        ack_tp: NONE,
        read_tp: NONE,
        sent_topic: NONE,
        sent_generation: 0,
        acks: 0,
        failed: 0,
        unknown: 0,
        used: false,
    };
}

/// Every value seen, by id.
struct Values {
    interned: Names,
    info: Chunked<ValueInfo>,
    /// Read places beyond the first, per value (a value read at one place
    /// by many readers has none).
    more_reads: HashMap<Vid, Vec<(TpId, u64)>>,
}

impl Default for Values {
    fn default() -> Values {
        Values { interned: Names::default(), info: Chunked::new(ValueInfo::EMPTY), more_reads: HashMap::new() }
    }
}

impl Values {
    fn id(&mut self, value: &str) -> Vid {
        packed(value).unwrap_or_else(|| INTERNED | self.interned.id(value) as Vid)
    }

    fn name(&self, vid: Vid) -> String {
        if vid & INTERNED != 0 {
            self.interned.name((vid & !INTERNED) as u32).to_string()
        } else {
            value_name((vid >> SEQ_BITS) as u32, vid & SEQ_MASK)
        }
    }

    fn info(&mut self, vid: Vid) -> &mut ValueInfo {
        let info = self.info.entry(vid);
        info.used = true;
        info
    }

    fn get(&self, vid: Vid) -> ValueInfo {
        self.info.get(vid).copied().unwrap_or(ValueInfo::EMPTY)
    }

    /// Notes that `vid` was read at `offset` of `tp`.
    fn read_at(&mut self, vid: Vid, tp: TpId, offset: u64) {
        let info = self.info(vid);
        if info.read_tp == NONE {
            (info.read_tp, info.read_offset) = (tp, offset);
        } else if (info.read_tp, info.read_offset) != (tp, offset) {
            let more = self.more_reads.entry(vid).or_default();
            if !more.contains(&(tp, offset)) {
                more.push((tp, offset));
            }
        }
    }

    /// Every place `vid` was read.
    fn places(&self, vid: Vid) -> impl Iterator<Item = (TpId, u64)> + '_ {
        let info = self.get(vid);
        let first = (info.read_tp != NONE).then_some((info.read_tp, info.read_offset));
        first.into_iter().chain(self.more_reads.get(&vid).into_iter().flatten().copied())
    }
}

/// What kind of observation a source makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SourceKind {
    /// An acknowledgement to a producer: committed.
    Ack,
    /// A poll by a consumer: committed (polls return committed records).
    Poll,
    /// A final read.
    Final,
}

/// A set of sources of one partition as bits; sources past the 63rd share
/// the last bit.
type Mask = u64;
const LAST_BIT: usize = 63;

/// The observers of one partition ("ack to p1", "poll by c3", each final
/// read), by name id. Sources are per partition, so a run's many topics and
/// readers never crowd one mask.
#[derive(Default)]
struct Sources {
    list: Vec<(SourceKind, u32)>,
    ids: HashMap<(SourceKind, u32), usize>,
}

impl Sources {
    /// The bit of an acknowledging producer or a polling consumer.
    fn bit(&mut self, kind: SourceKind, who: u32) -> Mask {
        let id = *self.ids.entry((kind, who)).or_insert_with(|| {
            self.list.push((kind, who));
            self.list.len() - 1
        });
        1 << id.min(LAST_BIT)
    }

    /// A bit of its own for one final read: a cell then holds a final
    /// read's bit exactly when that read has the cell's value there.
    fn new_bit(&mut self, kind: SourceKind, who: u32) -> Mask {
        self.list.push((kind, who));
        1 << (self.list.len() - 1).min(LAST_BIT)
    }

    /// The sources that make a write count as committed. The shared last
    /// bit counts only if no final read shares it, so that a final read is
    /// never mistaken for evidence of a commit.
    fn committed(&self) -> Mask {
        let shared_final = self.list.iter().skip(LAST_BIT).any(|(k, _)| *k == SourceKind::Final);
        self.list
            .iter()
            .enumerate()
            .filter(|(i, (k, _))| *k != SourceKind::Final && !(*i >= LAST_BIT && shared_final))
            .fold(0, |m, (i, _)| m | 1 << i.min(LAST_BIT))
    }

    /// The bits of the final reads.
    fn finals(&self) -> Mask {
        self.list
            .iter()
            .enumerate()
            .filter(|(_, (k, _))| *k == SourceKind::Final)
            .fold(0, |m, (i, _)| m | 1 << i.min(LAST_BIT))
    }

    fn each(&self, mask: Mask) -> impl Iterator<Item = (SourceKind, u32, bool)> + '_ {
        self.list
            .iter()
            .enumerate()
            .filter(move |(i, _)| mask & (1 << (*i).min(LAST_BIT)) != 0)
            .map(|(i, (k, w))| (*k, *w, i >= LAST_BIT))
    }

    /// "ack to p1, poll by c1, final read (leader)".
    fn describe(&self, mask: Mask, names: &Names) -> String {
        let mut out: Vec<String> = Vec::new();
        let mut others = false;
        for (k, w, shared) in self.each(mask) {
            if shared {
                others = true;
                continue;
            }
            let w = names.name(w);
            out.push(match k {
                SourceKind::Ack => format!("ack to {w}"),
                SourceKind::Poll => format!("poll by {w}"),
                SourceKind::Final => format!("final read ({w})"),
            });
        }
        out.dedup();
        if others {
            out.push("others".into());
        }
        out.join(", ")
    }

    /// Why a write must be in the final reads: "acknowledged to p1, read by c1".
    fn reasons(&self, mask: Mask, names: &Names) -> String {
        let mut out: Vec<String> = Vec::new();
        for (k, w, shared) in self.each(mask) {
            match k {
                SourceKind::Ack if !shared => out.push(format!("acknowledged to {}", names.name(w))),
                SourceKind::Poll if !shared => out.push(format!("read by {}", names.name(w))),
                SourceKind::Final => {}
                _ => out.push("committed per others".into()),
            }
        }
        out.dedup();
        out.join(", ")
    }
}

/// A value at an offset, and who saw it there.
#[derive(Clone, Copy)]
struct Cell {
    value: Vid,
    sources: Mask,
}

impl Cell {
    const EMPTY: Cell = Cell { value: Vid::MAX, sources: 0 };

    fn is_empty(&self) -> bool {
        self.value == Vid::MAX
    }
}

/// A final read as the lost-write check needs it: who, its bit, the
/// offsets it vouches for.
struct FinalMeta {
    reader: u32,
    bit: Mask,
    covered: std::ops::Range<u64>,
}

/// A record of a replica read; `digest` is [`NO_DIGEST`] when the read
/// had none.
#[derive(Clone, Copy)]
struct Rec {
    offset: u64,
    value: Vid,
    digest: u64,
}

/// Stands for a record without a digest. A real digest equal to it (a
/// chance of 2^-64) is compared by value only.
const NO_DIGEST: u64 = u64::MAX;

/// A whole-log read of one partition, records by offset (the first record
/// of an offset returned twice standing for the read; a repeat is a
/// nonmonotonic read, reported as such).
struct ReplicaLog {
    reader: u32,
    start: u64,
    /// The end of what it covers ([`FinalRead::covered`]).
    end: u64,
    records: Vec<Rec>,
}

/// Everything known about one partition: one [`Cell`] per offset observed,
/// the first value seen there (further values in [`Checker::conflicts`]).
struct Part {
    cells: Chunked<Cell>,
    sources: Sources,
    finals: Vec<FinalMeta>,
    /// The leader's whole-log read, which every replica's is compared with
    /// as it comes.
    leader: Option<ReplicaLog>,
    /// Replica reads that came before any leader read; compared when one
    /// comes, or with the first of them at the end.
    waiting: Vec<ReplicaLog>,
}

impl Default for Part {
    fn default() -> Part {
        Part {
            cells: Chunked::new(Cell::EMPTY),
            sources: Sources::default(),
            finals: Vec::new(),
            leader: None,
            waiting: Vec::new(),
        }
    }
}

/// One step of a reader from `prev` to `next`: a nonmonotonic read when it
/// goes back, a possible poll-skip (decided once every offset is known)
/// when it jumps.
struct Jump {
    who: u32,
    tp: TpId,
    prev: u64,
    prev_value: Vid,
    next: u64,
    next_value: Vid,
    /// The first record of a poll (else within one).
    first_of_poll: bool,
}

/// Builds anomalies at one partition.
fn at(kind: AnomalyKind, tp: Tp, offsets: Vec<u64>, values: Vec<String>, detail: String) -> Anomaly {
    Anomaly {
        kind,
        topic: tp.topic.to_string(),
        generation: tp.generation,
        partition: tp.partition,
        offsets,
        values,
        detail,
    }
}

/// The state of a topic name the checker expects, from its creates and
/// deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Created (acknowledged) as this incarnation, id and partitions.
    Present { generation: u32, topic_id: u64, partitions: u32 },
    /// Deleted (acknowledged), or never created.
    Absent { deleted: Option<u32> },
    /// An operation whose outcome is unknown: anything goes.
    Unknown,
}

/// Checks a history in memory. Pure: the same history gives the same
/// report.
pub fn check(history: &History) -> Report {
    check_events(history).expect("a history in memory scans without error")
}

/// Checks a history in one pass over its events, keeping about 100 bytes
/// per record written (module docs); a second pass is made only to name
/// the writes an undeleted topic acknowledged after its delete. The report
/// does not depend on the order of the events, except for each reader's
/// own succession of reads.
pub fn check_events(events: &dyn Events) -> io::Result<Report> {
    let mut c = Checker::default();
    events.scan(&mut |e| c.add(e))?;
    c.finish(events)
}

/// The checker's state while it goes through a history.
#[derive(Default)]
struct Checker {
    report: Report,
    /// Producers, consumers and readers.
    names: Names,
    topics: Names,
    /// (topic, generation, partition) by partition id, and back.
    tps: Vec<(u32, u32, u32)>,
    tp_ids: HashMap<(u32, u32, u32), TpId>,
    parts: Vec<Part>,
    values: Values,
    /// Further values at an offset that already holds another.
    conflicts: BTreeMap<(TpId, u64), Vec<Cell>>,
    /// Each reader's last offset read, per partition.
    last_read: HashMap<(u32, TpId), (u64, Vid)>,
    jumps: Vec<Jump>,
    /// (producer, partition) → (seq, value) of the sends that carry a seq.
    send_order: HashMap<(u32, TpId), Blocks<(u64, Vid)>>,
    topic_ops: Vec<TopicOp>,
    topic_states: Vec<TopicState>,
    /// (topic, generation) → the latest start of an acknowledged send.
    last_acked_send: HashMap<(u32, u32), u64>,
    anomalies: Vec<Anomaly>,
}

impl Default for Report {
    fn default() -> Report {
        Report::empty()
    }
}

fn tp_of<'a>(topics: &'a Names, tps: &[(u32, u32, u32)], id: TpId) -> Tp<'a> {
    let (topic, generation, partition) = tps[id as usize];
    Tp { topic: topics.name(topic), generation, partition }
}

/// Notes that `value` was seen at `offset` of partition `part` by `bit`.
fn observe(
    part: &mut Part,
    conflicts: &mut BTreeMap<(TpId, u64), Vec<Cell>>,
    tp: TpId,
    offset: u64,
    value: Vid,
    bit: Mask,
) {
    let cell = part.cells.entry(offset);
    if cell.is_empty() {
        *cell = Cell { value, sources: bit };
    } else if cell.value == value {
        cell.sources |= bit;
    } else {
        let extra = conflicts.entry((tp, offset)).or_default();
        match extra.iter_mut().find(|c| c.value == value) {
            Some(c) => c.sources |= bit,
            None => extra.push(Cell { value, sources: bit }),
        }
    }
}

impl Checker {
    fn tp_id(&mut self, topic: &str, generation: u32, partition: u32) -> TpId {
        let key = (self.topics.id(topic), generation, partition);
        *self.tp_ids.entry(key).or_insert_with(|| {
            self.tps.push(key);
            self.parts.push(Part::default());
            (self.tps.len() - 1) as TpId
        })
    }

    fn add(&mut self, e: &Event) {
        match e {
            Event::Send(op) => self.add_send(op),
            Event::Poll(op) => self.add_poll(op),
            Event::FinalRead(f) => self.add_final(f),
            Event::Topic(op) => self.topic_ops.push(as_recorded_now(op)),
            Event::TopicState(s) => self.topic_states.push(s.clone()),
        }
    }

    fn add_send(&mut self, op: &SendOp) {
        self.report.sends += 1;
        let topic = self.topics.id(&op.topic);
        let vid = self.values.id(&op.value);
        let info = self.values.info(vid);
        if info.sent_topic == NONE {
            (info.sent_topic, info.sent_generation) = (topic, op.generation);
        }
        match &op.outcome {
            Outcome::Ok { partition, offset } => {
                self.report.acknowledged += 1;
                info.acks = info.acks.saturating_add(1);
                let tp = self.tp_id(&op.topic, op.generation, *partition);
                let info = self.values.info(vid);
                if info.ack_tp == NONE {
                    (info.ack_tp, info.ack_offset) = (tp, *offset);
                }
                let who = self.names.id(&op.producer);
                let part = &mut self.parts[tp as usize];
                let bit = part.sources.bit(SourceKind::Ack, who);
                observe(part, &mut self.conflicts, tp, *offset, vid, bit);
                let latest = self.last_acked_send.entry((topic, op.generation)).or_insert(0);
                *latest = (*latest).max(op.start_us);
            }
            Outcome::Fail { .. } => {
                self.report.failed += 1;
                info.failed = info.failed.saturating_add(1);
            }
            Outcome::Unknown { .. } => {
                self.report.indeterminate += 1;
                info.unknown = info.unknown.saturating_add(1);
            }
        }
        if let (Some(seq), Some(partition)) = (op.seq, op.partition) {
            let tp = self.tp_id(&op.topic, op.generation, partition);
            let who = self.names.id(&op.producer);
            self.send_order.entry((who, tp)).or_default().push((seq, vid));
        }
    }

    /// One record read by `who` (a consumer, or a final reader), for the
    /// read-order checks.
    fn read_in_order(&mut self, who: u32, tp: TpId, offset: u64, value: Vid, first_of_poll: bool) {
        if let Some(&(prev, prev_value)) = self.last_read.get(&(who, tp))
            && (offset <= prev || offset > prev + 1)
        {
            self.jumps.push(Jump { who, tp, prev, prev_value, next: offset, next_value: value, first_of_poll });
        }
        self.last_read.insert((who, tp), (offset, value));
    }

    fn add_poll(&mut self, op: &PollOp) {
        self.report.polls += 1;
        let tp = self.tp_id(&op.topic, op.generation, op.partition);
        let who = self.names.id(&op.consumer);
        let bit = self.parts[tp as usize].sources.bit(SourceKind::Poll, who);
        for (i, r) in op.records.iter().enumerate() {
            let vid = self.values.id(&r.value);
            observe(&mut self.parts[tp as usize], &mut self.conflicts, tp, r.offset, vid, bit);
            self.values.read_at(vid, tp, r.offset);
            self.read_in_order(who, tp, r.offset, vid, i == 0);
        }
    }

    fn add_final(&mut self, f: &FinalRead) {
        self.report.final_reads += 1;
        let tp = self.tp_id(&f.topic, f.generation, f.partition);
        let reader = self.names.id(&f.reader);
        // A final read counts as one poll by a consumer of its own.
        let as_consumer = self.names.id(&format!("final read ({})", f.reader));
        let bit = self.parts[tp as usize].sources.new_bit(SourceKind::Final, reader);
        let replica = is_replica_read(&f.reader);
        let mut records = Vec::with_capacity(if replica { f.records.len() } else { 0 });
        for (i, r) in f.records.iter().enumerate() {
            let vid = self.values.id(&r.value);
            observe(&mut self.parts[tp as usize], &mut self.conflicts, tp, r.offset, vid, bit);
            self.values.read_at(vid, tp, r.offset);
            self.read_in_order(as_consumer, tp, r.offset, vid, i == 0);
            if replica {
                records.push(Rec { offset: r.offset, value: vid, digest: r.digest.unwrap_or(NO_DIGEST) });
            }
        }
        let covered = f.covered();
        let end = covered.end;
        self.parts[tp as usize].finals.push(FinalMeta { reader, bit, covered });
        if !replica {
            return;
        }
        if !records.windows(2).all(|w| w[0].offset < w[1].offset) {
            records.sort_by_key(|r| r.offset);
            records.dedup_by_key(|r| r.offset);
        }
        let log = ReplicaLog { reader, start: f.start_offset, end, records };
        let tpv = tp_of(&self.topics, &self.tps, tp);
        let part = &mut self.parts[tp as usize];
        if let Some(leader) = &part.leader {
            self.anomalies.extend(compare_replicas(tpv, leader, &log, &self.names, &self.values));
        } else if f.reader == "leader" {
            for other in part.waiting.drain(..) {
                self.anomalies.extend(compare_replicas(tpv, &log, &other, &self.names, &self.values));
            }
            part.leader = Some(log);
        } else {
            part.waiting.push(log);
        }
    }

    fn finish(self, events: &dyn Events) -> io::Result<Report> {
        let Checker {
            mut report,
            names,
            topics,
            tps,
            parts,
            values,
            conflicts,
            jumps,
            send_order,
            topic_ops,
            topic_states,
            last_acked_send,
            mut anomalies,
            ..
        } = self;
        let (names, topics, parts, values) = (&names, &topics, &parts, &values);
        let tp_of = |id: TpId| tp_of(topics, &tps, id);

        // inconsistent-offsets: one offset, several values.
        for ((tp, offset), extra) in &conflicts {
            let part = &parts[*tp as usize];
            let first = *part.cells.get(*offset).expect("a conflict has a first cell");
            let mut cells: Vec<(String, Mask)> = std::iter::once(first)
                .chain(extra.iter().copied())
                .map(|c| (values.name(c.value), c.sources))
                .collect();
            cells.sort_by(|a, b| a.0.cmp(&b.0));
            let detail = cells
                .iter()
                .map(|(v, m)| format!("{v} ({})", part.sources.describe(*m, names)))
                .collect::<Vec<_>>()
                .join(" vs ");
            anomalies.push(at(
                AnomalyKind::InconsistentOffsets,
                tp_of(*tp),
                vec![*offset],
                cells.into_iter().map(|(v, _)| v).collect(),
                format!("offset {offset} holds {detail}"),
            ));
        }

        // duplicate / phantom-write / unexpected / resurrected: per value read.
        for (vid, info) in values.info.iter() {
            if !info.used || info.read_tp == NONE {
                continue;
            }
            let mut places: Vec<(Tp, u64)> = values.places(vid).map(|(tp, o)| (tp_of(tp), o)).collect();
            places.sort();
            places.dedup();
            let (tp, first_offset) = places[0];
            let where_read = || {
                places
                    .iter()
                    .map(|(tp, o)| format!("{}@{o}", place(tp.topic, tp.generation, tp.partition)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if places.len() > 1 {
                anomalies.push(at(
                    AnomalyKind::Duplicate,
                    tp,
                    places.iter().map(|(_, o)| *o).collect(),
                    vec![values.name(vid)],
                    format!("read at {} offsets: {}", places.len(), where_read()),
                ));
            }
            if info.sent_topic == NONE {
                anomalies.push(at(
                    AnomalyKind::Unexpected,
                    tp,
                    vec![first_offset],
                    vec![values.name(vid)],
                    format!("never sent, but read at {}", where_read()),
                ));
                continue;
            }
            let sent_topic = topics.name(info.sent_topic);
            for (rtp, offset) in &places {
                if rtp.topic != sent_topic {
                    anomalies.push(at(
                        AnomalyKind::Unexpected,
                        *rtp,
                        vec![*offset],
                        vec![values.name(vid)],
                        format!("sent to topic {sent_topic}, but read at {}", where_read()),
                    ));
                    break;
                }
                if rtp.generation != info.sent_generation {
                    anomalies.push(at(
                        AnomalyKind::Resurrected,
                        *rtp,
                        vec![*offset],
                        vec![values.name(vid)],
                        format!(
                            "written to incarnation g{} of {sent_topic}, but read from incarnation g{} at offset {offset}",
                            info.sent_generation, rtp.generation
                        ),
                    ));
                    break;
                }
            }
            if info.acks == 0 && info.unknown == 0 {
                anomalies.push(at(
                    AnomalyKind::PhantomWrite,
                    tp,
                    vec![first_offset],
                    vec![values.name(vid)],
                    format!("refused {} time(s), but read at {}", info.failed, where_read()),
                ));
            } else if info.acks == 0 {
                report.indeterminate_read += 1;
            }
        }

        // Incarnations whose delete may have happened: their partitions need
        // not have a final read.
        let maybe_deleted: HashSet<(&str, u32)> = topic_ops
            .iter()
            .filter(|op| op.action == TopicAction::Delete && !matches!(op.outcome, TopicOutcome::Fail { .. }))
            .map(|op| (op.topic.as_str(), op.generation))
            .collect();

        // lost-write / unseen: every committed write against the final reads.
        for (tp_id, part) in parts.iter().enumerate() {
            let tp_id = tp_id as TpId;
            let tp = tp_of(tp_id);
            if part.finals.is_empty() && maybe_deleted.contains(&(tp.topic, tp.generation)) {
                continue;
            }
            let committed = part.sources.committed();
            let final_bits = part.sources.finals();
            // The cell holding `value` at `offset`, if any.
            let cell_of = |offset: u64, value: Vid| -> Option<Cell> {
                let first = part.cells.get(offset).copied().filter(|c| !c.is_empty())?;
                std::iter::once(first)
                    .chain(conflicts.get(&(tp_id, offset)).into_iter().flatten().copied())
                    .find(|c| c.value == value)
            };
            for (offset, first) in part.cells.iter() {
                if first.is_empty() {
                    continue;
                }
                let here: Vec<Cell> = std::iter::once(*first)
                    .chain(conflicts.get(&(tp_id, offset)).into_iter().flatten().copied())
                    .collect();
                for cell in &here {
                    if cell.sources & committed == 0 {
                        continue;
                    }
                    let anomaly = |kind, detail: String| {
                        let why = part.sources.reasons(cell.sources & committed, names);
                        at(
                            kind,
                            tp,
                            vec![offset],
                            vec![values.name(cell.value)],
                            format!("{why} at offset {offset}; {detail}"),
                        )
                    };
                    let covering: Vec<&FinalMeta> =
                        part.finals.iter().filter(|r| r.covered.contains(&offset)).collect();
                    if covering.is_empty() {
                        let detail = if part.finals.is_empty() {
                            "there is no final read of the partition".to_string()
                        } else {
                            let ends: Vec<String> = part
                                .finals
                                .iter()
                                .map(|r| format!("{} ends at {}", names.name(r.reader), r.covered.end))
                                .collect();
                            format!("no final read reaches it ({})", ends.join(", "))
                        };
                        anomalies.push(anomaly(AnomalyKind::Unseen, detail));
                        continue;
                    }
                    let missing: Vec<String> = covering
                        .iter()
                        .filter(|r| cell.sources & r.bit == 0)
                        .map(|r| match here.iter().find(|c| c.sources & r.bit != 0) {
                            Some(other) => {
                                format!(
                                    "final read ({}) holds {} there",
                                    names.name(r.reader),
                                    values.name(other.value)
                                )
                            }
                            None => format!("final read ({}) has no record there", names.name(r.reader)),
                        })
                        .collect();
                    if !missing.is_empty() {
                        let elsewhere: BTreeSet<u64> = values
                            .places(cell.value)
                            .filter(|(t, o)| {
                                *t == tp_id && cell_of(*o, cell.value).is_some_and(|c| c.sources & final_bits != 0)
                            })
                            .map(|(_, o)| o)
                            .collect();
                        let mut detail = missing.join("; ");
                        if !elsewhere.is_empty() {
                            let list: Vec<String> = elsewhere.iter().map(|o| o.to_string()).collect();
                            detail.push_str(&format!("; found at offset {} instead", list.join(", ")));
                        }
                        anomalies.push(anomaly(AnomalyKind::LostWrite, detail));
                    }
                }
            }
        }

        // nonmonotonic-poll / poll-skip: each reader's successive offsets.
        for j in &jumps {
            let tp = tp_of(j.tp);
            let who = names.name(j.who);
            let when = if j.first_of_poll { "on its next poll" } else { "within one poll" };
            let anomaly = |kind, values: Vec<String>, detail: String| {
                at(
                    kind,
                    tp,
                    vec![j.prev, j.next],
                    values,
                    format!("consumer {who} read offset {} {when} after offset {}; {detail}", j.next, j.prev),
                )
            };
            if j.next <= j.prev {
                let (a, b) = (values.name(j.prev_value), values.name(j.next_value));
                let detail = format!("{a} then {b}");
                anomalies.push(anomaly(AnomalyKind::NonmonotonicPoll, vec![a, b], detail));
                continue;
            }
            const SHOWN: usize = 8;
            let part = &parts[j.tp as usize];
            let mut skipped = part.cells.range(j.prev + 1, j.next).filter(|(_, c)| !c.is_empty());
            let shown: Vec<(u64, String)> =
                skipped.by_ref().take(SHOWN).map(|(o, c)| (o, values.name(c.value))).collect();
            if shown.is_empty() {
                continue;
            }
            let count = shown.len() + skipped.count();
            let listed: Vec<String> = shown.iter().map(|(o, v)| format!("{v}@{o}")).collect();
            let more = if count > SHOWN { ", ..." } else { "" };
            anomalies.push(anomaly(
                AnomalyKind::PollSkip,
                shown.iter().map(|(_, v)| v.clone()).collect(),
                format!("skipped {count} existing offset(s): {}{more}", listed.join(", ")),
            ));
        }

        check_send_order(&send_order, names, values, &tp_of, &mut anomalies);
        let deleted = check_topics(&topic_ops, &topic_states, &mut report, &mut anomalies);
        // A write acknowledged by an incarnation after its delete was: the
        // sends are found by going through the history again, which only
        // happens when there is such a write.
        let suspect = last_acked_send.iter().any(|((t, g), start)| {
            deleted.get(&(topics.name(*t).to_string(), *g)).is_some_and(|deleted_at| start >= deleted_at)
        });
        if suspect {
            events.scan(&mut |e| {
                let Event::Send(op) = e else { return };
                if let (Outcome::Ok { partition, offset }, Some(deleted_at)) =
                    (&op.outcome, deleted.get(&(op.topic.clone(), op.generation)))
                    && op.start_us >= *deleted_at
                {
                    anomalies.push(Anomaly {
                        kind: AnomalyKind::UndeletedTopic,
                        topic: op.topic.clone(),
                        generation: op.generation,
                        partition: 0,
                        offsets: Vec::new(),
                        values: vec![op.value.clone()],
                        detail: format!(
                            "deleted at {:.3}s, but {} sent at {:.3}s by {} was acknowledged at {partition}@{offset}",
                            *deleted_at as f64 / 1e6,
                            op.value,
                            op.start_us as f64 / 1e6,
                            op.producer
                        ),
                    });
                }
            })?;
        }

        // replica-divergence of partitions without a leader read: the first
        // replica read against the others.
        for (tp_id, part) in parts.iter().enumerate() {
            if let [first, rest @ ..] = &part.waiting[..] {
                for other in rest {
                    anomalies.extend(compare_replicas(tp_of(tp_id as TpId), first, other, names, values));
                }
            }
        }

        anomalies.sort();
        for a in &anomalies {
            *report.counts.entry(a.kind).or_default() += 1;
        }
        report.anomalies = anomalies;
        Ok(report)
    }
}

/// nonmonotonic-send / send-skip: each producer's sends to one partition,
/// in send order, must sit at increasing offsets.
fn check_send_order<'a>(
    send_order: &HashMap<(u32, TpId), Blocks<(u64, Vid)>>,
    names: &Names,
    values: &Values,
    tp_of: &dyn Fn(TpId) -> Tp<'a>,
    anomalies: &mut Vec<Anomaly>,
) {
    // Where a value landed in `tp`: its acknowledged offset, else the lowest
    // offset it was read at. `true` when the place is an acknowledgement.
    let landed = |value: Vid, tp: TpId| -> Option<(u64, bool)> {
        let info = values.get(value);
        if info.ack_tp == tp {
            return Some((info.ack_offset, true));
        }
        values.places(value).filter(|(t, _)| *t == tp).map(|(_, o)| (o, false)).min()
    };
    for ((producer, tp_id), sends) in send_order {
        let mut sends: Vec<(u64, Vid)> = sends.iter().copied().collect();
        sends.sort_by_key(|(seq, _)| *seq);
        let tp = tp_of(*tp_id);
        let producer = names.name(*producer);
        let placed: Vec<(u64, Vid, u64, bool)> =
            sends.iter().filter_map(|(seq, v)| landed(*v, *tp_id).map(|(o, acked)| (*seq, *v, o, acked))).collect();
        for pair in placed.windows(2) {
            let (a_seq, a, a_off, a_acked) = pair[0];
            let (b_seq, b, b_off, b_acked) = pair[1];
            if b_off > a_off {
                continue;
            }
            let (a, b) = (values.name(a), values.name(b));
            let how = |acked| if acked { "acknowledged at" } else { "read at" };
            let (kind, what) = if a_acked && b_acked {
                (AnomalyKind::NonmonotonicSend, "acknowledged out of send order")
            } else {
                (AnomalyKind::SendSkip, "landed out of send order: the earlier send was passed over and written later")
            };
            let detail = format!(
                "producer {producer} sent {a} (send {a_seq}) before {b} (send {b_seq}), {} {a_off} and {} {b_off}: {what}",
                how(a_acked),
                how(b_acked)
            );
            anomalies.push(at(kind, tp, vec![a_off, b_off], vec![a, b], detail));
        }
    }
}

/// A topic operation as the workload records it now: a refusal that the
/// SDK reported as `outcome unknown: ...` (an earlier attempt of its own
/// retry loop may have been applied; older histories hold these as
/// `Fail`) is indeterminate.
fn as_recorded_now(op: &TopicOp) -> TopicOp {
    let mut op = op.clone();
    if let TopicOutcome::Fail { error } = &op.outcome
        && error.starts_with(SDK_INDETERMINATE)
    {
        op.outcome = TopicOutcome::Unknown { error: error.clone() };
    }
    op
}

/// How the SDK's `Error::Indeterminate` reads.
const SDK_INDETERMINATE: &str = "outcome unknown:";

/// undeleted-topic / missing-topic: settled topic observations against
/// each name's creates and deletes. Returns when each incarnation whose
/// delete was acknowledged was deleted, for the check of the sends.
fn check_topics(
    topic_ops: &[TopicOp],
    topic_states: &[TopicState],
    report: &mut Report,
    anomalies: &mut Vec<Anomaly>,
) -> HashMap<(String, u32), u64> {
    let mut ops: BTreeMap<&str, Vec<&TopicOp>> = BTreeMap::new();
    for op in topic_ops {
        report.topic_ops += 1;
        if matches!(op.outcome, TopicOutcome::Ok { .. }) {
            report.topic_ops_ok += 1;
        }
        ops.entry(op.topic.as_str()).or_default().push(op);
    }
    for list in ops.values_mut() {
        list.sort_by_key(|op| (op.start_us, op.end_us));
    }
    // Creates that may have made an incarnation whose id is not known
    // (outcome unknown, or acknowledged without an id), by name: when each
    // started. A listed id that is no deleted incarnation's may be theirs.
    let mut unknown_creates: HashMap<&str, Vec<u64>> = HashMap::new();
    for (topic, list) in &ops {
        for op in list {
            let id_unknown = match &op.outcome {
                TopicOutcome::Unknown { .. } => true,
                TopicOutcome::Ok { topic_id } => *topic_id == 0,
                TopicOutcome::Fail { .. } => false,
            };
            if op.action == TopicAction::Create && id_unknown {
                unknown_creates.entry(topic).or_default().push(op.start_us);
            }
        }
    }
    // Incarnations (and their ids) whose delete was acknowledged, and when.
    let mut deleted: HashMap<(&str, u32), u64> = HashMap::new();
    let mut deleted_ids: HashMap<(&str, u64), u32> = HashMap::new();
    for (topic, list) in &ops {
        let mut ids: HashMap<u32, u64> = HashMap::new();
        for op in list {
            match (op.action, &op.outcome) {
                (TopicAction::Create, TopicOutcome::Ok { topic_id }) => {
                    ids.insert(op.generation, *topic_id);
                }
                (TopicAction::Delete, TopicOutcome::Ok { .. }) => {
                    deleted.insert((topic, op.generation), op.end_us);
                    if let Some(id) = ids.get(&op.generation) {
                        deleted_ids.insert((topic, *id), op.generation);
                    }
                }
                _ => {}
            }
        }
    }
    let topic_anomaly = |kind, topic: &str, generation: u32, values: Vec<String>, detail: String| Anomaly {
        kind,
        topic: topic.to_string(),
        generation,
        partition: 0,
        offsets: Vec::new(),
        values,
        detail,
    };

    for s in topic_states {
        let Some(list) = ops.get(s.topic.as_str()) else { continue };
        // Only operations over before the observation count; one still
        // under way leaves the state open.
        if list.iter().any(|op| op.start_us <= s.at_us && s.at_us < op.end_us) {
            continue;
        }
        let mut expect = Expect::Absent { deleted: None };
        for op in list.iter().filter(|op| op.end_us <= s.at_us) {
            expect = match (op.action, &op.outcome) {
                (_, TopicOutcome::Fail { .. }) => expect,
                (_, TopicOutcome::Unknown { .. }) => Expect::Unknown,
                (TopicAction::Create, TopicOutcome::Ok { topic_id }) => {
                    Expect::Present { generation: op.generation, topic_id: *topic_id, partitions: op.partitions }
                }
                (TopicAction::Delete, TopicOutcome::Ok { .. }) => Expect::Absent { deleted: Some(op.generation) },
            };
        }
        let at_s = s.at_us as f64 / 1e6;
        let seen_deleted = s.present.and_then(|p| deleted_ids.get(&(s.topic.as_str(), p.topic_id)).copied());
        match (expect, s.present) {
            (Expect::Present { generation, topic_id, .. }, None) => anomalies.push(topic_anomaly(
                AnomalyKind::MissingTopic,
                &s.topic,
                generation,
                vec![s.node.clone()],
                format!("created as id {topic_id} and not deleted, but node {} does not list it at {at_s:.3}s", s.node),
            )),
            (Expect::Present { generation, topic_id, partitions }, Some(seen)) => {
                if let Some(g) = seen_deleted.filter(|_| seen.topic_id != topic_id) {
                    anomalies.push(topic_anomaly(
                        AnomalyKind::UndeletedTopic,
                        &s.topic,
                        g,
                        vec![s.node.clone()],
                        format!(
                            "node {} lists id {} (incarnation g{g}, deleted) instead of g{generation} (id {topic_id}) at {at_s:.3}s",
                            s.node, seen.topic_id
                        ),
                    ));
                } else if seen.topic_id != topic_id || seen.partitions != partitions {
                    anomalies.push(topic_anomaly(
                        AnomalyKind::MissingTopic,
                        &s.topic,
                        generation,
                        vec![s.node.clone()],
                        format!(
                            "created as id {topic_id} with {partitions} partition(s), but node {} lists id {} with {} at {at_s:.3}s",
                            s.node, seen.topic_id, seen.partitions
                        ),
                    ));
                }
            }
            // Still listed after the delete: an undeleted topic if the id
            // is a deleted incarnation's, or if no create could have made
            // it (a create of unknown outcome may land after the delete
            // and list a new id: a new incarnation, not the deleted one).
            (Expect::Absent { deleted: Some(g) }, Some(seen))
                if seen_deleted.is_some()
                    || !unknown_creates
                        .get(s.topic.as_str())
                        .is_some_and(|starts| starts.iter().any(|start| *start <= s.at_us)) =>
            {
                anomalies.push(topic_anomaly(
                    AnomalyKind::UndeletedTopic,
                    &s.topic,
                    seen_deleted.unwrap_or(g),
                    vec![s.node.clone()],
                    format!("deleted (g{g}), but node {} still lists it (id {}) at {at_s:.3}s", s.node, seen.topic_id),
                ))
            }
            (Expect::Unknown | Expect::Absent { deleted: None }, Some(seen)) => {
                if let Some(g) = seen_deleted {
                    anomalies.push(topic_anomaly(
                        AnomalyKind::UndeletedTopic,
                        &s.topic,
                        g,
                        vec![s.node.clone()],
                        format!(
                            "node {} lists id {} of incarnation g{g}, whose delete was acknowledged, at {at_s:.3}s",
                            s.node, seen.topic_id
                        ),
                    ));
                }
            }
            _ => {}
        }
    }

    deleted.into_iter().map(|((topic, generation), at)| ((topic.to_string(), generation), at)).collect()
}
/// The offsets where two reads differ: the first few, the count, and the
/// first difference in words.
#[derive(Default)]
struct Divergence {
    offsets: Vec<u64>,
    count: usize,
    first: Option<String>,
}

impl Divergence {
    fn note(&mut self, offset: u64, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.offsets.len() < SHOWN_OFFSETS {
            self.offsets.push(offset);
        }
        if self.first.is_none() {
            self.first = Some(what());
        }
    }
}

/// Whether a final read takes part in the replica comparison: the whole-log
/// reads at the end of a run, from the leader and from each replica.
fn is_replica_read(reader: &str) -> bool {
    reader == "leader" || reader.starts_with("replica-")
}

/// replica-divergence: replica read `b` of a partition against `a` (the
/// leader's), record by record over the whole log.
fn compare_replicas(tp: Tp, a: &ReplicaLog, b: &ReplicaLog, names: &Names, values: &Values) -> Option<Anomaly> {
    let (name_a, name_b) = (names.name(a.reader), names.name(b.reader));
    let start = a.start.max(b.start);
    let (end_a, end_b) = (a.end, b.end);
    let mut d = Divergence::default();
    // Merge the two logs from the common start; an offset below an end is
    // either a record or known empty.
    let (mut i, mut j) =
        (a.records.partition_point(|r| r.offset < start), b.records.partition_point(|r| r.offset < start));
    loop {
        let x = a.records.get(i).copied();
        let y = b.records.get(j).copied();
        let offset = match (x, y) {
            (None, None) => break,
            (Some(r), None) | (None, Some(r)) => r.offset,
            (Some(p), Some(q)) => p.offset.min(q.offset),
        };
        let ra = x.filter(|r| r.offset == offset);
        let rb = y.filter(|r| r.offset == offset);
        if ra.is_some() {
            i += 1;
        }
        if rb.is_some() {
            j += 1;
        }
        let same = match (ra, rb) {
            (Some(p), Some(q)) => {
                p.value == q.value && (p.digest == NO_DIGEST || q.digest == NO_DIGEST || p.digest == q.digest)
            }
            _ => false,
        };
        if !same {
            let desc = |r: Option<Rec>, end: u64| match r {
                Some(r) if r.digest != NO_DIGEST => format!("{} (digest {:016x})", values.name(r.value), r.digest),
                Some(r) => values.name(r.value),
                None if offset >= end => format!("nothing (its log ends at {end})"),
                None => "no record".to_string(),
            };
            d.note(offset, || {
                format!("at offset {offset} {name_a} has {}, {name_b} has {}", desc(ra, end_a), desc(rb, end_b))
            });
        }
    }
    if end_a != end_b && d.count == 0 {
        d.note(end_a.min(end_b), String::new);
    }
    let Divergence { offsets: diverging, count, first: first_detail } = d;
    if count == 0 {
        return None;
    }
    let mut detail = format!("{name_a} and {name_b} differ at {count} offset(s) in {start}..{}", end_a.max(end_b));
    if end_a != end_b {
        detail.push_str(&format!("; {name_a} ends at {end_a}, {name_b} at {end_b}"));
    }
    if let Some(first) = first_detail.filter(|d| !d.is_empty()) {
        detail.push_str(&format!("; first: {first}"));
    }
    Some(at(AnomalyKind::ReplicaDivergence, tp, diverging, vec![name_a.to_string(), name_b.to_string()], detail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{PollOp, ReadRecord, SendOp, TopicSeen, TopicState};

    const T: &str = "t";

    /// Builds histories on topic `t` tersely.
    #[derive(Default)]
    struct H(History);

    impl H {
        fn send(&mut self, producer: &str, value: &str, partition: u32, outcome: Outcome) -> &mut Self {
            self.0.push(SendOp {
                producer: producer.into(),
                topic: T.into(),
                partition: Some(partition),
                value: value.into(),
                outcome,
                start_us: 0,
                end_us: 0,
                generation: 0,
                seq: None,
            });
            self
        }

        /// A send numbered `seq` in its producer's order for `partition`,
        /// to incarnation `generation` of `topic`, at time `at_us`.
        #[allow(clippy::too_many_arguments)]
        fn send_at(
            &mut self,
            producer: &str,
            topic: &str,
            generation: u32,
            partition: u32,
            seq: u64,
            value: &str,
            outcome: Outcome,
            at_us: u64,
        ) -> &mut Self {
            self.0.push(SendOp {
                producer: producer.into(),
                topic: topic.into(),
                partition: Some(partition),
                value: value.into(),
                outcome,
                start_us: at_us,
                end_us: at_us + 1,
                generation,
                seq: Some(seq),
            });
            self
        }

        fn seq_ok(&mut self, producer: &str, seq: u64, value: &str, partition: u32, offset: u64) -> &mut Self {
            self.send_at(producer, T, 0, partition, seq, value, Outcome::Ok { partition, offset }, 0)
        }

        fn seq_unknown(&mut self, producer: &str, seq: u64, value: &str, partition: u32) -> &mut Self {
            self.send_at(producer, T, 0, partition, seq, value, Outcome::Unknown { error: "timeout".into() }, 0)
        }

        /// A whole-log read of `topic`/`partition` (incarnation `generation`)
        /// by `reader`; `records` are (offset, value, digest).
        fn read_by(
            &mut self,
            reader: &str,
            topic: &str,
            generation: u32,
            partition: u32,
            high_watermark: u64,
            records: &[(u64, &str, u64)],
        ) -> &mut Self {
            self.0.push(FinalRead {
                reader: reader.into(),
                topic: topic.into(),
                partition,
                start_offset: 0,
                high_watermark,
                records: records.iter().map(|(o, v, d)| ReadRecord::new(*o, *v).with_digest(*d)).collect(),
                start_us: 0,
                end_us: 0,
                generation,
            });
            self
        }

        #[allow(clippy::too_many_arguments)]
        fn topic_op(
            &mut self,
            action: TopicAction,
            topic: &str,
            generation: u32,
            outcome: TopicOutcome,
            start_us: u64,
            end_us: u64,
        ) -> &mut Self {
            self.0.push(TopicOp {
                client: "t1".into(),
                action,
                topic: topic.into(),
                generation,
                partitions: 2,
                outcome,
                start_us,
                end_us,
            });
            self
        }

        fn state(&mut self, node: &str, topic: &str, present: Option<(u64, u32)>, at_us: u64) -> &mut Self {
            self.0.push(TopicState {
                node: node.into(),
                topic: topic.into(),
                present: present.map(|(topic_id, partitions)| TopicSeen { topic_id, partitions }),
                at_us,
            });
            self
        }

        fn ok(&mut self, producer: &str, value: &str, partition: u32, offset: u64) -> &mut Self {
            self.send(producer, value, partition, Outcome::Ok { partition, offset })
        }

        fn fail(&mut self, producer: &str, value: &str, partition: u32) -> &mut Self {
            self.send(producer, value, partition, Outcome::Fail { error: "RECORD_TOO_LARGE(5)".into() })
        }

        fn unknown(&mut self, producer: &str, value: &str, partition: u32) -> &mut Self {
            self.send(producer, value, partition, Outcome::Unknown { error: "timeout".into() })
        }

        fn poll(&mut self, consumer: &str, partition: u32, records: &[(u64, &str)]) -> &mut Self {
            self.0.push(PollOp {
                consumer: consumer.into(),
                topic: T.into(),
                partition,
                records: recs(records),
                start_us: 0,
                end_us: 0,
                generation: 0,
            });
            self
        }

        /// A final read from offset 0 up to the high watermark.
        fn final_read(&mut self, partition: u32, high_watermark: u64, records: &[(u64, &str)]) -> &mut Self {
            self.0.push(FinalRead {
                reader: "leader".into(),
                topic: T.into(),
                partition,
                start_offset: 0,
                high_watermark,
                records: recs(records),
                start_us: 0,
                end_us: 0,
                generation: 0,
            });
            self
        }

        fn check(&self) -> Report {
            check(&self.0)
        }
    }

    fn recs(records: &[(u64, &str)]) -> Vec<ReadRecord> {
        records.iter().map(|(o, v)| ReadRecord::new(*o, *v)).collect()
    }

    /// (kind, values) of every anomaly, in report order.
    fn kinds_and_values(r: &Report) -> Vec<(AnomalyKind, Vec<String>)> {
        r.anomalies.iter().map(|a| (a.kind, a.values.clone())).collect()
    }

    fn vals(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn given_clean_history_when_checked_then_no_anomaly_is_reported() {
        let mut h = H::default();
        h.ok("p1", "w-1-0", 0, 0)
            .ok("p2", "w-2-0", 0, 1)
            .unknown("p1", "w-1-1", 0) // landed
            .unknown("p2", "w-2-1", 0) // did not land
            .fail("p2", "w-2-2", 0) // refused, never read
            .ok("p1", "w-1-2", 0, 3)
            .ok("p2", "w-2-3", 1, 0)
            .poll("c1", 0, &[(0, "w-1-0"), (1, "w-2-0")])
            .poll("c1", 0, &[])
            .poll("c1", 0, &[(2, "w-1-1"), (3, "w-1-2")])
            .poll("c2", 0, &[(1, "w-2-0"), (2, "w-1-1")])
            .poll("c2", 1, &[(0, "w-2-3")])
            .final_read(0, 4, &[(0, "w-1-0"), (1, "w-2-0"), (2, "w-1-1"), (3, "w-1-2")])
            .final_read(1, 1, &[(0, "w-2-3")]);

        let r = h.check();

        assert!(r.is_valid(), "unexpected anomalies: {:#?}", r.anomalies);
        assert_eq!(r.anomaly_count(), 0);
        assert_eq!((r.sends, r.acknowledged, r.failed, r.indeterminate), (7, 4, 1, 2));
        assert_eq!(r.indeterminate_read, 1);
        assert!(AnomalyKind::ALL.iter().all(|k| r.count(*k) == 0));
    }

    #[test]
    fn given_overwritten_ack_and_retried_unknown_write_when_checked_then_lost_write_duplicate_and_inconsistent_offset_are_reported()
     {
        // w-1-2 was acknowledged at offset 2, but the final read holds the
        // indeterminate w-2-0 there, and again at 3.
        let mut h = H::default();
        h.ok("p1", "w-1-0", 0, 0).ok("p1", "w-1-1", 0, 1).ok("p1", "w-1-2", 0, 2).unknown("p2", "w-2-0", 0).final_read(
            0,
            4,
            &[(0, "w-1-0"), (1, "w-1-1"), (2, "w-2-0"), (3, "w-2-0")],
        );

        let r = h.check();

        assert_eq!(
            kinds_and_values(&r),
            vec![
                (AnomalyKind::LostWrite, vals(&["w-1-2"])),
                (AnomalyKind::Duplicate, vals(&["w-2-0"])),
                (AnomalyKind::InconsistentOffsets, vals(&["w-1-2", "w-2-0"])),
            ]
        );
        let lost = r.of_kind(AnomalyKind::LostWrite).next().unwrap();
        assert_eq!(lost.offsets, vec![2]);
        assert!(lost.detail.contains("holds w-2-0"), "{lost}");
        assert_eq!(r.of_kind(AnomalyKind::Duplicate).next().unwrap().offsets, vec![2, 3]);
        assert_eq!(r.of_kind(AnomalyKind::InconsistentOffsets).next().unwrap().offsets, vec![2]);
        assert_eq!(r.count(AnomalyKind::LostWrite), 1);
        assert!(!r.is_valid());
    }

    #[test]
    fn given_two_consumers_disagreeing_on_an_offset_when_checked_then_inconsistent_offsets_and_the_vanished_read_is_lost()
     {
        let mut h = H::default();
        h.ok("p1", "w-1-0", 0, 0)
            .unknown("p2", "w-2-0", 0)
            .poll("c1", 0, &[(0, "w-2-0")])
            .poll("c2", 0, &[(0, "w-1-0")])
            .final_read(0, 1, &[(0, "w-1-0")]);

        let r = h.check();

        assert_eq!(
            kinds_and_values(&r),
            vec![
                // c1 read w-2-0 as committed; the final read no longer has it.
                (AnomalyKind::LostWrite, vals(&["w-2-0"])),
                (AnomalyKind::InconsistentOffsets, vals(&["w-1-0", "w-2-0"])),
            ]
        );
        let a = r.of_kind(AnomalyKind::InconsistentOffsets).next().unwrap();
        assert!(a.detail.contains("poll by c1") && a.detail.contains("poll by c2"), "{a}");
    }

    #[test]
    fn given_consumer_rereading_an_offset_when_checked_then_nonmonotonic_poll_is_reported() {
        let mut h = H::default();
        h.ok("p1", "w-1-0", 0, 0)
            .ok("p1", "w-1-1", 0, 1)
            .ok("p1", "w-1-2", 0, 2)
            .ok("p1", "w-1-3", 0, 3)
            .poll("c1", 0, &[(0, "w-1-0"), (1, "w-1-1"), (2, "w-1-2")])
            .poll("c1", 0, &[(1, "w-1-1"), (2, "w-1-2"), (3, "w-1-3")])
            .final_read(0, 4, &[(0, "w-1-0"), (1, "w-1-1"), (2, "w-1-2"), (3, "w-1-3")]);

        let r = h.check();

        assert_eq!(kinds_and_values(&r), vec![(AnomalyKind::NonmonotonicPoll, vals(&["w-1-2", "w-1-1"]))]);
        let a = &r.anomalies[0];
        assert_eq!(a.offsets, vec![2, 1]);
        assert!(a.detail.contains("consumer c1"), "{a}");
    }

    #[test]
    fn given_consumer_jumping_over_an_existing_offset_when_checked_then_poll_skip_is_reported() {
        let mut h = H::default();
        h.ok("p1", "w-1-0", 0, 0)
            .ok("p1", "w-1-1", 0, 1)
            .ok("p1", "w-1-2", 0, 2)
            .ok("p1", "w-1-3", 0, 3)
            .poll("c1", 0, &[(0, "w-1-0"), (1, "w-1-1")])
            .poll("c1", 0, &[(3, "w-1-3")])
            .final_read(0, 4, &[(0, "w-1-0"), (1, "w-1-1"), (2, "w-1-2"), (3, "w-1-3")]);

        let r = h.check();

        assert_eq!(kinds_and_values(&r), vec![(AnomalyKind::PollSkip, vals(&["w-1-2"]))]);
        assert_eq!(r.anomalies[0].offsets, vec![1, 3]);
    }

    #[test]
    fn given_ack_beyond_the_final_read_or_without_one_when_checked_then_unseen_is_reported() {
        let mut h = H::default();
        h.ok("p1", "w-1-0", 0, 0)
            .ok("p1", "w-1-1", 0, 1)
            .ok("p1", "w-1-2", 1, 0)
            // The final read of partition 0 stops at 1; partition 1 has none.
            .final_read(0, 1, &[(0, "w-1-0")]);

        let r = h.check();

        assert_eq!(
            kinds_and_values(&r),
            vec![(AnomalyKind::Unseen, vals(&["w-1-1"])), (AnomalyKind::Unseen, vals(&["w-1-2"]))]
        );
        assert_eq!((r.anomalies[0].partition, r.anomalies[0].offsets.clone()), (0, vec![1]));
        assert_eq!((r.anomalies[1].partition, r.anomalies[1].offsets.clone()), (1, vec![0]));
        assert_eq!(r.count(AnomalyKind::LostWrite), 0);
    }

    #[test]
    fn given_refused_write_read_back_when_checked_then_phantom_write_is_reported() {
        let mut h = H::default();
        h.ok("p1", "w-1-0", 0, 0).fail("p1", "w-1-1", 0).unknown("p1", "w-1-2", 0).final_read(
            0,
            3,
            &[(0, "w-1-0"), (1, "w-1-1"), (2, "w-1-2")],
        );

        let r = h.check();

        // The indeterminate w-1-2, read once, is fine.
        assert_eq!(kinds_and_values(&r), vec![(AnomalyKind::PhantomWrite, vals(&["w-1-1"]))]);
        assert_eq!(r.anomalies[0].offsets, vec![1]);
        assert_eq!(r.indeterminate_read, 1);
    }

    #[test]
    fn given_value_never_sent_read_back_when_checked_then_unexpected_is_reported() {
        let mut h = H::default();
        h.ok("p1", "w-1-0", 0, 0).final_read(0, 2, &[(0, "w-1-0"), (1, "garbage")]);

        let r = h.check();

        assert_eq!(kinds_and_values(&r), vec![(AnomalyKind::Unexpected, vals(&["garbage"]))]);
    }

    fn ok_at(partition: u32, offset: u64) -> Outcome {
        Outcome::Ok { partition, offset }
    }

    fn created(topic_id: u64) -> TopicOutcome {
        TopicOutcome::Ok { topic_id }
    }

    #[test]
    fn given_producer_sends_in_order_with_others_in_between_when_checked_then_no_order_anomaly() {
        let mut h = H::default();
        h.seq_ok("p1", 0, "w-1-0", 0, 0)
            .seq_ok("p2", 0, "w-2-0", 0, 1)
            .seq_unknown("p1", 1, "w-1-1", 0) // did not land: a gap is allowed
            .seq_ok("p1", 2, "w-1-2", 0, 2)
            .seq_unknown("p1", 3, "w-1-3", 0) // landed, in order
            .seq_ok("p1", 4, "w-1-4", 0, 4)
            .final_read(0, 5, &[(0, "w-1-0"), (1, "w-2-0"), (2, "w-1-2"), (3, "w-1-3"), (4, "w-1-4")]);

        let r = h.check();

        assert!(r.is_valid(), "unexpected anomalies: {:#?}", r.anomalies);
    }

    #[test]
    fn given_later_send_acknowledged_below_an_earlier_one_when_checked_then_nonmonotonic_send_is_reported() {
        // p1 sent w-1-0 then w-1-1 to partition 0; the log holds them the
        // other way round, and both acks say so.
        let mut h = H::default();
        h.seq_ok("p1", 0, "w-1-0", 0, 1).seq_ok("p1", 1, "w-1-1", 0, 0).final_read(0, 2, &[(0, "w-1-1"), (1, "w-1-0")]);

        let r = h.check();

        assert_eq!(kinds_and_values(&r), vec![(AnomalyKind::NonmonotonicSend, vals(&["w-1-0", "w-1-1"]))]);
        let a = &r.anomalies[0];
        assert_eq!(a.offsets, vec![1, 0]);
        assert!(a.detail.contains("producer p1") && a.detail.contains("send 0") && a.detail.contains("send 1"), "{a}");
    }

    #[test]
    fn given_send_passed_over_then_written_after_a_later_send_when_checked_then_send_skip_is_reported() {
        // w-1-0 timed out (indeterminate); p1's next send w-1-1 was
        // acknowledged at 0; w-1-0 then turned up at 1, after it.
        let mut h = H::default();
        h.seq_unknown("p1", 0, "w-1-0", 0).seq_ok("p1", 1, "w-1-1", 0, 0).seq_ok("p1", 2, "w-1-2", 0, 2).final_read(
            0,
            3,
            &[(0, "w-1-1"), (1, "w-1-0"), (2, "w-1-2")],
        );

        let r = h.check();

        assert_eq!(kinds_and_values(&r), vec![(AnomalyKind::SendSkip, vals(&["w-1-0", "w-1-1"]))]);
        assert_eq!(r.anomalies[0].offsets, vec![1, 0]);
        assert!(r.anomalies[0].detail.contains("read at 1"), "{}", r.anomalies[0]);
    }

    #[test]
    fn given_sends_of_different_producers_or_partitions_interleaved_when_checked_then_order_is_per_producer_and_partition()
     {
        // Send order only binds one producer on one partition: p2's later
        // send may land first, and p1's send to partition 1 is unrelated.
        let mut h = H::default();
        h.seq_ok("p1", 0, "w-1-0", 0, 1)
            .seq_ok("p2", 0, "w-2-0", 0, 0)
            .seq_ok("p1", 0, "w-1-1", 1, 0)
            .seq_ok("p1", 1, "w-1-2", 0, 2)
            .final_read(0, 3, &[(0, "w-2-0"), (1, "w-1-0"), (2, "w-1-2")])
            .final_read(1, 1, &[(0, "w-1-1")]);

        assert!(h.check().is_valid(), "{:#?}", h.check().anomalies);
    }

    #[test]
    fn given_recreated_topic_serving_data_of_its_deleted_incarnation_when_checked_then_resurrected_is_reported() {
        let mut h = H::default();
        h.topic_op(TopicAction::Create, "churn-0", 1, created(10), 0, 10)
            .send_at("t1", "churn-0", 1, 0, 0, "churn-0-g1-0", ok_at(0, 0), 20)
            .read_by("before-delete", "churn-0", 1, 0, 1, &[(0, "churn-0-g1-0", 1)])
            .topic_op(TopicAction::Delete, "churn-0", 1, created(0), 30, 40)
            .topic_op(TopicAction::Create, "churn-0", 2, created(11), 50, 60)
            .send_at("t1", "churn-0", 2, 0, 0, "churn-0-g2-0", ok_at(0, 1), 70)
            // The new incarnation starts with the old one's record.
            .read_by("leader", "churn-0", 2, 0, 2, &[(0, "churn-0-g1-0", 1), (1, "churn-0-g2-0", 2)]);

        let r = h.check();

        assert_eq!(r.count(AnomalyKind::Resurrected), 1, "{:#?}", r.anomalies);
        let a = r.of_kind(AnomalyKind::Resurrected).next().unwrap();
        assert_eq!((a.generation, a.offsets.clone(), a.values.clone()), (2, vec![0], vals(&["churn-0-g1-0"])));
        assert!(a.detail.contains("incarnation g1") && a.detail.contains("incarnation g2"), "{a}");
        assert!(a.to_string().contains("churn-0(g2)/0"), "{a}");
    }

    #[test]
    fn given_churned_topics_with_a_clean_lifecycle_when_checked_then_no_anomaly_and_deleted_writes_need_no_final_read()
    {
        let mut h = H::default();
        h.topic_op(TopicAction::Create, "churn-0", 1, created(10), 0, 10)
            .send_at("t1", "churn-0", 1, 0, 0, "churn-0-g1-0", ok_at(0, 0), 20)
            .send_at("t1", "churn-0", 1, 1, 0, "churn-0-g1-1", ok_at(1, 0), 20)
            .read_by("before-delete", "churn-0", 1, 0, 1, &[(0, "churn-0-g1-0", 1)])
            .read_by("before-delete", "churn-0", 1, 1, 1, &[(0, "churn-0-g1-1", 2)])
            .topic_op(TopicAction::Delete, "churn-0", 1, created(0), 30, 40)
            .state("n1", "churn-0", None, 45)
            .state("n2", "churn-0", None, 45)
            // A send after the delete is refused.
            .send_at("t1", "churn-0", 1, 0, 1, "churn-0-g1-2", Outcome::Fail { error: "UNKNOWN_TOPIC".into() }, 46)
            .topic_op(TopicAction::Create, "churn-0", 2, created(11), 50, 60)
            .send_at("t1", "churn-0", 2, 0, 0, "churn-0-g2-0", ok_at(0, 0), 70)
            .read_by("leader", "churn-0", 2, 0, 1, &[(0, "churn-0-g2-0", 3)])
            .read_by("replica-1", "churn-0", 2, 0, 1, &[(0, "churn-0-g2-0", 3)])
            .read_by("leader", "churn-0", 2, 1, 0, &[])
            .state("n1", "churn-0", Some((11, 2)), 80)
            .state("n2", "churn-0", Some((11, 2)), 80)
            // A delete whose outcome is unknown, and a write to it that
            // was never read back: no constraint either way.
            .topic_op(TopicAction::Create, "churn-1", 1, created(12), 0, 10)
            .send_at("t1", "churn-1", 1, 0, 0, "churn-1-g1-0", ok_at(0, 0), 20)
            .topic_op(TopicAction::Delete, "churn-1", 1, TopicOutcome::Unknown { error: "timeout".into() }, 30, 40)
            .state("n1", "churn-1", Some((12, 2)), 45);

        let r = h.check();

        assert!(r.is_valid(), "unexpected anomalies: {:#?}", r.anomalies);
        assert_eq!((r.topic_ops, r.topic_ops_ok), (5, 4));
    }

    #[test]
    fn given_acknowledged_write_missing_from_the_read_before_delete_when_checked_then_lost_write_is_reported() {
        let mut h = H::default();
        h.topic_op(TopicAction::Create, "churn-0", 1, created(10), 0, 10)
            .send_at("t1", "churn-0", 1, 0, 0, "churn-0-g1-0", ok_at(0, 0), 20)
            .send_at("t1", "churn-0", 1, 0, 1, "churn-0-g1-1", ok_at(0, 1), 20)
            .read_by("before-delete", "churn-0", 1, 0, 2, &[(0, "churn-0-g1-0", 1)])
            .topic_op(TopicAction::Delete, "churn-0", 1, created(0), 30, 40);

        let r = h.check();

        assert_eq!(kinds_and_values(&r), vec![(AnomalyKind::LostWrite, vals(&["churn-0-g1-1"]))]);
        assert_eq!(r.anomalies[0].generation, 1);
    }

    #[test]
    fn given_deleted_topic_still_listed_or_still_accepting_writes_when_checked_then_undeleted_topic_is_reported() {
        let mut h = H::default();
        h.topic_op(TopicAction::Create, "churn-0", 1, created(10), 0, 10)
            .topic_op(TopicAction::Delete, "churn-0", 1, created(0), 30, 40)
            .state("n1", "churn-0", None, 50)
            .state("n2", "churn-0", Some((10, 2)), 50)
            .send_at("t1", "churn-0", 1, 0, 0, "churn-0-g1-0", ok_at(0, 0), 55)
            .read_by("leader", "churn-0", 1, 0, 1, &[(0, "churn-0-g1-0", 1)])
            // Re-created; a node still shows the deleted incarnation's id.
            .topic_op(TopicAction::Create, "churn-0", 2, created(11), 60, 70)
            .state("n1", "churn-0", Some((11, 2)), 80)
            .state("n3", "churn-0", Some((10, 2)), 80);

        let r = h.check();

        let undeleted: Vec<&Anomaly> = r.of_kind(AnomalyKind::UndeletedTopic).collect();
        assert_eq!(undeleted.len(), 3, "{:#?}", r.anomalies);
        assert_eq!(r.anomaly_count(), 3, "{:#?}", r.anomalies);
        assert!(undeleted.iter().all(|a| a.generation == 1), "{undeleted:#?}");
        assert!(undeleted.iter().any(|a| a.detail.contains("node n2 still lists it")), "{undeleted:#?}");
        assert!(undeleted.iter().any(|a| a.detail.contains("churn-0-g1-0") && a.detail.contains("acknowledged")));
        assert!(undeleted.iter().any(|a| a.detail.contains("node n3 lists id 10")), "{undeleted:#?}");
        assert!(undeleted[0].to_string().starts_with("undeleted-topic churn-0(g1): "), "{}", undeleted[0]);
    }

    #[test]
    fn given_deleted_topic_listed_with_the_id_of_an_indeterminate_later_create_when_checked_then_only_old_ids_are_undeleted()
     {
        // The SDK's own retry made the create of g2 indeterminate (its first
        // attempt broke off, the last was told the name exists), which a
        // history may hold as a refusal. The nodes then list id 20, the
        // new incarnation: not the deleted one (id 18).
        let indeterminate = "outcome unknown: attempt 1 of 8 may have been applied (transport error talking to n3); \
                             the last attempt failed: TOPIC_ALREADY_EXISTS(8): topic \"churn-1\" already exists";
        let mut h = H::default();
        h.topic_op(TopicAction::Create, "churn-1", 1, created(18), 0, 10)
            .topic_op(TopicAction::Delete, "churn-1", 1, created(0), 20, 30)
            .topic_op(TopicAction::Create, "churn-1", 2, TopicOutcome::Fail { error: indeterminate.into() }, 40, 50)
            .state("n1", "churn-1", Some((20, 2)), 60)
            .state("n2", "churn-1", Some((20, 2)), 60)
            // A node listing the deleted incarnation's own id is flagged.
            .state("n3", "churn-1", Some((18, 2)), 60)
            // The same after a create recorded as indeterminate, followed
            // by an acknowledged delete of what it made: id 31 is not the
            // deleted g1's (30), and the create could have made it.
            .topic_op(TopicAction::Create, "churn-2", 1, created(30), 0, 10)
            .topic_op(TopicAction::Delete, "churn-2", 1, created(0), 20, 30)
            .topic_op(TopicAction::Create, "churn-2", 2, TopicOutcome::Unknown { error: "timeout".into() }, 40, 50)
            .topic_op(TopicAction::Delete, "churn-2", 2, created(0), 55, 58)
            .state("n1", "churn-2", Some((31, 2)), 60)
            // No create after the delete: a new id nobody asked for is
            // still flagged.
            .topic_op(TopicAction::Create, "churn-3", 1, created(40), 0, 10)
            .topic_op(TopicAction::Delete, "churn-3", 1, created(0), 20, 30)
            .state("n1", "churn-3", Some((41, 2)), 60);

        let r = h.check();

        let undeleted: Vec<(String, String)> =
            r.of_kind(AnomalyKind::UndeletedTopic).map(|a| (a.topic.clone(), a.values[0].clone())).collect();
        assert_eq!(
            undeleted,
            vec![("churn-1".to_string(), "n3".to_string()), ("churn-3".to_string(), "n1".to_string())],
            "{:#?}",
            r.anomalies
        );
        assert_eq!(r.anomaly_count(), 2, "{:#?}", r.anomalies);
    }

    #[test]
    fn given_created_topic_missing_or_misshapen_on_a_node_when_checked_then_missing_topic_is_reported() {
        let mut h = H::default();
        h.topic_op(TopicAction::Create, "churn-0", 1, created(10), 0, 10)
            .state("n1", "churn-0", Some((10, 2)), 20)
            .state("n2", "churn-0", None, 20)
            .state("n3", "churn-0", Some((10, 1)), 20)
            // Observed while a delete is under way: no verdict.
            .topic_op(TopicAction::Delete, "churn-0", 1, created(0), 30, 40)
            .state("n2", "churn-0", None, 35)
            .state("n3", "churn-0", Some((10, 2)), 35);

        let r = h.check();

        let missing: Vec<String> = r.of_kind(AnomalyKind::MissingTopic).map(|a| a.values[0].clone()).collect();
        assert_eq!(missing, vals(&["n2", "n3"]), "{:#?}", r.anomalies);
        assert_eq!(r.anomaly_count(), 2);
    }

    #[test]
    fn given_replica_missing_a_record_the_leader_has_when_checked_then_replica_divergence_names_the_offset() {
        // w-2-0 was indeterminate, so no lost-write: the replica comparison
        // names the hole (and, as replica-3's read jumps over an offset
        // that exists, so does poll-skip).
        let mut h = H::default();
        h.ok("p1", "w-1-0", 0, 0)
            .unknown("p2", "w-2-0", 0)
            .ok("p1", "w-1-1", 0, 2)
            .read_by("leader", T, 0, 0, 3, &[(0, "w-1-0", 1), (1, "w-2-0", 2), (2, "w-1-1", 3)])
            .read_by("replica-1", T, 0, 0, 3, &[(0, "w-1-0", 1), (1, "w-2-0", 2), (2, "w-1-1", 3)])
            .read_by("replica-3", T, 0, 0, 3, &[(0, "w-1-0", 1), (2, "w-1-1", 3)]);

        let r = h.check();

        assert_eq!(
            kinds_and_values(&r),
            vec![
                (AnomalyKind::PollSkip, vals(&["w-2-0"])),
                (AnomalyKind::ReplicaDivergence, vals(&["leader", "replica-3"]))
            ]
        );
        let a = r.of_kind(AnomalyKind::ReplicaDivergence).next().unwrap();
        assert_eq!(a.offsets, vec![1]);
        assert!(a.detail.contains("1 offset(s)") && a.detail.contains("replica-3 has no record"), "{a}");
    }

    #[test]
    fn given_replicas_differing_in_record_bytes_or_length_when_checked_then_each_divergence_is_reported() {
        let mut h = H::default();
        h.ok("p1", "w-1-0", 0, 0)
            .ok("p1", "w-1-1", 0, 1)
            .read_by("leader", T, 0, 0, 2, &[(0, "w-1-0", 1), (1, "w-1-1", 2)])
            // Same value, different record (key, timestamp or headers).
            .read_by("replica-1", T, 0, 0, 2, &[(0, "w-1-0", 99), (1, "w-1-1", 2)])
            // A longer log than the leader's.
            .read_by("replica-2", T, 0, 0, 3, &[(0, "w-1-0", 1), (1, "w-1-1", 2), (2, "w-9-9", 7)]);

        let r = h.check();

        let div: Vec<&Anomaly> = r.of_kind(AnomalyKind::ReplicaDivergence).collect();
        assert_eq!(div.len(), 2, "{:#?}", r.anomalies);
        assert_eq!((div[0].values[1].as_str(), div[0].offsets.clone()), ("replica-1", vec![0]));
        assert!(div[0].detail.contains("digest"), "{}", div[0]);
        assert_eq!((div[1].values[1].as_str(), div[1].offsets.clone()), ("replica-2", vec![2]));
        assert!(div[1].detail.contains("leader ends at 2, replica-2 at 3"), "{}", div[1]);
        // The extra record is also a value nobody sent.
        assert_eq!(r.count(AnomalyKind::Unexpected), 1);
    }

    #[test]
    fn given_value_sent_to_one_topic_read_from_another_when_checked_then_unexpected_is_reported() {
        let mut h = H::default();
        h.send_at("p1", "a", 0, 0, 0, "w-1-0", ok_at(0, 0), 0)
            .read_by("leader", "a", 0, 0, 1, &[(0, "w-1-0", 1)])
            .read_by("leader", "b", 0, 0, 1, &[(0, "w-1-0", 1)]);

        let r = h.check();

        assert_eq!(r.count(AnomalyKind::Unexpected), 1, "{:#?}", r.anomalies);
        assert!(r.of_kind(AnomalyKind::Unexpected).next().unwrap().detail.contains("sent to topic a"));
    }

    #[test]
    fn given_large_history_when_checked_then_every_offset_is_compared_quickly() {
        // 100k records, four whole-log reads each; one replica differs at a
        // single offset deep in the log.
        let n = 100_000u64;
        let mut h = H::default();
        let values: Vec<String> = (0..n).map(|i| format!("w-1-{i}")).collect();
        for (i, v) in values.iter().enumerate() {
            h.seq_ok("p1", i as u64, v, 0, i as u64);
        }
        let full: Vec<(u64, &str, u64)> =
            values.iter().enumerate().map(|(i, v)| (i as u64, v.as_str(), i as u64)).collect();
        let mut damaged = full.clone();
        damaged[75_001].2 = 0;
        h.read_by("leader", T, 0, 0, n, &full)
            .read_by("replica-1", T, 0, 0, n, &full)
            .read_by("replica-2", T, 0, 0, n, &full)
            .read_by("replica-3", T, 0, 0, n, &damaged);

        let started = std::time::Instant::now();
        let r = h.check();

        assert_eq!(kinds_and_values(&r), vec![(AnomalyKind::ReplicaDivergence, vals(&["leader", "replica-3"]))]);
        assert_eq!(r.anomalies[0].offsets, vec![75_001]);
        assert_eq!(r.acknowledged, n as usize);
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());
    }

    #[test]
    fn given_values_when_packed_then_only_the_workloads_own_spelling_packs_and_names_come_back() {
        for v in ["w-1-0", "w-0-0", "w-4-1234567", "w-1000-9"] {
            let id = packed(v).unwrap_or_else(|| panic!("{v} should pack"));
            assert_eq!(Values::default().name(id), v);
        }
        for v in ["w-01-0", "w-1-00", "w-1-", "w--1-2", "w-1-2-3", "w-+1-2", "x-1-2", "w-1-99999999999999", "garbage"] {
            assert_eq!(packed(v), None, "{v}");
        }
        // Another spelling of a sent value is another value: read back, it
        // is one nobody sent.
        let mut h = H::default();
        h.ok("p1", "w-1-0", 0, 0).final_read(0, 2, &[(0, "w-1-0"), (1, "w-01-0")]);
        assert_eq!(kinds_and_values(&h.check()), vec![(AnomalyKind::Unexpected, vals(&["w-01-0"]))]);
    }

    #[test]
    fn given_per_record_state_then_it_stays_small() {
        // What the checker keeps per record: a value's sends and first
        // places, and one cell per offset (module docs).
        assert!(std::mem::size_of::<ValueInfo>() <= 40, "{}", std::mem::size_of::<ValueInfo>());
        assert!(std::mem::size_of::<Cell>() <= 16);
        assert!(std::mem::size_of::<Rec>() <= 24);
    }

    #[test]
    fn given_history_file_when_checked_then_the_report_equals_the_in_memory_check() {
        let mut h = H::default();
        h.ok("p1", "w-1-0", 0, 0)
            .ok("p1", "w-1-1", 0, 1)
            .ok("p1", "w-1-2", 0, 2)
            .unknown("p2", "w-2-0", 0)
            .fail("p2", "w-2-1", 0)
            .poll("c1", 0, &[(0, "w-1-0"), (2, "w-1-2")])
            .read_by("leader", T, 0, 0, 4, &[(0, "w-1-0", 1), (1, "w-2-1", 2), (2, "w-2-0", 3), (3, "w-2-0", 3)])
            .read_by("replica-2", T, 0, 0, 3, &[(0, "w-1-0", 9), (1, "w-2-1", 2), (2, "w-2-0", 3)]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        h.0.save(&path).unwrap();

        let from_file = check_events(&crate::history::HistoryFile::new(&path)).unwrap();

        let in_memory = h.check();
        assert_eq!(from_file, in_memory);
        for kind in [
            AnomalyKind::LostWrite,
            AnomalyKind::Duplicate,
            AnomalyKind::InconsistentOffsets,
            AnomalyKind::PhantomWrite,
            AnomalyKind::PollSkip,
            AnomalyKind::ReplicaDivergence,
        ] {
            assert!(from_file.count(kind) > 0, "{kind} missing: {:#?}", from_file.anomalies);
        }
        // A broken line is an error naming it, not a clean report.
        std::fs::write(&path, "{\"type\":\"send\"\n").unwrap();
        let err = check_events(&crate::history::HistoryFile::new(&path)).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn given_replica_reads_before_the_leaders_and_a_late_write_recorded_before_the_delete_when_checked_then_both_are_found()
     {
        // The checker goes through the history once: replica reads that
        // come before the leader's wait for it, and a send acknowledged
        // after its topic's delete is found even when it is recorded first.
        let mut h = H::default();
        h.ok("p1", "w-1-0", 0, 0)
            .ok("p1", "w-1-1", 0, 1)
            .read_by("replica-2", T, 0, 0, 2, &[(0, "w-1-0", 1), (1, "w-1-1", 5)])
            .read_by("replica-3", T, 0, 0, 2, &[(0, "w-1-0", 1), (1, "w-1-1", 2)])
            .read_by("leader", T, 0, 0, 2, &[(0, "w-1-0", 1), (1, "w-1-1", 2)])
            .topic_op(TopicAction::Create, "churn-0", 1, created(10), 0, 10)
            .send_at("t1", "churn-0", 1, 0, 0, "churn-0-g1-0", ok_at(0, 0), 55)
            .read_by("before-delete", "churn-0", 1, 0, 1, &[(0, "churn-0-g1-0", 1)])
            .topic_op(TopicAction::Delete, "churn-0", 1, created(0), 30, 40);

        let r = h.check();

        let div: Vec<&Anomaly> = r.of_kind(AnomalyKind::ReplicaDivergence).collect();
        assert_eq!(div.len(), 1, "{:#?}", r.anomalies);
        assert_eq!((div[0].values.clone(), div[0].offsets.clone()), (vals(&["leader", "replica-2"]), vec![1]));
        let late: Vec<&Anomaly> = r.of_kind(AnomalyKind::UndeletedTopic).collect();
        assert_eq!(late.len(), 1, "{:#?}", r.anomalies);
        assert!(
            late[0].detail.contains("churn-0-g1-0") && late[0].detail.contains("acknowledged at 0@0"),
            "{}",
            late[0]
        );
        assert_eq!(r.anomaly_count(), 2, "{:#?}", r.anomalies);

        // Without a leader read, the first replica read is the reference.
        let mut h = H::default();
        h.ok("p1", "w-1-0", 0, 0).read_by("replica-1", T, 0, 0, 1, &[(0, "w-1-0", 1)]).read_by(
            "replica-2",
            T,
            0,
            0,
            1,
            &[(0, "w-1-0", 7)],
        );
        let r = h.check();
        assert_eq!(kinds_and_values(&r), vec![(AnomalyKind::ReplicaDivergence, vals(&["replica-1", "replica-2"]))]);
    }

    #[test]
    fn given_report_when_displayed_then_row_aligns_with_header() {
        let mut h = H::default();
        h.ok("p1", "w-1-0", 0, 0).ok("p1", "w-1-1", 0, 1).final_read(0, 1, &[(0, "w-1-0")]);

        let r = h.check();
        let (header, row) = (Report::header(), r.to_string());

        assert_eq!(header.len(), row.len());
        let cells: Vec<_> = header.split_whitespace().zip(row.split_whitespace()).collect();
        assert!(cells.contains(&("acked", "2")));
        assert!(cells.contains(&("unseen", "1")));
        assert!(cells.contains(&("anomalies", "1")));
    }
}
