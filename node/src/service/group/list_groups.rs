//! ListGroups: the groups one `__consumer_offsets` partition keeps.

use std::sync::Arc;

use replog_proto::pb::{GroupListing, ListGroupsRequest, ListGroupsResponse};

use crate::coordinator::GROUPS_TOPIC;
use crate::error::Result;
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: ListGroupsRequest) -> Result<ListGroupsResponse> {
    if !node.meta().topics.contains_key(GROUPS_TOPIC) {
        return Ok(ListGroupsResponse { groups: Vec::new() });
    }
    let part = node.local_partition(GROUPS_TOPIC, req.partition)?;
    if !part.is_leader() {
        return Err(node.members.not_leader(part.name().to_string(), part.leader()));
    }
    let groups = part
        .groups()
        .await?
        .iter()
        .map(|(name, st)| GroupListing {
            group: name.clone(),
            state: if st.members.is_empty() { "empty" } else { "stable" }.into(),
            members: st.members.len() as u32,
        })
        .collect();
    Ok(ListGroupsResponse { groups })
}
