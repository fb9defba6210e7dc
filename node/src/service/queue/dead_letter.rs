//! Writes events to a queue group's dead-letter topic, then settles them.
//!
//! Order matters: the record is produced to the dead-letter topic (acks=all)
//! first and settled in the queue only after, so a failure in between
//! (this leader dies, the dead-letter partition is unavailable) leaves the
//! event a claimed dead letter whose claim lapses and is handed out again
//! by a later receive. A dead letter is written at least once, never lost;
//! a retry after a failure may write it twice.
//!
//! The dead-letter topic is created on first use with the origin topic's
//! partition count and replication factor; origin partition `p` goes to
//! its partition `p mod count`. Each dead letter keeps the event's key,
//! value and headers, with these headers added:
//! `replog-dlq-topic`, `replog-dlq-partition`, `replog-dlq-offset`,
//! `replog-dlq-group`, `replog-dlq-delivery-count`, `replog-dlq-reason`,
//! `replog-dlq-timestamp` (the event's own timestamp, ms).
//!
//! Dead letters are produced in batches that fit `max_batch_bytes`. One
//! whose added headers push it past `max_record_bytes` is written without
//! its value (then, if still too large, without its key and own headers),
//! and says so in `replog-dlq-dropped`: a dead letter that could never be
//! written would be retried forever and its event never settled.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use replog_proto::batch::{self, Record};
use replog_proto::pb::{Acks, CreateTopicRequest, ProduceRequest};
use replog_raft_store::queues::{DeadLetterJob, QueueCmd};
use tonic::Request;
use tracing::{info, warn};

use super::records_at;
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::partition::Partition;
use crate::service::{create_topic, on_controller};

/// How long writing one round of dead letters may keep retrying.
const WRITE_WAIT: Duration = Duration::from_secs(20);
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Dead letters per produced batch.
const PER_BATCH: usize = 100;

/// Writes `jobs` (dead letters claimed by this leader) of `group` on
/// `topic`/`partition` to the group's dead-letter topic and settles them.
pub async fn write(
    node: &Arc<Node>,
    part: &Arc<Partition>,
    topic: &str,
    partition: u32,
    group: &str,
    mut jobs: Vec<DeadLetterJob>,
) -> Result<()> {
    jobs.sort_by_key(|j| j.offset);
    let Some(settings) = part.queues_here().get(group).map(|q| q.settings.clone()) else {
        return Err(NodeError::Rejected(replog_raft_store::Rejection::UnknownQueueGroup(format!(
            "queue group {group:?} is gone"
        ))));
    };
    let offsets: Vec<u64> = jobs.iter().map(|j| j.offset).collect();
    let records = records_at(node, part, &offsets).await?;
    let (replicas, count) = {
        let meta = node.meta();
        let t = meta.topics.get(topic).ok_or_else(|| NodeError::UnknownTopic(topic.to_string()))?;
        (t.partitions.first().map_or(1, |p| p.replicas.len() as u32), t.partitions.len() as u32)
    };
    let dlq = &settings.dead_letter_topic;
    let dlq_partitions = ensure_topic(node, dlq, count, replicas).await?;
    let target = partition % dlq_partitions;
    let max_batch = node.config.max_batch_bytes;
    // A letter must also fit a batch of its own.
    let max_record = node.config.max_record_bytes.min(max_batch.saturating_sub(batch::HEADER_LEN));
    for chunk in jobs.chunks(PER_BATCH) {
        let mut letters = Vec::with_capacity(chunk.len());
        for j in chunk {
            // An event released by retention meanwhile has nothing left to write.
            let Some(r) = records.get(&j.offset) else { continue };
            let mut r: Record = r.clone();
            let original_ts = r.timestamp_ms;
            r.timestamp_ms = replog_proto::now_ms();
            for (k, v) in [
                ("replog-dlq-topic", topic.to_string()),
                ("replog-dlq-partition", partition.to_string()),
                ("replog-dlq-offset", j.offset.to_string()),
                ("replog-dlq-group", group.to_string()),
                ("replog-dlq-delivery-count", j.deliveries.to_string()),
                ("replog-dlq-reason", j.reason.clone()),
                ("replog-dlq-timestamp", original_ts.to_string()),
            ] {
                r.headers.push((k.to_string(), Bytes::from(v)));
            }
            letters.push(fit_record(r, max_record));
        }
        for b in batches(letters, max_batch) {
            produce(node, dlq, target, batch::encode(&b)).await?;
        }
        part.propose_queue(QueueCmd::DeadLettered {
            group: group.to_string(),
            offsets: chunk.iter().map(|j| j.offset).collect(),
            now_ms: replog_proto::now_ms(),
        })
        .await?;
    }
    Ok(())
}

/// `r` within `max_record_bytes`: as it is if it fits; otherwise without
/// its value, then also without its key and its own headers (the dead-letter
/// headers stay), naming what was dropped in `replog-dlq-dropped`.
fn fit_record(mut r: Record, max_record_bytes: usize) -> Record {
    if r.encoded_len() <= max_record_bytes {
        return r;
    }
    let value_len = r.value.len();
    r.value = Bytes::new();
    let note = |what: &str| ("replog-dlq-dropped".to_string(), Bytes::from(what.to_string()));
    r.headers.push(note(&format!("value ({value_len} bytes): over max_record_bytes with the dead-letter headers")));
    if r.encoded_len() <= max_record_bytes {
        return r;
    }
    let key_len = r.key.take().map_or(0, |k| k.len());
    r.headers.retain(|(k, _)| k.starts_with("replog-dlq-") && k != "replog-dlq-dropped");
    r.headers.push(note(&format!(
        "value ({value_len} bytes), key ({key_len} bytes) and headers: over max_record_bytes with the dead-letter headers"
    )));
    r
}

/// `letters` in order, in batches of at most `max_batch_bytes` each.
fn batches(letters: Vec<Record>, max_batch_bytes: usize) -> Vec<Vec<Record>> {
    let budget = max_batch_bytes.saturating_sub(batch::HEADER_LEN);
    let mut out: Vec<Vec<Record>> = Vec::new();
    let mut size = 0;
    for r in letters {
        let len = r.encoded_len();
        match out.last_mut() {
            Some(b) if size + len <= budget => b.push(r),
            _ => {
                out.push(vec![r]);
                size = 0;
            }
        }
        size += len;
    }
    out
}

/// The partition count of `name`, creating it first if it does not exist.
async fn ensure_topic(node: &Arc<Node>, name: &str, partitions: u32, replication_factor: u32) -> Result<u32> {
    let existing = |node: &Node| node.meta().topics.get(name).map(|t| t.partitions.len() as u32);
    if let Some(n) = existing(node) {
        return Ok(n);
    }
    let mut req =
        CreateTopicRequest { name: name.to_string(), partitions, replication_factor, configs: Default::default() };
    create_topic::prepare(node, &mut req)?;
    let created =
        on_controller(node, Request::new(req), create_topic::handle, |mut c, r| async move { c.create_topic(r).await })
            .await;
    match created {
        Ok(_) => info!(topic = name, "created the dead-letter topic"),
        Err(e) if e.code() == replog_proto::codes::ErrorCode::TopicAlreadyExists => {}
        Err(e) => return Err(e),
    }
    // The metadata reaches this node through its own controller replica.
    let deadline = tokio::time::Instant::now() + WRITE_WAIT;
    loop {
        if let Some(n) = existing(node) {
            return Ok(n);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(NodeError::Unavailable(format!("dead-letter topic {name} not known here yet")));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Appends `batch` to `topic`/`partition` at its leader, here or on
/// another node, retrying what is retryable for a while.
async fn produce(node: &Arc<Node>, topic: &str, partition: u32, batch: Bytes) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WRITE_WAIT;
    loop {
        let e = match produce_once(node, topic, partition, batch.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if !e.code().is_retryable() || tokio::time::Instant::now() >= deadline {
            return Err(e);
        }
        warn!(topic, partition, "dead letter not written yet, retrying: {e}");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

async fn produce_once(node: &Arc<Node>, topic: &str, partition: u32, batch: Bytes) -> Result<()> {
    let timeout = Duration::from_millis(node.config.produce_timeout_ms);
    let (group, replicas) = node.locate(topic, partition)?;
    let leader = node.leader_of(group, &replicas);
    if leader == Some(node.id)
        && let Some(p) = node.partition(group)
    {
        let header = batch::validate(&batch, node.config.max_record_bytes)
            .map_err(|e| NodeError::RecordTooLarge(format!("a dead letter does not fit: {e}")))?;
        p.append(batch, &header, timeout).await?;
        return Ok(());
    }
    let Some(addr) = leader.and_then(|l| node.members.addr(l)) else {
        return Err(NodeError::Unavailable(format!("{topic}/{partition} has no known leader")));
    };
    let mut client = node.pool.replog_client(&addr).map_err(NodeError::Unavailable)?;
    let mut req = Request::new(ProduceRequest {
        topic: topic.to_string(),
        partition,
        batch,
        acks: Acks::All as i32,
        timeout_ms: timeout.as_millis() as u32,
    });
    req.set_timeout(timeout + Duration::from_secs(1));
    client.produce(req).await.map(|_| ()).map_err(|s| NodeError::from_remote(&addr, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(key: usize, value: usize, headers: usize) -> Record {
        let mut r = Record::new(Some(Bytes::from(vec![b'k'; key])), Bytes::from(vec![b'v'; value]), 1);
        r.headers.push(("app".into(), Bytes::from(vec![b'h'; headers])));
        r.headers.push(("replog-dlq-offset".into(), Bytes::from_static(b"7")));
        r
    }

    #[test]
    fn a_letter_that_fits_is_kept_whole() {
        let r = letter(10, 100, 10);
        assert_eq!(fit_record(r.clone(), 1 << 20), r);
    }

    #[test]
    fn an_oversized_letter_loses_its_value_then_its_key_and_own_headers() {
        let r = fit_record(letter(10, 2000, 10), 1000);
        assert!(r.encoded_len() <= 1000 && r.value.is_empty() && r.key.is_some());
        assert!(r.headers.iter().any(|(k, v)| k == "replog-dlq-dropped" && v.starts_with(b"value (2000 bytes)")));
        let r = fit_record(letter(900, 2000, 900), 1000);
        assert!(r.encoded_len() <= 1000 && r.value.is_empty() && r.key.is_none(), "{}", r.encoded_len());
        assert_eq!(r.headers.iter().filter(|(k, _)| k == "replog-dlq-dropped").count(), 1);
        assert!(r.headers.iter().any(|(k, _)| k == "replog-dlq-offset"));
        assert!(!r.headers.iter().any(|(k, _)| k == "app"));
    }

    #[test]
    fn letters_are_split_into_batches_within_the_limit_in_order() {
        let letters: Vec<Record> = (0..30).map(|i| letter(1, 100 + i * 40, 1)).collect();
        let limit = 2000;
        let b = batches(letters.clone(), limit);
        assert!(b.len() > 1);
        for one in &b {
            assert!(batch::encode(one).len() <= limit, "a batch of {} bytes", batch::encode(one).len());
        }
        assert_eq!(b.concat(), letters);
    }
}
