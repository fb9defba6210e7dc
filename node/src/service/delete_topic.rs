//! DeleteTopic: committed by the controller leader; every replica drops
//! the partition groups when it applies the change.

use std::sync::Arc;

use replog_proto::pb::{DeleteTopicRequest, DeleteTopicResponse};
use replog_raft_store::controller::{ControllerCmd, ControllerResult};
use tracing::{info, instrument};

use crate::error::{NodeError, Result};
use crate::node::Node;

/// Runs on the controller leader.
#[instrument(skip_all, fields(topic = %req.name))]
pub async fn handle(node: Arc<Node>, req: DeleteTopicRequest) -> Result<DeleteTopicResponse> {
    match node.controller.propose(ControllerCmd::DeleteTopic { name: req.name.clone() }).await? {
        ControllerResult::Done => {
            info!("deleted topic");
            Ok(DeleteTopicResponse {})
        }
        ControllerResult::UnknownTopic(n) => Err(NodeError::UnknownTopic(n)),
        other => Err(NodeError::Internal(format!("delete answered {other:?}"))),
    }
}
