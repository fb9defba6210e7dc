//! Membership RPCs (see docs/membership.md): a node joining, partition
//! moves and their status, decommissioning a node, balancing. All but the
//! status run on the controller leader; cluster settings too (`on_controller`); the moves
//! themselves are carried out by each partition's leader
//! ([`crate::mover`]).

pub mod balance;
pub mod cluster_config;
pub mod decommission;
pub mod finish_move;
pub mod join;
pub mod move_partition;
pub mod status;
pub mod voters;

use std::collections::BTreeSet;

use replog_proto::codes::ErrorCode;
use replog_proto::pb;
use replog_raft_store::controller::{ClusterMeta, ControllerCmd, ControllerResult};
use replog_raft_store::{GroupId, NodeId};

use crate::error::{NodeError, Result};
use crate::node::Node;

/// A membership refusal with its stable code.
pub fn refuse(code: ErrorCode, msg: impl Into<String>) -> NodeError {
    NodeError::Membership(code, msg.into())
}

/// Checks a replica set asked for `group` (currently on `current`): not
/// empty, no node twice, every node known and not being decommissioned,
/// and no smaller than `current` unless `force`.
pub fn check_replica_set(meta: &ClusterMeta, current: &[NodeId], replicas: &[NodeId], force: bool) -> Result<()> {
    if replicas.is_empty() {
        return Err(refuse(ErrorCode::InvalidReplicaSet, "a partition needs at least one replica"));
    }
    if replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() {
        return Err(refuse(ErrorCode::InvalidReplicaSet, format!("replica set {replicas:?} names a node twice")));
    }
    if let Some(n) = replicas.iter().find(|n| !meta.nodes.contains_key(n)) {
        let known: Vec<_> = meta.nodes.keys().collect();
        return Err(refuse(ErrorCode::UnknownNode, format!("node {n} is not in the cluster (nodes: {known:?})")));
    }
    if let Some(n) = replicas.iter().find(|n| meta.decommissioning.contains(n)) {
        return Err(refuse(ErrorCode::InvalidReplicaSet, format!("node {n} is being decommissioned")));
    }
    if replicas.len() < current.len() && !force {
        return Err(refuse(
            ErrorCode::BelowReplicationFactor,
            format!(
                "{} replicas is fewer than the partition's {} ({current:?}); pass force to lower its replication factor",
                replicas.len(),
                current.len()
            ),
        ));
    }
    Ok(())
}

/// Proposes a command whose refusal (`Invalid`) is a bad request.
pub async fn propose(node: &Node, cmd: ControllerCmd) -> Result<()> {
    match node.controller.propose(cmd).await? {
        ControllerResult::Done => Ok(()),
        ControllerResult::Invalid(why) => Err(NodeError::InvalidRequest(why)),
        other => Err(NodeError::Internal(format!("controller answered {other:?}"))),
    }
}

/// A move (or a planned one) as the answering node sees it: the leader as
/// known here and how far each replica of `to` has applied the log, from
/// this node's own groups and its peers' last reports.
pub fn describe_move(
    node: &Node,
    meta: &ClusterMeta,
    group: GroupId,
    from: &[NodeId],
    to: &[NodeId],
) -> pb::PartitionMove {
    let (topic, partition) = meta.locate(group).map_or((String::new(), 0), |(t, i)| (t.name.clone(), i));
    let leader = node.leader_of(group, from).unwrap_or(0);
    let views = node.peer_views();
    let applied = |n: NodeId| -> u64 {
        if n == node.id {
            return node.partition(group).and_then(|p| p.last_applied_index()).unwrap_or(0);
        }
        views
            .get(&n)
            .and_then(|v| v.info.as_ref())
            .and_then(|i| i.groups.iter().find(|g| g.group_id == group))
            .map_or(0, |g| g.last_applied_index)
    };
    let leader_index = if leader == 0 { 0 } else { applied(leader) };
    let progress =
        to.iter().map(|n| pb::ReplicaProgress { node: *n, applied_index: applied(*n), leader_index }).collect();
    pb::PartitionMove { topic, partition, group_id: group, from: from.to_vec(), to: to.to_vec(), leader, progress }
}
