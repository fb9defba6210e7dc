//! QueueDescribe: a queue group on one partition, as its leader knows it.

use std::collections::BTreeMap;
use std::sync::Arc;

use replog_proto::pb::{QueueConsumerLocks, QueueDescribeRequest, QueueDescribeResponse};
use replog_raft_store::Rejection;
use tracing::instrument;

use super::leader_partition;
use crate::error::{NodeError, Result};
use crate::node::Node;

#[instrument(skip_all, fields(topic = %req.topic, partition = req.partition, group = %req.group))]
pub async fn handle(node: Arc<Node>, req: QueueDescribeRequest) -> Result<QueueDescribeResponse> {
    let part = leader_partition(&node, &req.topic, req.partition, &req.group, None)?;
    let queues = part.queues().await?;
    let st = queues.get(&req.group).ok_or_else(|| {
        NodeError::Rejected(Rejection::UnknownQueueGroup(format!(
            "queue group {:?} has not received from {}/{} yet",
            req.group, req.topic, req.partition
        )))
    })?;
    let now = replog_proto::now_ms().max(st.clock_ms);
    let mut consumers: BTreeMap<&str, u64> = BTreeMap::new();
    for l in st.locks.values().filter(|l| l.deadline_ms > now) {
        *consumers.entry(&l.consumer).or_default() += 1;
    }
    Ok(QueueDescribeResponse {
        partition: req.partition,
        in_flight: st.in_flight(now) as u64,
        acked: st.acked,
        redelivered: st.redelivered,
        dead_lettered: st.dead_lettered,
        delivered: st.delivered,
        settled_below: st.floor,
        high_watermark: part.offsets().high_watermark,
        dead_letter_pending: st.dead.len() as u64,
        max_deliveries: st.settings.max_deliveries,
        dead_letter_topic: st.settings.dead_letter_topic.clone(),
        consumers: consumers
            .into_iter()
            .map(|(c, n)| QueueConsumerLocks { consumer: c.to_string(), locked: n })
            .collect(),
    })
}
