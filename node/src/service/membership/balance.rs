//! BalanceCluster: a plan that brings every eligible node (live, not being
//! decommissioned) within one of an even share of replicas, and then of
//! preferred leaders (first replicas; the leader balancer moves leadership
//! to them), in as few changes as it can find. Replica changes become
//! moves; a change of the preferred leader alone applies at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use replog_proto::pb::{BalanceClusterRequest, BalanceClusterResponse};
use replog_raft_store::controller::{ClusterMeta, ControllerCmd};
use replog_raft_store::{GroupId, NodeId};
use tracing::info;

use super::{describe_move, propose};
use crate::error::Result;
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: BalanceClusterRequest) -> Result<BalanceClusterResponse> {
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
    // Replicas: from the most to the least loaded node, one at a time.
    for _ in 0..bound {
        let mut load: BTreeMap<NodeId, usize> = eligible.iter().map(|n| (*n, 0)).collect();
        for n in sets.values().chain(fixed.iter()).flatten() {
            if let Some(c) = load.get_mut(n) {
                *c += 1;
            }
        }
        let (&most, &hi) = load.iter().max_by_key(|(n, c)| (**c, std::cmp::Reverse(**n))).expect("eligible");
        let (&least, &lo) = load.iter().min_by_key(|(n, c)| (**c, **n)).expect("eligible");
        if hi <= lo + 1 {
            break;
        }
        // Prefer a partition where the loaded node is not the preferred
        // leader: leadership then needs no moving.
        let pick = sets
            .iter()
            .filter(|(_, r)| r.contains(&most) && !r.contains(&least))
            .min_by_key(|(g, r)| (r.first() == Some(&most), **g))
            .map(|(g, _)| *g);
        let Some(g) = pick else { break };
        for r in sets.get_mut(&g).expect("picked").iter_mut() {
            if *r == most {
                *r = least;
            }
        }
    }
    // Preferred leaders: put a less-leading replica first.
    for _ in 0..bound {
        let mut leaders: BTreeMap<NodeId, usize> = eligible.iter().map(|n| (*n, 0)).collect();
        for n in sets.values().chain(fixed.iter()).filter_map(|r| r.first()) {
            if let Some(c) = leaders.get_mut(n) {
                *c += 1;
            }
        }
        let (&most, &hi) = leaders.iter().max_by_key(|(n, c)| (**c, std::cmp::Reverse(**n))).expect("eligible");
        let (_, &lo) = leaders.iter().min_by_key(|(n, c)| (**c, **n)).expect("eligible");
        if hi <= lo + 1 {
            break;
        }
        let pick = sets.iter().filter(|(_, r)| r.first() == Some(&most)).find_map(|(g, r)| {
            let to = r.iter().filter(|n| leaders.get(n).is_some_and(|c| c + 1 < hi)).min_by_key(|n| leaders[n])?;
            Some((*g, *to))
        });
        let Some((g, to)) = pick else { break };
        let r = sets.get_mut(&g).expect("picked");
        let at = r.iter().position(|n| *n == to).expect("a replica");
        r.swap(0, at);
    }
    sets.into_iter().filter(|(g, r)| original[g] != *r).map(|(g, r)| (g, original[&g].clone(), r)).collect()
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
}
