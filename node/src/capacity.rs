//! How many partition replicas a node can hold, and the check that keeps
//! new topics and moves within it.
//!
//! Each replica holds one open file, its active log segment (everything
//! else it opens, it closes again). A node that runs out of descriptors
//! cannot open its next segment and stops, so the limit is set before
//! that: by default what the open-file limit allows beyond a reserve for
//! connections, the sled database, reads of sealed segments and snapshots.
//! The node raises its soft open-file limit to the hard one at start, as
//! the limit it can reach without privileges. `max_replicas` sets the limit
//! outright (for memory, say: see docs/operations.md for the figures).
//!
//! The controller leader refuses with REPLICA_LIMIT a create or a move that
//! would put more replicas on some node than its limit, as that node last
//! reported it; a node given more replicas than its limit anyway (its
//! limit was lowered on restart, or a report was not in yet) opens only
//! that many and reports the rest in /ready, and keeps running.

use std::collections::BTreeMap;

use replog_raft_store::NodeId;
use replog_raft_store::controller::ClusterMeta;
use tracing::{info, warn};

use crate::error::{NodeError, Result};
use crate::node::Node;

/// Descriptors kept back from the replicas' share of the open-file limit.
pub const RESERVED_FDS: u64 = 1024;

/// Raises the soft open-file limit to the hard one; the soft limit in
/// force afterwards.
pub fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return u64::MAX;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            } else {
                warn!(soft = lim.rlim_cur, hard = lim.rlim_max, "could not raise the open-file limit");
            }
        }
    }
    lim.rlim_cur
}

/// The replicas a node holds at most: `max_replicas` when set (non-zero),
/// else one per descriptor of `open_files` beyond [`RESERVED_FDS`] (at
/// least 1).
pub fn replica_limit(max_replicas: u32, open_files: u64) -> usize {
    if max_replicas > 0 {
        return max_replicas as usize;
    }
    usize::try_from(open_files.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX)
}

/// This node's limit, set up at start (and logged).
pub fn at_start(max_replicas: u32) -> usize {
    let open_files = raise_open_files();
    let limit = replica_limit(max_replicas, open_files);
    info!(open_files, replica_limit = limit, "partition replicas this node holds at most");
    limit
}

/// Refuses `added` (a node id per replica to be added) if it would put
/// more replicas on a node than its limit. Runs on the controller leader:
/// its own limit it knows, the others' come from their last `NodeInfo`
/// (asked for once more if one has not reported yet; a node that still
/// has not is not held to a limit).
pub async fn check(node: &Node, meta: &ClusterMeta, added: impl IntoIterator<Item = NodeId>) -> Result<()> {
    let mut adding: BTreeMap<NodeId, usize> = BTreeMap::new();
    for n in added {
        *adding.entry(n).or_default() += 1;
    }
    if adding.is_empty() {
        return Ok(());
    }
    let unreported = |views: &BTreeMap<NodeId, crate::prober::PeerView>| {
        adding.keys().any(|n| *n != node.id && views.get(n).and_then(|v| v.info.as_ref()).is_none())
    };
    let mut views = node.peer_views();
    if unreported(&views) {
        node.probe_round().await;
        views = node.peer_views();
    }
    let limit_of = |n: NodeId| {
        if n == node.id {
            return Some(node.replica_limit);
        }
        let reported = views.get(&n)?.info.as_ref()?.replica_limit;
        (reported > 0).then_some(reported as usize)
    };
    let held = held_per_node(meta);
    for (n, more) in adding {
        let Some(limit) = limit_of(n) else { continue };
        let would_hold = held.get(&n).copied().unwrap_or(0) + more;
        if would_hold > limit {
            return Err(NodeError::ReplicaLimit { node: n, would_hold, limit });
        }
    }
    Ok(())
}

/// Replicas the metadata places on each node, counting those a move is
/// bringing in.
fn held_per_node(meta: &ClusterMeta) -> BTreeMap<NodeId, usize> {
    let mut held: BTreeMap<NodeId, usize> = BTreeMap::new();
    for p in meta.topics.values().flat_map(|t| t.partitions.iter()) {
        let incoming = meta.moves.get(&p.group).into_iter().flatten().filter(|n| !p.replicas.contains(n));
        for n in p.replicas.iter().chain(incoming) {
            *held.entry(*n).or_default() += 1;
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_the_setting_or_the_open_files_beyond_the_reserve() {
        assert_eq!(replica_limit(500, 20_000), 500);
        assert_eq!(replica_limit(0, 20_000), 20_000 - 1024);
        assert_eq!(replica_limit(0, 1_048_576), 1_048_576 - 1024);
        // Fewer descriptors than the reserve still leaves one replica.
        assert_eq!(replica_limit(0, 256), 1);
        assert_eq!(replica_limit(0, u64::MAX), usize::MAX - 1024);
    }

    #[test]
    fn a_move_counts_its_incoming_replicas_once() {
        use replog_raft_store::controller::{PartitionMeta, TopicMeta};
        let mut meta = ClusterMeta::default();
        let part = |group, replicas: Vec<NodeId>| PartitionMeta { group, replicas };
        meta.topics.insert(
            "t".into(),
            TopicMeta {
                name: "t".into(),
                id: 1,
                partitions: vec![part(10, vec![1, 2]), part(11, vec![2, 3])],
                created_ms: 0,
                config: Default::default(),
            },
        );
        meta.moves.insert(10, vec![2, 3]);
        let held = held_per_node(&meta);
        assert_eq!(held, BTreeMap::from([(1, 1), (2, 2), (3, 2)]));
    }
}
