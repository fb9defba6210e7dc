//! FetchOffsets: a group's committed offsets.

use std::sync::Arc;

use replog_proto::pb::{FetchOffsetsRequest, FetchOffsetsResponse};

use super::{coordinator, from_pb};
use crate::error::{NodeError, Result};
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: FetchOffsetsRequest) -> Result<FetchOffsetsResponse> {
    let part = coordinator(&node, &req.group)?;
    if !part.groups().await?.contains_key(&req.group) {
        return Err(NodeError::UnknownGroup(format!("group {:?} does not exist", req.group)));
    }
    let wanted = from_pb(&req.partitions);
    let offsets = part
        .committed(&req.group)?
        .into_iter()
        .filter(|(t, p, _)| wanted.is_empty() || wanted.get(t).is_some_and(|ps| ps.contains(p)))
        .map(|(topic, partition, c)| super::committed_pb(topic, partition, c))
        .collect();
    Ok(FetchOffsetsResponse { offsets })
}
