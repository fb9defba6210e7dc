//! Produce: validate the batch, append it through the partition's Raft
//! group, answer with its base offset once a majority has it on disk.

use std::time::{Duration, Instant};

use openraft::errors::ClientWriteError;
use replog_proto::batch::{self, BatchError};
use replog_proto::pb::{Acks, ProduceRequest, ProduceResponse};
use replog_raft_store::{Request, Response};
use tracing::{debug, instrument};

use crate::error::{NodeError, Result};
use crate::node::{MAX_ACKS_NONE_IN_FLIGHT, Node};

#[instrument(skip_all, fields(topic = %req.topic, partition = req.partition, bytes = req.batch.len()))]
pub async fn handle(node: &Node, req: ProduceRequest) -> Result<ProduceResponse> {
    let t0 = Instant::now();
    let r = produce(node, req).await;
    let m = &node.metrics;
    match &r {
        Ok(_) => m.produce_requests.with_label_values(&["ok"]).inc(),
        Err(e) => m.produce_requests.with_label_values(&[e.code().name()]).inc(),
    }
    if r.is_ok() {
        m.produce_latency.observe(t0.elapsed().as_secs_f64());
    }
    r
}

async fn produce(node: &Node, req: ProduceRequest) -> Result<ProduceResponse> {
    let acks =
        Acks::try_from(req.acks).map_err(|_| NodeError::InvalidRequest(format!("unknown acks value {}", req.acks)))?;
    let (gid, replicas) = node.locate(&req.topic, req.partition)?;
    let limit = node.config.max_batch_bytes;
    if req.batch.len() > limit {
        return Err(NodeError::BatchTooLarge { size: req.batch.len(), limit });
    }
    let header = batch::validate(&req.batch, node.config.max_record_bytes).map_err(|e| match e {
        BatchError::RecordTooLarge { .. } => NodeError::RecordTooLarge(e.to_string()),
        other => NodeError::CorruptBatch(other.to_string()),
    })?;
    let what = || format!("{}/{}", req.topic, req.partition);
    let group = node.group(gid).ok_or_else(|| node.not_leader(what(), node.leader_of(gid, &replicas)))?;
    if !group.is_leader(node.id) {
        return Err(node.not_leader(what(), group.leader()));
    }
    let disk = node.store.disk();
    if !disk.accepts_produce() {
        return Err(NodeError::DiskFull { free_mb: disk.free() >> 20, min_free_mb: disk.min_free() >> 20 });
    }
    let bytes = req.batch.len() as u64;
    let cmd = Request::Append {
        batch: req.batch,
        record_count: header.record_count,
        max_timestamp_ms: header.max_timestamp_ms,
    };
    let timeout = match req.timeout_ms {
        0 => Duration::from_millis(node.config.produce_timeout_ms),
        t => Duration::from_millis(t as u64).min(Duration::from_millis(node.config.produce_timeout_ms)),
    };
    if acks == Acks::None {
        // Bounded: a fast acks=none producer must not queue writes without limit.
        let permit = node.acks_none_slots.clone().try_acquire_owned().map_err(|_| {
            NodeError::Unavailable(format!("{MAX_ACKS_NONE_IN_FLIGHT} acks=none writes already in flight; slow down"))
        })?;
        let raft = group.raft.clone();
        let name = what();
        tokio::spawn(async move {
            // The same deadline as an acks=all write: on a leader that was
            // deposed or lost its majority the write may never finish, and
            // its slot must not be held forever. The entry may still commit
            // after the deadline; only the wait ends.
            if tokio::time::timeout(timeout, raft.client_write(cmd)).await.is_err() {
                debug!(partition = %name, ?timeout, "acks=none write not committed in time; its slot is released");
            }
            drop(permit);
        });
        // The batch is not in the log yet, so it has no offset: none is
        // made up. The high watermark is the partition's current one.
        let hw = group.reader.as_ref().map_or(0, |r| r.offsets().high_watermark);
        return Ok(ProduceResponse { base_offset: None, record_count: header.record_count, high_watermark: hw });
    }
    let resp = match tokio::time::timeout(timeout, group.raft.client_write(cmd)).await {
        Err(_) => {
            return Err(NodeError::Timeout(format!(
                "{} not committed within {timeout:?}; it may still be appended",
                what()
            )));
        }
        Ok(Err(e)) => {
            return Err(match e.api_error() {
                // Proposed, then leadership moved: it may still commit.
                Some(ClientWriteError::LogEntryDiscarded(_)) => {
                    NodeError::Unavailable(format!("{}: leadership changed; the batch may have been appended", what()))
                }
                _ => match e.forward_to_leader() {
                    Some(f) => node.not_leader(what(), f.leader_id),
                    None => NodeError::Unavailable(format!("{}: {e}", what())),
                },
            });
        }
        Ok(Ok(r)) => r,
    };
    match resp.data {
        Response::Appended { base_offset, record_count } => {
            node.metrics.produce_records.inc_by(record_count as u64);
            node.metrics.produce_bytes.inc_by(bytes);
            let hw = group.reader.as_ref().map_or(0, |r| r.offsets().high_watermark);
            Ok(ProduceResponse { base_offset: Some(base_offset), record_count, high_watermark: hw })
        }
        Response::Rejected(r) => Err(NodeError::Rejected(r)),
        other => Err(NodeError::Internal(format!("append answered {other:?}"))),
    }
}
