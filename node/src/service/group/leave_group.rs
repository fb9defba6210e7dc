//! LeaveGroup: a member leaves; its partitions go to the others at once.

use std::sync::Arc;

use replog_proto::pb::{LeaveGroupRequest, LeaveGroupResponse};
use replog_raft_store::groups::GroupCmd;

use super::coordinator;
use crate::error::Result;
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: LeaveGroupRequest) -> Result<LeaveGroupResponse> {
    let part = coordinator(&node, &req.group)?;
    part.propose_group(GroupCmd::Leave { group: req.group.clone(), member_id: req.member_id.clone() }).await?;
    node.coordinator.forget(part.group(), &req.group, &req.member_id);
    Ok(LeaveGroupResponse {})
}
