//! Keeps the partitions hosted here equal to what the cluster metadata
//! assigns to this node: opens the groups of new partitions (initializing
//! them from the preferred replica) and of partitions moving here (left
//! empty for their leader to fill), and drops those of deleted topics and
//! of partitions moved away.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use replog_raft_store::{CONTROLLER_GROUP, GroupStateMachine, LogStore, NodeId, Raft};
use tracing::{info, warn};

use crate::node::Node;
use crate::partition::Partition;
use crate::raft_net::NetworkFactory;

/// How long non-preferred replicas let the preferred one initialize a new
/// partition group before doing it themselves.
const INIT_GRACE: Duration = Duration::from_secs(3);
/// Pause before a reconcile that failed is tried again.
const RETRY: Duration = Duration::from_millis(500);

/// Reconciles at start and after every metadata change, until the node stops.
pub async fn run(node: Arc<Node>) {
    let mut rx = node.controller.watch();
    // The groups opened by the first pass are this node's at its start:
    // they elect paced (see start_pacer).
    let mut held = Some(Vec::new());
    loop {
        let r = reconcile(&node, held.as_mut()).await;
        if let Some(held) = held.take() {
            let placed = node.controller.meta().groups_of(node.id);
            let held = held
                .into_iter()
                .map(|p: Arc<Partition>| {
                    let preferred = placed.get(&p.group()).and_then(|r| r.first().copied());
                    (p, preferred)
                })
                .collect();
            tokio::spawn(crate::start_pacer::run(node.clone(), crate::start_pacer::release_order(held, node.id)));
        }
        if let Err(e) = r {
            warn!("reconcile: {e}");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn initialize(raft: &Raft, members: BTreeMap<NodeId, BasicNode>) -> anyhow::Result<()> {
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        Err(e) if e.api_error().is_some() => Ok(()), // already initialized
        Err(e) => Err(e.into()),
    }
}

/// Opens the groups the metadata places here and drops those it no longer
/// does. `held`: the groups opened are held from ticking and collected
/// there.
async fn reconcile(node: &Node, mut held: Option<&mut Vec<Arc<Partition>>>) -> anyhow::Result<()> {
    let _guard = node.reconcile_lock.lock().await;
    let meta = node.controller.meta();
    let wanted = meta.groups_of(node.id);
    let (mut failed, mut over_limit) = (0, 0);
    for (gid, replicas) in &wanted {
        if node.partition(*gid).is_some() {
            continue;
        }
        // Past its limit a node would run out of descriptors and stop; it
        // stays up with these closed instead (see crate::capacity).
        if node.partition_count() >= node.replica_limit {
            over_limit += 1;
            continue;
        }
        let members: BTreeMap<NodeId, BasicNode> =
            replicas.iter().filter_map(|r| Some((*r, BasicNode { addr: meta.nodes.get(r)?.addr.clone() }))).collect();
        let name = meta.locate(*gid).map_or_else(|| format!("group {gid}"), |(t, p)| format!("{}/{p}", t.name));
        // One group that cannot open must not keep the others down.
        let p = match open(node, *gid, name).await {
            Ok(p) => p,
            Err(e) => {
                warn!(group = gid, "cannot open partition group: {e:#}");
                failed += 1;
                continue;
            }
        };
        // The preferred leader (first replica) initializes the group at once
        // and so usually wins the first election; the others step in after a
        // grace period if it could not. All propose the same membership,
        // which openraft accepts once and refuses after.
        if !replicas.contains(&node.id) {
            // Moving here: an empty learner, added by the group's leader.
        } else if replicas.first() == Some(&node.id) {
            if let Err(e) = initialize(p.raft(), members).await {
                warn!(group = gid, "initializing partition group: {e:#}");
            }
        } else {
            let raft = p.raft().clone();
            tokio::spawn(async move {
                tokio::time::sleep(INIT_GRACE).await;
                if !raft.is_initialized().await.unwrap_or(true) {
                    let _ = initialize(&raft, members).await;
                }
            });
        }
        if let Some(held) = held.as_mut() {
            p.quiet.hold(p.raft());
            held.push(p.clone());
        }
        node.add_partition(p);
    }
    // Drop groups whose topic was deleted. Only groups the metadata has
    // already allocated can be judged; anything newer is kept.
    let stale: Vec<_> = node
        .store
        .groups()
        .into_iter()
        .filter(|g| *g != CONTROLLER_GROUP && *g <= meta.next_group_id && !wanted.contains_key(g))
        .collect();
    for gid in stale {
        if let Some(p) = node.remove_partition(gid) {
            let _ = p.raft().shutdown().await;
        }
        node.store.drop_group(gid).await?;
        info!(group = gid, "dropped partition group (topic deleted or partition moved away)");
    }
    if failed > 0 {
        anyhow::bail!("{failed} partition groups could not be opened; retrying");
    }
    if over_limit > 0 {
        if node.partition_count() < node.replica_limit {
            anyhow::bail!("dropped groups made room under the replica limit; opening more");
        }
        warn!(
            groups = over_limit,
            limit = node.replica_limit,
            "partition groups placed here stay closed: this node holds at most its replica limit (max_replicas)"
        );
    }
    Ok(())
}

async fn open(node: &Node, gid: u64, name: String) -> anyhow::Result<Arc<Partition>> {
    let sm = GroupStateMachine::open_partition(&node.store, gid)?;
    let reader = sm.reader().ok_or_else(|| anyhow::anyhow!("partition state machine without a reader"))?;
    let log = LogStore::open(node.store.clone(), gid)?;
    let net = NetworkFactory { pool: node.pool.clone(), group: gid };
    let raft = Raft::new(node.id, node.raft_config.clone(), net, log, sm).await?;
    Ok(Arc::new(Partition {
        group: gid,
        name,
        me: node.id,
        raft,
        reader,
        members: node.members.clone(),
        metadata_caught_up: node.controller.caught_up_flag(),
        quiet: Default::default(),
        quiescer: node.quiescer.clone(),
        order: Default::default(),
    }))
}
