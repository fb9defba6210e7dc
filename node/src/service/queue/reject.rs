//! QueueReject: the consumer gives up on events it holds; they go to the
//! dead-letter topic with its reason. Answers once they are written there
//! and settled; if writing fails, they stay dead letters claimed for a
//! while and a later receive writes them (never back to a consumer).

use std::sync::Arc;

use replog_proto::pb::{QueueEventsRequest, QueueRejectResponse};
use replog_raft_store::queues::{MAX_REASON, QueueCmd, QueueResult};
use tracing::instrument;

use super::{dead_letter, leader_partition};
use crate::error::{NodeError, Result};
use crate::node::Node;

#[instrument(skip_all, fields(topic = %req.topic, partition = req.partition, group = %req.group, consumer = %req.consumer, n = req.offsets.len()))]
pub async fn handle(node: Arc<Node>, req: QueueEventsRequest) -> Result<QueueRejectResponse> {
    let part = leader_partition(&node, &req.topic, req.partition, &req.group, Some(&req.consumer))?;
    if req.reason.len() > MAX_REASON {
        return Err(NodeError::InvalidRequest(format!(
            "a reject reason of {} bytes exceeds {MAX_REASON}",
            req.reason.len()
        )));
    }
    let cmd = QueueCmd::Reject {
        group: req.group.clone(),
        consumer: req.consumer,
        offsets: req.offsets,
        reason: req.reason,
        now_ms: replog_proto::now_ms(),
    };
    let QueueResult::Rejected { dead_letters } = part.propose_queue(cmd).await? else {
        return Err(NodeError::Internal("a queue reject answered something else".into()));
    };
    dead_letter::write(&node, &part, &req.topic, req.partition, &req.group, dead_letters).await.map_err(|e| {
        if e.code().is_retryable() {
            NodeError::Unavailable(format!(
                "the rejected events are not in the dead-letter topic yet; they will be written later: {e}"
            ))
        } else {
            e
        }
    })?;
    Ok(QueueRejectResponse {})
}
