//! FinishMove (node to node): a partition's leader reports that the group's
//! voters are its move's target; the replica set becomes the target, the
//! old replicas drop the group.

use std::sync::Arc;

use replog_proto::pb::{FinishMoveRequest, FinishMoveResponse};
use replog_raft_store::controller::ControllerCmd;
use tracing::info;

use super::propose;
use crate::error::Result;
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: FinishMoveRequest) -> Result<FinishMoveResponse> {
    let meta = node.meta();
    // Reported twice (a new leader, a lost answer): already done.
    if !meta.moves.contains_key(&req.group_id) && meta.replicas_of(req.group_id) == Some(&req.replicas[..]) {
        return Ok(FinishMoveResponse {});
    }
    propose(&node, ControllerCmd::FinishMove { group: req.group_id, replicas: req.replicas.clone() }).await?;
    info!(group = req.group_id, replicas = ?req.replicas, "partition move finished");
    Ok(FinishMoveResponse {})
}
