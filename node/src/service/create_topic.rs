//! CreateTopic: validated anywhere, placed and committed by the controller
//! leader, answered once every partition has a leader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use replog_proto::pb::{CreateTopicRequest, CreateTopicResponse};
use replog_raft_store::NodeId;
use replog_raft_store::controller::{ClusterMeta, ControllerCmd, ControllerResult};
use tracing::{info, instrument};

use super::metadata::topic_metadata;
use crate::coordinator::GROUPS_TOPIC;
use crate::error::{NodeError, Result};
use crate::node::Node;

/// How long a create waits for every new partition to elect a leader.
const LEADERS_WAIT: Duration = Duration::from_secs(15);
const MAX_NAME_LEN: usize = 249;

/// Topic names: 1–249 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| NodeError::InvalidTopicName { name: name.to_string(), reason };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("longer than 249 characters"));
    }
    if name == "." || name == ".." {
        return Err(bad("'.' and '..' are reserved"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return Err(bad("only ASCII letters, digits, '.', '_' and '-' are allowed"));
    }
    Ok(())
}

/// Checks a create request where it arrives and fills in the defaults of
/// the node it arrived at.
pub fn prepare(node: &Node, req: &mut CreateTopicRequest) -> Result<()> {
    validate_name(&req.name)?;
    // Names starting with `__` belong to replog. The groups topic itself
    // comes through here when a node creates it on a group's first use.
    let internal = req.name == GROUPS_TOPIC && req.partitions == node.config.group_partitions;
    if req.name.starts_with("__") && !internal {
        return Err(NodeError::InvalidTopicName {
            name: req.name.clone(),
            reason: "names starting with '__' are reserved",
        });
    }
    if req.partitions == 0 || req.partitions > node.config.max_partitions {
        return Err(NodeError::InvalidPartitions(format!(
            "{} (must be 1..={})",
            req.partitions, node.config.max_partitions
        )));
    }
    if req.replication_factor == 0 {
        req.replication_factor = node.config.default_replication_factor;
    }
    crate::topic_config::apply(&Default::default(), &req.configs, &[])?;
    Ok(())
}

/// Places and commits the topic; runs on the controller leader.
#[instrument(skip_all, fields(topic = %req.name, partitions = req.partitions, rf = req.replication_factor))]
pub async fn handle(node: Arc<Node>, req: CreateTopicRequest) -> Result<CreateTopicResponse> {
    node.controller.ensure_registered().await?;
    let meta = node.meta();
    if meta.topics.contains_key(&req.name) {
        return Err(NodeError::TopicAlreadyExists(req.name));
    }
    let rf = req.replication_factor;
    let mut live = node.live_nodes();
    if rf as usize > live.len() {
        // The prober may not have heard from everyone yet (fresh start).
        node.probe_round().await;
        live = node.live_nodes();
    }
    if rf as usize > live.len() {
        return Err(NodeError::InvalidReplicationFactor {
            requested: rf,
            reason: format!("only {} nodes are alive ({live:?})", live.len()),
        });
    }
    let replicas = place(&meta, &live, req.partitions, rf);
    let config = crate::topic_config::apply(&Default::default(), &req.configs, &[])?;
    crate::topic_config::check_subject(&meta, &config)?;
    let cmd =
        ControllerCmd::CreateTopic { name: req.name.clone(), replicas, created_ms: replog_proto::now_ms(), config };
    let topic = match node.controller.propose(cmd).await? {
        ControllerResult::TopicCreated(t) => t,
        ControllerResult::TopicExists(n) => return Err(NodeError::TopicAlreadyExists(n)),
        other => return Err(NodeError::Internal(format!("create answered {other:?}"))),
    };
    info!(topic = %topic.name, id = topic.id, "created topic");
    // Answer once producers can use every partition.
    let deadline = Instant::now() + LEADERS_WAIT;
    loop {
        let md = topic_metadata(&node, &topic);
        if md.partitions.iter().all(|p| p.leader != 0) || Instant::now() > deadline {
            return Ok(CreateTopicResponse { topic: Some(md) });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Chooses replica sets: each partition takes `rf` consecutive live nodes
/// starting from a rotating position, so replicas spread evenly and the
/// first replica (the preferred leader) differs from partition to partition.
/// The rotation starts where the cluster's existing load is lightest.
pub fn place(meta: &ClusterMeta, live: &[NodeId], partitions: u32, rf: u32) -> Vec<Vec<NodeId>> {
    let mut nodes = live.to_vec();
    nodes.sort_unstable();
    let mut leaders: BTreeMap<NodeId, usize> = nodes.iter().map(|n| (*n, 0)).collect();
    for t in meta.topics.values() {
        for p in &t.partitions {
            if let Some(c) = p.replicas.first().and_then(|l| leaders.get_mut(l)) {
                *c += 1;
            }
        }
    }
    let start = nodes.iter().enumerate().min_by_key(|(_, n)| leaders[n]).map_or(0, |(i, _)| i);
    (0..partitions as usize).map(|p| (0..rf as usize).map(|r| nodes[(start + p + r) % nodes.len()]).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["a", "orders.v1", "A_b-c", &"x".repeat(249)] {
            validate_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a b", "ü", "a/b", &"x".repeat(250)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn placement_spreads_replicas_and_leaders_evenly() {
        let meta = ClusterMeta::default();
        let p = place(&meta, &[3, 1, 2], 6, 3);
        assert_eq!(p.len(), 6);
        for r in &p {
            let mut s = r.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), 3, "replicas must be distinct: {r:?}");
        }
        let mut leaders = BTreeMap::new();
        for r in &p {
            *leaders.entry(r[0]).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    }
}
