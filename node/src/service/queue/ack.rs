//! QueueAck: settles events the consumer holds under a live lock, all or
//! none. Offsets settled already (a retried ack) succeed and are named.

use std::sync::Arc;

use replog_proto::pb::{QueueAckResponse, QueueEventsRequest};
use replog_raft_store::queues::{QueueCmd, QueueResult};
use tracing::instrument;

use super::leader_partition;
use crate::error::{NodeError, Result};
use crate::node::Node;

#[instrument(skip_all, fields(topic = %req.topic, partition = req.partition, group = %req.group, consumer = %req.consumer, n = req.offsets.len()))]
pub async fn handle(node: Arc<Node>, req: QueueEventsRequest) -> Result<QueueAckResponse> {
    let part = leader_partition(&node, &req.topic, req.partition, &req.group, Some(&req.consumer))?;
    let cmd = QueueCmd::Ack {
        group: req.group,
        consumer: req.consumer,
        offsets: req.offsets,
        now_ms: replog_proto::now_ms(),
    };
    match part.propose_queue(cmd).await? {
        QueueResult::Acked { already_settled } => Ok(QueueAckResponse { already_settled }),
        other => Err(NodeError::Internal(format!("a queue ack answered {other:?}"))),
    }
}
