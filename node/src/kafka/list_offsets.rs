//! ListOffsets (v1–7), at the leader: earliest (-2) is the log start,
//! latest (-1) the high watermark, and a timestamp the first record at or
//! after it (the partition's time index), or the high watermark with
//! timestamp -1 when there is none. The max-timestamp query (-3, v7) is
//! not served and gets INVALID_REQUEST.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};

use super::errors;
use crate::error::NodeError;
use crate::node::Node;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub async fn handle(node: &Node, req: ListOffsetsRequest, _version: i16) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let r = match offset(node, t.name.0.as_str(), p.partition_index, p.timestamp).await {
                Ok((offset, timestamp)) => ListOffsetsPartitionResponse::default()
                    .with_offset(offset as i64)
                    .with_timestamp(timestamp)
                    .with_leader_epoch(-1),
                Err(code) => {
                    ListOffsetsPartitionResponse::default().with_error_code(code).with_offset(-1).with_timestamp(-1)
                }
            };
            partitions.push(r.with_partition_index(p.partition_index));
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions));
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// `(offset, timestamp)` for one partition, or a Kafka error code.
async fn offset(node: &Node, topic: &str, index: i32, timestamp: i64) -> Result<(u64, i64), i16> {
    let code = |e: NodeError| errors::code(&e);
    let index = u32::try_from(index).map_err(|_| ResponseError::UnknownTopicOrPartition.code())?;
    let p = node.local_partition(topic, index).map_err(code)?;
    let o = p.current_offsets().await.map_err(code)?;
    match timestamp {
        EARLIEST => Ok((o.log_start_offset, -1)),
        LATEST => Ok((o.high_watermark, -1)),
        ts if ts >= 0 => match p.offset_for_time(ts).await.map_err(code)? {
            Some((offset, ts)) => Ok((offset, ts)),
            None => Ok((o.high_watermark, -1)),
        },
        _ => Err(ResponseError::InvalidRequest.code()),
    }
}
