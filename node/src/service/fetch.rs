//! Fetch: committed batches from an offset, bounded by bytes and records,
//! with a long-poll wait when the consumer is at the end of the log.

use std::time::{Duration, Instant};

use replog_proto::pb::{FetchRequest, FetchResponse, FetchedBatch};
use tracing::instrument;

use crate::error::Result;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::partition::ReadLimits;

const DEFAULT_MAX_BYTES: usize = 4 << 20;
const DEFAULT_MAX_RECORDS: usize = 10_000;
/// Upper bounds whatever the request asks: a response must fit in memory
/// and in a gRPC message (at least one batch is always returned, and a
/// batch is at most `max_batch_bytes`).
const MAX_FETCH_BYTES: usize = 16 << 20;
const MAX_FETCH_RECORDS: usize = 100_000;

#[instrument(skip_all, fields(topic = %req.topic, partition = req.partition, offset = req.offset))]
pub async fn handle(node: &Node, req: FetchRequest) -> Result<FetchResponse> {
    let t0 = Instant::now();
    let long_poll = if req.max_wait_ms > 0 { "yes" } else { "no" };
    let topic = Metrics::topic_label(&node.meta(), &req.topic).to_string();
    let r = fetch(node, req).await;
    let m = &node.metrics;
    match &r {
        Ok(resp) => {
            m.fetch_requests.with_label_values(&[&topic, "ok"]).inc();
            m.fetch_bytes.with_label_values(&[&topic]).inc_by(resp.batches.iter().map(|b| b.batch.len() as u64).sum());
            m.fetch_records.with_label_values(&[&topic]).inc_by(fetched_records(&resp.batches));
            m.fetch_latency.with_label_values(&[&topic, long_poll]).observe(t0.elapsed().as_secs_f64());
        }
        Err(e) => m.fetch_requests.with_label_values(&[&topic, e.code().name()]).inc(),
    }
    r
}

/// Records in `batches`, from each batch's header.
fn fetched_records(batches: &[FetchedBatch]) -> u64 {
    batches.iter().filter_map(|b| replog_proto::batch::peek_header(&b.batch).ok()).map(|h| h.record_count as u64).sum()
}

async fn fetch(node: &Node, req: FetchRequest) -> Result<FetchResponse> {
    let partition = node.local_partition(&req.topic, req.partition)?;
    let limits = ReadLimits {
        max_bytes: if req.max_bytes == 0 { DEFAULT_MAX_BYTES } else { (req.max_bytes as usize).min(MAX_FETCH_BYTES) },
        max_records: if req.max_records == 0 {
            DEFAULT_MAX_RECORDS
        } else {
            (req.max_records as usize).min(MAX_FETCH_RECORDS)
        },
        max_wait: Duration::from_millis((req.max_wait_ms as u64).min(node.config.max_fetch_wait_ms)),
        any_replica: req.replica_read,
        min_bytes: (req.min_bytes as usize).min(MAX_FETCH_BYTES),
    };
    let read = partition.read(req.offset, limits).await?;
    Ok(FetchResponse {
        batches: read
            .batches
            .into_iter()
            .map(|b| FetchedBatch { base_offset: b.base_offset, batch: b.batch })
            .collect(),
        high_watermark: read.offsets.high_watermark,
        log_start_offset: read.offsets.log_start_offset,
    })
}
