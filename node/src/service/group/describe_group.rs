//! DescribeGroup: members, their assignment, and committed offsets.

use std::sync::Arc;

use replog_proto::pb::{DescribeGroupRequest, DescribeGroupResponse, GroupMember};

use super::{coordinator, strategy_to, to_pb};
use crate::error::{NodeError, Result};
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: DescribeGroupRequest) -> Result<DescribeGroupResponse> {
    let part = coordinator(&node, &req.group)?;
    let groups = part.groups().await?;
    let st = groups
        .get(&req.group)
        .ok_or_else(|| NodeError::UnknownGroup(format!("group {:?} does not exist", req.group)))?;
    let members = st
        .members
        .iter()
        .map(|(id, m)| GroupMember {
            member_id: id.clone(),
            client_id: m.client_id.clone(),
            assignment: to_pb(&m.assignment),
            last_heartbeat_ms_ago: node
                .coordinator
                .silent_for(part.group(), &req.group, id)
                .map_or(0, |d| d.as_millis() as u64),
        })
        .collect();
    let offsets = part
        .committed(&req.group)?
        .into_iter()
        .map(|(topic, partition, c)| super::committed_pb(topic, partition, c))
        .collect();
    Ok(DescribeGroupResponse {
        group: req.group,
        state: if st.members.is_empty() { "empty" } else { "stable" }.into(),
        generation: st.generation,
        strategy: strategy_to(st.strategy),
        topics: st.topics.keys().cloned().collect(),
        members,
        offsets,
    })
}
