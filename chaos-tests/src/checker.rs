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
//! | `undeleted-topic` | a topic whose delete was acknowledged is still listed by a node once metadata settled, or acknowledged a write sent after the delete |
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

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{FinalRead, History, Outcome, ReadRecord, TopicAction, TopicOp, TopicOutcome};

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

/// One partition of one incarnation of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Tp<'a> {
    topic: &'a str,
    generation: u32,
    partition: u32,
}

type TpId = u32;

/// Interned partitions: histories name few, and ids make small keys.
#[derive(Default)]
struct Tps<'a> {
    list: Vec<Tp<'a>>,
    ids: HashMap<Tp<'a>, TpId>,
}

impl<'a> Tps<'a> {
    fn id(&mut self, topic: &'a str, generation: u32, partition: u32) -> TpId {
        let tp = Tp { topic, generation, partition };
        *self.ids.entry(tp).or_insert_with(|| {
            self.list.push(tp);
            (self.list.len() - 1) as TpId
        })
    }

    fn get(&self, topic: &str, generation: u32, partition: u32) -> Option<TpId> {
        self.ids.get(&Tp { topic, generation, partition }).copied()
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

/// A set of sources as bits; sources past the 127th share the last bit.
type Mask = u128;
const LAST_BIT: usize = 127;

/// Interned observers ("ack to p1", "poll by c3", "final read (leader)").
#[derive(Default)]
struct Sources<'a> {
    list: Vec<(SourceKind, &'a str)>,
    ids: HashMap<(SourceKind, &'a str), usize>,
}

impl<'a> Sources<'a> {
    fn bit(&mut self, kind: SourceKind, who: &'a str) -> Mask {
        let id = *self.ids.entry((kind, who)).or_insert_with(|| {
            self.list.push((kind, who));
            self.list.len() - 1
        });
        1 << id.min(LAST_BIT)
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

    fn each(&self, mask: Mask) -> impl Iterator<Item = (SourceKind, &'a str, bool)> + '_ {
        self.list
            .iter()
            .enumerate()
            .filter(move |(i, _)| mask & (1 << (*i).min(LAST_BIT)) != 0)
            .map(|(i, (k, w))| (*k, *w, i >= LAST_BIT))
    }

    /// "ack to p1, poll by c1, final read (leader)".
    fn describe(&self, mask: Mask) -> String {
        let mut out: Vec<String> = Vec::new();
        let mut others = false;
        for (k, w, shared) in self.each(mask) {
            if shared {
                others = true;
                continue;
            }
            out.push(match k {
                SourceKind::Ack => format!("ack to {w}"),
                SourceKind::Poll => format!("poll by {w}"),
                SourceKind::Final => format!("final read ({w})"),
            });
        }
        if others {
            out.push("others".into());
        }
        out.join(", ")
    }

    /// Why a write must be in the final reads: "acknowledged to p1, read by c1".
    fn reasons(&self, mask: Mask) -> String {
        let mut out: Vec<String> = Vec::new();
        for (k, w, shared) in self.each(mask) {
            match k {
                SourceKind::Ack if !shared => out.push(format!("acknowledged to {w}")),
                SourceKind::Poll if !shared => out.push(format!("read by {w}")),
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
struct Cell<'a> {
    value: &'a str,
    sources: Mask,
}

/// Everything known about one value's send attempts.
#[derive(Clone, Copy)]
struct Sent<'a> {
    /// The topic and incarnation of the first send of the value.
    topic: &'a str,
    generation: u32,
    acks: u32,
    failed: u32,
    unknown: u32,
    /// Where the first acknowledgement put it.
    first_ack: Option<(TpId, u64)>,
}

/// Where each value was read: the first place, and any others.
type ReadPlaces<'a> = HashMap<&'a str, ((TpId, u64), Vec<(TpId, u64)>)>;

/// A final read with its records findable by offset.
struct ReadIndex<'a> {
    read: &'a FinalRead,
    /// `read.covered()`, computed once (it scans the records).
    covered: std::ops::Range<u64>,
    /// `(offset, record)`, sorted by offset, the first record of an offset
    /// returned twice standing for the read (a repeat is a nonmonotonic
    /// read, reported as such).
    records: Vec<(u64, &'a ReadRecord)>,
}

impl<'a> ReadIndex<'a> {
    fn new(read: &'a FinalRead) -> ReadIndex<'a> {
        let mut records: Vec<(u64, &ReadRecord)> = read.records.iter().map(|r| (r.offset, r)).collect();
        if !records.windows(2).all(|w| w[0].0 < w[1].0) {
            records.sort_by_key(|(o, _)| *o);
            records.dedup_by_key(|(o, _)| *o);
        }
        ReadIndex { read, covered: read.covered(), records }
    }

    fn get(&self, offset: u64) -> Option<&'a ReadRecord> {
        self.records.binary_search_by_key(&offset, |(o, _)| *o).ok().map(|i| self.records[i].1)
    }
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

/// Checks a history. Pure: the same history gives the same report.
pub fn check<'a>(history: &'a History) -> Report {
    let mut report = Report::empty();
    let mut tps = Tps::default();
    let mut sources = Sources::default();

    // Send attempts, by value.
    let mut sent: HashMap<&str, Sent> = HashMap::new();
    // Every observation, per partition: offset → the first value seen there.
    let mut obs: Vec<HashMap<u64, Cell<'a>>> = Vec::new();
    // Further values at an offset that already holds another.
    let mut conflicts: BTreeMap<(TpId, u64), Vec<Cell<'a>>> = BTreeMap::new();
    let mut observe = |obs: &mut Vec<HashMap<u64, Cell<'a>>>, tp: TpId, offset: u64, value: &'a str, bit: Mask| {
        if obs.len() <= tp as usize {
            obs.resize_with(tp as usize + 1, HashMap::new);
        }
        match obs[tp as usize].entry(offset) {
            Entry::Vacant(v) => {
                v.insert(Cell { value, sources: bit });
            }
            Entry::Occupied(mut c) if c.get().value == value => c.get_mut().sources |= bit,
            Entry::Occupied(_) => {
                let extra = conflicts.entry((tp, offset)).or_default();
                match extra.iter_mut().find(|c| c.value == value) {
                    Some(c) => c.sources |= bit,
                    None => extra.push(Cell { value, sources: bit }),
                }
            }
        }
    };

    for op in history.sends() {
        report.sends += 1;
        let s = sent.entry(op.value.as_str()).or_insert(Sent {
            topic: &op.topic,
            generation: op.generation,
            acks: 0,
            failed: 0,
            unknown: 0,
            first_ack: None,
        });
        match &op.outcome {
            Outcome::Ok { partition, offset } => {
                report.acknowledged += 1;
                s.acks += 1;
                let tp = tps.id(&op.topic, op.generation, *partition);
                s.first_ack.get_or_insert((tp, *offset));
                let bit = sources.bit(SourceKind::Ack, &op.producer);
                observe(&mut obs, tp, *offset, op.value.as_str(), bit);
            }
            Outcome::Fail { .. } => {
                report.failed += 1;
                s.failed += 1;
            }
            Outcome::Unknown { .. } => {
                report.indeterminate += 1;
                s.unknown += 1;
            }
        }
    }

    // Where each value was read (polls and final reads): the first place,
    // and any others.
    let mut read_at: ReadPlaces = HashMap::new();
    for op in history.polls() {
        report.polls += 1;
        let tp = tps.id(&op.topic, op.generation, op.partition);
        let bit = sources.bit(SourceKind::Poll, &op.consumer);
        for r in &op.records {
            observe(&mut obs, tp, r.offset, r.value.as_str(), bit);
            add_place(&mut read_at, &r.value, (tp, r.offset));
        }
    }
    // Each final read, indexed by offset, per partition.
    let mut finals: HashMap<TpId, Vec<ReadIndex>> = HashMap::new();
    for f in history.final_reads() {
        report.final_reads += 1;
        let tp = tps.id(&f.topic, f.generation, f.partition);
        let bit = sources.bit(SourceKind::Final, &f.reader);
        for r in &f.records {
            observe(&mut obs, tp, r.offset, r.value.as_str(), bit);
            add_place(&mut read_at, &r.value, (tp, r.offset));
        }
        finals.entry(tp).or_default().push(ReadIndex::new(f));
    }
    let committed = sources.committed();
    let tp_of = |id: TpId| tps.list[id as usize];

    let mut anomalies = Vec::new();

    // inconsistent-offsets: one offset, several values.
    for ((tp, offset), extra) in &conflicts {
        let first = obs[*tp as usize][offset];
        let mut cells: Vec<Cell> = std::iter::once(first).chain(extra.iter().copied()).collect();
        cells.sort_by_key(|c| c.value);
        let detail = cells
            .iter()
            .map(|c| format!("{} ({})", c.value, sources.describe(c.sources)))
            .collect::<Vec<_>>()
            .join(" vs ");
        anomalies.push(at(
            AnomalyKind::InconsistentOffsets,
            tp_of(*tp),
            vec![*offset],
            cells.iter().map(|c| c.value.to_string()).collect(),
            format!("offset {offset} holds {detail}"),
        ));
    }

    // duplicate / phantom-write / unexpected / resurrected: per value read.
    for (value, (first, more)) in &read_at {
        let mut places: Vec<(Tp, u64)> =
            std::iter::once(first).chain(more.iter()).map(|(tp, o)| (tp_of(*tp), *o)).collect();
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
                vec![value.to_string()],
                format!("read at {} offsets: {}", places.len(), where_read()),
            ));
        }
        let Some(s) = sent.get(value) else {
            anomalies.push(at(
                AnomalyKind::Unexpected,
                tp,
                vec![first_offset],
                vec![value.to_string()],
                format!("never sent, but read at {}", where_read()),
            ));
            continue;
        };
        for (rtp, offset) in &places {
            if rtp.topic != s.topic {
                anomalies.push(at(
                    AnomalyKind::Unexpected,
                    *rtp,
                    vec![*offset],
                    vec![value.to_string()],
                    format!("sent to topic {}, but read at {}", s.topic, where_read()),
                ));
                break;
            }
            if rtp.generation != s.generation {
                anomalies.push(at(
                    AnomalyKind::Resurrected,
                    *rtp,
                    vec![*offset],
                    vec![value.to_string()],
                    format!(
                        "written to incarnation g{} of {}, but read from incarnation g{} at offset {offset}",
                        s.generation, s.topic, rtp.generation
                    ),
                ));
                break;
            }
        }
        if s.acks == 0 && s.unknown == 0 {
            anomalies.push(at(
                AnomalyKind::PhantomWrite,
                tp,
                vec![first_offset],
                vec![value.to_string()],
                format!("refused {} time(s), but read at {}", s.failed, where_read()),
            ));
        } else if s.acks == 0 {
            report.indeterminate_read += 1;
        }
    }

    // Incarnations whose delete may have happened: their partitions need
    // not have a final read.
    let maybe_deleted: HashSet<(&str, u32)> = history
        .topic_ops()
        .filter(|op| op.action == TopicAction::Delete && !matches!(op.outcome, TopicOutcome::Fail { .. }))
        .map(|op| (op.topic.as_str(), op.generation))
        .collect();

    // lost-write / unseen: every committed write against the final reads.
    let no_reads: Vec<ReadIndex> = Vec::new();
    for (tp_id, cells) in obs.iter().enumerate() {
        let tp_id = tp_id as TpId;
        let tp = tp_of(tp_id);
        let reads = finals.get(&tp_id).unwrap_or(&no_reads);
        if reads.is_empty() && maybe_deleted.contains(&(tp.topic, tp.generation)) {
            continue;
        }
        let mut check_cell = |offset: u64, cell: &Cell| {
            if cell.sources & committed == 0 {
                return;
            }
            let why = sources.reasons(cell.sources & committed);
            let value = cell.value;
            let anomaly = |kind, detail: String| {
                at(kind, tp, vec![offset], vec![value.to_string()], format!("{why} at offset {offset}; {detail}"))
            };
            let covering: Vec<&ReadIndex> = reads.iter().filter(|r| r.covered.contains(&offset)).collect();
            if covering.is_empty() {
                let detail = if reads.is_empty() {
                    "there is no final read of the partition".to_string()
                } else {
                    let ends: Vec<String> =
                        reads.iter().map(|r| format!("{} ends at {}", r.read.reader, r.covered.end)).collect();
                    format!("no final read reaches it ({})", ends.join(", "))
                };
                anomalies.push(anomaly(AnomalyKind::Unseen, detail));
                return;
            }
            let missing: Vec<String> = covering
                .iter()
                .filter_map(|r| match r.get(offset) {
                    Some(rec) if rec.value == value => None,
                    Some(other) => Some(format!("final read ({}) holds {} there", r.read.reader, other.value)),
                    None => Some(format!("final read ({}) has no record there", r.read.reader)),
                })
                .collect();
            if !missing.is_empty() {
                let elsewhere: BTreeSet<u64> = reads
                    .iter()
                    .flat_map(|r| r.read.records.iter().filter(|rec| rec.value == value).map(|rec| rec.offset))
                    .collect();
                let mut detail = missing.join("; ");
                if !elsewhere.is_empty() {
                    let list: Vec<String> = elsewhere.iter().map(|o| o.to_string()).collect();
                    detail.push_str(&format!("; found at offset {} instead", list.join(", ")));
                }
                anomalies.push(anomaly(AnomalyKind::LostWrite, detail));
            }
        };
        for (offset, cell) in cells {
            check_cell(*offset, cell);
            if let Some(extra) = conflicts.get(&(tp_id, *offset)) {
                for c in extra {
                    check_cell(*offset, c);
                }
            }
        }
    }

    // nonmonotonic-poll / poll-skip: each consumer's successive offsets. A
    // final read counts as one poll by a consumer of its own.
    let known: Vec<Vec<u64>> = obs
        .iter()
        .map(|m| {
            let mut v: Vec<u64> = m.keys().copied().collect();
            v.sort_unstable();
            v
        })
        .collect();
    let final_readers: Vec<(String, &FinalRead)> =
        history.final_reads().map(|f| (format!("final read ({})", f.reader), f)).collect();
    let reads = history
        .polls()
        .map(|op| (op.consumer.as_str(), op.topic.as_str(), op.generation, op.partition, &op.records))
        .chain(
            final_readers
                .iter()
                .map(|(name, f)| (name.as_str(), f.topic.as_str(), f.generation, f.partition, &f.records)),
        );
    let mut last: HashMap<(&str, TpId), (u64, &str)> = HashMap::new();
    for (consumer, topic, generation, partition, records) in reads {
        let tp_id = tps.get(topic, generation, partition).expect("interned above");
        let tp = tp_of(tp_id);
        for (i, r) in records.iter().enumerate() {
            let key = (consumer, tp_id);
            let when = if i == 0 { "on its next poll" } else { "within one poll" };
            if let Some(&(prev, prev_value)) = last.get(&key) {
                let anomaly = |kind, values: Vec<String>, detail: String| {
                    at(
                        kind,
                        tp,
                        vec![prev, r.offset],
                        values,
                        format!("consumer {consumer} read offset {} {when} after offset {prev}; {detail}", r.offset),
                    )
                };
                if r.offset <= prev {
                    anomalies.push(anomaly(
                        AnomalyKind::NonmonotonicPoll,
                        vec![prev_value.to_string(), r.value.clone()],
                        format!("{prev_value} then {}", r.value),
                    ));
                } else if r.offset > prev + 1 {
                    let offsets = &known[tp_id as usize];
                    let from = offsets.partition_point(|o| *o <= prev);
                    let to = offsets.partition_point(|o| *o < r.offset);
                    let skipped = &offsets[from..to];
                    if !skipped.is_empty() {
                        const SHOWN: usize = 8;
                        let cells = &obs[tp_id as usize];
                        let shown: Vec<(u64, &str)> =
                            skipped.iter().take(SHOWN).map(|o| (*o, cells[o].value)).collect();
                        let listed: Vec<String> = shown.iter().map(|(o, v)| format!("{v}@{o}")).collect();
                        let more = if skipped.len() > SHOWN { ", ..." } else { "" };
                        anomalies.push(anomaly(
                            AnomalyKind::PollSkip,
                            shown.iter().map(|(_, v)| v.to_string()).collect(),
                            format!("skipped {} existing offset(s): {}{more}", skipped.len(), listed.join(", ")),
                        ));
                    }
                }
            }
            last.insert(key, (r.offset, r.value.as_str()));
        }
    }

    check_send_order(history, &tps, &sent, &read_at, &mut anomalies);
    check_topics(history, &mut report, &mut anomalies);
    for (tp, reads) in &finals {
        check_replicas(tp_of(*tp), reads, &mut anomalies);
    }

    anomalies.sort();
    for a in &anomalies {
        *report.counts.entry(a.kind).or_default() += 1;
    }
    report.anomalies = anomalies;
    report
}

fn add_place<'a>(read_at: &mut ReadPlaces<'a>, value: &'a str, at: (TpId, u64)) {
    match read_at.entry(value) {
        Entry::Vacant(v) => {
            v.insert((at, Vec::new()));
        }
        Entry::Occupied(mut o) => {
            let (first, more) = o.get_mut();
            if *first != at && !more.contains(&at) {
                more.push(at);
            }
        }
    }
}

/// nonmonotonic-send / send-skip: each producer's sends to one partition,
/// in send order, must sit at increasing offsets.
fn check_send_order<'a>(
    history: &'a History,
    tps: &Tps<'a>,
    sent: &HashMap<&'a str, Sent<'a>>,
    read_at: &ReadPlaces<'a>,
    anomalies: &mut Vec<Anomaly>,
) {
    // (producer, partition) → (seq, value) in send order.
    let mut by_producer: HashMap<(&str, TpId), Vec<(u64, &str)>> = HashMap::new();
    for op in history.sends() {
        let (Some(seq), Some(partition)) = (op.seq, op.partition) else { continue };
        let Some(tp) = tps.get(&op.topic, op.generation, partition) else { continue };
        by_producer.entry((op.producer.as_str(), tp)).or_default().push((seq, op.value.as_str()));
    }
    // Where a value landed in `tp`: its acknowledged offset, else the lowest
    // offset it was read at. `true` when the place is an acknowledgement.
    let landed = |value: &str, tp: TpId| -> Option<(u64, bool)> {
        if let Some(s) = sent.get(value)
            && let Some((at, offset)) = s.first_ack
            && at == tp
        {
            return Some((offset, true));
        }
        let (first, more) = read_at.get(value)?;
        std::iter::once(first).chain(more.iter()).filter(|(t, _)| *t == tp).map(|(_, o)| (*o, false)).min()
    };
    for ((producer, tp_id), mut sends) in by_producer {
        sends.sort_by_key(|(seq, _)| *seq);
        let tp = tps.list[tp_id as usize];
        let placed: Vec<(u64, &str, u64, bool)> =
            sends.iter().filter_map(|(seq, v)| landed(v, tp_id).map(|(o, acked)| (*seq, *v, o, acked))).collect();
        for pair in placed.windows(2) {
            let (a_seq, a, a_off, a_acked) = pair[0];
            let (b_seq, b, b_off, b_acked) = pair[1];
            if b_off > a_off {
                continue;
            }
            let how = |acked| if acked { "acknowledged at" } else { "read at" };
            let (kind, what) = if a_acked && b_acked {
                (AnomalyKind::NonmonotonicSend, "acknowledged out of send order")
            } else {
                (AnomalyKind::SendSkip, "landed out of send order: the earlier send was passed over and written later")
            };
            anomalies.push(at(
                kind,
                tp,
                vec![a_off, b_off],
                vec![a.to_string(), b.to_string()],
                format!(
                    "producer {producer} sent {a} (send {a_seq}) before {b} (send {b_seq}), {} {a_off} and {} {b_off}: {what}",
                    how(a_acked),
                    how(b_acked)
                ),
            ));
        }
    }
}

/// undeleted-topic / missing-topic: settled topic observations and sends
/// against each name's creates and deletes.
fn check_topics(history: &History, report: &mut Report, anomalies: &mut Vec<Anomaly>) {
    let mut ops: BTreeMap<&str, Vec<&TopicOp>> = BTreeMap::new();
    for op in history.topic_ops() {
        report.topic_ops += 1;
        if matches!(op.outcome, TopicOutcome::Ok { .. }) {
            report.topic_ops_ok += 1;
        }
        ops.entry(op.topic.as_str()).or_default().push(op);
    }
    for list in ops.values_mut() {
        list.sort_by_key(|op| (op.start_us, op.end_us));
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

    for s in history.topic_states() {
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
            (Expect::Absent { deleted: Some(g) }, Some(seen)) => anomalies.push(topic_anomaly(
                AnomalyKind::UndeletedTopic,
                &s.topic,
                g,
                vec![s.node.clone()],
                format!("deleted (g{g}), but node {} still lists it (id {}) at {at_s:.3}s", s.node, seen.topic_id),
            )),
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

    // A write acknowledged by an incarnation after its delete was.
    for op in history.sends() {
        if let (Outcome::Ok { partition, offset }, Some(deleted_at)) =
            (&op.outcome, deleted.get(&(op.topic.as_str(), op.generation)))
            && op.start_us >= *deleted_at
        {
            anomalies.push(topic_anomaly(
                AnomalyKind::UndeletedTopic,
                &op.topic,
                op.generation,
                vec![op.value.clone()],
                format!(
                    "deleted at {:.3}s, but {} sent at {:.3}s by {} was acknowledged at {partition}@{offset}",
                    *deleted_at as f64 / 1e6,
                    op.value,
                    op.start_us as f64 / 1e6,
                    op.producer
                ),
            ));
        }
    }
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
    fn note(&mut self, offset: u64, what: String) {
        self.count += 1;
        if self.offsets.len() < SHOWN_OFFSETS {
            self.offsets.push(offset);
        }
        self.first.get_or_insert(what);
    }
}

/// Whether a final read takes part in the replica comparison: the whole-log
/// reads at the end of a run, from the leader and from each replica.
fn is_replica_read(reader: &str) -> bool {
    reader == "leader" || reader.starts_with("replica-")
}

/// replica-divergence: every replica read of a partition against the
/// leader's, record by record over the whole log.
fn check_replicas(tp: Tp, reads: &[ReadIndex], anomalies: &mut Vec<Anomaly>) {
    let reads: Vec<&ReadIndex> = reads.iter().filter(|r| is_replica_read(&r.read.reader)).collect();
    let Some(reference) = reads.iter().find(|r| r.read.reader == "leader").or(reads.first()).copied() else {
        return;
    };
    for other in reads.iter().filter(|r| !std::ptr::eq(**r, reference)) {
        let (a, b) = (reference, *other);
        let start = a.read.start_offset.max(b.read.start_offset);
        let (end_a, end_b) = (a.covered.end, b.covered.end);
        let mut d = Divergence::default();
        // Merge the two logs from the common start; an offset below an
        // end is either a record or known empty.
        let (mut i, mut j) =
            (a.records.partition_point(|(o, _)| *o < start), b.records.partition_point(|(o, _)| *o < start));
        loop {
            let x = a.records.get(i).copied();
            let y = b.records.get(j).copied();
            let offset = match (x, y) {
                (None, None) => break,
                (Some((o, _)), None) | (None, Some((o, _))) => o,
                (Some((p, _)), Some((q, _))) => p.min(q),
            };
            let ra = x.filter(|(o, _)| *o == offset).map(|(_, r)| r);
            let rb = y.filter(|(o, _)| *o == offset).map(|(_, r)| r);
            if ra.is_some() {
                i += 1;
            }
            if rb.is_some() {
                j += 1;
            }
            let desc = |r: Option<&ReadRecord>, end: u64| match r {
                Some(r) => match r.digest {
                    Some(d) => format!("{} (digest {d:016x})", r.value),
                    None => r.value.clone(),
                },
                None if offset >= end => format!("nothing (its log ends at {end})"),
                None => "no record".to_string(),
            };
            let same = match (ra, rb) {
                (Some(p), Some(q)) => {
                    p.value == q.value && (p.digest.is_none() || q.digest.is_none() || p.digest == q.digest)
                }
                _ => false,
            };
            if !same {
                d.note(
                    offset,
                    format!(
                        "at offset {offset} {} has {}, {} has {}",
                        a.read.reader,
                        desc(ra, end_a),
                        b.read.reader,
                        desc(rb, end_b)
                    ),
                );
            }
        }
        if end_a != end_b && d.count == 0 {
            d.note(end_a.min(end_b), String::new());
        }
        let Divergence { offsets: diverging, count, first: first_detail } = d;
        if count > 0 {
            let mut detail = format!(
                "{} and {} differ at {count} offset(s) in {start}..{}",
                a.read.reader,
                b.read.reader,
                end_a.max(end_b)
            );
            if end_a != end_b {
                detail.push_str(&format!("; {} ends at {end_a}, {} at {end_b}", a.read.reader, b.read.reader));
            }
            if let Some(first) = first_detail.filter(|d| !d.is_empty()) {
                detail.push_str(&format!("; first: {first}"));
            }
            anomalies.push(at(
                AnomalyKind::ReplicaDivergence,
                tp,
                diverging,
                vec![a.read.reader.clone(), b.read.reader.clone()],
                detail,
            ));
        }
    }
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
