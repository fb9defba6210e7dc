//! BalanceCluster: a plan that spreads each partition over as many racks
//! as it can span (with `--rack` labels), then brings every eligible node
//! (live, not being decommissioned) within one of an even share of
//! replicas — never moving a replica onto fewer racks — and then of
//! preferred leaders (first replicas; the leader balancer moves leadership
//! to them), in as few changes as it can find. Replica changes become
//! moves; a change of the preferred leader alone applies at once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use replog_proto::pb::{BalanceClusterRequest, BalanceClusterResponse};
use replog_raft_store::controller::{ClusterMeta, ControllerCmd};
use replog_raft_store::{GroupId, NodeId};
use tracing::info;

use super::{describe_move, propose};
use crate::error::Result;
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: BalanceClusterRequest) -> Result<BalanceClusterResponse> {
    // Liveness as of now: a node back from a restart counts at once.
    node.probe_round().await;
    let _planning = node.planning.lock().await;
    let meta = node.meta();
    let eligible: Vec<NodeId> = node.live_nodes().into_iter().filter(|n| !meta.decommissioning.contains(n)).collect();
    let changes = plan(&meta, &eligible);
    let moves = changes.iter().map(|(g, from, to)| describe_move(&node, &meta, *g, from, to)).collect();
    if !req.dry_run {
        for (group, _, to) in &changes {
            propose(&node, ControllerCmd::StartMove { group: *group, replicas: to.clone() }).await?;
        }
        if !changes.is_empty() {
            info!(changes = changes.len(), "balancing: moves started");
        }
    }
    Ok(BalanceClusterResponse { moves })
}

/// `(group, from, to)` for every partition whose replica set or preferred
/// leader the plan changes. Partitions already moving are left alone.
pub fn plan(meta: &ClusterMeta, eligible: &[NodeId]) -> Vec<(GroupId, Vec<NodeId>, Vec<NodeId>)> {
    if eligible.is_empty() {
        return Vec::new();
    }
    let mut sets: BTreeMap<GroupId, Vec<NodeId>> = BTreeMap::new();
    let mut fixed: Vec<Vec<NodeId>> = Vec::new();
    for p in meta.topics.values().flat_map(|t| t.partitions.iter()) {
        match meta.moves.get(&p.group) {
            Some(to) => fixed.push(to.clone()),
            None => {
                sets.insert(p.group, p.replicas.clone());
            }
        }
    }
    let original = sets.clone();
    let bound = sets.values().map(Vec::len).sum::<usize>() + sets.len() + 1;
    // Racks first: a partition on fewer racks than it could span gets a
    // replica that shares a rack replaced by the least loaded node of a
    // rack it lacks (a no-op without rack labels).
    let racks = meta.rack_count(eligible);
    let rack = |n: &NodeId| meta.racks.get(n).cloned().ok_or(*n);
    for _ in 0..bound {
        let load = replica_load(eligible, sets.values().chain(fixed.iter()));
        let fix = sets.iter().find_map(|(g, r)| {
            if meta.rack_count(r) >= racks.min(r.len()) {
                return None;
            }
            // The last replica whose rack another one shares.
            let out = *r.iter().rev().find(|n| r.iter().filter(|m| rack(m) == rack(n)).count() > 1)?;
            let to =
                eligible.iter().filter(|n| !r.iter().any(|m| rack(m) == rack(n))).min_by_key(|n| (load[*n], **n))?;
            Some((*g, out, *to))
        });
        let Some((g, from, to)) = fix else { break };
        for r in sets.get_mut(&g).expect("picked").iter_mut() {
            if *r == from {
                *r = to;
            }
        }
    }
    // Replicas: one at a time from a node to one holding two fewer, the
    // widest gap first.
    for _ in 0..bound {
        let load = replica_load(eligible, sets.values().chain(fixed.iter()));
        let mut by_load: Vec<NodeId> = load.keys().copied().collect();
        by_load.sort_by_key(|n| (std::cmp::Reverse(load[n]), *n));
        let step = by_load.iter().find_map(|a| {
            by_load.iter().rev().take_while(|b| load[*b] + 2 <= load[a]).find_map(|b| {
                // Prefer a partition `a` does not lead: leadership then stays.
                sets.iter()
                    .filter(|(_, r)| r.contains(a) && !r.contains(b))
                    // Never onto fewer racks.
                    .filter(|(_, r)| {
                        let after: Vec<NodeId> = r.iter().map(|n| if n == a { *b } else { *n }).collect();
                        meta.rack_count(&after) >= meta.rack_count(r)
                    })
                    .min_by_key(|(g, r)| (r.first() == Some(a), **g))
                    .map(|(g, _)| (*g, *a, *b))
            })
        });
        let Some((g, from, to)) = step else { break };
        for r in sets.get_mut(&g).expect("picked").iter_mut() {
            if *r == from {
                *r = to;
            }
        }
    }
    // Preferred leaders: shift one leadership along a path of partitions
    // (each led by a node, the next node one of its replicas) from a node
    // with the most to one with at least two fewer; the nodes between keep
    // their count.
    for _ in 0..bound {
        let mut leaders: BTreeMap<NodeId, usize> = eligible.iter().map(|n| (*n, 0)).collect();
        for n in sets.values().chain(fixed.iter()).filter_map(|r| r.first()) {
            if let Some(c) = leaders.get_mut(n) {
                *c += 1;
            }
        }
        let hi = *leaders.values().max().expect("eligible");
        let mut queue: VecDeque<NodeId> = leaders.iter().filter(|(_, c)| **c == hi).map(|(n, _)| *n).collect();
        let mut seen: BTreeSet<NodeId> = queue.iter().copied().collect();
        let mut via: BTreeMap<NodeId, (GroupId, NodeId)> = BTreeMap::new();
        let mut found = None;
        'search: while let Some(u) = queue.pop_front() {
            for (g, r) in sets.iter().filter(|(_, r)| r.first() == Some(&u)) {
                for v in r.iter().skip(1).filter(|v| leaders.contains_key(v)) {
                    if !seen.insert(*v) {
                        continue;
                    }
                    via.insert(*v, (*g, u));
                    if leaders[v] + 2 <= hi {
                        found = Some(*v);
                        break 'search;
                    }
                    queue.push_back(*v);
                }
            }
        }
        let Some(mut v) = found else { break };
        while let Some((g, u)) = via.get(&v).copied() {
            let r = sets.get_mut(&g).expect("on the path");
            let at = r.iter().position(|n| *n == v).expect("a replica");
            r.swap(0, at);
            v = u;
        }
    }
    sets.into_iter().filter(|(g, r)| original[g] != *r).map(|(g, r)| (g, original[&g].clone(), r)).collect()
}

/// Replicas per eligible node over `sets`.
fn replica_load<'a>(eligible: &[NodeId], sets: impl Iterator<Item = &'a Vec<NodeId>>) -> BTreeMap<NodeId, usize> {
    let mut load: BTreeMap<NodeId, usize> = eligible.iter().map(|n| (*n, 0)).collect();
    for n in sets.flatten() {
        if let Some(c) = load.get_mut(n) {
            *c += 1;
        }
    }
    load
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_raft_store::controller::TopicConfig;

    fn apply(meta: &ClusterMeta, plan: &[(GroupId, Vec<NodeId>, Vec<NodeId>)]) -> ClusterMeta {
        let mut m = meta.clone();
        for (g, _, to) in plan {
            m.apply(ControllerCmd::StartMove { group: *g, replicas: to.clone() });
            m.apply(ControllerCmd::FinishMove { group: *g, replicas: to.clone() });
        }
        m
    }

    fn counts(m: &ClusterMeta, nodes: &[NodeId]) -> (Vec<usize>, Vec<usize>) {
        let parts: Vec<_> = m.topics.values().flat_map(|t| t.partitions.iter()).collect();
        let replicas = nodes.iter().map(|n| parts.iter().filter(|p| p.replicas.contains(n)).count()).collect();
        let leaders = nodes.iter().map(|n| parts.iter().filter(|p| p.replicas[0] == *n).count()).collect();
        (replicas, leaders)
    }

    fn within_one(v: &[usize]) -> bool {
        v.iter().max().unwrap() - v.iter().min().unwrap() <= 1
    }

    #[test]
    fn given_a_grown_cluster_when_balanced_then_replicas_and_leaders_are_within_one_of_even() {
        // Seeded: a few shapes of topics on 3 nodes, then 2 more join.
        for (parts, rf) in [(6u32, 3u32), (16, 3), (7, 2), (1, 3), (12, 1)] {
            let mut m = ClusterMeta::default();
            for id in 1..=5 {
                m.apply(ControllerCmd::RegisterNode { id, addr: format!("127.0.0.1:{}", 7000 + id) });
            }
            let replicas = crate::service::create_topic::place(&m, &[1, 2, 3], parts, rf);
            m.apply(ControllerCmd::CreateTopic {
                name: "t".into(),
                replicas,
                created_ms: 0,
                config: TopicConfig::default(),
            });
            let nodes = [1, 2, 3, 4, 5];
            let p = plan(&m, &nodes);
            let after = apply(&m, &p);
            let (r, l) = counts(&after, &nodes);
            assert!(within_one(&r), "{parts}x{rf}: replicas {r:?}");
            assert!(within_one(&l), "{parts}x{rf}: leaders {l:?}");
            for t in after.topics.values() {
                for p in &t.partitions {
                    let mut s = p.replicas.clone();
                    s.sort();
                    s.dedup();
                    assert_eq!(s.len(), rf as usize, "distinct replicas");
                }
            }
            assert!(plan(&after, &nodes).is_empty(), "{parts}x{rf}: a balanced cluster needs nothing");
        }
    }

    #[test]
    fn given_racks_when_balanced_then_every_partition_spans_as_many_racks_as_it_can() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = std::env::var("BALANCE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
        eprintln!("BALANCE_SEED={seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for round in 0..200 {
            let first = rng.gen_range(2..=4u64);
            let grown = rng.gen_range(first..=7u64);
            let racks = rng.gen_range(1..=3u64);
            let mut m = ClusterMeta::default();
            for id in 1..=grown {
                m.apply(ControllerCmd::RegisterNode { id, addr: format!("127.0.0.1:{}", 7000 + id) });
            }
            // The first nodes' racks; the others' once they join.
            for id in 1..=first {
                m.apply(ControllerCmd::SetNodeRack { id, rack: Some(format!("r{}", id % racks)) });
            }
            let initial: Vec<NodeId> = (1..=first).collect();
            let rf = rng.gen_range(1..=first.min(3)) as u32;
            let parts = rng.gen_range(1..=12);
            let replicas = crate::service::create_topic::place(&m, &initial, parts, rf);
            m.apply(ControllerCmd::CreateTopic {
                name: "t".into(),
                replicas,
                created_ms: 0,
                config: TopicConfig::default(),
            });
            for id in first + 1..=grown {
                m.apply(ControllerCmd::SetNodeRack { id, rack: Some(format!("r{}", rng.gen_range(0..racks))) });
            }
            let nodes: Vec<NodeId> = (1..=grown).collect();
            let want = m.rack_count(&nodes).min(rf as usize);
            let before: Vec<usize> = m.topics["t"].partitions.iter().map(|p| m.rack_count(&p.replicas)).collect();
            let after = apply(&m, &plan(&m, &nodes));
            for (p, b) in after.topics["t"].partitions.iter().zip(before) {
                let n = after.rack_count(&p.replicas);
                assert!(
                    n >= b && n == want,
                    "seed {seed} round {round}: {:?} spans {n} racks, want {want}",
                    p.replicas
                );
            }
        }
    }

    #[test]
    fn given_random_clusters_when_balanced_then_every_node_is_within_one_of_even() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = std::env::var("BALANCE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
        eprintln!("BALANCE_SEED={seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for round in 0..200 {
            let first = rng.gen_range(1..=4u64);
            let grown = rng.gen_range(first..=7u64);
            let mut m = ClusterMeta::default();
            for id in 1..=grown {
                m.apply(ControllerCmd::RegisterNode { id, addr: format!("127.0.0.1:{}", 7000 + id) });
            }
            let initial: Vec<NodeId> = (1..=first).collect();
            // One replication factor per cluster: with mixed ones, leaders
            // of factor-1 partitions can only move with their replica.
            let rf = rng.gen_range(1..=first.min(3)) as u32;
            for t in 0..rng.gen_range(1..=3) {
                let parts = rng.gen_range(1..=20);
                let replicas = crate::service::create_topic::place(&m, &initial, parts, rf);
                m.apply(ControllerCmd::CreateTopic {
                    name: format!("t{t}"),
                    replicas,
                    created_ms: 0,
                    config: TopicConfig::default(),
                });
            }
            let nodes: Vec<NodeId> = (1..=grown).collect();
            let after = apply(&m, &plan(&m, &nodes));
            let (r, l) = counts(&after, &nodes);
            assert!(within_one(&r) && within_one(&l), "seed {seed} round {round}: replicas {r:?}, leaders {l:?}");
        }
    }
}
