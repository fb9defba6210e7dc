//! Fetch: committed batches from an offset, bounded by bytes and records,
//! with a long-poll wait when the consumer is at the end of the log.

use std::time::{Duration, Instant};

use replog_proto::pb::{FetchRequest, FetchResponse, FetchedBatch};
use tracing::instrument;

use crate::error::{NodeError, Result};
use crate::node::Node;

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
    let r = fetch(node, req).await;
    let m = &node.metrics;
    match &r {
        Ok(resp) => {
            m.fetch_requests.with_label_values(&["ok"]).inc();
            m.fetch_bytes.inc_by(resp.batches.iter().map(|b| b.batch.len() as u64).sum());
            m.fetch_latency.with_label_values(&[long_poll]).observe(t0.elapsed().as_secs_f64());
        }
        Err(e) => m.fetch_requests.with_label_values(&[e.code().name()]).inc(),
    }
    r
}

/// Whether a leader must catch up to the commit index (a ReadIndex round)
/// before it answers a fetch at `offset`. A leader fresh from an election
/// may not yet have applied everything its predecessor acknowledged and
/// served, so its high watermark can be stale: past it, the offset must not
/// be called out of range; at it without a wait, the answer "nothing more,
/// high watermark here" must not hide committed records. A long poll at the
/// high watermark needs no round: it waits for the high watermark to move,
/// which the catch-up does.
fn needs_catch_up(offset: u64, high_watermark: u64, max_wait_ms: u32) -> bool {
    offset > high_watermark || (offset == high_watermark && max_wait_ms == 0)
}

async fn fetch(node: &Node, req: FetchRequest) -> Result<FetchResponse> {
    let (gid, replicas) = node.locate(&req.topic, req.partition)?;
    let what = || format!("{}/{}", req.topic, req.partition);
    let group = node.group(gid).ok_or_else(|| node.not_leader(what(), node.leader_of(gid, &replicas)))?;
    if !req.replica_read && !group.is_leader(node.id) {
        return Err(node.not_leader(what(), group.leader()));
    }
    let reader = group.reader.as_ref().ok_or_else(|| NodeError::Internal("partition group without a reader".into()))?;
    let mut offsets = reader.offsets();
    if !req.replica_read && needs_catch_up(req.offset, offsets.high_watermark, req.max_wait_ms) {
        group.raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex).await.map_err(|e| {
            match e.forward_to_leader() {
                Some(f) => node.not_leader(what(), f.leader_id),
                None => NodeError::Unavailable(format!("{}: {e}", what())),
            }
        })?;
        offsets = reader.offsets();
    }
    if req.offset < offsets.log_start_offset || req.offset > offsets.high_watermark {
        return Err(NodeError::OffsetOutOfRange {
            offset: req.offset,
            log_start: offsets.log_start_offset,
            high_watermark: offsets.high_watermark,
        });
    }
    if req.offset == offsets.high_watermark && req.max_wait_ms > 0 {
        let wait = Duration::from_millis((req.max_wait_ms as u64).min(node.config.max_fetch_wait_ms));
        offsets = reader.wait_beyond(req.offset, wait).await;
    }
    let max_bytes = if req.max_bytes == 0 { DEFAULT_MAX_BYTES } else { (req.max_bytes as usize).min(MAX_FETCH_BYTES) };
    let max_records =
        if req.max_records == 0 { DEFAULT_MAX_RECORDS } else { (req.max_records as usize).min(MAX_FETCH_RECORDS) };
    let batches = reader.read(req.offset, max_bytes, max_records)?;
    Ok(FetchResponse {
        batches: batches.into_iter().map(|b| FetchedBatch { base_offset: b.base_offset, batch: b.batch }).collect(),
        high_watermark: offsets.high_watermark,
        log_start_offset: offsets.log_start_offset,
    })
}

#[cfg(test)]
mod tests {
    //! The catch-up decision on its own: the window in which a new leader
    //! has not applied what its predecessor committed closes within
    //! milliseconds, so real nodes cannot be held inside it on demand.

    use super::needs_catch_up;

    #[test]
    fn given_a_fetch_at_the_high_watermark_without_a_wait_then_the_leader_catches_up_first() {
        assert!(needs_catch_up(10, 10, 0), "a stale high watermark would answer 'nothing more'");
    }

    #[test]
    fn given_a_fetch_past_the_high_watermark_then_the_leader_catches_up_first() {
        assert!(needs_catch_up(11, 10, 0));
        assert!(needs_catch_up(11, 10, 500));
    }

    #[test]
    fn given_a_long_poll_at_the_high_watermark_or_a_fetch_below_it_then_no_round_is_spent() {
        assert!(!needs_catch_up(10, 10, 500), "the long poll waits for the high watermark to move");
        assert!(!needs_catch_up(9, 10, 0), "records below the high watermark are committed and applied");
    }
}
