//! QueueRelease: makes events the consumer holds available again at once
//! (expired locks too, unless another consumer took the event since). They
//! keep their delivery count.

use std::sync::Arc;

use replog_proto::pb::{QueueEventsRequest, QueueReleaseResponse};
use replog_raft_store::queues::QueueCmd;
use tracing::instrument;

use super::leader_partition;
use crate::error::Result;
use crate::node::Node;

#[instrument(skip_all, fields(topic = %req.topic, partition = req.partition, group = %req.group, consumer = %req.consumer, n = req.offsets.len()))]
pub async fn handle(node: Arc<Node>, req: QueueEventsRequest) -> Result<QueueReleaseResponse> {
    let part = leader_partition(&node, &req.topic, req.partition, &req.group, Some(&req.consumer))?;
    part.propose_queue(QueueCmd::Release {
        group: req.group,
        consumer: req.consumer,
        offsets: req.offsets,
        undelivered: false,
        now_ms: replog_proto::now_ms(),
    })
    .await?;
    Ok(QueueReleaseResponse {})
}
