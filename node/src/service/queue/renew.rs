//! QueueRenew: extends the consumer's live locks to now + `lock_ms`, for
//! work that takes longer than a lock.

use std::sync::Arc;

use replog_proto::pb::{QueueEventsRequest, QueueRenewResponse};
use replog_raft_store::queues::{QueueCmd, QueueResult};
use tracing::instrument;

use super::{leader_partition, lock_ms};
use crate::error::{NodeError, Result};
use crate::node::Node;

#[instrument(skip_all, fields(topic = %req.topic, partition = req.partition, group = %req.group, consumer = %req.consumer, n = req.offsets.len()))]
pub async fn handle(node: Arc<Node>, req: QueueEventsRequest) -> Result<QueueRenewResponse> {
    let part = leader_partition(&node, &req.topic, req.partition, &req.group, Some(&req.consumer))?;
    let cmd = QueueCmd::Renew {
        group: req.group,
        consumer: req.consumer,
        offsets: req.offsets,
        lock_ms: lock_ms(req.lock_ms)?,
        now_ms: replog_proto::now_ms(),
    };
    match part.propose_queue(cmd).await? {
        QueueResult::Renewed { deadline_ms } => Ok(QueueRenewResponse { lock_deadline_ms: deadline_ms }),
        other => Err(NodeError::Internal(format!("a queue renew answered {other:?}"))),
    }
}
