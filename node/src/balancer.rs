//! Balancing, two tasks:
//!
//! - **Leaders** ([`run`], on every node): each partition this node leads
//!   goes back to its preferred replica (the first) once that replica is
//!   alive and caught up, so leaders stay spread as placement intended
//!   after failures heal.
//! - **Replicas** ([`run_auto`], acting on the controller leader): when the
//!   cluster is whole (every node registered and not being decommissioned
//!   is alive) and uneven — a node joined, or came back after the others'
//!   placement moved on — it carries out the plan of `replog cluster
//!   balance` in bounded steps: preferred-leader changes first (cheap: a
//!   leadership transfer each), then at most `balance_max_moves` partition
//!   moves under way at once, cluster-wide, each step planned afresh. Off
//!   with `--auto-balance false` or the cluster setting `balance.auto`.
//!   Never while a node is down: moving replicas around a node that is
//!   coming back would only move them again. It also records the rack
//!   each node reports (`--rack`) in the metadata, for placement and
//!   balancing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use replog_raft_store::controller::{ClusterMeta, ControllerCmd};
use replog_raft_store::{GroupId, NodeId};
use tracing::{info, warn};

use crate::members::Leadership;
use crate::node::Node;
use crate::partition::Partition;
use crate::service::membership::balance::plan;

/// How often leaders check whether to hand back to preferred replicas: a
/// node back from a restart leads its share again within this (plus its
/// catch-up) — the transfer itself stops a group's writes for one round
/// trip only, as it goes to a replica that holds (nearly) everything.
const BALANCE_INTERVAL: Duration = Duration::from_millis(500);
/// A preferred replica this close to the leader's last log index takes the
/// leadership: the target waits until it has flushed up to the leader's
/// last entry before it stands (openraft's transfer), so a few entries
/// behind costs a round trip, while an exact match may never be seen under
/// steady writes.
const TRANSFER_SLACK: u64 = 8;
/// How often the controller leader looks at whether to balance.
const AUTO_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(node: Arc<Node>) {
    // Each partition's preferred replica, looked up per partition led here:
    // an index, rebuilt only when the metadata changes.
    let mut first_replica: (Option<Arc<ClusterMeta>>, HashMap<GroupId, NodeId>) = (None, HashMap::new());
    loop {
        tokio::time::sleep(BALANCE_INTERVAL).await;
        if node.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let meta = node.controller.meta();
        if !first_replica.0.as_ref().is_some_and(|m| Arc::ptr_eq(m, &meta)) {
            let index = meta
                .topics
                .values()
                .flat_map(|t| t.partitions.iter())
                .filter_map(|p| Some((p.group, *p.replicas.first()?)))
                .collect();
            first_replica = (Some(meta), index);
        }
        // The groups led here, the quiet ones as the census keeps them:
        // most partitions here are led elsewhere, and most of those quiet.
        let census = node.census();
        let awake_led = census.awake.iter().filter(|(p, _)| p.raft().led_by(node.id)).map(|(p, _)| (p.group(), p));
        let led_elsewhere: Vec<(Arc<Partition>, NodeId)> = census
            .quiet_led_here
            .iter()
            .map(|(g, p)| (*g, p))
            .chain(awake_led)
            .filter_map(|(g, p)| {
                let preferred = *first_replica.1.get(&g)?;
                (preferred != node.id).then(|| (p.clone(), preferred))
            })
            .collect();
        if led_elsewhere.is_empty() {
            continue;
        }
        let live = node.live_nodes();
        let views = node.peer_views();
        // A node back from a restart refuses writes until it has caught up
        // with the controller: leadership waits for that.
        let takes_writes =
            |id: NodeId| views.get(&id).and_then(|v| v.info.as_ref()).is_some_and(|i| i.controller_caught_up);
        for (p, preferred) in led_elsewhere {
            if !p.is_leader() || !live.contains(&preferred) || !takes_writes(preferred) {
                continue;
            }
            // Only to a voter that has (nearly) everything: a transfer stops
            // writes until the target takes over, and a lagging target would
            // give up and leave the partition leaderless for an election
            // timeout.
            let m = p.raft().metrics().borrow_watched().clone();
            if !crate::members::voters(m.membership_config.membership()).any(|v| v == preferred) {
                continue;
            }
            let matched = m.replication.as_ref().and_then(|r| r.get(&preferred).cloned().flatten());
            let last = m.last_log_index.unwrap_or(0);
            if matched.is_none_or(|l| l.index + TRANSFER_SLACK < last) {
                continue;
            }
            info!(partition = p.name(), to = preferred, "moving leadership to the preferred replica");
            node.quiescer.wake_everywhere(&node, &p).await;
            let _ = p.raft().trigger().transfer_leader(preferred).await;
        }
    }
}

/// Automatic balancing at the controller leader (see the module docs).
pub async fn run_auto(node: Arc<Node>) {
    // The metadata and live nodes the last plan found nothing to do for:
    // planning reads every partition, so it waits for either to change.
    let mut settled: Option<(Arc<ClusterMeta>, Vec<NodeId>)> = None;
    loop {
        tokio::time::sleep(AUTO_INTERVAL).await;
        if node.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if !node.controller.is_leader() {
            continue;
        }
        match sync_racks(&node).await {
            // Balance over racks as the nodes report them, not as they were.
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                warn!("recording racks: {e}");
                continue;
            }
        }
        let (meta, live) = (node.meta(), node.live_nodes());
        if settled.as_ref().is_some_and(|(m, l)| Arc::ptr_eq(m, &meta) && *l == live) {
            continue;
        }
        match auto_step(&node, &meta, &live).await {
            Ok(true) => settled = Some((meta, live)),
            Ok(false) => settled = None,
            Err(e) => {
                settled = None;
                warn!("automatic balancing: {e}");
            }
        }
    }
}

/// Records in the metadata the rack each live node reports (its own from
/// its config, the others' from their last `NodeInfo`), where it differs;
/// whether it changed any.
async fn sync_racks(node: &Arc<Node>) -> anyhow::Result<bool> {
    let meta = node.meta();
    let views = node.peer_views();
    let mut changed = false;
    for id in meta.nodes.keys() {
        let reported = if *id == node.id {
            node.config.rack.clone()
        } else {
            match views.get(id).filter(|v| v.alive()).and_then(|v| v.info.as_ref()) {
                Some(info) => info.rack.clone(),
                None => continue,
            }
        };
        let rack = (!reported.is_empty()).then_some(reported);
        if meta.racks.get(id) != rack.as_ref() {
            info!(node = id, ?rack, "recording the node's rack");
            node.controller.propose(ControllerCmd::SetNodeRack { id: *id, rack }).await?;
            changed = true;
        }
    }
    Ok(changed)
}

/// One bounded step of automatic balancing over `meta` with `live` nodes
/// up; true when there is nothing to do until either changes.
async fn auto_step(node: &Arc<Node>, meta: &ClusterMeta, live: &[NodeId]) -> anyhow::Result<bool> {
    let _planning = node.planning.lock().await;
    if !crate::settings::auto_balance(meta, &node.config) {
        return Ok(true);
    }
    let eligible: Vec<NodeId> = meta.nodes.keys().copied().filter(|n| !meta.decommissioning.contains(n)).collect();
    if eligible.iter().any(|n| !live.contains(n)) {
        return Ok(true);
    }
    let changes = plan(meta, &eligible);
    if changes.is_empty() {
        return Ok(true);
    }
    let same = |a: &[NodeId], b: &[NodeId]| a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>();
    let (leaders, moves): (Vec<_>, Vec<_>) = changes.into_iter().partition(|(_, from, to)| same(from, to));
    if !leaders.is_empty() {
        // Preferred leaders first, all at once: each applies at once and
        // costs a leadership transfer. Replica moves are planned anew next
        // time, over the new preferences.
        for (group, _, to) in &leaders {
            node.controller.propose(ControllerCmd::StartMove { group: *group, replicas: to.clone() }).await?;
        }
        info!(changes = leaders.len(), "automatic balancing: preferred leaders changed");
        return Ok(false);
    }
    let room = crate::settings::balance_max_moves(meta, &node.config).saturating_sub(meta.moves.len());
    for (group, from, to) in moves.into_iter().take(room) {
        node.controller.propose(ControllerCmd::StartMove { group, replicas: to.clone() }).await?;
        info!(group, ?from, ?to, "automatic balancing: move started");
    }
    Ok(false)
}
