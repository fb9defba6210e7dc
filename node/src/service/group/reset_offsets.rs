//! ResetOffsets: sets the committed offsets of a group without members.

use std::sync::Arc;

use replog_proto::pb::{ResetOffsetsRequest, ResetOffsetsResponse};
use replog_raft_store::groups::GroupCmd;

use super::{commits_from_pb, coordinator};
use crate::error::{NodeError, Result};
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: ResetOffsetsRequest) -> Result<ResetOffsetsResponse> {
    let part = coordinator(&node, &req.group)?;
    if req.offsets.is_empty() {
        return Err(NodeError::InvalidRequest("a reset needs at least one offset".into()));
    }
    let meta = node.meta();
    for o in &req.offsets {
        let t = meta.topics.get(&o.topic).ok_or_else(|| NodeError::UnknownTopic(o.topic.clone()))?;
        if o.partition as usize >= t.partitions.len() {
            return Err(NodeError::UnknownPartition {
                topic: o.topic.clone(),
                partition: o.partition,
                count: t.partitions.len() as u32,
            });
        }
    }
    part.propose_group(GroupCmd::Reset {
        group: req.group,
        offsets: commits_from_pb(req.offsets),
        now_ms: replog_proto::now_ms(),
    })
    .await?;
    Ok(ResetOffsetsResponse {})
}
