//! MovePartition: checks the new replica set and records the move; the
//! partition's leader carries it out ([`crate::mover`]).

use std::sync::Arc;

use replog_proto::codes::ErrorCode;
use replog_proto::pb::{MovePartitionRequest, MovePartitionResponse};
use replog_raft_store::controller::ControllerCmd;
use tracing::info;

use super::{check_replica_set, describe_move, propose, refuse};
use crate::error::Result;
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: MovePartitionRequest) -> Result<MovePartitionResponse> {
    let (group, current) = node.locate(&req.topic, req.partition)?;
    let meta = node.meta();
    check_replica_set(&meta, &current, &req.replicas, req.force)?;
    if let Some(to) = meta.moves.get(&group) {
        if *to == req.replicas {
            return Ok(MovePartitionResponse { r#move: Some(describe_move(&node, &meta, group, &current, to)) });
        }
        return Err(refuse(
            ErrorCode::MoveInProgress,
            format!("{}/{} is already moving from {current:?} to {to:?}", req.topic, req.partition),
        ));
    }
    crate::capacity::check(&node, &meta, req.replicas.iter().copied().filter(|n| !current.contains(n))).await?;
    propose(&node, ControllerCmd::StartMove { group, replicas: req.replicas.clone() }).await?;
    let meta = node.meta();
    info!(topic = %req.topic, partition = req.partition, from = ?current, to = ?req.replicas, "partition move started");
    let described = meta.moves.get(&group).map(|to| describe_move(&node, &meta, group, &current, to));
    Ok(MovePartitionResponse { r#move: described })
}
