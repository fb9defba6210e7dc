//! DeleteTopic: committed by the controller leader; every replica drops
//! the partition groups when it applies the change.

use replog_proto::pb::{DeleteTopicRequest, DeleteTopicResponse};
use replog_raft_store::controller::{ControllerCmd, ControllerResult};
use tonic::Status;
use tracing::{info, instrument};

use crate::error::NodeError;
use crate::node::Node;

#[instrument(skip_all, fields(topic = %req.name))]
pub async fn handle(node: &Node, req: DeleteTopicRequest, forwarded: bool) -> Result<DeleteTopicResponse, Status> {
    if !node.controller.is_leader(node.id) {
        if forwarded {
            return Err(NodeError::Unavailable("controller leadership moved; retry".into()).into());
        }
        return super::forward_to_controller(node, req, |mut c, r| async move { c.delete_topic(r).await }).await;
    }
    match node.controller_write(ControllerCmd::DeleteTopic { name: req.name.clone() }).await? {
        ControllerResult::Done => {
            info!("deleted topic");
            Ok(DeleteTopicResponse {})
        }
        ControllerResult::UnknownTopic(n) => Err(NodeError::UnknownTopic(n).into()),
        other => Err(NodeError::Internal(format!("delete answered {other:?}")).into()),
    }
}
