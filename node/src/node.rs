//! The node: its storage, its controller handle, the partitions it hosts and
//! what it knows of its peers. The background tasks live in their own
//! modules: [`crate::reconciler`] (which partitions are hosted),
//! [`crate::prober`] (who is alive, who leads), [`crate::balancer`]
//! (leadership back to preferred replicas); [`Node::shutdown`] stops it all.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openraft::BasicNode;
use openraft::async_runtime::WatchReceiver;
use replog_proto::pb;
use replog_raft_store::controller::ClusterMeta;
use replog_raft_store::{CONTROLLER_GROUP, GroupId, GroupStateMachine, LogStore, NodeId, Raft, Store};
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::controller::Controller;
use crate::coordinator::Coordinator;
use crate::error::{NodeError, Result};
use crate::members::{Leadership, Members};
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::prober::{PeerView, Prober};
use crate::raft_net::{NetworkFactory, PeerPool};

/// acks=none writes a node accepts before committing them.
pub const MAX_ACKS_NONE_IN_FLIGHT: usize = 1024;
/// How long a graceful stop waits for leadership handed off to land.
const HANDOFF_WAIT: Duration = Duration::from_secs(2);

pub struct Node {
    pub id: NodeId,
    pub addr: String,
    pub config: NodeConfig,
    pub store: Arc<Store>,
    pub pool: Arc<PeerPool>,
    pub raft_config: Arc<openraft::Config>,
    pub controller: Arc<Controller>,
    pub members: Arc<Members>,
    pub prober: Prober,
    /// Liveness of consumer-group members this node coordinates.
    pub coordinator: Coordinator,
    pub metrics: Metrics,
    partitions: RwLock<HashMap<GroupId, Arc<Partition>>>,
    /// Serializes partition creation and removal.
    pub(crate) reconcile_lock: tokio::sync::Mutex<()>,
    /// Bounds acks=none writes accepted but not yet committed.
    pub acks_none_slots: Arc<tokio::sync::Semaphore>,
    /// Compiled schemas by id, for produce validation and registration.
    pub schemas: crate::schema::SchemaCache,
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
        let members = Arc::new(Members::new(config.initial_cluster.clone(), cluster.clone()));
        let log = LogStore::open(store.clone(), CONTROLLER_GROUP)?;
        let net = NetworkFactory { pool: pool.clone(), group: CONTROLLER_GROUP };
        let raft = Raft::new(config.id, raft_config.clone(), net, log, sm).await?;
        if !config.initial_cluster.is_empty() {
            let voters: BTreeMap<NodeId, BasicNode> =
                config.initial_cluster.iter().map(|(id, a)| (*id, BasicNode { addr: a.clone() })).collect();
            match raft.initialize(voters).await {
                Ok(()) => info!("initialized the controller group with {:?}", config.initial_cluster),
                Err(e) if e.api_error().is_some() => {} // already initialized: a restart
                Err(e) => return Err(e.into()),
            }
        }
        let controller = Arc::new(Controller::new(config.id, raft, cluster, members.clone()));
        Ok(Arc::new(Node {
            id: config.id,
            addr: config.advertise_addr(),
            store,
            pool,
            raft_config,
            controller,
            members,
            prober: Prober::default(),
            coordinator: Coordinator::default(),
            metrics,
            partitions: RwLock::default(),
            reconcile_lock: tokio::sync::Mutex::new(()),
            acks_none_slots: Arc::new(tokio::sync::Semaphore::new(MAX_ACKS_NONE_IN_FLIGHT)),
            schemas: Default::default(),
            config,
        }))
    }

    /// Starts the background tasks: reconciler, registration, prober, balancer.
    pub fn spawn_tasks(self: &Arc<Self>) {
        tokio::spawn(crate::reconciler::run(self.clone()));
        tokio::spawn(self.controller.clone().register_loop());
        let n = self.clone();
        tokio::spawn(async move {
            loop {
                n.probe_round().await;
                tokio::time::sleep(crate::prober::PROBE_INTERVAL).await;
            }
        });
        tokio::spawn(crate::balancer::run(self.clone()));
        tokio::spawn(crate::coordinator::run(self.clone()));
        tokio::spawn(crate::retention::run(self.clone()));
    }

    pub fn partition(&self, group: GroupId) -> Option<Arc<Partition>> {
        self.partitions.read().expect("partitions lock").get(&group).cloned()
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().expect("partitions lock").values().cloned().collect()
    }

    pub(crate) fn add_partition(&self, p: Arc<Partition>) {
        let mut m = self.partitions.write().expect("partitions lock");
        m.insert(p.group(), p);
        self.metrics.groups.set(m.len() as i64);
    }

    pub(crate) fn remove_partition(&self, group: GroupId) -> Option<Arc<Partition>> {
        let mut m = self.partitions.write().expect("partitions lock");
        let p = m.remove(&group);
        self.metrics.groups.set(m.len() as i64);
        p
    }

    /// The Raft group `group` (the controller's or a hosted partition's),
    /// for the peer service.
    pub fn raft_of(&self, group: GroupId) -> Option<Raft> {
        if group == CONTROLLER_GROUP {
            return Some(self.controller.raft().clone());
        }
        self.partition(group).map(|p| p.raft().clone())
    }

    pub fn meta(&self) -> Arc<ClusterMeta> {
        self.controller.meta()
    }

    /// The partition `topic`/`partition` hosted here, ready for a client
    /// request; NOT_LEADER (with the leader as best known) when this node
    /// does not host it.
    pub fn local_partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        let (group, replicas) = self.locate(topic, partition)?;
        self.partition(group)
            .ok_or_else(|| self.members.not_leader(format!("{topic}/{partition}"), self.leader_of(group, &replicas)))
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
        match self.partition(group) {
            Some(p) => p.leader(),
            None => self.prober.reported_leader(group, replicas),
        }
    }

    /// Offsets of `group` as its leader knows them: this node's own if it
    /// leads, else what `leader` last reported to the prober. A follower's
    /// own offsets trail the leader's (by a heartbeat, or by a whole
    /// catch-up after a restart); being committed, they are still a lower
    /// bound, so they count where they are newer than the leader's last
    /// report (at most one probe interval old) or there is none.
    pub fn offsets_of(&self, group: GroupId, leader: Option<NodeId>) -> (u64, u64) {
        let local = self.partition(group).map(|p| (p.is_leader(), p.offsets()));
        if let Some((true, o)) = &local {
            return (o.log_start_offset, o.high_watermark);
        }
        let reported = leader.filter(|l| *l != self.id).and_then(|l| self.prober.reported_offsets(group, l));
        let own = local.map(|(_, o)| (o.log_start_offset, o.high_watermark));
        match (reported, own) {
            (Some(r), Some(o)) => (r.0.max(o.0), r.1.max(o.1)),
            (r, o) => r.or(o).unwrap_or((0, 0)),
        }
    }

    /// Nodes that answered the prober recently (this node always counts).
    pub fn live_nodes(&self) -> Vec<NodeId> {
        self.meta().nodes.keys().copied().filter(|id| *id == self.id || self.prober.alive(*id)).collect()
    }

    pub fn peer_views(&self) -> BTreeMap<NodeId, PeerView> {
        self.prober.views()
    }

    /// One round of `NodeInfo` calls to every other known node.
    pub async fn probe_round(&self) {
        let mut targets = self.members.all();
        targets.remove(&self.id);
        self.prober.probe(targets, &self.pool).await;
    }

    /// This node's own report: partitions hosted, their leaders and offsets.
    pub fn node_info(&self) -> pb::NodeInfoResponse {
        let mut groups = Vec::new();
        let (mut leaders, mut replicas) = (0, 0);
        for p in self.partitions() {
            let m = p.raft().metrics().borrow_watched().clone();
            let leader = m.current_leader.unwrap_or(0);
            replicas += 1;
            if p.is_leader() {
                leaders += 1;
            }
            let o = p.offsets();
            groups.push(pb::GroupStatus {
                group_id: p.group(),
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

    /// Graceful stop: hand off leadership where possible, then stop every
    /// group and flush.
    pub async fn shutdown(&self) {
        // Appends held back by a full disk must not hold the stop.
        self.store.begin_close();
        let rafts: Vec<Raft> =
            self.partitions().iter().map(|p| p.raft().clone()).chain([self.controller.raft().clone()]).collect();
        let leads = |r: &Raft| r.led_by(self.id);
        for r in &rafts {
            if leads(r) {
                let m = r.metrics().borrow_watched().clone();
                if let Some(to) = m.membership_config.membership().voter_ids().find(|v| *v != self.id) {
                    let _ = r.trigger().transfer_leader(to).await;
                }
            }
        }
        // Give the transfers a moment to land before stopping.
        let deadline = Instant::now() + HANDOFF_WAIT;
        while Instant::now() < deadline && rafts.iter().any(leads) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for r in &rafts {
            let _ = r.shutdown().await;
        }
        if let Err(e) = self.store.flush().await {
            warn!("final flush failed: {e}");
        }
    }
}
