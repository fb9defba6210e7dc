//! Leader balancing: each partition this node leads goes back to its
//! preferred replica (the first) once that replica is alive and caught up,
//! so leaders stay spread as placement intended after failures heal.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tracing::info;

use crate::node::Node;

/// How often leaders check whether to hand back to preferred replicas: a
/// node back from a restart leads its share again within this (plus its
/// catch-up) — the transfer itself stops a group's writes for one round
/// trip only, as it goes to a replica that holds everything.
const BALANCE_INTERVAL: Duration = Duration::from_secs(2);

pub async fn run(node: Arc<Node>) {
    loop {
        tokio::time::sleep(BALANCE_INTERVAL).await;
        let meta = node.controller.meta();
        let live = node.live_nodes();
        for p in node.partitions() {
            if !p.is_leader() {
                continue;
            }
            let Some((t, i)) = meta.locate(p.group()) else {
                continue;
            };
            let Some(&preferred) = t.partitions[i as usize].replicas.first() else {
                continue;
            };
            if preferred == node.id || !live.contains(&preferred) {
                continue;
            }
            // Only to a replica that has everything: a transfer stops writes
            // until the target takes over, and a lagging target would give
            // up and leave the partition leaderless for an election timeout.
            let m = p.raft().metrics().borrow_watched().clone();
            let matched = m.replication.as_ref().and_then(|r| r.get(&preferred).cloned().flatten());
            if matched.map(|l| l.index) != m.last_log_index {
                continue;
            }
            info!(partition = p.name(), to = preferred, "moving leadership to the preferred replica");
            let _ = p.raft().trigger().transfer_leader(preferred).await;
        }
    }
}
