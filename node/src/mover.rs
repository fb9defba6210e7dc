//! Carries out partition moves and decommissions recorded in the cluster
//! metadata (`ClusterMeta::moves`, `decommissioning`).
//!
//! A move is driven by whichever replica leads the partition, from the
//! group's own Raft membership each time, so a leader that dies midway
//! leaves nothing to undo: the next leader looks at the membership it
//! inherited and goes on from there.
//!
//! 1. Every node of the target that is not a member yet is added as a
//!    learner; it opened the group when the move was recorded and gets the
//!    log (or a snapshot) from the leader.
//! 2. Once every new node holds the log to within [`CATCH_UP_SLACK`]
//!    entries, the voters become the target by joint consensus (openraft
//!    `change_membership`): first old and new together, then the new set.
//!    A leader left out steps down by itself once that is committed.
//! 3. When the voters are the target, the leader reports it (FinishMove);
//!    the metadata's replica set becomes the target and the old replicas
//!    drop the group.
//!
//! While a new replica is a learner, what its leader sends it counts
//! against the node's move throttle ([`crate::throttle`]).
//!
//! On the controller leader it also finishes decommissions: a node being
//! decommissioned that holds no replica any more leaves the controller
//! group and the metadata.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ChangeMembers};
use replog_proto::pb;
use replog_raft_store::NodeId;
use replog_raft_store::controller::{ClusterMeta, ControllerCmd};
use tracing::{debug, info, warn};

use crate::node::Node;
use crate::partition::Partition;

/// How often moves are looked at.
const TICK: Duration = Duration::from_millis(200);
/// A learner this close to the leader's last log index counts as caught up:
/// under steady writes it is never exactly there, and the joint
/// configuration cannot commit without it anyway.
pub const CATCH_UP_SLACK: u64 = 100;

pub async fn run(node: Arc<Node>) {
    loop {
        tokio::time::sleep(TICK).await;
        if node.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let meta = node.meta();
        node.throttle.set_rate(crate::settings::move_throttle(&meta, &node.config));
        let mut catching_up = HashSet::new();
        let mut led = Vec::new();
        for (group, target) in &meta.moves {
            let Some(p) = node.partition(*group) else { continue };
            if !p.is_leader() {
                continue;
            }
            // The move throttle holds back what goes to the new replicas
            // until they vote (set before the step adds them as learners).
            let mem = p.raft().metrics().borrow_watched().membership_config.membership().clone();
            let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
            catching_up.extend(target.iter().filter(|n| !voters.contains(n)).map(|n| (*group, *n)));
            led.push((p, target));
        }
        node.throttle.set_catching_up(catching_up);
        for (p, target) in led {
            if let Err(e) = step(&node, &p, target, &meta).await {
                debug!(partition = p.name(), "move step: {e}");
            }
        }
        if node.controller.is_leader()
            && let Err(e) = finish_decommissions(&node, &meta).await
        {
            warn!("decommission: {e}");
        }
    }
}

/// One step of the move of `p` to `target`, at its leader.
async fn step(node: &Arc<Node>, p: &Partition, target: &[NodeId], meta: &ClusterMeta) -> anyhow::Result<()> {
    // A move writes membership changes and transfers leadership: every
    // replica must tick.
    node.quiescer.wake_everywhere(node, p).await;
    let raft = p.raft();
    let m = raft.metrics().borrow_watched().clone();
    let mem = m.membership_config.membership().clone();
    let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
    let want: BTreeSet<NodeId> = target.iter().copied().collect();
    let joint = mem.get_joint_config().len() > 1;
    if !joint && voters == want && !want.contains(&node.id) {
        // Left out and still leading (openraft steps down on its own a
        // little later): hand over now, so that dropping the group here
        // never leaves it without a leader. The new leader finishes.
        let held = held_indexes(&m);
        let matched = want.iter().map(|n| (*n, held.get(n).copied())).collect();
        if let Some(to) = crate::node::handoff_target(&matched, m.last_log_index, &node.live_nodes()) {
            raft.trigger().transfer_leader(to).await?;
        }
        return Ok(());
    }
    if !joint && voters == want {
        let extra: BTreeSet<NodeId> = mem.learner_ids().filter(|l| !want.contains(l)).collect();
        if !extra.is_empty() {
            raft.change_membership(ChangeMembers::RemoveNodes(extra), false).await?;
        }
        let req = tonic::Request::new(pb::FinishMoveRequest { group_id: p.group(), replicas: target.to_vec() });
        crate::service::on_controller(
            node,
            req,
            crate::service::membership::finish_move::handle,
            |mut c, r| async move { c.finish_move(r).await },
        )
        .await?;
        return Ok(());
    }
    let mut added = false;
    for n in want.iter().filter(|n| mem.get_node(n).is_none()) {
        let addr = meta.nodes.get(n).map(|x| x.addr.clone()).ok_or_else(|| anyhow::anyhow!("node {n} unknown"))?;
        raft.add_learner(*n, BasicNode { addr }, false).await?;
        info!(partition = p.name(), node = n, "move: added a learner");
        added = true;
    }
    if added {
        return Ok(());
    }
    let last = m.last_log_index.unwrap_or(0);
    let held = held_indexes(&m);
    let behind: Vec<NodeId> = want
        .iter()
        .filter(|n| **n != node.id && !voters.contains(n))
        .filter(|n| held.get(n).is_none_or(|h| h + CATCH_UP_SLACK < last))
        .copied()
        .collect();
    if !behind.is_empty() {
        debug!(partition = p.name(), ?behind, "move: learners catching up");
        return Ok(());
    }
    info!(partition = p.name(), from = ?voters, to = ?want, "move: changing voters by joint consensus");
    raft.change_membership(ChangeMembers::ReplaceAllVoters(want), false).await?;
    Ok(())
}

/// The last log index the leader knows each follower and learner holds.
fn held_indexes(m: &openraft::RaftMetrics<replog_raft_store::TypeConfig>) -> BTreeMap<NodeId, u64> {
    m.replication
        .as_ref()
        .map(|r| r.iter().filter_map(|(id, l)| Some((*id, l.as_ref()?.index))).collect())
        .unwrap_or_default()
}

/// Removes each node being decommissioned that holds no replica any more:
/// out of the controller group, then out of the metadata.
async fn finish_decommissions(node: &Node, meta: &ClusterMeta) -> anyhow::Result<()> {
    for id in &meta.decommissioning {
        if !meta.groups_of(*id).is_empty() {
            continue;
        }
        let raft = node.controller.raft();
        let mem = raft.metrics().borrow_watched().membership_config.membership().clone();
        if mem.voter_ids().any(|v| v == *id) {
            let rest: BTreeSet<NodeId> = mem.voter_ids().filter(|v| v != id).collect();
            raft.change_membership(ChangeMembers::ReplaceAllVoters(rest), false).await?;
        } else if mem.get_node(id).is_some() {
            raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([*id])), false).await?;
        }
        node.controller.propose(ControllerCmd::RemoveNode { id: *id }).await?;
        info!(node = id, "decommissioned: the node holds nothing and has left the cluster; stop it");
    }
    Ok(())
}
