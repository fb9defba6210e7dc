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
    crate::capacity::check(&node, &meta, replicas.iter().flatten().copied()).await?;
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
///
/// With rack labels (`ClusterMeta::racks`), the rotation runs over the
/// nodes taken from each rack in turn, and each further replica is the
/// node of a rack the partition does not use yet (while there is one) that
/// holds the fewest replicas: racks first, then load.
pub fn place(meta: &ClusterMeta, live: &[NodeId], partitions: u32, rf: u32) -> Vec<Vec<NodeId>> {
    let mut nodes = live.to_vec();
    nodes.sort_unstable();
    let racked = nodes.iter().any(|n| meta.racks.contains_key(n));
    if racked {
        nodes = by_rack_in_turn(meta, &nodes);
    }
    let mut leaders: BTreeMap<NodeId, usize> = nodes.iter().map(|n| (*n, 0)).collect();
    for t in meta.topics.values() {
        for p in &t.partitions {
            if let Some(c) = p.replicas.first().and_then(|l| leaders.get_mut(l)) {
                *c += 1;
            }
        }
    }
    let start = nodes.iter().enumerate().min_by_key(|(_, n)| leaders[n]).map_or(0, |(i, _)| i);
    if !racked {
        return (0..partitions as usize)
            .map(|p| (0..rf as usize).map(|r| nodes[(start + p + r) % nodes.len()]).collect())
            .collect();
    }
    let mut load: BTreeMap<NodeId, usize> = nodes.iter().map(|n| (*n, 0)).collect();
    for n in meta.topics.values().flat_map(|t| t.partitions.iter()).flat_map(|p| &p.replicas) {
        if let Some(c) = load.get_mut(n) {
            *c += 1;
        }
    }
    let rack = |n: &NodeId| meta.racks.get(n).cloned().ok_or(*n);
    (0..partitions as usize)
        .map(|p| {
            let first = (start + p) % nodes.len();
            let mut set = vec![nodes[first]];
            while set.len() < (rf as usize).min(nodes.len()) {
                let used: Vec<_> = set.iter().map(rack).collect();
                let next = (1..nodes.len())
                    .map(|k| (k, nodes[(first + k) % nodes.len()]))
                    .filter(|(_, n)| !set.contains(n))
                    .min_by_key(|(k, n)| (used.contains(&rack(n)), load[n], *k))
                    .map(|(_, n)| n)
                    .expect("fewer replicas than nodes");
                set.push(next);
            }
            for n in &set {
                *load.get_mut(n).expect("a live node") += 1;
            }
            set
        })
        .collect()
}

/// `nodes` ordered one from each rack in turn (racks by name, nodes by id
/// within one; unlabelled nodes last, each a rack of its own).
fn by_rack_in_turn(meta: &ClusterMeta, nodes: &[NodeId]) -> Vec<NodeId> {
    let mut racks: BTreeMap<Result<&str, NodeId>, Vec<NodeId>> = BTreeMap::new();
    for n in nodes {
        racks.entry(meta.racks.get(n).map(String::as_str).ok_or(*n)).or_default().push(*n);
    }
    let mut out = Vec::with_capacity(nodes.len());
    for i in 0.. {
        let before = out.len();
        out.extend(racks.values().filter_map(|r| r.get(i)));
        if out.len() == before {
            break;
        }
    }
    out
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

    #[test]
    fn given_racks_placement_spreads_each_partition_over_them_first() {
        let mut meta = ClusterMeta::default();
        for (id, rack) in [(1, "a"), (2, "b"), (3, "a"), (4, "b"), (5, "a")] {
            meta.apply(ControllerCmd::RegisterNode { id, addr: format!("127.0.0.1:{}", 7000 + id) });
            meta.apply(ControllerCmd::SetNodeRack { id, rack: Some(rack.into()) });
        }
        for (nodes, parts, rf) in [(vec![1, 2, 3], 6, 2), (vec![1, 2, 3, 4], 8, 2), (vec![1, 2, 3, 4, 5], 10, 3)] {
            let p = place(&meta, &nodes, parts, rf);
            for r in &p {
                assert_eq!(meta.rack_count(r), 2, "{nodes:?}: {r:?} spans both racks");
                let mut s = r.clone();
                s.sort();
                s.dedup();
                assert_eq!(s.len(), rf as usize, "distinct replicas: {r:?}");
            }
            let mut leaders = BTreeMap::new();
            for r in &p {
                *leaders.entry(r[0]).or_insert(0) += 1;
            }
            let v: Vec<usize> = leaders.values().copied().collect();
            assert!(v.iter().max().unwrap() - v.iter().min().unwrap() <= 1, "{nodes:?}: leaders {leaders:?}");
        }
    }
}
