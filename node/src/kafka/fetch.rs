//! Fetch (v4–12): committed records only, at the leader, as Kafka record
//! batches ([`records::to_kafka`], one per stored batch, whole: a batch
//! that holds the requested offset starts before it, and the client skips
//! the records below). The first batch found is returned even when it is
//! larger than `max_bytes`, so a consumer always makes progress. With too
//! few bytes for `min_bytes` the request waits until a partition's high
//! watermark moves or `max_wait_ms` passes (long-poll, capped by the
//! node's `max_fetch_wait_ms`). No fetch sessions: the answer's session id
//! is 0, so clients fetch every partition every time; the last stable
//! offset is the high watermark (there are no transactions).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::fetch_request::FetchRequest;
use kafka_protocol::messages::fetch_response::{FetchResponse, FetchableTopicResponse, PartitionData};
use replog_proto::batch::MAX_UNCOMPRESSED_BYTES;
use tokio::time::Instant;
use tracing::warn;

use super::{errors, records};
use crate::error::NodeError;
use crate::node::Node;
use crate::partition::{Partition, ReadLimits};

/// Most bytes of record batches in one answer, whatever the request asks
/// (Kafka's default `fetch.max.bytes` is 50 MiB).
const MAX_RESPONSE_BYTES: usize = 50 << 20;
/// Most records one partition's read returns.
const MAX_RECORDS: usize = 100_000;

/// One requested partition: where it is found, from which offset.
struct Wanted {
    topic: usize,
    index: i32,
    offset: i64,
    max_bytes: usize,
    partition: Result<Arc<Partition>, NodeError>,
}

pub async fn handle(node: &Node, req: FetchRequest, _version: i16) -> FetchResponse {
    let max_wait =
        Duration::from_millis(req.max_wait_ms.max(0) as u64).min(Duration::from_millis(node.config.max_fetch_wait_ms));
    let min_bytes = (req.min_bytes.max(1) as usize).min(MAX_RESPONSE_BYTES);
    let max_bytes = (req.max_bytes.max(1) as usize).min(MAX_RESPONSE_BYTES);
    let deadline = Instant::now() + max_wait;
    let names: Vec<_> = req.topics.iter().map(|t| t.topic.clone()).collect();
    let mut wanted = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        for p in &t.partitions {
            let partition = match u32::try_from(p.partition) {
                Ok(i) => node.local_partition(t.topic.0.as_str(), i),
                Err(_) => Err(NodeError::UnknownPartition { topic: t.topic.0.to_string(), partition: 0, count: 0 }),
            };
            wanted.push(Wanted {
                topic: ti,
                index: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(1) as usize,
                partition,
            });
        }
    }
    loop {
        let (answers, bytes, seen) = read_all(&wanted, max_bytes).await;
        let now = Instant::now();
        let errored = answers.iter().any(|a| a.error_code != 0);
        if bytes >= min_bytes || now >= deadline || errored || seen.is_empty() {
            let mut topics: Vec<FetchableTopicResponse> =
                names.iter().map(|n| FetchableTopicResponse::default().with_topic(n.clone())).collect();
            for (w, a) in wanted.iter().zip(answers) {
                topics[w.topic].partitions.push(a);
            }
            return FetchResponse::default().with_session_id(0).with_responses(topics);
        }
        // Too little yet: wait for any partition to get past what was seen.
        let waits = seen.iter().map(|(p, hw)| Box::pin(p.wait_for(*hw, deadline - now)));
        futures::future::select_all(waits).await;
    }
}

/// One pass over every wanted partition without waiting: the answers, the
/// bytes of records in them, and the partitions read with the high
/// watermark each had.
async fn read_all(wanted: &[Wanted], max_bytes: usize) -> (Vec<PartitionData>, usize, Vec<(Arc<Partition>, u64)>) {
    let mut answers = Vec::with_capacity(wanted.len());
    let mut seen = Vec::new();
    let mut total = 0usize;
    for w in wanted {
        let p = match &w.partition {
            Ok(p) => p.clone(),
            Err(e) => {
                answers.push(failed(w.index, errors::code(e)));
                continue;
            }
        };
        let Ok(offset) = u64::try_from(w.offset) else {
            answers.push(failed(w.index, ResponseError::OffsetOutOfRange.code()));
            continue;
        };
        let left = max_bytes.saturating_sub(total);
        if left == 0 {
            // The answer is full: this partition's turn comes next time.
            let o = p.offsets();
            answers.push(data(w.index, o.high_watermark, o.log_start_offset, None));
            seen.push((p, o.high_watermark));
            continue;
        }
        let limits = ReadLimits {
            // At least one batch whatever the limit: the first partition
            // with records always returns its first batch.
            max_bytes: w.max_bytes.min(left),
            max_records: MAX_RECORDS,
            max_wait: Duration::ZERO,
            min_bytes: 0,
            any_replica: false,
        };
        match p.read(offset, limits).await {
            Ok(read) => {
                let mut out = BytesMut::new();
                for b in &read.batches {
                    if let Err(e) = records::to_kafka(b.base_offset, &b.batch, MAX_UNCOMPRESSED_BYTES, &mut out) {
                        // Stored batches were validated on the way in.
                        warn!(partition = p.name(), offset = b.base_offset, error = %e, "stored batch does not convert");
                        break;
                    }
                }
                total += out.len();
                let hw = read.offsets.high_watermark;
                answers.push(data(w.index, hw, read.offsets.log_start_offset, Some(out.freeze())));
                seen.push((p, hw));
            }
            Err(e) => answers.push(failed(w.index, errors::code(&e))),
        }
    }
    (answers, total, seen)
}

fn data(index: i32, hw: u64, log_start: u64, records: Option<bytes::Bytes>) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_high_watermark(hw as i64)
        .with_last_stable_offset(hw as i64)
        .with_log_start_offset(log_start as i64)
        .with_aborted_transactions(Some(Vec::new()))
        .with_preferred_read_replica(BrokerId(-1))
        .with_records(Some(records.unwrap_or_default()))
}

fn failed(index: i32, code: i16) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(code)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica(BrokerId(-1))
        .with_records(Some(bytes::Bytes::new()))
}
