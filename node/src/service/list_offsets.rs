//! ListOffsets: an offset of a partition by position or by time.

use replog_proto::pb::{ListOffsetsRequest, ListOffsetsResponse, OffsetSpec};

use crate::error::{NodeError, Result};
use crate::node::Node;

pub async fn handle(node: &Node, req: ListOffsetsRequest) -> Result<ListOffsetsResponse> {
    let spec = OffsetSpec::try_from(req.spec)
        .map_err(|_| NodeError::InvalidRequest(format!("unknown offset spec {}", req.spec)))?;
    let partition = node.local_partition(&req.topic, req.partition)?;
    let o = partition.current_offsets().await?;
    let (offset, timestamp_ms) = match spec {
        OffsetSpec::Earliest => (o.log_start_offset, -1),
        OffsetSpec::Latest => (o.high_watermark, -1),
        OffsetSpec::Timestamp => match partition.offset_for_time(req.timestamp_ms).await? {
            Some((offset, ts)) => (offset, ts),
            None => (o.high_watermark, -1),
        },
    };
    Ok(ListOffsetsResponse {
        offset,
        timestamp_ms,
        log_start_offset: o.log_start_offset,
        high_watermark: o.high_watermark,
    })
}
