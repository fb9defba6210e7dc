//! Queue-group RPCs, one file each. A queue group's state for a partition
//! lives in that partition's own Raft group ([`replog_raft_store::queues`]),
//! so these handlers run on the partition's leader and answer NOT_LEADER
//! (with the leader) on any other node. `dead_letter` writes events to the
//! dead-letter topic before they are settled.

pub mod ack;
pub mod dead_letter;
pub mod describe;
pub mod receive;
pub mod reject;
pub mod release;
pub mod renew;
pub mod reset;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use replog_proto::batch::{self, Record};
use replog_proto::pb;
use replog_raft_store::queues::{
    DEFAULT_MAX_DELIVERIES, MAX_CONSUMER_ID, MAX_MAX_DELIVERIES, MAX_QUEUE_NAME, QueueSettings,
};

use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::partition::{Partition, ReadLimits};

/// Lock duration when a request gives none.
pub const DEFAULT_LOCK_MS: u32 = 30_000;
/// Bounds of a lock duration.
pub const MIN_LOCK_MS: u32 = 100;
pub const MAX_LOCK_MS: u32 = 3_600_000;
/// Most events one receive may lock.
pub const MAX_RECEIVE: u32 = 1000;

fn validate_id(what: &str, id: &str, max: usize) -> Result<()> {
    if id.is_empty() || id.len() > max || id.chars().any(char::is_control) {
        return Err(NodeError::InvalidRequest(format!(
            "invalid {what} {id:?}: 1 to {max} bytes without control characters"
        )));
    }
    Ok(())
}

/// The partition `topic`/`partition`, hosted and led here, after checking
/// the group and consumer names.
pub fn leader_partition(
    node: &Node,
    topic: &str,
    partition: u32,
    group: &str,
    consumer: Option<&str>,
) -> Result<Arc<Partition>> {
    validate_id("queue group name", group, MAX_QUEUE_NAME)?;
    if let Some(c) = consumer {
        validate_id("consumer id", c, MAX_CONSUMER_ID)?;
    }
    if topic.starts_with("__") {
        return Err(NodeError::InvalidRequest(format!("{topic} is an internal topic: it has no queue groups")));
    }
    let part = node.local_partition(topic, partition)?;
    if !part.is_leader() {
        return Err(node.members.not_leader(format!("{topic}/{partition}"), part.leader()));
    }
    Ok(part)
}

/// A lock duration from a request (0: the default).
pub fn lock_ms(requested: u32) -> Result<u32> {
    match requested {
        0 => Ok(DEFAULT_LOCK_MS),
        ms if (MIN_LOCK_MS..=MAX_LOCK_MS).contains(&ms) => Ok(ms),
        ms => Err(NodeError::InvalidRequest(format!("lock_ms {ms} is outside {MIN_LOCK_MS}..={MAX_LOCK_MS}"))),
    }
}

/// The dead-letter topic of `topic` unless one is named.
pub fn default_dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Settings from a receive (0 / empty: defaults).
pub fn settings(topic: &str, max_deliveries: u32, dead_letter_topic: &str) -> Result<QueueSettings> {
    let max_deliveries = match max_deliveries {
        0 => DEFAULT_MAX_DELIVERIES,
        n if n <= MAX_MAX_DELIVERIES => n,
        n => {
            return Err(NodeError::InvalidRequest(format!("max_deliveries {n} is outside 1..={MAX_MAX_DELIVERIES}")));
        }
    };
    let dead_letter_topic = match dead_letter_topic {
        "" => default_dead_letter_topic(topic),
        t => t.to_string(),
    };
    super::create_topic::validate_name(&dead_letter_topic)?;
    if dead_letter_topic == topic {
        return Err(NodeError::InvalidRequest(format!("the dead-letter topic of {topic} cannot be {topic} itself")));
    }
    if dead_letter_topic.starts_with("__") {
        return Err(NodeError::InvalidRequest(format!(
            "{dead_letter_topic} is reserved; pick another dead-letter topic"
        )));
    }
    Ok(QueueSettings { max_deliveries, dead_letter_topic })
}

/// The records at `offsets` (sorted) that the partition still holds, read
/// on this replica.
pub async fn records_at(node: &Node, part: &Partition, offsets: &[u64]) -> Result<BTreeMap<u64, Record>> {
    let limits = ReadLimits {
        max_bytes: 1 << 20,
        max_records: usize::MAX,
        max_wait: Duration::ZERO,
        min_bytes: 0,
        any_replica: true,
    };
    let max_uncompressed = node.config.max_batch_bytes;
    let mut out = BTreeMap::new();
    let log_start = part.offsets().log_start_offset;
    let mut i = offsets.partition_point(|o| *o < log_start);
    while i < offsets.len() {
        let read = part.read(offsets[i], limits).await?;
        let Some(last) = read.batches.last() else { break };
        let end = last.base_offset + last.record_count as u64;
        for b in &read.batches {
            let (_, records) = batch::decode_with(&b.batch, max_uncompressed)
                .map_err(|e| NodeError::Internal(format!("a stored batch does not decode: {e}")))?;
            for (k, r) in records.into_iter().enumerate() {
                let o = b.base_offset + k as u64;
                if offsets[i..].binary_search(&o).is_ok() {
                    out.insert(o, r);
                }
            }
        }
        while i < offsets.len() && offsets[i] < end {
            i += 1;
        }
    }
    Ok(out)
}

pub fn message(offset: u64, r: Record, delivery_count: u32, lock_deadline_ms: i64) -> pb::QueueMessage {
    pb::QueueMessage {
        offset,
        key: r.key,
        value: r.value,
        timestamp_ms: r.timestamp_ms,
        headers: r.headers.into_iter().map(|(name, value)| pb::RecordHeader { name, value }).collect(),
        delivery_count,
        lock_deadline_ms,
    }
}
