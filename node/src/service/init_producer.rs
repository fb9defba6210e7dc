//! InitProducer: a fresh idempotent-producer id from the controller group.

use replog_proto::pb::{InitProducerRequest, InitProducerResponse};
use replog_raft_store::controller::{ControllerCmd, ControllerResult};
use tonic::Status;

use crate::error::NodeError;
use crate::node::Node;

pub async fn handle(node: &Node, req: InitProducerRequest, forwarded: bool) -> Result<InitProducerResponse, Status> {
    if !node.controller.is_leader(node.id) {
        if forwarded {
            return Err(NodeError::Unavailable("controller leadership moved; retry".into()).into());
        }
        return super::forward_to_controller(node, req, |mut c, r| async move { c.init_producer(r).await }).await;
    }
    match node.controller_write(ControllerCmd::AllocateProducerId).await? {
        ControllerResult::ProducerId(producer_id) => Ok(InitProducerResponse { producer_id, epoch: 0 }),
        other => Err(NodeError::Internal(format!("producer id allocation answered {other:?}")).into()),
    }
}
