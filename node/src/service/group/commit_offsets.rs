//! CommitOffsets: a member commits the offsets of partitions assigned to it.

use std::sync::Arc;

use replog_proto::pb::{CommitOffsetsRequest, CommitOffsetsResponse};
use replog_raft_store::groups::GroupCmd;

use super::{commits_from_pb, coordinator};
use crate::error::{NodeError, Result};
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: CommitOffsetsRequest) -> Result<CommitOffsetsResponse> {
    let part = coordinator(&node, &req.group)?;
    if req.offsets.is_empty() {
        return Err(NodeError::InvalidRequest("a commit needs at least one offset".into()));
    }
    part.propose_group(GroupCmd::Commit {
        group: req.group,
        member_id: req.member_id,
        generation: req.generation,
        offsets: commits_from_pb(req.offsets),
        now_ms: replog_proto::now_ms(),
    })
    .await?;
    Ok(CommitOffsetsResponse {})
}
