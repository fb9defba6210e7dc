//! DeleteGroup: removes a group without members and its offsets.

use std::sync::Arc;

use replog_proto::pb::{DeleteGroupRequest, DeleteGroupResponse};
use replog_raft_store::groups::GroupCmd;

use super::coordinator;
use crate::error::Result;
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: DeleteGroupRequest) -> Result<DeleteGroupResponse> {
    let part = coordinator(&node, &req.group)?;
    part.propose_group(GroupCmd::Delete { group: req.group }).await?;
    Ok(DeleteGroupResponse {})
}
