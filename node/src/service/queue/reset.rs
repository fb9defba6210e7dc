//! QueueReset: redeliver from an offset. Everything before it counts as
//! settled, everything from it on is available again with no deliveries,
//! and every lock is dropped (consumers holding one get
//! QUEUE_EVENT_NOT_HELD on ack). Creates the group if it does not exist, so
//! a group can start anywhere. An offset below the log start means the log
//! start; past the high watermark is OFFSET_OUT_OF_RANGE.

use std::sync::Arc;

use replog_proto::pb::{QueueResetRequest, QueueResetResponse};
use replog_raft_store::queues::QueueCmd;
use tracing::instrument;

use super::{leader_partition, settings};
use crate::error::{NodeError, Result};
use crate::node::Node;

#[instrument(skip_all, fields(topic = %req.topic, partition = req.partition, group = %req.group, offset = req.offset))]
pub async fn handle(node: Arc<Node>, req: QueueResetRequest) -> Result<QueueResetResponse> {
    let part = leader_partition(&node, &req.topic, req.partition, &req.group, None)?;
    let o = part.current_offsets().await?;
    if req.offset > o.high_watermark {
        return Err(NodeError::OffsetOutOfRange {
            offset: req.offset,
            log_start: o.log_start_offset,
            high_watermark: o.high_watermark,
        });
    }
    part.propose_queue(QueueCmd::Reset {
        group: req.group,
        offset: req.offset.max(o.log_start_offset),
        now_ms: replog_proto::now_ms(),
        settings: settings(&req.topic, 0, "")?,
    })
    .await?;
    Ok(QueueResetResponse {})
}
