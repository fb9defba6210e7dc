//! InitProducer: a fresh idempotent-producer id from the controller group.

use std::sync::Arc;

use replog_proto::pb::{InitProducerRequest, InitProducerResponse};
use replog_raft_store::controller::{ControllerCmd, ControllerResult};

use crate::error::{NodeError, Result};
use crate::node::Node;

/// Runs on the controller leader.
pub async fn handle(node: Arc<Node>, _req: InitProducerRequest) -> Result<InitProducerResponse> {
    match node.controller.propose(ControllerCmd::AllocateProducerId).await? {
        ControllerResult::ProducerId(producer_id) => Ok(InitProducerResponse { producer_id, epoch: 0 }),
        other => Err(NodeError::Internal(format!("producer id allocation answered {other:?}"))),
    }
}
