//! Checks a [`History`] and names what went wrong, after Jepsen's Kafka and
//! queue checkers.
//!
//! A write is identified by its value. Every place a value was seen — an
//! acknowledgement, a poll, a final read — is an observation of
//! `(topic, partition, offset) → value`. The anomalies:
//!
//! | kind | meaning |
//! |---|---|
//! | `lost-write` | a write known to be committed — acknowledged, or returned by a poll (polls return committed records only) — is not at its offset in a final read that covers that offset |
//! | `unseen` | such a write lies beyond every final read of its partition (or the partition has no final read) |
//! | `duplicate` | one value read at two or more offsets |
//! | `inconsistent-offsets` | two observations (acks, polls, final reads, any replicas) give one offset different values |
//! | `nonmonotonic-poll` | a consumer read an offset at or below one it read before, within a poll or between successive polls of a partition |
//! | `poll-skip` | a consumer's next offset lies beyond the previous one + 1 while an offset in between is known to exist |
//! | `phantom-write` | a write whose every attempt was refused (`Fail`) was read |
//! | `unexpected` | a value that no producer ever sent was read |
//!
//! Indeterminate (`Unknown`) writes may be read or not; when read, they are
//! held to the same rules (at most one offset, agreement across reads, and —
//! once a poll returned them — present in the final read).
//!
//! Every anomaly counts: [`Report::is_valid`] is true only when there are
//! none.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{FinalRead, History, Outcome};

/// The kinds of anomaly, named as Jepsen names them.
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
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 8] = [
        AnomalyKind::LostWrite,
        AnomalyKind::Unseen,
        AnomalyKind::Duplicate,
        AnomalyKind::InconsistentOffsets,
        AnomalyKind::NonmonotonicPoll,
        AnomalyKind::PollSkip,
        AnomalyKind::PhantomWrite,
        AnomalyKind::Unexpected,
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
    pub partition: u32,
    /// The offsets involved, in the order the detail names them (for
    /// `nonmonotonic-poll` and `poll-skip`: the previous offset, then the
    /// one read next). A `duplicate` across partitions lists every offset;
    /// the detail names the partitions.
    pub offsets: Vec<u64>,
    /// The values involved: the write concerned, or for
    /// `inconsistent-offsets` every value seen at the offset, or for
    /// `poll-skip` the values skipped.
    pub values: Vec<String>,
    pub detail: String,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{} offsets={:?} values={:?}: {}",
            self.kind, self.topic, self.partition, self.offsets, self.values, self.detail
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

type Tp = (String, u32);

/// Everything known about one value's send attempts.
#[derive(Default)]
struct Sent {
    /// Acknowledged places, with the producer.
    acks: Vec<(Tp, u64, String)>,
    failed: usize,
    unknown: usize,
}

type OffsetIndex<'a> = HashMap<u64, &'a str>;

/// (topic, partition) → offset → value → who saw it there.
type Observations<'a> = BTreeMap<Tp, BTreeMap<u64, BTreeMap<&'a str, BTreeSet<String>>>>;

fn observe<'a>(obs: &mut Observations<'a>, tp: &Tp, offset: u64, value: &'a str, source: String) {
    obs.entry(tp.clone()).or_default().entry(offset).or_default().entry(value).or_default().insert(source);
}

/// Checks a history. Pure: the same history gives the same report.
pub fn check(history: &History) -> Report {
    let mut report = Report::empty();

    // Send attempts, by value.
    let mut sent: HashMap<&str, Sent> = HashMap::new();
    for op in history.sends() {
        report.sends += 1;
        let s = sent.entry(op.value.as_str()).or_default();
        match &op.outcome {
            Outcome::Ok { partition, offset } => {
                report.acknowledged += 1;
                s.acks.push(((op.topic.clone(), *partition), *offset, op.producer.clone()));
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

    // Every observation: (topic, partition) → offset → value → sources.
    let mut obs: Observations = BTreeMap::new();
    // Where each value was read (polls and final reads).
    let mut read_at: HashMap<&str, BTreeSet<(Tp, u64)>> = HashMap::new();
    // Where each committed write must be found in the final reads, and why
    // (acknowledged there, or read there by a poll).
    let mut expected: BTreeMap<(Tp, u64, &str), BTreeSet<String>> = BTreeMap::new();

    for (value, s) in &sent {
        for (tp, offset, producer) in &s.acks {
            observe(&mut obs, tp, *offset, value, format!("ack to {producer}"));
            expected.entry((tp.clone(), *offset, value)).or_default().insert(format!("acknowledged to {producer}"));
        }
    }
    for op in history.polls() {
        report.polls += 1;
        let tp = (op.topic.clone(), op.partition);
        for r in &op.records {
            observe(&mut obs, &tp, r.offset, &r.value, format!("poll by {}", op.consumer));
            read_at.entry(&r.value).or_default().insert((tp.clone(), r.offset));
            expected.entry((tp.clone(), r.offset, &r.value)).or_default().insert(format!("read by {}", op.consumer));
        }
    }
    // Each final read, with its records by offset.
    let mut finals: BTreeMap<Tp, Vec<(&FinalRead, OffsetIndex)>> = BTreeMap::new();
    for f in history.final_reads() {
        report.final_reads += 1;
        let tp = (f.topic.clone(), f.partition);
        let mut at = HashMap::new();
        for r in &f.records {
            observe(&mut obs, &tp, r.offset, &r.value, format!("final read ({})", f.reader));
            read_at.entry(&r.value).or_default().insert((tp.clone(), r.offset));
            // An offset returned twice is a nonmonotonic read (below); the
            // first value stands for the read.
            at.entry(r.offset).or_insert(r.value.as_str());
        }
        finals.entry(tp).or_default().push((f, at));
    }

    let mut anomalies = Vec::new();

    // inconsistent-offsets: one offset, several values.
    for (tp, offsets) in &obs {
        for (offset, values) in offsets {
            if values.len() > 1 {
                let detail = values
                    .iter()
                    .map(|(v, sources)| format!("{v} ({})", sources.iter().cloned().collect::<Vec<_>>().join(", ")))
                    .collect::<Vec<_>>()
                    .join(" vs ");
                anomalies.push(Anomaly {
                    kind: AnomalyKind::InconsistentOffsets,
                    topic: tp.0.clone(),
                    partition: tp.1,
                    offsets: vec![*offset],
                    values: values.keys().map(|v| v.to_string()).collect(),
                    detail: format!("offset {offset} holds {detail}"),
                });
            }
        }
    }

    // duplicate / phantom-write / unexpected: per value read.
    let mut read_values: Vec<_> = read_at.iter().collect();
    read_values.sort();
    for (value, places) in read_values {
        let ((topic, partition), first_offset) = places.first().expect("a read value has a place").clone();
        let where_read = || places.iter().map(|((t, p), o)| format!("{t}/{p}@{o}")).collect::<Vec<_>>().join(", ");
        if places.len() > 1 {
            anomalies.push(Anomaly {
                kind: AnomalyKind::Duplicate,
                topic: topic.clone(),
                partition,
                offsets: places.iter().map(|(_, o)| *o).collect(),
                values: vec![value.to_string()],
                detail: format!("read at {} offsets: {}", places.len(), where_read()),
            });
        }
        match sent.get(value) {
            None => anomalies.push(Anomaly {
                kind: AnomalyKind::Unexpected,
                topic: topic.clone(),
                partition,
                offsets: vec![first_offset],
                values: vec![value.to_string()],
                detail: format!("never sent, but read at {}", where_read()),
            }),
            Some(s) if s.acks.is_empty() && s.unknown == 0 => anomalies.push(Anomaly {
                kind: AnomalyKind::PhantomWrite,
                topic: topic.clone(),
                partition,
                offsets: vec![first_offset],
                values: vec![value.to_string()],
                detail: format!("refused {} time(s), but read at {}", s.failed, where_read()),
            }),
            Some(s) if s.acks.is_empty() => report.indeterminate_read += 1,
            Some(_) => {}
        }
    }

    // lost-write / unseen: every committed write against the final reads.
    for ((tp, offset, value), why) in &expected {
        let why = why.iter().cloned().collect::<Vec<_>>().join(", ");
        let anomaly = |kind, detail: String| Anomaly {
            kind,
            topic: tp.0.clone(),
            partition: tp.1,
            offsets: vec![*offset],
            values: vec![value.to_string()],
            detail: format!("{why} at offset {offset}; {detail}"),
        };
        let reads = finals.get(tp).map(Vec::as_slice).unwrap_or_default();
        let covering: Vec<_> = reads.iter().filter(|(f, _)| f.covered().contains(offset)).collect();
        if covering.is_empty() {
            let detail = if reads.is_empty() {
                "there is no final read of the partition".to_string()
            } else {
                let ends =
                    reads.iter().map(|(f, _)| format!("{} ends at {}", f.reader, f.covered().end)).collect::<Vec<_>>();
                format!("no final read reaches it ({})", ends.join(", "))
            };
            anomalies.push(anomaly(AnomalyKind::Unseen, detail));
            continue;
        }
        let missing: Vec<String> = covering
            .iter()
            .filter_map(|(f, at)| match at.get(offset) {
                Some(v) if v == value => None,
                Some(other) => Some(format!("final read ({}) holds {other} there", f.reader)),
                None => Some(format!("final read ({}) has no record there", f.reader)),
            })
            .collect();
        if !missing.is_empty() {
            let elsewhere: Vec<String> = reads
                .iter()
                .flat_map(|(f, _)| f.records.iter().filter(|r| r.value == *value).map(|r| r.offset))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|o| o.to_string())
                .collect();
            let mut detail = missing.join("; ");
            if !elsewhere.is_empty() {
                detail.push_str(&format!("; found at offset {} instead", elsewhere.join(", ")));
            }
            anomalies.push(anomaly(AnomalyKind::LostWrite, detail));
        }
    }

    // nonmonotonic-poll / poll-skip: each consumer's successive offsets. A
    // final read counts as one poll by a consumer of its own.
    let final_readers: Vec<(String, &FinalRead)> =
        history.final_reads().map(|f| (format!("final read ({})", f.reader), f)).collect();
    let reads = history
        .polls()
        .map(|op| (op.consumer.as_str(), &op.topic, op.partition, &op.records))
        .chain(final_readers.iter().map(|(name, f)| (name.as_str(), &f.topic, f.partition, &f.records)));
    let mut last: HashMap<(&str, Tp), (u64, &str)> = HashMap::new();
    for (consumer, topic, partition, records) in reads {
        let tp = (topic.clone(), partition);
        let known = obs.get(&tp);
        for (i, r) in records.iter().enumerate() {
            let key = (consumer, tp.clone());
            let when = if i == 0 { "on its next poll" } else { "within one poll" };
            if let Some(&(prev, prev_value)) = last.get(&key) {
                let anomaly = |kind, values: Vec<String>, detail: String| Anomaly {
                    kind,
                    topic: tp.0.clone(),
                    partition: tp.1,
                    offsets: vec![prev, r.offset],
                    values,
                    detail: format!(
                        "consumer {consumer} read offset {} {when} after offset {prev}; {detail}",
                        r.offset
                    ),
                };
                if r.offset <= prev {
                    anomalies.push(anomaly(
                        AnomalyKind::NonmonotonicPoll,
                        vec![prev_value.to_string(), r.value.clone()],
                        format!("{prev_value} then {}", r.value),
                    ));
                } else if r.offset > prev + 1 {
                    let skipped: Vec<(u64, &str)> = known
                        .map(|m| {
                            m.range(prev + 1..r.offset)
                                .map(|(o, vs)| (*o, *vs.keys().next().expect("observed")))
                                .collect()
                        })
                        .unwrap_or_default();
                    if !skipped.is_empty() {
                        const SHOWN: usize = 8;
                        let listed: Vec<String> = skipped.iter().take(SHOWN).map(|(o, v)| format!("{v}@{o}")).collect();
                        let more = if skipped.len() > SHOWN { ", ..." } else { "" };
                        anomalies.push(anomaly(
                            AnomalyKind::PollSkip,
                            skipped.iter().take(SHOWN).map(|(_, v)| v.to_string()).collect(),
                            format!("skipped {} existing offset(s): {}{more}", skipped.len(), listed.join(", ")),
                        ));
                    }
                }
            }
            last.insert(key, (r.offset, r.value.as_str()));
        }
    }

    anomalies.sort();
    for a in &anomalies {
        *report.counts.entry(a.kind).or_default() += 1;
    }
    report.anomalies = anomalies;
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{PollOp, ReadRecord, SendOp};

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
