//! Queue groups: each event of a partition handed to one consumer at a
//! time, locked to it for a while, settled by an ack (or a dead letter),
//! redelivered when its lock runs out.
//!
//! A queue group's state for a partition lives in that partition's own Raft
//! group, applied from [`QueueCmd`]s, so it fails over with the partition:
//! a new leader knows exactly which events were settled and which are
//! locked, by whom and until when.
//!
//! Time is the leader's: every command carries the wall clock of the
//! leader that proposed it (`now_ms`), and the state keeps the newest clock
//! it has seen (`clock_ms`) so that time never goes backwards across a
//! change of leader. Expiry is decided when a command is applied, from that
//! clock alone, so every replica decides alike.
//!
//! Per group and partition the state holds:
//! - settled offsets (acknowledged or dead-lettered): everything below
//!   `floor`, plus disjoint ranges above it;
//! - locks: offset → consumer, deadline, delivery count;
//! - delivery counts of events delivered before and available again
//!   (released, or their lock expired);
//! - dead letters being written: events rejected or delivered
//!   `max_deliveries` times, waiting to be produced to the dead-letter
//!   topic. The leader that claims one produces it there and only then
//!   settles it ([`QueueCmd::DeadLettered`]); a claim that lapses (the
//!   leader died) is handed out again, so a dead letter is written at least
//!   once and never lost.
//!
//! An event is *available* when it is in the log, not settled, not a dead
//! letter, and not under a live lock. [`QueueCmd::Lock`] takes the
//! available events in offset order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Rejection;

/// Key prefix of a queue group's state in the state machine tree.
pub(crate) const QUEUE_PREFIX: u8 = b'Q';
/// Longest queue group name.
pub const MAX_QUEUE_NAME: usize = 249;
/// Longest consumer id.
pub const MAX_CONSUMER_ID: usize = 249;
/// Deliveries before an unsettled event goes to the dead-letter topic.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;
/// Most deliveries a queue group may allow per event.
pub const MAX_MAX_DELIVERIES: u32 = 1000;
/// Most events one queue group holds locked (or waiting as dead letters) on
/// one partition: bounds the state each command rewrites.
pub const MAX_LOCKS: usize = 10_000;
/// How long the leader that claimed a dead letter has to write it before
/// another attempt may take it.
pub const DEAD_LETTER_CLAIM_MS: i64 = 30_000;
/// Dead letters handed out by one lock command.
const MAX_DEAD_LETTER_JOBS: usize = 100;
/// Longest reject reason kept.
pub const MAX_REASON: usize = 1024;
/// Most offsets one command may name.
pub const MAX_OFFSETS_PER_COMMAND: usize = 10_000;

/// Settings of a queue group, given by its consumers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    /// Deliveries an event may have; when its last lock lapses it goes to
    /// the dead-letter topic instead of an eleventh… delivery.
    pub max_deliveries: u32,
    pub dead_letter_topic: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub consumer: String,
    pub deadline_ms: i64,
    /// Deliveries so far, this one included.
    pub deliveries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub deliveries: u32,
    pub reason: String,
    /// Until then the leader that claimed it is writing it.
    pub claimed_until_ms: i64,
}

/// One queue group on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    pub settings: QueueSettings,
    /// Every offset below is settled (or skipped by a reset).
    pub floor: u64,
    /// Settled ranges above `floor`: start → end (exclusive), disjoint and
    /// not adjacent to each other or to `floor`.
    pub settled: BTreeMap<u64, u64>,
    pub locks: BTreeMap<u64, Lock>,
    /// Delivery counts of events delivered before and available again.
    pub returned: BTreeMap<u64, u32>,
    pub dead: BTreeMap<u64, DeadLetter>,
    /// The newest leader clock applied.
    pub clock_ms: i64,
    /// Events handed to consumers, redeliveries included.
    pub delivered: u64,
    /// Deliveries of events delivered before.
    pub redelivered: u64,
    pub acked: u64,
    pub dead_lettered: u64,
}

/// An event handed to a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    pub offset: u64,
    /// This delivery's number, from 1.
    pub deliveries: u32,
    pub deadline_ms: i64,
}

/// An event to write to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterJob {
    pub offset: u64,
    pub deliveries: u32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueCmd {
    /// Locks up to `max` available events to `consumer` until `now +
    /// lock_ms`, creating the group if it does not exist. `settings`
    /// replace the group's when given.
    Lock { group: String, consumer: String, max: u32, lock_ms: u32, now_ms: i64, settings: QueueSettings },
    /// Settles events locked to `consumer` whose lock has not expired.
    Ack { group: String, consumer: String, offsets: Vec<u64>, now_ms: i64 },
    /// Makes events locked to `consumer` available again at once.
    /// `undelivered`: they never reached the consumer (the answer had no
    /// room), so the delivery is not counted.
    Release { group: String, consumer: String, offsets: Vec<u64>, undelivered: bool, now_ms: i64 },
    /// Extends live locks of `consumer` to `now + lock_ms`.
    Renew { group: String, consumer: String, offsets: Vec<u64>, lock_ms: u32, now_ms: i64 },
    /// Sends events locked to `consumer` to the dead-letter topic.
    Reject { group: String, consumer: String, offsets: Vec<u64>, reason: String, now_ms: i64 },
    /// Settles dead letters now written to the dead-letter topic.
    DeadLettered { group: String, offsets: Vec<u64>, now_ms: i64 },
    /// Forgets everything at and after `offset` (settled, locked, dead
    /// letters) and skips everything before it, creating the group if it
    /// does not exist.
    Reset { group: String, offset: u64, now_ms: i64, settings: QueueSettings },
}

impl QueueCmd {
    pub fn group(&self) -> &str {
        match self {
            QueueCmd::Lock { group, .. }
            | QueueCmd::Ack { group, .. }
            | QueueCmd::Release { group, .. }
            | QueueCmd::Renew { group, .. }
            | QueueCmd::Reject { group, .. }
            | QueueCmd::DeadLettered { group, .. }
            | QueueCmd::Reset { group, .. } => group,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueResult {
    Locked {
        delivered: Vec<Delivered>,
        dead_letters: Vec<DeadLetterJob>,
    },
    /// Offsets of the ack that were settled already (a retried ack).
    Acked {
        already_settled: Vec<u64>,
    },
    Renewed {
        deadline_ms: i64,
    },
    /// The rejected events, now dead letters claimed by the proposer.
    Rejected {
        dead_letters: Vec<DeadLetterJob>,
    },
    Done,
}

/// The partition's log bounds at the moment a command is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    pub log_start: u64,
    pub high_watermark: u64,
}

/// The key of a queue group's state.
pub(crate) fn queue_key(group: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + group.len());
    k.push(QUEUE_PREFIX);
    k.extend_from_slice(group.as_bytes());
    k
}

/// What an event is to a queue group, as of a clock.
enum Status<'a> {
    Settled { end: u64 },
    Dead,
    Locked(&'a Lock),
    Expired(&'a Lock),
    Available,
}

impl QueueState {
    pub fn new(settings: QueueSettings, floor: u64) -> QueueState {
        QueueState {
            settings,
            floor,
            settled: BTreeMap::new(),
            locks: BTreeMap::new(),
            returned: BTreeMap::new(),
            dead: BTreeMap::new(),
            clock_ms: 0,
            delivered: 0,
            redelivered: 0,
            acked: 0,
            dead_lettered: 0,
        }
    }

    pub fn is_settled(&self, offset: u64) -> bool {
        self.settled_end(offset).is_some()
    }

    /// The end of the settled stretch holding `offset`, if it is settled.
    fn settled_end(&self, offset: u64) -> Option<u64> {
        if offset < self.floor {
            return Some(self.floor);
        }
        match self.settled.range(..=offset).next_back() {
            Some((_, &end)) if end > offset => Some(end),
            _ => None,
        }
    }

    fn status(&self, offset: u64, now: i64) -> Status<'_> {
        if let Some(end) = self.settled_end(offset) {
            return Status::Settled { end };
        }
        if self.dead.contains_key(&offset) {
            return Status::Dead;
        }
        match self.locks.get(&offset) {
            Some(l) if l.deadline_ms > now => Status::Locked(l),
            Some(l) => Status::Expired(l),
            None => Status::Available,
        }
    }

    /// Marks `offset` settled, merging ranges and raising the floor.
    fn settle(&mut self, offset: u64) {
        if self.is_settled(offset) {
            return;
        }
        self.locks.remove(&offset);
        self.returned.remove(&offset);
        self.dead.remove(&offset);
        let (mut start, mut end) = (offset, offset + 1);
        if let Some((&s, &e)) = self.settled.range(..offset).next_back()
            && e == offset
        {
            self.settled.remove(&s);
            start = s;
        }
        if let Some(e) = self.settled.remove(&end) {
            end = e;
        }
        if start == self.floor {
            self.floor = end;
        } else {
            self.settled.insert(start, end);
        }
    }

    /// Forgets every event below `log_start`: retention released them, so
    /// they can be neither delivered nor dead-lettered any more. The floor
    /// rises to the log start (and past settled ranges that now touch it).
    fn forget_below(&mut self, log_start: u64) {
        if log_start <= self.floor {
            return;
        }
        self.floor = log_start;
        self.locks = self.locks.split_off(&log_start);
        self.returned = self.returned.split_off(&log_start);
        self.dead = self.dead.split_off(&log_start);
        let straddling = self.settled.range(..log_start).next_back().map(|(_, &e)| e).filter(|&e| e > log_start);
        self.settled = self.settled.split_off(&log_start);
        if let Some(end) = straddling {
            self.floor = end;
        }
        while let Some(end) = self.settled.remove(&self.floor) {
            self.floor = end;
        }
    }

    /// Events of `[log start, high watermark)` not settled yet: what the
    /// group still has to work through (in flight included).
    pub fn backlog(&self, bounds: LogBounds) -> u64 {
        let start = self.floor.max(bounds.log_start);
        let end = bounds.high_watermark;
        if end <= start {
            return 0;
        }
        let settled: u64 = self.settled.iter().map(|(&s, &e)| e.min(end).saturating_sub(s.max(start))).sum();
        (end - start).saturating_sub(settled)
    }

    /// Events locked to consumers whose locks have not expired at `now`.
    pub fn in_flight(&self, now: i64) -> usize {
        self.locks.values().filter(|l| l.deadline_ms > now).count()
    }

    /// Whether a lock command at `now` would hand out anything: an
    /// available event below the high watermark, or a dead letter whose
    /// claim lapsed.
    pub fn has_work(&self, now: i64, bounds: LogBounds) -> bool {
        let now = now.max(self.clock_ms);
        if self.dead.values().any(|d| d.claimed_until_ms <= now) {
            return true;
        }
        let mut o = self.floor.max(bounds.log_start);
        while o < bounds.high_watermark {
            match self.status(o, now) {
                Status::Settled { end } => o = end,
                Status::Dead | Status::Locked(_) => o += 1,
                Status::Expired(_) | Status::Available => return true,
            }
        }
        false
    }

    /// The next moment something locked or claimed now becomes available.
    pub fn next_deadline(&self, now: i64) -> Option<i64> {
        let locks = self.locks.values().map(|l| l.deadline_ms);
        let claims = self.dead.values().map(|d| d.claimed_until_ms);
        locks.chain(claims).filter(|d| *d > now).min()
    }

    fn lock(&mut self, consumer: String, max: u32, lock_ms: u32, now: i64, bounds: LogBounds) -> QueueResult {
        let mut dead_letters = Vec::new();
        for (o, d) in self.dead.iter_mut() {
            if dead_letters.len() >= MAX_DEAD_LETTER_JOBS {
                break;
            }
            if d.claimed_until_ms <= now {
                d.claimed_until_ms = now + DEAD_LETTER_CLAIM_MS;
                dead_letters.push(DeadLetterJob { offset: *o, deliveries: d.deliveries, reason: d.reason.clone() });
            }
        }
        let deadline_ms = now + lock_ms as i64;
        let mut delivered = Vec::new();
        let mut o = self.floor.max(bounds.log_start);
        while o < bounds.high_watermark && delivered.len() < max as usize {
            if self.locks.len() + self.dead.len() >= MAX_LOCKS && !self.locks.contains_key(&o) {
                // Full: only expired locks can be taken over.
                match self.locks.range(o..).next() {
                    Some((&k, _)) => o = k,
                    None => break,
                }
            }
            let deliveries = match self.status(o, now) {
                Status::Settled { end } => {
                    o = end;
                    continue;
                }
                Status::Dead | Status::Locked(_) => {
                    o += 1;
                    continue;
                }
                Status::Expired(l) => l.deliveries,
                Status::Available => self.returned.get(&o).copied().unwrap_or(0),
            };
            self.locks.remove(&o);
            self.returned.remove(&o);
            if deliveries >= self.settings.max_deliveries {
                let reason = format!(
                    "delivered {deliveries} times without being settled (max_deliveries {})",
                    self.settings.max_deliveries
                );
                self.dead.insert(
                    o,
                    DeadLetter { deliveries, reason: reason.clone(), claimed_until_ms: now + DEAD_LETTER_CLAIM_MS },
                );
                if dead_letters.len() < MAX_DEAD_LETTER_JOBS {
                    dead_letters.push(DeadLetterJob { offset: o, deliveries, reason });
                } else {
                    // Handed out once the claim lapses.
                    if let Some(d) = self.dead.get_mut(&o) {
                        d.claimed_until_ms = now;
                    }
                }
                o += 1;
                continue;
            }
            self.locks.insert(o, Lock { consumer: consumer.clone(), deadline_ms, deliveries: deliveries + 1 });
            self.delivered += 1;
            if deliveries > 0 {
                self.redelivered += 1;
            }
            delivered.push(Delivered { offset: o, deliveries: deliveries + 1, deadline_ms });
            o += 1;
        }
        QueueResult::Locked { delivered, dead_letters }
    }

    /// Checks that every offset is locked to `consumer` under a live lock
    /// and none is settled (what renew and reject act on).
    fn check_live_unsettled(&self, group: &str, consumer: &str, offsets: &[u64], now: i64) -> Result<(), Rejection> {
        match self.check_held(group, consumer, offsets, now, true)?.first() {
            Some(o) => Err(Rejection::NotHeld(format!("event {o} of queue group {group:?} is settled already"))),
            None => Ok(()),
        }
    }

    /// Checks that every offset is locked to `consumer`; `live`: and that
    /// the lock has not expired. Returns the offsets already settled.
    fn check_held(
        &self,
        group: &str,
        consumer: &str,
        offsets: &[u64],
        now: i64,
        live: bool,
    ) -> Result<Vec<u64>, Rejection> {
        let mut settled = Vec::new();
        for &o in offsets {
            match self.status(o, now) {
                Status::Settled { .. } => settled.push(o),
                Status::Locked(l) | Status::Expired(l) if l.consumer != consumer => {
                    return Err(Rejection::NotHeld(format!(
                        "event {o} of queue group {group:?} is not held by consumer {consumer:?} \
                         (its lock expired and it went to another consumer, or it never was)"
                    )));
                }
                Status::Expired(l) if live => {
                    return Err(Rejection::LockExpired(format!(
                        "the lock of consumer {consumer:?} on event {o} of queue group {group:?} expired {} ms ago; \
                         the event will be delivered again",
                        now - l.deadline_ms
                    )));
                }
                Status::Locked(_) | Status::Expired(_) => {}
                Status::Dead => {
                    return Err(Rejection::NotHeld(format!(
                        "event {o} of queue group {group:?} is being dead-lettered; consumer {consumer:?} does not hold it"
                    )));
                }
                Status::Available => {
                    return Err(Rejection::NotHeld(format!(
                        "event {o} of queue group {group:?} is not held by consumer {consumer:?} \
                         (not delivered to it, released, or its lock expired)"
                    )));
                }
            }
        }
        Ok(settled)
    }
}

fn unknown(group: &str) -> Rejection {
    Rejection::UnknownQueueGroup(format!(
        "queue group {group:?} does not exist on this partition (a queue group is created by its first receive)"
    ))
}

/// Offsets sorted and without repeats, within limits.
fn distinct(mut offsets: Vec<u64>) -> Result<Vec<u64>, Rejection> {
    if offsets.is_empty() {
        return Err(Rejection::InvalidRequest("no offsets given".into()));
    }
    if offsets.len() > MAX_OFFSETS_PER_COMMAND {
        return Err(Rejection::InvalidRequest(format!(
            "{} offsets in one request; at most {MAX_OFFSETS_PER_COMMAND}",
            offsets.len()
        )));
    }
    offsets.sort_unstable();
    offsets.dedup();
    Ok(offsets)
}

/// Applies `cmd` to `current` (the group's state on this partition, if
/// any): the group's new state (None: unchanged) and the result.
pub(crate) fn apply(
    cmd: QueueCmd,
    current: Option<&QueueState>,
    bounds: LogBounds,
) -> Result<(Option<QueueState>, QueueResult), Rejection> {
    // What retention released is forgotten before anything else.
    let pruned;
    let current = match current {
        Some(st) if st.floor < bounds.log_start => {
            let mut st = st.clone();
            st.forget_below(bounds.log_start);
            pruned = st;
            Some(&pruned)
        }
        c => c,
    };
    let clock = |st: &mut QueueState, now_ms: i64| {
        st.clock_ms = st.clock_ms.max(now_ms);
        st.clock_ms
    };
    match cmd {
        QueueCmd::Lock { group: _, consumer, max, lock_ms, now_ms, settings } => {
            let mut st = match current {
                Some(st) => st.clone(),
                None => QueueState::new(settings.clone(), bounds.log_start),
            };
            st.settings = settings;
            let now = clock(&mut st, now_ms);
            let r = st.lock(consumer, max, lock_ms, now, bounds);
            Ok((Some(st), r))
        }
        QueueCmd::Ack { group, consumer, offsets, now_ms } => {
            let mut st = current.cloned().ok_or_else(|| unknown(&group))?;
            let offsets = distinct(offsets)?;
            let now = clock(&mut st, now_ms);
            let already_settled = st.check_held(&group, &consumer, &offsets, now, true)?;
            for o in offsets {
                if !st.is_settled(o) {
                    st.settle(o);
                    st.acked += 1;
                }
            }
            Ok((Some(st), QueueResult::Acked { already_settled }))
        }
        QueueCmd::Release { group, consumer, offsets, undelivered, now_ms } => {
            let mut st = current.cloned().ok_or_else(|| unknown(&group))?;
            let offsets = distinct(offsets)?;
            let now = clock(&mut st, now_ms);
            st.check_held(&group, &consumer, &offsets, now, false)?;
            for o in offsets {
                if let Some(l) = st.locks.remove(&o) {
                    let mut n = l.deliveries;
                    if undelivered {
                        n -= 1;
                        st.delivered = st.delivered.saturating_sub(1);
                        if n > 0 {
                            st.redelivered = st.redelivered.saturating_sub(1);
                        }
                    }
                    if n > 0 {
                        st.returned.insert(o, n);
                    }
                }
            }
            Ok((Some(st), QueueResult::Done))
        }
        QueueCmd::Renew { group, consumer, offsets, lock_ms, now_ms } => {
            let mut st = current.cloned().ok_or_else(|| unknown(&group))?;
            let offsets = distinct(offsets)?;
            let now = clock(&mut st, now_ms);
            st.check_live_unsettled(&group, &consumer, &offsets, now)?;
            let deadline_ms = now + lock_ms as i64;
            for o in offsets {
                if let Some(l) = st.locks.get_mut(&o) {
                    l.deadline_ms = deadline_ms;
                }
            }
            Ok((Some(st), QueueResult::Renewed { deadline_ms }))
        }
        QueueCmd::Reject { group, consumer, offsets, reason, now_ms } => {
            let mut st = current.cloned().ok_or_else(|| unknown(&group))?;
            let offsets = distinct(offsets)?;
            let now = clock(&mut st, now_ms);
            st.check_live_unsettled(&group, &consumer, &offsets, now)?;
            let mut reason = format!("rejected by consumer {consumer:?}: {reason}");
            if reason.len() > MAX_REASON {
                let mut end = MAX_REASON;
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                reason.truncate(end);
            }
            let mut dead_letters = Vec::with_capacity(offsets.len());
            for o in offsets {
                if let Some(l) = st.locks.remove(&o) {
                    let claimed_until_ms = now + DEAD_LETTER_CLAIM_MS;
                    st.dead
                        .insert(o, DeadLetter { deliveries: l.deliveries, reason: reason.clone(), claimed_until_ms });
                    dead_letters.push(DeadLetterJob { offset: o, deliveries: l.deliveries, reason: reason.clone() });
                }
            }
            Ok((Some(st), QueueResult::Rejected { dead_letters }))
        }
        QueueCmd::DeadLettered { group, offsets, now_ms } => {
            let mut st = current.cloned().ok_or_else(|| unknown(&group))?;
            let offsets = distinct(offsets)?;
            clock(&mut st, now_ms);
            for o in offsets {
                // Settled already: an earlier attempt wrote it too.
                if st.dead.contains_key(&o) {
                    st.settle(o);
                    st.dead_lettered += 1;
                }
            }
            Ok((Some(st), QueueResult::Done))
        }
        QueueCmd::Reset { group: _, offset, now_ms, settings } => {
            if offset > bounds.high_watermark {
                return Err(Rejection::InvalidRequest(format!(
                    "reset offset {offset} is past the high watermark {}",
                    bounds.high_watermark
                )));
            }
            let mut st = match current {
                Some(st) => st.clone(),
                None => QueueState::new(settings, offset),
            };
            clock(&mut st, now_ms);
            st.floor = offset;
            st.settled.clear();
            st.locks.clear();
            st.returned.clear();
            st.dead.clear();
            Ok((Some(st), QueueResult::Done))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: &str = "g";

    fn settings(max_deliveries: u32) -> QueueSettings {
        QueueSettings { max_deliveries, dead_letter_topic: "t.dlq".into() }
    }

    fn bounds(hw: u64) -> LogBounds {
        LogBounds { log_start: 0, high_watermark: hw }
    }

    fn lock(st: Option<&QueueState>, consumer: &str, max: u32, now: i64, hw: u64) -> (QueueState, Vec<u64>, Vec<u64>) {
        let cmd = QueueCmd::Lock {
            group: G.into(),
            consumer: consumer.into(),
            max,
            lock_ms: 1000,
            now_ms: now,
            settings: settings(3),
        };
        let (st, r) = apply(cmd, st, bounds(hw)).unwrap();
        let QueueResult::Locked { delivered, dead_letters } = r else { panic!("{r:?}") };
        (st.unwrap(), delivered.iter().map(|d| d.offset).collect(), dead_letters.iter().map(|d| d.offset).collect())
    }

    fn ack(st: &QueueState, consumer: &str, offsets: &[u64], now: i64) -> Result<QueueState, Rejection> {
        let cmd = QueueCmd::Ack { group: G.into(), consumer: consumer.into(), offsets: offsets.to_vec(), now_ms: now };
        apply(cmd, Some(st), bounds(100)).map(|(s, _)| s.unwrap())
    }

    #[test]
    fn consumers_get_disjoint_events_in_offset_order() {
        let (st, a, _) = lock(None, "a", 3, 0, 10);
        let (st, b, _) = lock(Some(&st), "b", 3, 0, 10);
        assert_eq!(a, vec![0, 1, 2]);
        assert_eq!(b, vec![3, 4, 5]);
        let st = ack(&st, "a", &[1], 10).unwrap();
        // Released events come back first, before later offsets.
        let cmd = QueueCmd::Release {
            group: G.into(),
            consumer: "a".into(),
            offsets: vec![0],
            undelivered: false,
            now_ms: 10,
        };
        let st = apply(cmd, Some(&st), bounds(10)).unwrap().0.unwrap();
        let (st, c, _) = lock(Some(&st), "c", 2, 10, 10);
        assert_eq!(c, vec![0, 6]);
        assert_eq!(st.redelivered, 1);
        assert_eq!(st.returned.len(), 0);
    }

    #[test]
    fn acks_are_checked_against_holder_and_deadline() {
        let (st, _, _) = lock(None, "a", 2, 0, 10);
        assert!(matches!(ack(&st, "b", &[0], 10), Err(Rejection::NotHeld(_))));
        assert!(matches!(ack(&st, "a", &[5], 10), Err(Rejection::NotHeld(_))));
        assert!(matches!(ack(&st, "a", &[0], 1000), Err(Rejection::LockExpired(_))));
        let st2 = ack(&st, "a", &[0, 1], 999).unwrap();
        assert_eq!((st2.floor, st2.acked, st2.locks.len()), (2, 2, 0));
        // A retried ack succeeds and changes nothing.
        let cmd = QueueCmd::Ack { group: G.into(), consumer: "a".into(), offsets: vec![0], now_ms: 5 };
        let (s3, r) = apply(cmd, Some(&st2), bounds(10)).unwrap();
        assert_eq!(r, QueueResult::Acked { already_settled: vec![0] });
        assert_eq!(s3.unwrap().acked, 2);
        // The failed ack changed nothing: all or nothing.
        assert!(matches!(ack(&st, "a", &[0, 7], 10), Err(Rejection::NotHeld(_))));
        let unknown = QueueCmd::Ack { group: "x".into(), consumer: "a".into(), offsets: vec![0], now_ms: 5 };
        assert!(matches!(apply(unknown, None, bounds(10)), Err(Rejection::UnknownQueueGroup(_))));
    }

    #[test]
    fn expired_locks_are_redelivered_until_max_deliveries_then_dead_lettered() {
        let (mut st, _, _) = lock(None, "a", 1, 0, 1);
        for n in 2..=3 {
            let (s, got, dead) = lock(Some(&st), "b", 1, 1000 * (n - 1), 1);
            assert_eq!((got, dead), (vec![0], vec![]), "delivery {n}");
            assert_eq!(s.locks[&0].deliveries, n as u32);
            st = s;
        }
        // The third lock lapses: max_deliveries is 3, so it is a dead letter.
        let (st, got, dead) = lock(Some(&st), "b", 1, 3000, 1);
        assert_eq!((got, dead), (vec![], vec![0]));
        // While claimed, nobody else gets it as a job or as an event.
        let (st, got, dead) = lock(Some(&st), "b", 1, 3001, 1);
        assert_eq!((got, dead), (vec![], vec![]));
        // The claim lapses (the leader died): handed out again.
        let (st, _, dead) = lock(Some(&st), "b", 1, 3000 + DEAD_LETTER_CLAIM_MS, 1);
        assert_eq!(dead, vec![0]);
        let cmd = QueueCmd::DeadLettered { group: G.into(), offsets: vec![0], now_ms: 40_000 };
        let st = apply(cmd.clone(), Some(&st), bounds(1)).unwrap().0.unwrap();
        assert_eq!((st.floor, st.dead_lettered, st.dead.len()), (1, 1, 0));
        // A second writer's settle counts nothing twice.
        let st = apply(cmd, Some(&st), bounds(1)).unwrap().0.unwrap();
        assert_eq!(st.dead_lettered, 1);
    }

    #[test]
    fn reject_turns_a_held_event_into_a_claimed_dead_letter() {
        let (st, _, _) = lock(None, "a", 2, 0, 2);
        let rej = |c: &str, now| QueueCmd::Reject {
            group: G.into(),
            consumer: c.into(),
            offsets: vec![1],
            reason: "bad".into(),
            now_ms: now,
        };
        assert!(matches!(apply(rej("b", 1), Some(&st), bounds(2)), Err(Rejection::NotHeld(_))));
        let (st, r) = apply(rej("a", 1), Some(&st), bounds(2)).unwrap();
        let QueueResult::Rejected { dead_letters } = r else { panic!() };
        assert_eq!(dead_letters[0].offset, 1);
        assert!(dead_letters[0].reason.contains("bad"));
        let st = st.unwrap();
        assert!(st.dead.contains_key(&1) && !st.locks.contains_key(&1));
    }

    #[test]
    fn state_below_a_released_log_start_is_forgotten_on_the_next_command() {
        // Locks 0..10, rejects 2 (a dead letter), releases 3, acks 5 and 8..10.
        let (st, got, _) = lock(None, "a", 10, 100, 20);
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        let (st, _) = apply(
            QueueCmd::Reject {
                group: G.into(),
                consumer: "a".into(),
                offsets: vec![2],
                reason: "bad".into(),
                now_ms: 101,
            },
            Some(&st),
            bounds(20),
        )
        .unwrap();
        let (st, _) = apply(
            QueueCmd::Release {
                group: G.into(),
                consumer: "a".into(),
                offsets: vec![3],
                undelivered: false,
                now_ms: 101,
            },
            st.as_ref(),
            bounds(20),
        )
        .unwrap();
        let st = ack(st.as_ref().unwrap(), "a", &[5, 8, 9], 102).unwrap();
        assert_eq!((st.dead.len(), st.returned.len(), st.settled.len()), (1, 1, 2));
        // Retention releases everything below 8: settled 8..10 then joins the floor.
        let released = LogBounds { log_start: 8, high_watermark: 20 };
        let (st, r) = apply(
            QueueCmd::Lock {
                group: G.into(),
                consumer: "b".into(),
                max: 1,
                lock_ms: 1000,
                now_ms: 103,
                settings: settings(3),
            },
            Some(&st),
            released,
        )
        .unwrap();
        let st = st.unwrap();
        assert!(st.locks.keys().all(|&o| o >= 10), "{:?}", st.locks);
        assert!(st.dead.is_empty() && st.returned.is_empty() && st.settled.is_empty());
        assert_eq!(st.floor, 10);
        match r {
            QueueResult::Locked { delivered, dead_letters } => {
                assert_eq!(delivered.iter().map(|d| d.offset).collect::<Vec<_>>(), vec![10]);
                assert!(dead_letters.is_empty(), "a released event is not dead-lettered: {dead_letters:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_backlog_counts_unsettled_events_between_the_log_start_and_the_high_watermark() {
        let mut st = QueueState::new(settings(3), 0);
        for o in [0, 1, 5, 6, 9] {
            st.settle(o);
        }
        assert_eq!(st.backlog(LogBounds { log_start: 0, high_watermark: 10 }), 5);
        assert_eq!(st.backlog(LogBounds { log_start: 6, high_watermark: 10 }), 2);
        assert_eq!(st.backlog(LogBounds { log_start: 0, high_watermark: 6 }), 3);
        assert_eq!(st.backlog(LogBounds { log_start: 12, high_watermark: 12 }), 0);
    }

    #[test]
    fn settled_ranges_merge_into_the_floor() {
        let mut st = QueueState::new(settings(3), 0);
        for o in [5, 3, 4, 1, 7] {
            st.settle(o);
        }
        assert_eq!(st.floor, 0);
        assert_eq!(st.settled, BTreeMap::from([(1, 2), (3, 6), (7, 8)]));
        st.settle(0);
        assert_eq!((st.floor, st.settled.len()), (2, 2));
        st.settle(2);
        st.settle(6);
        assert_eq!((st.floor, st.settled.len()), (8, 0));
        assert!(st.is_settled(7) && !st.is_settled(8));
    }

    #[test]
    fn reset_forgets_and_skips() {
        let (st, _, _) = lock(None, "a", 5, 0, 10);
        let st = ack(&st, "a", &[0, 1], 1).unwrap();
        let cmd = QueueCmd::Reset { group: G.into(), offset: 1, now_ms: 2, settings: settings(3) };
        let st = apply(cmd, Some(&st), bounds(10)).unwrap().0.unwrap();
        assert!(st.locks.is_empty());
        let (_, got, _) = lock(Some(&st), "b", 3, 3, 10);
        assert_eq!(got, vec![1, 2, 3]);
        let past = QueueCmd::Reset { group: G.into(), offset: 11, now_ms: 2, settings: settings(3) };
        assert!(apply(past, Some(&st), bounds(10)).is_err());
    }

    #[test]
    fn the_clock_never_goes_back_with_a_new_leader() {
        let (st, _, _) = lock(None, "a", 1, 5000, 2);
        // A new leader whose clock is behind cannot revive a lock that the
        // old leader's clock already saw expire... nor expire one early.
        let (st, got, _) = lock(Some(&st), "b", 1, 100, 2);
        assert_eq!(got, vec![1]);
        assert_eq!(st.locks[&1].deadline_ms, 6000);
    }

    #[test]
    fn has_work_matches_what_a_lock_would_take() {
        let (st, _, _) = lock(None, "a", 2, 0, 2);
        assert!(!st.has_work(10, bounds(2)));
        assert!(st.has_work(10, bounds(3)), "a new event");
        assert!(st.has_work(1000, bounds(2)), "an expired lock");
        assert_eq!(st.next_deadline(10), Some(1000));
    }
}
