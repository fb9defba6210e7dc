//! The controller group as the rest of the node sees it: propose a command,
//! watch the cluster metadata, know who leads. The controller leader also
//! registers the group's members in the metadata.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ChangeMembers};
use replog_raft_store::controller::{ClusterMeta, ControllerCmd, ControllerResult};
use replog_raft_store::{NodeId, Raft, Request, Response};
use tokio::sync::watch;
use tracing::warn;

use crate::error::{NodeError, Result};
use crate::members::{Leadership, Members};

const WHAT: &str = "the controller group";
/// How often the controller leader checks that every member is registered.
const REGISTER_INTERVAL: Duration = Duration::from_millis(200);

pub struct Controller {
    me: NodeId,
    raft: Raft,
    meta: watch::Receiver<Arc<ClusterMeta>>,
    members: Arc<Members>,
    /// Set once this node has applied everything the controller had
    /// committed after the node started ([`Controller::mark_caught_up`]).
    caught_up: Arc<AtomicBool>,
}

impl Controller {
    pub fn new(me: NodeId, raft: Raft, meta: watch::Receiver<Arc<ClusterMeta>>, members: Arc<Members>) -> Controller {
        Controller { me, raft, meta, members, caught_up: Arc::default() }
    }

    /// The cluster metadata as applied here.
    pub fn meta(&self) -> Arc<ClusterMeta> {
        self.meta.borrow().clone()
    }

    /// Changes of the metadata, as they are applied here.
    pub fn watch(&self) -> watch::Receiver<Arc<ClusterMeta>> {
        self.meta.clone()
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.raft.leader()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.led_by(self.me)
    }

    /// NOT_LEADER naming the controller leader as known here.
    pub fn not_leader(&self) -> NodeError {
        self.members.not_leader(WHAT, self.leader().filter(|l| *l != self.me))
    }

    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Whether the metadata here holds every change the controller had
    /// committed after this node started. Until then the node takes no
    /// writes: a state machine rolled back by a power failure (its sled
    /// batches are not fsync'd; committed entries are applied again) still
    /// lists topics deleted before the failure.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// The flag [`Controller::caught_up`] reads, for partitions to check
    /// before they append.
    pub fn caught_up_flag(&self) -> Arc<AtomicBool> {
        self.caught_up.clone()
    }

    /// The controller's read index, after a ReadIndex round. Leader only.
    pub async fn read_index(&self) -> Result<u64> {
        match self.raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex).await {
            Ok(r) => Ok(r.index()),
            Err(e) => match e.forward_to_leader() {
                Some(f) => Err(self.members.not_leader(WHAT, f.leader_id)),
                None => Err(NodeError::Unavailable(format!("controller read index: {e}"))),
            },
        }
    }

    /// Waits (at most `wait`) until the metadata here has applied the
    /// controller log through `index`, then marks it caught up.
    pub async fn mark_caught_up(&self, index: u64, wait: Duration) -> Result<()> {
        self.raft
            .wait(Some(wait))
            .applied_index_at_least(Some(index), "the controller log applied through the read index")
            .await
            .map_err(|e| NodeError::Unavailable(format!("controller catching up: {e}")))?;
        self.caught_up.store(true, Ordering::Release);
        Ok(())
    }

    /// The controller group's voters and learners, as known here.
    pub fn voters_and_learners(&self) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let mem = m.membership_config.membership();
        (mem.voter_ids().collect(), mem.learner_ids().collect())
    }

    /// The address under which `id` is a member (voter or learner) of the
    /// controller group, if it is one.
    pub fn member_addr(&self, id: NodeId) -> Option<String> {
        self.raft.metrics().borrow_watched().membership_config.membership().get_node(&id).map(|n| n.addr.clone())
    }

    /// Adds `id` at `addr` as a learner of the controller group: it applies
    /// the metadata like every node, without a vote. Runs on the leader.
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<()> {
        self.raft.add_learner(id, BasicNode { addr }, false).await.map(drop).map_err(|e| match e.forward_to_leader() {
            Some(f) => self.members.not_leader(WHAT, f.leader_id),
            None => NodeError::Unavailable(format!("adding node {id} to the controller group: {e}")),
        })
    }

    /// Makes `voters` the controller group's voters (joint consensus; a
    /// voter left out stays a learner). Runs on the leader.
    pub async fn replace_voters(&self, voters: BTreeSet<NodeId>) -> Result<()> {
        self.raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), true).await.map(drop).map_err(|e| match e
            .forward_to_leader()
        {
            Some(f) => self.members.not_leader(WHAT, f.leader_id),
            None => NodeError::Unavailable(format!("changing the controller's voters: {e}")),
        })
    }

    /// Proposes `cmd` and returns what applying it produced. Runs on the
    /// controller leader; elsewhere it fails with NOT_LEADER.
    pub async fn propose(&self, cmd: ControllerCmd) -> Result<ControllerResult> {
        match self.raft.client_write(Request::Controller(cmd)).await {
            Ok(resp) => match resp.data {
                Response::Controller(r) => Ok(r),
                other => Err(NodeError::Internal(format!("controller answered {other:?}"))),
            },
            Err(e) => match e.forward_to_leader() {
                Some(f) => Err(self.members.not_leader(WHAT, f.leader_id)),
                None => Err(NodeError::Unavailable(format!("controller: {e}"))),
            },
        }
    }

    /// Registers every controller member missing from the metadata, so that
    /// placement and clients know their addresses. Runs on the leader.
    pub async fn ensure_registered(&self) -> Result<()> {
        let voters: Vec<(NodeId, String)> = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            m.membership_config.nodes().map(|(id, n)| (*id, n.addr.clone())).collect()
        };
        let meta = self.meta();
        for (id, addr) in voters {
            if meta.nodes.get(&id).map(|n| &n.addr) != Some(&addr) {
                self.propose(ControllerCmd::RegisterNode { id, addr }).await?;
            }
        }
        Ok(())
    }

    /// While this node leads the controller, keeps every member registered.
    pub async fn register_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(REGISTER_INTERVAL).await;
            if self.is_leader()
                && let Err(e) = self.ensure_registered().await
            {
                warn!("registering nodes: {e}");
            }
        }
    }
}
