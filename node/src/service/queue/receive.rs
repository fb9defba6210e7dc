//! QueueReceive: long-poll for available events of a partition, then lock
//! up to `max_messages` of them to the consumer through Raft and hand them
//! out. Events due for the dead-letter topic that the lock turned up are
//! written there in the background.

use std::sync::Arc;
use std::time::Duration;

use replog_proto::pb::{QueueReceiveRequest, QueueReceiveResponse};
use replog_raft_store::queues::{LogBounds, QueueCmd, QueueResult};
use tracing::instrument;

use super::{MAX_RECEIVE, dead_letter, leader_partition, lock_ms, message, records_at, settings};
use crate::error::{NodeError, Result};
use crate::node::Node;

/// Most record bytes one answer carries; locked events beyond it are
/// released at once, uncounted, and come first in the next receive.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

#[instrument(skip_all, fields(topic = %req.topic, partition = req.partition, group = %req.group, consumer = %req.consumer))]
pub async fn handle(node: Arc<Node>, req: QueueReceiveRequest) -> Result<QueueReceiveResponse> {
    let part = leader_partition(&node, &req.topic, req.partition, &req.group, Some(&req.consumer))?;
    if req.max_messages > MAX_RECEIVE {
        return Err(NodeError::InvalidRequest(format!("max_messages {} exceeds {MAX_RECEIVE}", req.max_messages)));
    }
    let lock_ms = lock_ms(req.lock_ms)?;
    let settings = settings(&req.topic, req.max_deliveries, &req.dead_letter_topic)?;
    let wait = Duration::from_millis((req.max_wait_ms as u64).min(node.config.max_fetch_wait_ms));
    let deadline = tokio::time::Instant::now() + wait;
    // A leader fresh from an election may not have applied all its
    // predecessor committed: catch up once before judging what is free.
    let mut queues = part.queues().await?;
    let (work, exists) = loop {
        let o = part.offsets();
        let bounds = LogBounds { log_start: o.log_start_offset, high_watermark: o.high_watermark };
        let now = replog_proto::now_ms();
        let st = queues.get(&req.group);
        let work = match st {
            Some(st) => st.has_work(now, bounds),
            None => bounds.high_watermark > bounds.log_start,
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if work || left.is_zero() {
            break (work, st.is_some());
        }
        // Wake for a new record, a change of the group, or the next lock
        // or claim that runs out.
        let until_expiry =
            st.and_then(|s| s.next_deadline(now)).map(|d| Duration::from_millis(d.saturating_sub(now).max(1) as u64));
        part.wait_queue_change(o.high_watermark, until_expiry.map_or(left, |d| d.min(left))).await;
        part.ensure_leader()?;
        queues = part.queues_here();
    };
    let high_watermark = part.offsets().high_watermark;
    // The first receive of a group creates it, even with nothing to hand out.
    if req.max_messages == 0 || (!work && exists) {
        return Ok(QueueReceiveResponse { messages: Vec::new(), high_watermark, available: work });
    }
    let cmd = QueueCmd::Lock {
        group: req.group.clone(),
        consumer: req.consumer.clone(),
        max: req.max_messages,
        lock_ms,
        now_ms: replog_proto::now_ms(),
        settings,
    };
    let QueueResult::Locked { delivered, dead_letters } = part.propose_queue(cmd).await? else {
        return Err(NodeError::Internal("a queue lock answered something else".into()));
    };
    if !dead_letters.is_empty() {
        let (node, part, topic, partition, group) =
            (node.clone(), part.clone(), req.topic.clone(), req.partition, req.group.clone());
        tokio::spawn(async move {
            if let Err(e) = dead_letter::write(&node, &part, &topic, partition, &group, dead_letters).await {
                tracing::warn!(%topic, partition, %group, "dead letters not written yet (retried once their claim lapses): {e}");
            }
        });
    }
    let offsets: Vec<u64> = delivered.iter().map(|d| d.offset).collect();
    let mut records = records_at(&node, &part, &offsets).await?;
    let (mut messages, mut overflow, mut bytes) = (Vec::with_capacity(delivered.len()), Vec::new(), 0usize);
    for d in delivered {
        // Released by retention since: nothing to deliver, nothing to settle.
        let Some(r) = records.remove(&d.offset) else { continue };
        let size = r.value.len() + r.key.as_ref().map_or(0, |k| k.len());
        if !messages.is_empty() && bytes + size > MAX_RESPONSE_BYTES {
            overflow.push(d.offset);
            continue;
        }
        bytes += size;
        messages.push(message(d.offset, r, d.deliveries, d.deadline_ms));
    }
    if !overflow.is_empty() {
        part.propose_queue(QueueCmd::Release {
            group: req.group,
            consumer: req.consumer,
            offsets: overflow,
            undelivered: true,
            now_ms: replog_proto::now_ms(),
        })
        .await?;
    }
    Ok(QueueReceiveResponse { messages, high_watermark, available: true })
}
