//! FetchOffsets: a group's committed offsets.

use std::sync::Arc;

use replog_proto::pb::{CommittedOffset, FetchOffsetsRequest, FetchOffsetsResponse};

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
        .map(|(topic, partition, c)| CommittedOffset {
            topic,
            partition,
            offset: c.offset,
            metadata: c.metadata,
            commit_timestamp_ms: c.commit_timestamp_ms,
        })
        .collect();
    Ok(FetchOffsetsResponse { offsets })
}
