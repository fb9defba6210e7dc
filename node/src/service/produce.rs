//! Produce: validate the batch (and on a schema-bound topic every record), append it through the partition's Raft
//! group, answer with its base offset once a majority has it on disk.

use std::time::{Duration, Instant};

use replog_proto::batch::{self, BatchError};
use replog_proto::pb::{Acks, ProduceRequest, ProduceResponse};
use tracing::instrument;

use crate::error::{NodeError, Result};
use crate::metrics::Metrics;
use crate::node::{MAX_ACKS_NONE_IN_FLIGHT, Node};

#[instrument(skip_all, fields(topic = %req.topic, partition = req.partition, bytes = req.batch.len()))]
pub async fn handle(node: &Node, req: ProduceRequest) -> Result<ProduceResponse> {
    let t0 = Instant::now();
    let topic = Metrics::topic_label(&node.meta(), &req.topic).to_string();
    let r = produce(node, req).await;
    let m = &node.metrics;
    match &r {
        Ok(_) => m.produce_requests.with_label_values(&[&topic, "ok"]).inc(),
        Err(e) => m.produce_requests.with_label_values(&[&topic, e.code().name()]).inc(),
    }
    if r.is_ok() {
        m.produce_latency.with_label_values(&[&topic]).observe(t0.elapsed().as_secs_f64());
    }
    r
}

async fn produce(node: &Node, req: ProduceRequest) -> Result<ProduceResponse> {
    let acks =
        Acks::try_from(req.acks).map_err(|_| NodeError::InvalidRequest(format!("unknown acks value {}", req.acks)))?;
    if req.topic.starts_with("__") {
        return Err(NodeError::InvalidRequest(format!("{} is an internal topic: it takes no records", req.topic)));
    }
    let partition = node.local_partition(&req.topic, req.partition)?;
    let limit = node.config.max_batch_bytes;
    if req.batch.len() > limit {
        return Err(NodeError::BatchTooLarge { size: req.batch.len(), limit });
    }
    // A compressed batch may not hold more than an uncompressed one could.
    let limits = batch::Limits {
        max_record_bytes: node.config.max_record_bytes,
        max_uncompressed_bytes: limit.saturating_sub(batch::HEADER_LEN),
    };
    let header = batch::validate_with(&req.batch, limits).map_err(|e| match e {
        BatchError::RecordTooLarge { .. } => NodeError::RecordTooLarge(e.to_string()),
        BatchError::UncompressedTooLarge { size, .. } => {
            NodeError::BatchTooLarge { size: size + batch::HEADER_LEN, limit }
        }
        other => NodeError::CorruptBatch(other.to_string()),
    })?;
    let subject = node.meta().topics.get(&req.topic).and_then(|t| t.config.schema_subject.clone());
    if let Some(subject) = subject {
        node.schemas.validate_batch(&node.controller, &subject, &req.batch, limits.max_uncompressed_bytes).await?;
    }
    let disk = node.store.disk();
    if !disk.accepts_produce() {
        return Err(NodeError::DiskFull { free_mb: disk.free() >> 20, min_free_mb: disk.min_free() >> 20 });
    }
    let bytes = req.batch.len() as u64;
    let timeout = match req.timeout_ms {
        0 => Duration::from_millis(node.config.produce_timeout_ms),
        t => Duration::from_millis(t as u64).min(Duration::from_millis(node.config.produce_timeout_ms)),
    };
    if acks == Acks::None {
        // Bounded: a fast acks=none producer must not queue writes without limit.
        let slot = node.acks_none_slots.clone().try_acquire_owned().map_err(|_| {
            NodeError::Unavailable(format!("{MAX_ACKS_NONE_IN_FLIGHT} acks=none writes already in flight; slow down"))
        })?;
        partition.append_detached(req.batch, &header, timeout, slot)?;
        // The batch is not in the log yet, so it has no offset: none is
        // made up. The high watermark is the partition's current one.
        let hw = partition.offsets().high_watermark;
        return Ok(ProduceResponse { base_offset: None, record_count: header.record_count, high_watermark: hw });
    }
    let a = partition.append(req.batch, &header, timeout).await?;
    node.metrics.produce_records.with_label_values(&[&req.topic]).inc_by(a.record_count as u64);
    node.metrics.produce_bytes.with_label_values(&[&req.topic]).inc_by(bytes);
    Ok(ProduceResponse {
        base_offset: Some(a.base_offset),
        record_count: a.record_count,
        high_watermark: a.high_watermark,
    })
}
