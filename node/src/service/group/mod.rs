//! Consumer-group RPCs, one file each. Every group lives in one partition
//! of `__consumer_offsets` (see [`crate::coordinator`]); these handlers run
//! on that partition's leader and answer NOT_LEADER (with the leader) on any
//! other node.

pub mod commit_offsets;
pub mod delete_group;
pub mod describe_group;
pub mod fetch_offsets;
pub mod find_coordinator;
pub mod floors;
pub mod heartbeat;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod reset_offsets;

use std::sync::Arc;

use replog_proto::pb;
use replog_raft_store::groups::{Assignment, MAX_GROUP_NAME, OffsetCommit, Strategy};

use crate::coordinator::{GROUPS_TOPIC, partition_of};
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::partition::Partition;

/// Group names: 1–249 printable characters without control characters.
pub fn validate_group(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_GROUP_NAME || name.chars().any(char::is_control) {
        return Err(NodeError::InvalidRequest(format!(
            "invalid group name {name:?}: 1 to {MAX_GROUP_NAME} bytes without control characters"
        )));
    }
    Ok(())
}

/// A committed offset as the wire carries it.
pub fn committed_pb(topic: String, partition: u32, c: replog_raft_store::groups::Committed) -> pb::CommittedOffset {
    pb::CommittedOffset {
        topic,
        partition,
        offset: c.offset,
        metadata: c.metadata,
        commit_timestamp_ms: c.commit_timestamp_ms,
    }
}

/// `__consumer_offsets` partition `partition` when this node leads it;
/// `None` while the topic does not exist (no group was ever used).
pub fn led_groups_partition(node: &Node, partition: u32) -> Result<Option<Arc<Partition>>> {
    if !node.meta().topics.contains_key(GROUPS_TOPIC) {
        return Ok(None);
    }
    let part = node.local_partition(GROUPS_TOPIC, partition)?;
    if !part.is_leader() {
        return Err(node.members.not_leader(part.name().to_string(), part.leader()));
    }
    Ok(Some(part))
}

/// The `__consumer_offsets` partition that keeps `group`, if the topic exists.
pub fn coordinator_partition(node: &Node, group: &str) -> Option<u32> {
    let meta = node.meta();
    let t = meta.topics.get(GROUPS_TOPIC)?;
    Some(partition_of(group, t.partitions.len() as u32))
}

/// The partition coordinating `group`, hosted and led here.
pub fn coordinator(node: &Node, group: &str) -> Result<Arc<Partition>> {
    validate_group(group)?;
    let p = coordinator_partition(node, group)
        .ok_or_else(|| NodeError::UnknownGroup(format!("group {group:?} does not exist (no group was ever used)")))?;
    let part = node.local_partition(GROUPS_TOPIC, p)?;
    if !part.is_leader() {
        return Err(node.members.not_leader(format!("the coordinator of group {group:?}"), part.leader()));
    }
    Ok(part)
}

pub fn strategy_from(s: i32) -> Result<Strategy> {
    match pb::AssignmentStrategy::try_from(s) {
        Ok(pb::AssignmentStrategy::Uniform) => Ok(Strategy::Uniform),
        Ok(pb::AssignmentStrategy::Range) => Ok(Strategy::Range),
        Ok(pb::AssignmentStrategy::RoundRobin) => Ok(Strategy::RoundRobin),
        Err(_) => Err(NodeError::InvalidRequest(format!("unknown assignment strategy {s}"))),
    }
}

pub fn strategy_to(s: Strategy) -> i32 {
    match s {
        Strategy::Uniform => pb::AssignmentStrategy::Uniform as i32,
        Strategy::Range => pb::AssignmentStrategy::Range as i32,
        Strategy::RoundRobin => pb::AssignmentStrategy::RoundRobin as i32,
    }
}

pub fn to_pb(a: &Assignment) -> Vec<pb::TopicPartitions> {
    a.iter().map(|(t, ps)| pb::TopicPartitions { topic: t.clone(), partitions: ps.iter().copied().collect() }).collect()
}

pub fn from_pb(tps: &[pb::TopicPartitions]) -> Assignment {
    let mut a = Assignment::new();
    for tp in tps {
        a.entry(tp.topic.clone()).or_default().extend(tp.partitions.iter().copied());
    }
    a
}

pub fn commits_from_pb(offsets: Vec<pb::OffsetCommit>) -> Vec<OffsetCommit> {
    offsets
        .into_iter()
        .map(|o| OffsetCommit { topic: o.topic, partition: o.partition, offset: o.offset, metadata: o.metadata })
        .collect()
}

/// How often members should heartbeat for a session timeout.
pub fn heartbeat_interval_ms(session_timeout_ms: u32) -> u32 {
    (session_timeout_ms / 5).clamp(100, 3_000)
}
