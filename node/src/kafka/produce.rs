//! Produce (v3–9): each partition's Kafka batches become one replog batch
//! ([`records::to_replog`]: CRC32C checked, RecordBatch v2 only) and go
//! through the same produce handler as a gRPC produce — leader check,
//! limits, schema validation, disk space, metrics — so the answer comes
//! after the commit, with the base offset the state machine assigned.
//! acks=1 is served as acks=all (a Raft majority on disk); acks=0 gets no
//! response at all.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, ProduceResponse, TopicProduceResponse};
use kafka_protocol::protocol::StrBytes;
use replog_proto::batch::HEADER_LEN;
use replog_proto::pb;
use tracing::debug;

use super::{errors, records};
use crate::node::Node;

/// The response, or none for acks=0.
pub async fn handle(node: &Node, req: ProduceRequest, _version: i16) -> Option<ProduceResponse> {
    let acks = match req.acks {
        0 => Some(pb::Acks::None),
        1 | -1 => Some(pb::Acks::All),
        _ => None,
    };
    let refuse_all = |code: i16| -> Vec<TopicProduceResponse> {
        req.topic_data
            .iter()
            .map(|t| {
                TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_partition_responses(t.partition_data.iter().map(|p| failed(p.index, code, None)).collect())
            })
            .collect()
    };
    let responses = match acks {
        None => refuse_all(ResponseError::InvalidRequiredAcks.code()),
        // Transactions need InitProducerId and the transaction APIs, which
        // are not served.
        Some(_) if req.transactional_id.is_some() => {
            refuse_all(ResponseError::TransactionalIdAuthorizationFailed.code())
        }
        Some(acks) => {
            let timeout_ms = req.timeout_ms.max(0) as u32;
            let mut topics = Vec::with_capacity(req.topic_data.len());
            for t in req.topic_data {
                let name = t.name.0.to_string();
                let parts = t.partition_data.into_iter().map(|p| {
                    let name = name.clone();
                    async move { partition(node, name, p.index, p.records, acks, timeout_ms).await }
                });
                let partitions = futures::future::join_all(parts).await;
                topics.push(TopicProduceResponse::default().with_name(t.name).with_partition_responses(partitions));
            }
            topics
        }
    };
    if acks == Some(pb::Acks::None) {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}

fn failed(index: i32, code: i16, message: Option<String>) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code)
        .with_base_offset(-1)
        .with_log_start_offset(-1)
        .with_error_message(message.map(StrBytes::from_string))
}

async fn partition(
    node: &Node,
    topic: String,
    index: i32,
    data: Option<bytes::Bytes>,
    acks: pb::Acks,
    timeout_ms: u32,
) -> PartitionProduceResponse {
    let Ok(p) = u32::try_from(index) else {
        return failed(index, ResponseError::UnknownTopicOrPartition.code(), None);
    };
    let data = data.unwrap_or_default();
    let max_uncompressed = node.config.max_batch_bytes.saturating_sub(HEADER_LEN);
    let batch = match records::to_replog(&data, max_uncompressed) {
        Ok(b) => b,
        Err(r) => {
            debug!(%topic, partition = index, code = r.code, reason = %r.message, "kafka produce refused");
            return failed(index, r.code, Some(r.message));
        }
    };
    let req = pb::ProduceRequest { topic: topic.clone(), partition: p, batch, acks: acks as i32, timeout_ms };
    match crate::service::produce::handle(node, req).await {
        Ok(r) => {
            let log_start =
                node.local_partition(&topic, p).map(|part| part.offsets().log_start_offset as i64).unwrap_or(-1);
            PartitionProduceResponse::default()
                .with_index(index)
                .with_base_offset(r.base_offset.map_or(-1, |o| o as i64))
                .with_log_append_time_ms(-1)
                .with_log_start_offset(log_start)
        }
        Err(e) => {
            debug!(%topic, partition = index, error = %e, "kafka produce failed");
            failed(index, errors::code(&e), Some(e.to_string()))
        }
    }
}
