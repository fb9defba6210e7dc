//! DecommissionNode: moves every replica off a node, then (the controller
//! leader's [`crate::mover`] loop) removes it from the cluster.
//!
//! A controller voter is first demoted to a learner of the controller group
//! (a live learner, if there is one, takes its place as a voter), so the
//! node keeps following the metadata while its replicas move. Refused when
//! that would leave the controller group without a live majority.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use replog_proto::codes::ErrorCode;
use replog_proto::pb::{DecommissionNodeRequest, DecommissionNodeResponse};
use replog_raft_store::controller::{ClusterMeta, ControllerCmd};
use replog_raft_store::{GroupId, NodeId};
use tracing::info;

use super::{describe_move, propose, refuse};
use crate::error::Result;
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: DecommissionNodeRequest) -> Result<DecommissionNodeResponse> {
    let id = req.node_id;
    let _planning = node.planning.lock().await;
    let meta = node.meta();
    if !meta.nodes.contains_key(&id) {
        let known: Vec<_> = meta.nodes.keys().collect();
        return Err(refuse(ErrorCode::UnknownNode, format!("node {id} is not in the cluster (nodes: {known:?})")));
    }
    let describe = |meta: &ClusterMeta| {
        meta.moves
            .iter()
            .filter(|(g, to)| meta.replicas_of(**g).is_some_and(|r| r.contains(&id)) && !to.contains(&id))
            .map(|(g, to)| describe_move(&node, meta, *g, meta.replicas_of(*g).unwrap_or_default(), to))
            .collect()
    };
    if meta.decommissioning.contains(&id) {
        return Ok(DecommissionNodeResponse { moves: describe(&meta) });
    }
    let mut live = node.live_nodes();
    if !live.contains(&id) {
        // Not heard from lately, or the prober has not asked yet.
        node.probe_round().await;
        live = node.live_nodes();
    }
    let eligible: Vec<NodeId> =
        live.iter().copied().filter(|n| *n != id && !meta.decommissioning.contains(n)).collect();

    // The controller group: out of the voters first, keeping a live majority.
    let (voters, learners) = node.controller.voters_and_learners();
    let demote = controller_without(&voters, &learners, &live, &eligible, id)?;
    let moves = plan_moves(&meta, id, &eligible)?;
    if let Some(new_voters) = demote {
        node.controller.replace_voters(new_voters.clone()).await?;
        info!(node = id, voters = ?new_voters, "decommission: node left the controller's voters");
    }
    propose(&node, ControllerCmd::Decommission { id, moves }).await?;
    info!(node = id, "decommissioning");
    Ok(DecommissionNodeResponse { moves: describe(&node.meta()) })
}

/// The controller's voters once `id` leaves them: a live eligible learner
/// takes its place if there is one. `None` when `id` is not a voter.
/// Refused when the current voters have no live majority (the change could
/// not commit) or the new ones would not have one.
pub fn controller_without(
    voters: &BTreeSet<NodeId>,
    learners: &BTreeSet<NodeId>,
    live: &[NodeId],
    eligible: &[NodeId],
    id: NodeId,
) -> Result<Option<BTreeSet<NodeId>>> {
    if !voters.contains(&id) {
        return Ok(None);
    }
    let mut new_voters = voters.clone();
    new_voters.remove(&id);
    new_voters.extend(learners.iter().filter(|l| eligible.contains(l)).min());
    let live_in = |s: &BTreeSet<NodeId>| s.iter().filter(|n| live.contains(n)).count();
    if new_voters.is_empty()
        || live_in(&new_voters) < new_voters.len() / 2 + 1
        || live_in(voters) < voters.len() / 2 + 1
    {
        return Err(refuse(
            ErrorCode::ControllerQuorum,
            format!(
                "node {id} is a controller voter; without it the voters {new_voters:?} would not have a live majority (live: {live:?})"
            ),
        ));
    }
    Ok(Some(new_voters))
}

/// Replicas each node holds, counting moves under way at their target.
pub fn load(meta: &ClusterMeta) -> BTreeMap<NodeId, usize> {
    let mut load: BTreeMap<NodeId, usize> = meta.nodes.keys().map(|n| (*n, 0)).collect();
    for p in meta.topics.values().flat_map(|t| t.partitions.iter()) {
        for n in meta.moves.get(&p.group).unwrap_or(&p.replicas) {
            *load.entry(*n).or_default() += 1;
        }
    }
    load
}

/// For every partition on `id`, a new replica set with `id` replaced (in
/// its place, so a preferred leader stays first) by the least loaded of
/// `eligible` not already a replica, among those that keep the partition on
/// as many racks.
pub fn plan_moves(meta: &ClusterMeta, id: NodeId, eligible: &[NodeId]) -> Result<Vec<(GroupId, Vec<NodeId>)>> {
    let mut load = load(meta);
    let mut moves = Vec::new();
    for t in meta.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            if !p.replicas.contains(&id) {
                continue;
            }
            if let Some(to) = meta.moves.get(&p.group) {
                return Err(refuse(
                    ErrorCode::MoveInProgress,
                    format!("{}/{i} is moving to {to:?}; decommission once it is done", t.name),
                ));
            }
            // A node that keeps the partition on as many racks first.
            let racks_with = |n: NodeId| {
                let after: Vec<NodeId> = p.replicas.iter().map(|r| if *r == id { n } else { *r }).collect();
                std::cmp::Reverse(meta.rack_count(&after))
            };
            let Some(to) =
                eligible.iter().filter(|n| !p.replicas.contains(n)).min_by_key(|n| (racks_with(**n), load[n], **n))
            else {
                return Err(refuse(
                    ErrorCode::NotEnoughNodes,
                    format!(
                        "no live node can take {}/{i}'s replica from node {id} (replicas {:?}, other live nodes {eligible:?})",
                        t.name, p.replicas
                    ),
                ));
            };
            *load.entry(*to).or_default() += 1;
            moves.push((p.group, p.replicas.iter().map(|r| if *r == id { *to } else { *r }).collect()));
        }
    }
    Ok(moves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_raft_store::controller::TopicConfig;

    fn meta(nodes: u64, parts: Vec<Vec<NodeId>>) -> ClusterMeta {
        let mut m = ClusterMeta::default();
        for id in 1..=nodes {
            m.apply(ControllerCmd::RegisterNode { id, addr: format!("127.0.0.1:{}", 7000 + id) });
        }
        m.apply(ControllerCmd::CreateTopic {
            name: "t".into(),
            replicas: parts,
            created_ms: 0,
            config: TopicConfig::default(),
        });
        m
    }

    #[test]
    fn given_a_node_to_decommission_then_each_replica_goes_in_place_to_the_least_loaded_other_node() {
        let m = meta(4, vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]]);
        let moves = plan_moves(&m, 1, &[2, 3, 4]).unwrap();
        assert_eq!(moves, vec![(1, vec![4, 2, 3]), (2, vec![2, 3, 4]), (3, vec![3, 4, 2])]);
    }

    #[test]
    fn given_controller_voters_then_a_decommission_keeps_a_live_majority_or_is_refused() {
        let set = |v: &[NodeId]| v.iter().copied().collect::<BTreeSet<_>>();
        let (voters, none) = (set(&[1, 2, 3]), set(&[]));
        // Not a voter: the controller does not change.
        assert_eq!(controller_without(&voters, &set(&[4]), &[1, 2, 3, 4], &[1, 2, 3], 4).unwrap(), None);
        // A live learner takes the vote.
        assert_eq!(
            controller_without(&voters, &set(&[4, 5]), &[1, 2, 3, 4, 5], &[2, 3, 4, 5], 1).unwrap(),
            Some(set(&[2, 3, 4]))
        );
        // No learner: two voters, both live, still a majority.
        assert_eq!(controller_without(&voters, &none, &[1, 2, 3], &[1, 3], 2).unwrap(), Some(set(&[1, 3])));
        // Node 3 down: {1, 3} would have one live voter of two.
        let e = controller_without(&voters, &none, &[1, 2], &[1], 2).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ControllerQuorum);
        // The last voter.
        let e = controller_without(&set(&[1]), &none, &[1], &[], 1).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ControllerQuorum);
        // Two of three voters down: the change itself could not commit.
        let e = controller_without(&voters, &set(&[4]), &[1, 4], &[4], 1).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ControllerQuorum);
    }

    #[test]
    fn given_no_node_free_then_the_decommission_is_refused() {
        let m = meta(3, vec![vec![1, 2, 3]]);
        let e = plan_moves(&m, 1, &[2, 3]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotEnoughNodes);
    }
}
