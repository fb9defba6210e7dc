//! Elections after a start, paced.
//!
//! A node that starts opens every partition group it holds, and each group
//! times out and stands for election on its own: with thousands of groups
//! and the whole cluster starting together, every replica of every group
//! stands at once. Votes split, each election costs a round of calls to
//! every peer, and every group that wins heartbeats until it goes quiet.
//! On a node short of CPU the calls then miss their timeouts, leaders lose
//! their leases and the groups stand again: the cluster does not settle.
//!
//! So the groups a node opens at its start do not tick (their election
//! timers do not run) until released here, [`AT_ONCE`] at a time:
//!
//! - first those whose preferred replica (the first listed) is this node,
//!   so each group has one candidate, the one the balancer would move its
//!   leadership to anyway;
//! - then the others, which by then mostly follow a leader elsewhere and
//!   only stand if their preferred replica's node is down.
//!
//! A batch is released once the one before has a leader in every group, or
//! after [`BATCH_WAIT`] election timeouts. A held replica still answers
//! votes and appends (a leader elsewhere is followed at once), and a held
//! group that goes quiet stays quiet. Groups created while the node runs
//! (new topics, moves) tick from the start.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use replog_raft_store::NodeId;
use tracing::info;

use crate::node::Node;
use crate::partition::Partition;

/// Groups released to elect at a time.
pub const AT_ONCE: usize = 200;
/// Longest wait for a batch's leaders, in maximum election timeouts.
const BATCH_WAIT: u32 = 3;
/// How often a batch's groups are looked at for a leader.
const POLL: Duration = Duration::from_millis(20);

/// The order groups held at a start are released in: those whose
/// preferred replica is `me` first, each part in the order given.
pub fn release_order<T>(held: Vec<(T, Option<NodeId>)>, me: NodeId) -> Vec<T> {
    let (mut first, rest): (Vec<_>, Vec<_>) = held.into_iter().partition(|(_, preferred)| *preferred == Some(me));
    first.extend(rest);
    first.into_iter().map(|(p, _)| p).collect()
}

/// Releases `held` (in [`release_order`]) batch by batch.
pub async fn run(node: Arc<Node>, held: Vec<Arc<Partition>>) {
    if held.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let wait = Duration::from_millis(node.config.election_timeout_max_ms) * BATCH_WAIT;
    for batch in held.chunks(AT_ONCE) {
        for p in batch {
            p.quiet.release(p.raft());
        }
        let until = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < until && !batch.iter().all(|p| has_leader(p)) {
            if node.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }
    info!(groups = held.len(), ms = started.elapsed().as_millis() as u64, "every group opened at start may elect");
}

fn has_leader(p: &Partition) -> bool {
    p.raft().metrics().borrow_watched().current_leader.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_preferring_this_node_are_released_first_each_part_in_its_order() {
        let held = vec![("a", Some(2)), ("b", Some(1)), ("c", None), ("d", Some(1)), ("e", Some(3))];
        assert_eq!(release_order(held, 1), vec!["b", "d", "a", "c", "e"]);
    }
}
