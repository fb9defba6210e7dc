//! Who is in the cluster and where to reach them: the first cluster's
//! members (known before the controller registers anyone) and every node
//! the controller has registered, whose registered address wins.

use std::collections::BTreeMap;
use std::sync::Arc;

use replog_raft_store::NodeId;
use replog_raft_store::controller::ClusterMeta;
use tokio::sync::watch;

use crate::error::NodeError;

/// The voters of `m`, each once: those of its one configuration, or of
/// every configuration of a joint one. openraft's `voter_ids()` collects
/// them into a new set on every call, which the scans over every hosted
/// partition (several a second) cannot afford.
pub fn voters(m: &openraft::Membership<NodeId, openraft::BasicNode>) -> impl Iterator<Item = NodeId> + '_ {
    let configs = m.get_joint_config();
    configs
        .iter()
        .enumerate()
        .flat_map(move |(i, c)| c.iter().copied().filter(move |v| !configs[..i].iter().any(|e| e.contains(v))))
}

/// Whether the replica whose metrics these are, `me`, leads its group.
pub fn leads(m: &openraft::RaftMetrics<replog_raft_store::TypeConfig>, me: NodeId) -> bool {
    m.state == openraft::ServerState::Leader && m.current_leader == Some(me)
}

/// Whether `me` leads the group whose metrics these are and holds its Raft
/// lease (see [`Leadership::leased_by`]).
pub fn leased(
    m: &openraft::RaftMetrics<replog_raft_store::TypeConfig>,
    me: NodeId,
    lease: std::time::Duration,
) -> bool {
    use openraft::Instant;
    if !leads(m, me) {
        return false;
    }
    // A group of one is its own majority; a leader not yet acknowledged
    // since its election has just won a majority's votes.
    voters(m.membership_config.membership()).nth(1).is_none()
        || m.last_quorum_acked.is_none_or(|t| t.into_inner().elapsed() <= lease)
}

/// Who leads a Raft group, as this replica sees it.
pub trait Leadership {
    fn leader(&self) -> Option<NodeId>;
    /// Whether `me` leads it right now.
    fn led_by(&self, me: NodeId) -> bool;
    /// Whether `me` leads it and holds its lease: a majority acknowledged
    /// it within `lease` (see [`Leadership::lease`]). A leader cut off from
    /// its majority keeps Raft's leader state until it hears a newer term;
    /// past its lease it serves no client as leader, so that writes go
    /// where they can commit instead of waiting out their timeout.
    fn leased_by(&self, me: NodeId, lease: std::time::Duration) -> bool;
    /// The lease: the election timeout's upper bound, as openraft's own. A
    /// follower grants no vote within it of its last heartbeat and starts
    /// no election before a further election timeout, so while a leader
    /// holds its lease no other has been elected; once it lapses, one soon
    /// will be.
    fn lease(&self) -> std::time::Duration;
    /// Whether this replica has applied an entry of its current term. A
    /// leader that has not yet applied one (the blank entry it appends on
    /// election) may still lack records its predecessor committed and
    /// acknowledged; once it has, everything committed before its election
    /// is applied here.
    fn applied_own_term(&self) -> bool;
}

impl Leadership for replog_raft_store::Raft {
    fn leader(&self) -> Option<NodeId> {
        use openraft::async_runtime::WatchReceiver;
        self.metrics().borrow_watched().current_leader
    }

    fn led_by(&self, me: NodeId) -> bool {
        use openraft::async_runtime::WatchReceiver;
        leads(&self.metrics().borrow_watched(), me)
    }

    fn leased_by(&self, me: NodeId, lease: std::time::Duration) -> bool {
        use openraft::async_runtime::WatchReceiver;
        leased(&self.metrics().borrow_watched(), me, lease)
    }

    fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.config().election_timeout_max)
    }

    fn applied_own_term(&self) -> bool {
        use openraft::async_runtime::WatchReceiver;
        let m = self.metrics();
        let m = m.borrow_watched();
        m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term)
    }
}

pub struct Members {
    initial: BTreeMap<NodeId, String>,
    meta: watch::Receiver<Arc<ClusterMeta>>,
}

impl Members {
    pub fn new(initial: BTreeMap<NodeId, String>, meta: watch::Receiver<Arc<ClusterMeta>>) -> Members {
        Members { initial, meta }
    }

    /// Every known node with its address: the registered ones, or the
    /// first cluster's members until the controller has registered anyone
    /// (a node decommissioned since is not brought back by its flags).
    pub fn all(&self) -> BTreeMap<NodeId, String> {
        let meta = self.meta.borrow();
        if meta.nodes.is_empty() {
            return self.initial.clone();
        }
        meta.nodes.values().map(|n| (n.id, n.addr.clone())).collect()
    }

    pub fn addr(&self, id: NodeId) -> Option<String> {
        self.meta.borrow().nodes.get(&id).map(|n| n.addr.clone()).or_else(|| self.initial.get(&id).cloned())
    }

    /// NOT_LEADER for `what`, naming the leader and its address when known.
    pub fn not_leader(&self, what: impl Into<String>, leader: Option<NodeId>) -> NodeError {
        let leader = leader.and_then(|l| Some((l, self.addr(l)?)));
        NodeError::NotLeader { what: what.into(), leader }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn voters_are_openraft_s_voter_ids_without_the_set() {
        let set = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<NodeId>>();
        for configs in [vec![set(&[1, 2, 3])], vec![set(&[1])], vec![set(&[1, 2, 3]), set(&[3, 4, 5])]] {
            let m = openraft::Membership::<NodeId, openraft::BasicNode>::new_with_defaults(configs, []);
            assert_eq!(voters(&m).collect::<Vec<_>>(), m.voter_ids().collect::<Vec<_>>());
        }
    }
}
