//! GroupHeartbeat: keeps a member alive, learns what it consumes, and hands
//! it what it may consume now.

use std::sync::Arc;

use replog_proto::pb::{GroupHeartbeatRequest, GroupHeartbeatResponse};

use super::{coordinator, from_pb, heartbeat_interval_ms, to_pb};
use crate::error::{NodeError, Result};
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: GroupHeartbeatRequest) -> Result<GroupHeartbeatResponse> {
    let part = coordinator(&node, &req.group)?;
    // Membership as applied here is enough: a member removed a moment ago
    // is told on its next heartbeat, and only Raft changes membership.
    let groups = part.groups_here();
    let st = groups
        .get(&req.group)
        .ok_or_else(|| NodeError::UnknownGroup(format!("group {:?} does not exist", req.group)))?;
    let m = st.members.get(&req.member_id).ok_or_else(|| {
        NodeError::Rejected(replog_raft_store::Rejection::UnknownMember(format!(
            "{:?} is not a member of group {:?} (its session may have expired); join again",
            req.member_id, req.group
        )))
    })?;
    node.coordinator.ensure(part.group(), &groups);
    node.coordinator.heard(part.group(), &req.group, &req.member_id, Some(from_pb(&req.owned)));
    let granted = node.coordinator.grant(part.group(), &req.group, &req.member_id, st);
    Ok(GroupHeartbeatResponse {
        generation: st.generation,
        assignment: to_pb(&granted),
        heartbeat_interval_ms: heartbeat_interval_ms(m.session_timeout_ms),
    })
}
