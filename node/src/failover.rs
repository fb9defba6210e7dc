//! Elections without waiting out the timers when a leader's node is gone.
//!
//! A follower starts an election only once its leader lease (the election
//! timeout's upper bound since the last heartbeat) and then a further
//! random election timeout have passed. When the prober finds a peer's
//! process gone (its connection refused, not merely slow), the followers
//! of the groups that node led need not wait for the second part: each
//! surviving voter, staggered by its rank among them so that the first
//! usually wins alone, asks its Raft group for a pre-vote round every few
//! milliseconds until a new leader is known. Before the lease lapses such a
//! round is a no-op, and pre-vote never disturbs a leader that a majority
//! still hears, so a wrong verdict costs nothing. An isolated (not dead)
//! leader's groups go the ordinary way.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use replog_raft_store::{GroupId, NodeId, Raft};
use tracing::debug;

/// Between two pre-vote rounds of one group.
const ROUND: Duration = Duration::from_millis(25);
/// Between the ranks of the surviving voters.
const STAGGER: Duration = Duration::from_millis(150);

/// The groups with a wake-up under way on this node.
#[derive(Default)]
pub struct Waker {
    active: Arc<Mutex<HashSet<GroupId>>>,
}

impl Waker {
    /// Starts a wake-up for every group in `rafts` whose leader, as this
    /// replica knows it, is one of `down`.
    pub fn peers_down(&self, me: NodeId, down: &[NodeId], rafts: Vec<(GroupId, Raft)>) {
        for (group, raft) in rafts {
            let m = raft.metrics().borrow_watched().clone();
            let Some(leader) = m.current_leader.filter(|l| down.contains(l)) else { continue };
            let mut survivors: Vec<NodeId> =
                m.membership_config.membership().voter_ids().filter(|v| !down.contains(v)).collect();
            survivors.sort_unstable();
            let Some(rank) = survivors.iter().position(|v| *v == me) else { continue };
            if !self.active.lock().expect("waker lock").insert(group) {
                continue;
            }
            let active = self.active.clone();
            let timeout = Duration::from_millis(raft.config().election_timeout_max);
            tokio::spawn(async move {
                tokio::time::sleep(STAGGER * rank as u32).await;
                // Past lease + the longest election timeout the ordinary
                // timers have fired anyway.
                let until = tokio::time::Instant::now() + timeout * 3;
                debug!(group, leader, rank, "leader's node is gone: electing as soon as the lease allows");
                while tokio::time::Instant::now() < until {
                    let m = raft.metrics().borrow_watched().clone();
                    if m.current_leader.is_some_and(|l| l != leader) || m.state == ServerState::Leader {
                        break;
                    }
                    // A candidate's own round is under way: let it finish.
                    if m.state == ServerState::Follower && raft.trigger().elect(true).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(ROUND).await;
                }
                active.lock().expect("waker lock").remove(&group);
            });
        }
    }
}
