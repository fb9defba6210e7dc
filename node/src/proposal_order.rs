//! Idempotent batches enter a partition's Raft log in their producer's
//! sequence order.
//!
//! A producer keeps up to five batches in flight to one partition, sent in
//! order on one connection, but the server handles every request in its
//! own task, so a later batch can reach Raft before an earlier one. The
//! state machine then refuses it as out of sequence and the producer sends
//! it again once the earlier one has landed: a wasted round trip and a
//! resend that, at a steady 10,000 records/s, touched a fifth of all
//! batches and set the p99. At the leader, a batch whose predecessor has
//! not been proposed yet waits for it (briefly: a predecessor that never
//! comes — refused, or sent elsewhere — lets it go after [`MAX_WAIT`], and
//! the state machine decides as before). Nothing here is about
//! correctness: the sequence check at apply time stays the only judge.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use replog_proto::batch::ProducerInfo;
use tokio::sync::Notify;

/// The longest a batch waits for its predecessor to be proposed.
pub const MAX_WAIT: Duration = Duration::from_millis(100);

/// Producers not heard from for this long are forgotten when more than
/// [`REMEMBERED`] are, and then the oldest beyond half of it.
const FORGET_AFTER: Duration = Duration::from_secs(300);
const REMEMBERED: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Next {
    epoch: i16,
    /// The sequence after the last one proposed.
    sequence: i64,
    at: Instant,
}

/// One partition's record of the next sequence each producer proposes.
#[derive(Debug, Default)]
pub struct ProposalOrder {
    next: Mutex<HashMap<i64, Next>>,
    proposed: Notify,
}

impl ProposalOrder {
    /// Whether `p`'s batch may be proposed now: it is not idempotent, its
    /// producer or epoch is new here, or every batch before it has been
    /// proposed (or it is a resend of one).
    fn turn(&self, p: &ProducerInfo) -> bool {
        if p.producer_id < 0 || p.base_sequence < 0 {
            return true;
        }
        match self.next.lock().unwrap().get(&p.producer_id) {
            Some(n) if n.epoch == p.epoch => p.base_sequence as i64 <= n.sequence,
            _ => true,
        }
    }

    /// Waits until `p`'s batch may be proposed, at most [`MAX_WAIT`].
    pub async fn wait_turn(&self, p: &ProducerInfo) {
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        loop {
            // Registered before the check, so a proposal in between is seen.
            let proposed = self.proposed.notified();
            tokio::pin!(proposed);
            proposed.as_mut().enable();
            if self.turn(p) {
                return;
            }
            if tokio::time::timeout_at(deadline, proposed).await.is_err() {
                return;
            }
        }
    }

    /// `p`'s batch of `records` has been handed to Raft: its successor's
    /// turn.
    pub fn proposed(&self, p: &ProducerInfo, records: u32) {
        if p.producer_id < 0 || p.base_sequence < 0 {
            return;
        }
        let now = Instant::now();
        let after = p.base_sequence as i64 + records as i64;
        {
            let mut next = self.next.lock().unwrap();
            let n = next.entry(p.producer_id).or_insert(Next { epoch: p.epoch, sequence: after, at: now });
            if n.epoch != p.epoch {
                *n = Next { epoch: p.epoch, sequence: after, at: now };
            } else {
                n.sequence = n.sequence.max(after);
                n.at = now;
            }
            if next.len() > REMEMBERED {
                next.retain(|_, n| now.duration_since(n.at) < FORGET_AFTER);
                if next.len() > REMEMBERED / 2 {
                    // Still many producers: the most recent half stays, so
                    // that the next trim is as many proposals away. One
                    // forgotten loses only its ordering here, never a batch.
                    let mut ats: Vec<Instant> = next.values().map(|n| n.at).collect();
                    let at = ats.len() - REMEMBERED / 2;
                    let cutoff = *ats.select_nth_unstable(at).1;
                    next.retain(|_, n| n.at >= cutoff);
                }
            }
        }
        self.proposed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn batch(producer_id: i64, epoch: i16, base_sequence: i32) -> ProducerInfo {
        ProducerInfo { producer_id, epoch, base_sequence }
    }

    #[tokio::test]
    async fn given_a_batch_ahead_of_its_predecessor_then_it_is_proposed_right_after_it() {
        let order = Arc::new(ProposalOrder::default());
        order.proposed(&batch(7, 0, 0), 10);
        // Sequence 20 arrives before 10: it waits for 10.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let later = {
            let (order, tx) = (order.clone(), tx.clone());
            tokio::spawn(async move {
                order.wait_turn(&batch(7, 0, 20)).await;
                tx.send(20).unwrap();
            })
        };
        tokio::task::yield_now().await;
        order.wait_turn(&batch(7, 0, 10)).await;
        tx.send(10).unwrap();
        order.proposed(&batch(7, 0, 10), 10);
        later.await.unwrap();
        assert_eq!((rx.recv().await, rx.recv().await), (Some(10), Some(20)));
    }

    #[tokio::test]
    async fn given_a_new_producer_or_epoch_or_a_resend_or_no_sequence_then_no_wait() {
        let order = ProposalOrder::default();
        assert!(order.turn(&batch(1, 0, 500)), "first batch seen from a producer");
        order.proposed(&batch(1, 0, 500), 5);
        assert!(order.turn(&batch(1, 0, 505)));
        assert!(order.turn(&batch(1, 0, 500)), "a resend");
        assert!(!order.turn(&batch(1, 0, 510)));
        assert!(order.turn(&batch(1, 1, 0)), "a new epoch");
        assert!(order.turn(&ProducerInfo::NONE));
    }

    #[test]
    fn given_many_producers_then_the_most_recent_are_remembered_and_the_rest_forgotten() {
        let order = ProposalOrder::default();
        for p in 0..10_000 {
            order.proposed(&batch(p, 0, 0), 1);
        }
        let next = order.next.lock().unwrap();
        assert!(next.len() <= REMEMBERED, "{} remembered", next.len());
        assert!(next.contains_key(&9_999), "the latest producer is remembered");
        assert!(!next.contains_key(&0), "the first is forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn given_a_predecessor_that_never_comes_then_the_batch_goes_after_the_wait() {
        let order = ProposalOrder::default();
        order.proposed(&batch(3, 0, 0), 1);
        let t0 = tokio::time::Instant::now();
        order.wait_turn(&batch(3, 0, 2)).await;
        assert_eq!(t0.elapsed(), MAX_WAIT);
    }
}
