//! ListGroups: the groups one `__consumer_offsets` partition keeps.

use std::sync::Arc;

use replog_proto::pb::{GroupListing, ListGroupsRequest, ListGroupsResponse};

use crate::error::Result;
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: ListGroupsRequest) -> Result<ListGroupsResponse> {
    let Some(part) = super::led_groups_partition(&node, req.partition)? else {
        return Ok(ListGroupsResponse { groups: Vec::new() });
    };
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
