//! The node: its Raft groups (the controller and one per hosted
//! partition), the reconciler that creates and drops partition groups as
//! the cluster metadata changes, and the peer prober that tracks which
//! nodes are alive and who leads what.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ServerState};
use replog_proto::pb;
use replog_raft_store::controller::{ClusterMeta, ControllerCmd, ControllerResult};
use replog_raft_store::partition::PartitionReader;
use replog_raft_store::{
    CONTROLLER_GROUP, GroupId, GroupStateMachine, LogStore, NodeId, Raft, Request, Response, Store,
};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::error::{NodeError, Result};
use crate::metrics::Metrics;
use crate::raft_net::{NetworkFactory, PeerPool};

/// How often every peer is asked for its `NodeInfo`.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// A peer that has not answered for this long counts as down.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(3);
/// How long non-preferred replicas let the preferred one initialize a new
/// partition group before doing it themselves.
const INIT_GRACE: Duration = Duration::from_secs(3);
/// acks=none writes a node accepts before committing them.
pub const MAX_ACKS_NONE_IN_FLIGHT: usize = 1024;
/// How often leaders check whether to hand back to preferred replicas.
const BALANCE_INTERVAL: Duration = Duration::from_secs(10);

async fn initialize(raft: &Raft, members: BTreeMap<NodeId, BasicNode>) -> anyhow::Result<()> {
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        Err(e) if e.api_error().is_some() => Ok(()), // already initialized
        Err(e) => Err(e.into()),
    }
}

/// One Raft group hosted here.
pub struct Group {
    pub id: GroupId,
    pub raft: Raft,
    /// Read access to the partition (none for the controller).
    pub reader: Option<PartitionReader>,
}

impl Group {
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    pub fn is_leader(&self, me: NodeId) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.state == ServerState::Leader && m.current_leader == Some(me)
    }
}

/// What the prober last heard from a peer.
#[derive(Clone)]
pub struct PeerView {
    pub last_ok: Option<Instant>,
    pub info: Option<pb::NodeInfoResponse>,
}

pub struct Node {
    pub id: NodeId,
    pub addr: String,
    pub config: NodeConfig,
    pub store: Arc<Store>,
    pub pool: Arc<PeerPool>,
    pub raft_config: Arc<openraft::Config>,
    pub controller: Arc<Group>,
    pub cluster: watch::Receiver<Arc<ClusterMeta>>,
    groups: RwLock<HashMap<GroupId, Arc<Group>>>,
    peers: Mutex<BTreeMap<NodeId, PeerView>>,
    probe_conns: Mutex<HashMap<String, pb::replog_client::ReplogClient<tonic::transport::Channel>>>,
    pub metrics: Metrics,
    /// Serializes group creation and removal.
    reconcile_lock: tokio::sync::Mutex<()>,
    /// Bounds acks=none writes accepted but not yet committed.
    pub acks_none_slots: Arc<tokio::sync::Semaphore>,
}

impl Node {
    /// Opens the store and the controller group; bootstraps the controller
    /// on a fresh first cluster.
    pub async fn start(config: NodeConfig, metrics: Metrics) -> anyhow::Result<Arc<Node>> {
        let raft_config = Arc::new(config.raft_config().map_err(anyhow::Error::msg)?);
        let store = Store::open(
            &config.data_dir,
            &replog_raft_store::StoreConfig {
                cache_capacity_bytes: config.cache_mb << 20,
                segment_bytes: config.segment_mb << 20,
                min_free_bytes: config.min_free_mb << 20,
            },
        )?;
        let pool = Arc::new(PeerPool::new(crate::raft_net::source_ip(config.listen)));
        let sm = GroupStateMachine::open_controller(&store, CONTROLLER_GROUP)?;
        let cluster = sm.cluster_watch().expect("controller state machine has a cluster watch");
        let log = LogStore::open(store.clone(), CONTROLLER_GROUP)?;
        let net = NetworkFactory { pool: pool.clone(), group: CONTROLLER_GROUP };
        let raft = Raft::new(config.id, raft_config.clone(), net, log, sm).await?;
        let controller = Arc::new(Group { id: CONTROLLER_GROUP, raft, reader: None });
        if !config.initial_cluster.is_empty() {
            let members: BTreeMap<NodeId, BasicNode> =
                config.initial_cluster.iter().map(|(id, a)| (*id, BasicNode { addr: a.clone() })).collect();
            match controller.raft.initialize(members).await {
                Ok(()) => info!("initialized the controller group with {:?}", config.initial_cluster),
                Err(e) if e.api_error().is_some() => {} // already initialized: a restart
                Err(e) => return Err(e.into()),
            }
        }
        let node = Arc::new(Node {
            id: config.id,
            addr: config.advertise_addr(),
            store,
            pool,
            raft_config,
            controller,
            cluster,
            groups: RwLock::default(),
            peers: Mutex::default(),
            probe_conns: Mutex::default(),
            metrics,
            reconcile_lock: tokio::sync::Mutex::new(()),
            acks_none_slots: Arc::new(tokio::sync::Semaphore::new(MAX_ACKS_NONE_IN_FLIGHT)),
            config,
        });
        Ok(node)
    }

    /// Starts the background tasks: reconciler, node registration, prober.
    pub fn spawn_tasks(self: &Arc<Self>) {
        let n = self.clone();
        tokio::spawn(async move { n.reconcile_loop().await });
        let n = self.clone();
        tokio::spawn(async move { n.register_loop().await });
        let n = self.clone();
        tokio::spawn(async move { n.probe_loop().await });
        let n = self.clone();
        tokio::spawn(async move { n.balance_loop().await });
    }

    pub fn group(&self, id: GroupId) -> Option<Arc<Group>> {
        self.groups.read().expect("groups lock").get(&id).cloned()
    }

    pub fn groups(&self) -> Vec<Arc<Group>> {
        self.groups.read().expect("groups lock").values().cloned().collect()
    }

    pub fn meta(&self) -> Arc<ClusterMeta> {
        self.cluster.borrow().clone()
    }

    pub fn controller_leader(&self) -> Option<NodeId> {
        self.controller.leader()
    }

    /// Every node known here with its address: the first cluster's members
    /// (known before the controller registers them) and every registered
    /// node, whose registered address wins.
    pub fn members(&self) -> BTreeMap<NodeId, String> {
        let mut m = self.config.initial_cluster.clone();
        m.extend(self.meta().nodes.values().map(|n| (n.id, n.addr.clone())));
        m
    }

    /// Address of a node: from the metadata, else the initial cluster.
    pub fn node_addr(&self, id: NodeId) -> Option<String> {
        self.meta().nodes.get(&id).map(|n| n.addr.clone()).or_else(|| self.config.initial_cluster.get(&id).cloned())
    }

    /// The partition group for `topic`/`partition`, checking both exist.
    pub fn locate(&self, topic: &str, partition: u32) -> Result<(GroupId, Vec<NodeId>)> {
        let meta = self.meta();
        let t = meta.topics.get(topic).ok_or_else(|| NodeError::UnknownTopic(topic.to_string()))?;
        let p = t.partitions.get(partition as usize).ok_or_else(|| NodeError::UnknownPartition {
            topic: topic.to_string(),
            partition,
            count: t.partitions.len() as u32,
        })?;
        Ok((p.group, p.replicas.clone()))
    }

    /// Best knowledge of who leads `group`: local Raft state, else what
    /// the replicas reported to the prober.
    pub fn leader_of(&self, group: GroupId, replicas: &[NodeId]) -> Option<NodeId> {
        if let Some(g) = self.group(group) {
            return g.leader();
        }
        let peers = self.peers.lock().expect("peers lock");
        replicas
            .iter()
            .filter_map(|r| peers.get(r)?.info.as_ref())
            .flat_map(|i| i.groups.iter())
            .find(|g| g.group_id == group && g.leader != 0)
            .map(|g| g.leader)
    }

    /// Offsets of `group` as its leader knows them: this node's own if it
    /// leads, else what `leader` last reported to the prober. A follower's
    /// own offsets trail the leader's (by a heartbeat, or by a whole
    /// catch-up after a restart); being committed, they are still a lower
    /// bound, so they count where they are newer than the leader's last
    /// report (at most one probe interval old) or there is none.
    pub fn offsets_of(&self, group: GroupId, leader: Option<NodeId>) -> (u64, u64) {
        let local = self.group(group).and_then(|g| Some((g.is_leader(self.id), g.reader.as_ref()?.offsets())));
        if let Some((true, o)) = &local {
            return (o.log_start_offset, o.high_watermark);
        }
        let reported = {
            let peers = self.peers.lock().expect("peers lock");
            leader
                .filter(|l| *l != self.id)
                .and_then(|l| peers.get(&l)?.info.as_ref()?.groups.iter().find(|g| g.group_id == group).cloned())
                .map(|g| (g.log_start_offset, g.high_watermark))
        };
        let own = local.map(|(_, o)| (o.log_start_offset, o.high_watermark));
        match (reported, own) {
            (Some(r), Some(o)) => (r.0.max(o.0), r.1.max(o.1)),
            (r, o) => r.or(o).unwrap_or((0, 0)),
        }
    }

    pub fn not_leader(&self, what: String, leader: Option<NodeId>) -> NodeError {
        let leader = leader.and_then(|l| Some((l, self.node_addr(l)?)));
        NodeError::NotLeader { what, leader }
    }

    /// Nodes that answered the prober recently (this node always counts).
    pub fn live_nodes(&self) -> Vec<NodeId> {
        let meta = self.meta();
        let peers = self.peers.lock().expect("peers lock");
        meta.nodes
            .keys()
            .copied()
            .filter(|id| {
                *id == self.id || peers.get(id).and_then(|p| p.last_ok).is_some_and(|t| t.elapsed() < ALIVE_WITHIN)
            })
            .collect()
    }

    pub fn peer_views(&self) -> BTreeMap<NodeId, PeerView> {
        self.peers.lock().expect("peers lock").clone()
    }

    /// This node's own report: groups hosted, their leaders and offsets.
    pub fn node_info(&self) -> pb::NodeInfoResponse {
        let mut groups = Vec::new();
        let (mut leaders, mut replicas) = (0, 0);
        for g in self.groups() {
            let m = g.raft.metrics().borrow_watched().clone();
            let leader = m.current_leader.unwrap_or(0);
            replicas += 1;
            if leader == self.id && m.state == ServerState::Leader {
                leaders += 1;
            }
            let o = g.reader.as_ref().map(|r| r.offsets()).unwrap_or_default();
            groups.push(pb::GroupStatus {
                group_id: g.id,
                leader,
                log_start_offset: o.log_start_offset,
                high_watermark: o.high_watermark,
                last_applied_index: m.last_applied.map_or(0, |l| l.index),
            });
        }
        groups.sort_by_key(|g| g.group_id);
        pb::NodeInfoResponse {
            id: self.id,
            addr: self.addr.clone(),
            leader_count: leaders,
            replica_count: replicas,
            groups,
        }
    }

    /// Proposes a controller command. Must run on the controller leader.
    pub async fn controller_write(&self, cmd: ControllerCmd) -> Result<ControllerResult> {
        match self.controller.raft.client_write(Request::Controller(cmd)).await {
            Ok(resp) => match resp.data {
                Response::Controller(r) => Ok(r),
                other => Err(NodeError::Internal(format!("controller answered {other:?}"))),
            },
            Err(e) => match e.forward_to_leader() {
                Some(f) => Err(self.not_leader("the controller group".into(), f.leader_id)),
                None => Err(NodeError::Unavailable(format!("controller: {e}"))),
            },
        }
    }

    /// Keeps the set of local partition groups equal to what the metadata
    /// assigns to this node.
    async fn reconcile_loop(self: Arc<Self>) {
        let mut rx = self.cluster.clone();
        loop {
            if let Err(e) = self.reconcile().await {
                warn!("reconcile: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    async fn reconcile(&self) -> anyhow::Result<()> {
        let _guard = self.reconcile_lock.lock().await;
        let meta = self.meta();
        let wanted = meta.groups_of(self.id);
        let mut failed = 0;
        for (gid, replicas) in &wanted {
            if self.group(*gid).is_some() {
                continue;
            }
            let members: BTreeMap<NodeId, BasicNode> = replicas
                .iter()
                .filter_map(|r| Some((*r, BasicNode { addr: meta.nodes.get(r)?.addr.clone() })))
                .collect();
            // One group that cannot open must not keep the others down.
            let g = match self.open_partition_group(*gid).await {
                Ok(g) => g,
                Err(e) => {
                    warn!(group = gid, "cannot open partition group: {e:#}");
                    failed += 1;
                    continue;
                }
            };
            // The preferred leader (first replica) initializes the group at
            // once and so usually wins the first election; the others step
            // in after a grace period if it could not. All propose the same
            // membership, which openraft accepts once and refuses after.
            if replicas.first() == Some(&self.id) {
                if let Err(e) = initialize(&g.raft, members).await {
                    warn!(group = gid, "initializing partition group: {e:#}");
                }
            } else {
                let raft = g.raft.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(INIT_GRACE).await;
                    if !raft.is_initialized().await.unwrap_or(true) {
                        let _ = initialize(&raft, members).await;
                    }
                });
            }
            self.groups.write().expect("groups lock").insert(*gid, g);
            self.metrics.groups.set(self.groups.read().expect("groups lock").len() as i64);
        }
        // Drop groups whose topic was deleted. Only groups the metadata
        // has already allocated can be judged; anything newer is kept.
        let stale: Vec<GroupId> = self
            .store
            .groups()
            .into_iter()
            .filter(|g| *g != CONTROLLER_GROUP && *g <= meta.next_group_id && !wanted.contains_key(g))
            .collect();
        for gid in stale {
            let g = self.groups.write().expect("groups lock").remove(&gid);
            if let Some(g) = g {
                let _ = g.raft.shutdown().await;
            }
            self.store.drop_group(gid).await?;
            info!(group = gid, "dropped partition group of a deleted topic");
        }
        self.metrics.groups.set(self.groups.read().expect("groups lock").len() as i64);
        if failed > 0 {
            anyhow::bail!("{failed} partition groups could not be opened; retrying");
        }
        Ok(())
    }

    async fn open_partition_group(&self, gid: GroupId) -> anyhow::Result<Arc<Group>> {
        let sm = GroupStateMachine::open_partition(&self.store, gid)?;
        let reader = sm.reader();
        let log = LogStore::open(self.store.clone(), gid)?;
        let net = NetworkFactory { pool: self.pool.clone(), group: gid };
        let raft = Raft::new(self.id, self.raft_config.clone(), net, log, sm).await?;
        Ok(Arc::new(Group { id: gid, raft, reader }))
    }

    /// Moves leadership of each partition this node leads back to its
    /// preferred replica (the first) when that replica is alive, so leaders
    /// stay spread as placement intended after failures heal.
    async fn balance_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(BALANCE_INTERVAL).await;
            let meta = self.meta();
            let live = self.live_nodes();
            for g in self.groups() {
                if !g.is_leader(self.id) {
                    continue;
                }
                let Some((t, p)) = meta.locate(g.id) else {
                    continue;
                };
                let Some(&preferred) = t.partitions[p as usize].replicas.first() else {
                    continue;
                };
                if preferred == self.id || !live.contains(&preferred) {
                    continue;
                }
                // Only to a replica that has everything: a transfer stops
                // writes until the target takes over, and a lagging target
                // would give up and leave the partition leaderless for an
                // election timeout.
                let m = g.raft.metrics().borrow_watched().clone();
                let matched = m.replication.as_ref().and_then(|r| r.get(&preferred).cloned().flatten());
                if matched.map(|l| l.index) != m.last_log_index {
                    continue;
                }
                info!(group = g.id, to = preferred, "moving leadership to the preferred replica");
                let _ = g.raft.trigger().transfer_leader(preferred).await;
            }
        }
    }

    /// The controller leader records every controller member in the
    /// metadata, so placement and clients know their addresses.
    async fn register_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if self.controller.is_leader(self.id)
                && let Err(e) = self.ensure_registered().await
            {
                warn!("registering nodes: {e}");
            }
        }
    }

    /// Registers every controller member missing from the metadata. Runs
    /// on the controller leader.
    pub async fn ensure_registered(&self) -> Result<()> {
        let members: Vec<(NodeId, String)> = {
            let m = self.controller.raft.metrics();
            let m = m.borrow_watched();
            m.membership_config.nodes().map(|(id, n)| (*id, n.addr.clone())).collect()
        };
        let meta = self.meta();
        for (id, addr) in members {
            if meta.nodes.get(&id).map(|n| &n.addr) != Some(&addr) {
                self.controller_write(ControllerCmd::RegisterNode { id, addr }).await?;
            }
        }
        Ok(())
    }

    /// Asks every known node for its `NodeInfo`: liveness, and who leads
    /// the groups this node does not host.
    async fn probe_loop(self: Arc<Self>) {
        loop {
            self.probe_round().await;
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// One round of `NodeInfo` calls to every other known node.
    pub async fn probe_round(&self) {
        let mut targets = self.members();
        targets.remove(&self.id);
        let mut calls = Vec::new();
        for (id, addr) in targets {
            let client = {
                let mut conns = self.probe_conns.lock().expect("probe conns lock");
                match conns.get(&addr) {
                    Some(c) => c.clone(),
                    None => {
                        let local = crate::raft_net::source_ip(self.config.listen);
                        let Ok(ep) = crate::raft_net::peer_endpoint(&addr, local) else {
                            continue;
                        };
                        let c = pb::replog_client::ReplogClient::new(ep.connect_timeout(PROBE_INTERVAL).connect_lazy());
                        conns.insert(addr.clone(), c.clone());
                        c
                    }
                }
            };
            calls.push(async move {
                let mut c = client;
                let mut req = tonic::Request::new(pb::NodeInfoRequest {});
                req.set_timeout(PROBE_INTERVAL * 2);
                let r = tokio::time::timeout(PROBE_INTERVAL * 2, c.node_info(req)).await;
                (id, r.ok().and_then(|r| r.ok()).map(|r| r.into_inner()))
            });
        }
        let results = futures::future::join_all(calls).await;
        let mut peers = self.peers.lock().expect("peers lock");
        for (id, info) in results {
            let v = peers.entry(id).or_insert(PeerView { last_ok: None, info: None });
            if let Some(info) = info {
                v.last_ok = Some(Instant::now());
                v.info = Some(info);
            }
        }
    }

    /// Graceful stop: hand off leadership where possible, then stop every
    /// group and flush.
    pub async fn shutdown(&self) {
        // Appends held back by a full disk must not hold the stop.
        self.store.begin_close();
        for g in self.groups().iter().chain(std::iter::once(&self.controller)) {
            if g.is_leader(self.id) {
                let m = g.raft.metrics().borrow_watched().clone();
                if let Some(to) = m.membership_config.membership().voter_ids().find(|v| *v != self.id) {
                    let _ = g.raft.trigger().transfer_leader(to).await;
                }
            }
        }
        // Give the transfers a moment to land before stopping.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && self.groups().iter().any(|g| g.is_leader(self.id)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for g in self.groups() {
            let _ = g.raft.shutdown().await;
        }
        let _ = self.controller.raft.shutdown().await;
        if let Err(e) = self.store.flush().await {
            warn!("final flush failed: {e}");
        }
    }
}
