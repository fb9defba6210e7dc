//! Idempotent-producer state of a partition: for every producer id, its
//! epoch and its last few batches (first sequence, record count, offset).
//!
//! Applying an append checks the batch's `(producer id, epoch, base
//! sequence)` against this state. A batch the partition already holds — a
//! retry after a lost acknowledgement — is answered with the offset it got
//! the first time and not appended again; a gap in the sequence or a stale
//! epoch is refused. The check runs in `apply`, so every replica decides the
//! same way, and the state is persisted with the offsets and carried in
//! snapshots.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::error::Rejection;

/// Batches remembered per producer: how far back a retry is recognized.
pub const RETAINED_BATCHES: usize = 5;
/// Producers remembered per partition. Beyond this the one that appended
/// least recently is forgotten (its retries are then appended as new), so
/// short-lived producers cannot grow the state without bound. The choice
/// depends only on the log, so every replica forgets the same one.
pub const MAX_PRODUCERS: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    pub epoch: i16,
    pub batches: VecDeque<SeqBatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqBatch {
    pub base_sequence: i32,
    pub record_count: u32,
    pub base_offset: u64,
}

impl SeqBatch {
    fn last_sequence(&self) -> i64 {
        self.base_sequence as i64 + self.record_count as i64 - 1
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqCheck {
    /// New and in order: append it.
    Append,
    /// Already in the partition at this offset.
    Duplicate {
        base_offset: u64,
    },
    Reject(Rejection),
}

/// Decides what to do with a batch `(epoch, base_sequence, record_count)`
/// from a producer whose state is `state` (None: first batch seen).
pub fn check(state: Option<&ProducerState>, epoch: i16, base_sequence: i32, record_count: u32) -> SeqCheck {
    if base_sequence < 0 {
        return SeqCheck::Reject(Rejection::InvalidRequest(format!("negative base sequence {base_sequence}")));
    }
    let Some(st) = state else { return SeqCheck::Append };
    if epoch < st.epoch {
        return SeqCheck::Reject(Rejection::ProducerFenced(format!(
            "epoch {epoch} is older than the current epoch {}",
            st.epoch
        )));
    }
    if epoch > st.epoch {
        // A new epoch starts a new sequence space.
        return SeqCheck::Append;
    }
    if let Some(b) = st.batches.iter().find(|b| b.base_sequence == base_sequence) {
        if b.record_count == record_count {
            return SeqCheck::Duplicate { base_offset: b.base_offset };
        }
        return SeqCheck::Reject(Rejection::OutOfOrderSequence(format!(
            "sequence {base_sequence} was already used by a batch of {} records, not {record_count}",
            b.record_count
        )));
    }
    let expected = st.batches.back().map_or(0, |b| b.last_sequence() + 1);
    if base_sequence as i64 == expected {
        SeqCheck::Append
    } else if (base_sequence as i64) < expected {
        SeqCheck::Reject(Rejection::OutOfOrderSequence(format!(
            "sequence {base_sequence} is older than the batches remembered (next is {expected})"
        )))
    } else {
        SeqCheck::Reject(Rejection::OutOfOrderSequence(format!(
            "sequence {base_sequence} leaves a gap: expected {expected}"
        )))
    }
}

/// Records an appended batch.
pub fn record(state: &mut ProducerState, epoch: i16, batch: SeqBatch) {
    if epoch != state.epoch {
        state.epoch = epoch;
        state.batches.clear();
    }
    state.batches.push_back(batch);
    while state.batches.len() > RETAINED_BATCHES {
        state.batches.pop_front();
    }
}

/// Key prefix of producer state in the state machine tree. Distinct from
/// every other key's first byte there (`o`, `b`, `a`, `c`, `s`, and `p` of
/// `partition`).
pub(crate) const KEY_PREFIX: u8 = b'P';

/// The producer to forget when there are too many: the one whose last
/// batch is oldest.
pub fn least_recent<'a>(producers: impl Iterator<Item = (&'a i64, &'a ProducerState)>) -> Option<i64> {
    producers.min_by_key(|(id, st)| (st.batches.back().map_or(0, |b| b.base_offset), **id)).map(|(id, _)| *id)
}

pub(crate) fn key(producer_id: i64) -> [u8; 9] {
    let mut k = [KEY_PREFIX; 9];
    k[1..].copy_from_slice(&producer_id.to_be_bytes());
    k
}

/// The producer id of a key made by [`key`].
pub(crate) fn id_of(key: &[u8]) -> Option<i64> {
    match key {
        [KEY_PREFIX, rest @ ..] if rest.len() == 8 => rest.try_into().ok().map(i64::from_be_bytes),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(batches: &[(i32, u32, u64)]) -> ProducerState {
        let mut st = ProducerState::default();
        for &(s, c, o) in batches {
            record(&mut st, 0, SeqBatch { base_sequence: s, record_count: c, base_offset: o });
        }
        st
    }

    #[test]
    fn first_batch_and_next_in_order_are_appended() {
        assert_eq!(check(None, 0, 0, 3), SeqCheck::Append);
        assert_eq!(check(Some(&after(&[(0, 3, 10)])), 0, 3, 1), SeqCheck::Append);
    }

    #[test]
    fn a_retried_batch_is_answered_with_its_first_offset() {
        let st = after(&[(0, 3, 10), (3, 2, 20)]);
        assert_eq!(check(Some(&st), 0, 0, 3), SeqCheck::Duplicate { base_offset: 10 });
        assert_eq!(check(Some(&st), 0, 3, 2), SeqCheck::Duplicate { base_offset: 20 });
    }

    #[test]
    fn gaps_reused_sequences_and_old_epochs_are_refused() {
        let st = after(&[(0, 3, 10)]);
        let out_of_order = |c| matches!(c, SeqCheck::Reject(Rejection::OutOfOrderSequence(_)));
        assert!(out_of_order(check(Some(&st), 0, 5, 1)));
        assert!(out_of_order(check(Some(&st), 0, 0, 2)));
        let mut st2 = st.clone();
        record(&mut st2, 2, SeqBatch { base_sequence: 0, record_count: 1, base_offset: 11 });
        assert!(matches!(check(Some(&st2), 1, 1, 1), SeqCheck::Reject(Rejection::ProducerFenced(_))));
        assert_eq!(check(Some(&st2), 3, 0, 1), SeqCheck::Append);
    }

    #[test]
    fn the_least_recently_appending_producer_is_forgotten_first() {
        let mut m = std::collections::HashMap::new();
        m.insert(7, after(&[(0, 1, 50)]));
        m.insert(3, after(&[(0, 1, 10), (1, 1, 90)]));
        m.insert(9, after(&[(0, 1, 20)]));
        assert_eq!(least_recent(m.iter()), Some(9));
    }

    #[test]
    fn producer_keys_never_collide_with_other_state_keys() {
        assert_eq!(id_of(&key(-5)), Some(-5));
        assert_eq!(id_of(b"partition"), None);
        assert_eq!(id_of(&crate::partition::index_key(3)), None);
    }

    #[test]
    fn only_the_last_batches_are_remembered() {
        let st = after(&(0..10).map(|i| (i, 1, i as u64)).collect::<Vec<_>>());
        assert_eq!(st.batches.len(), RETAINED_BATCHES);
        assert!(matches!(check(Some(&st), 0, 0, 1), SeqCheck::Reject(_)));
        assert_eq!(check(Some(&st), 0, 9, 1), SeqCheck::Duplicate { base_offset: 9 });
    }
}
