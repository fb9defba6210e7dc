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
/// Fault injection for tests: milliseconds a node waits after its start
/// before it catches up with the controller (it takes no writes meanwhile).
pub const CATCH_UP_DELAY_ENV: &str = "REPLOG_FAULT_CATCH_UP_DELAY_MS";
/// How long a stopping node lets one leadership transfer land before it
/// asks again (perhaps another replica).
const HANDOFF_RETRY: Duration = Duration::from_millis(500);
/// How often a stopping node checks which groups it still leads.
const HANDOFF_POLL: Duration = Duration::from_millis(10);

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
    /// Node liveness and the quiet (idle, not ticking) partition groups.
    pub quiescer: Arc<crate::quiesce::Quiescer>,
    /// Elections started early for groups whose leader's node is gone.
    pub waker: crate::failover::Waker,
    /// Liveness of consumer-group members this node coordinates.
    pub coordinator: Coordinator,
    /// Kafka members' rounds and generations at the groups coordinated here.
    pub kafka_groups: crate::kafka::groups::KafkaGroups,
    pub metrics: Metrics,
    partitions: RwLock<HashMap<GroupId, Arc<Partition>>>,
    /// Changes of `partitions` so far, and the copy of it the scans share,
    /// made again only after a change ([`Node::partition_map`]).
    partitions_changes: std::sync::atomic::AtomicU64,
    partitions_copy: std::sync::Mutex<Option<(u64, PartitionMap)>>,
    /// The groups sorted into quiet and awake, as last read
    /// ([`Node::census`]).
    census: std::sync::Mutex<Option<Arc<crate::census::Census>>>,
    /// Serializes partition creation and removal.
    pub(crate) reconcile_lock: tokio::sync::Mutex<()>,
    /// Bounds acks=none writes accepted but not yet committed.
    pub acks_none_slots: Arc<tokio::sync::Semaphore>,
    /// Set once a graceful stop begins: the node reports it to its peers
    /// (`NodeInfo.stopping`), which then hand it no leadership.
    pub stopping: std::sync::atomic::AtomicBool,
    /// Passwords already checked against their users' credentials.
    pub verified: crate::security::auth::VerifiedPasswords,
    /// Per-principal byte-rate quotas of produce and fetch.
    pub produce_quota: crate::security::quota::Quota,
    pub fetch_quota: crate::security::quota::Quota,
    /// Compiled schemas by id, for produce validation and registration.
    pub schemas: crate::schema::SchemaCache,
    /// The byte-rate limit on what moves copy to new replicas.
    pub throttle: Arc<crate::throttle::MoveThrottle>,
    /// Held by whatever plans and starts moves at the controller leader
    /// (balance by hand or automatic, decommission), so that one does not
    /// start a move on a partition the other has just planned.
    pub planning: tokio::sync::Mutex<()>,
    /// The partition replicas this node holds at most ([`crate::capacity`]).
    pub replica_limit: usize,
}

impl Node {
    /// Opens the store and the controller group; bootstraps the controller
    /// on a fresh first cluster.
    pub async fn start(config: NodeConfig, metrics: Metrics) -> anyhow::Result<Arc<Node>> {
        let raft_config = Arc::new(config.raft_config().map_err(anyhow::Error::msg)?);
        // Before the store opens its files.
        let replica_limit = crate::capacity::at_start(config.max_replicas);
        let store = Store::open(
            &config.data_dir,
            &replog_raft_store::StoreConfig {
                cache_capacity_bytes: config.cache_mb << 20,
                segment_bytes: config.segment_mb << 20,
                min_free_bytes: config.min_free_mb << 20,
            },
        )?;
        let peer_tls = match crate::security::peer_tls_files(&config) {
            Some(f) => Some(f.peer_client_config().map_err(anyhow::Error::msg)?),
            None => None,
        };
        let throttle = Arc::new(crate::throttle::MoveThrottle::new(
            config.move_throttle_bytes_per_sec,
            metrics.throttle_metrics(),
        ));
        let pool = Arc::new(
            PeerPool::new(crate::raft_net::source_ip(config.listen), config.peer_port_offset, peer_tls)
                .with_throttle(throttle.clone()),
        );
        let sm = GroupStateMachine::open_controller(&store, CONTROLLER_GROUP)?;
        let cluster = sm.cluster_watch().expect("controller state machine has a cluster watch");
        let members = Arc::new(Members::new(config.initial_cluster.clone(), cluster.clone()));
        let log = LogStore::open(store.clone(), CONTROLLER_GROUP)?;
        let net = NetworkFactory { pool: pool.clone(), group: CONTROLLER_GROUP };
        let raft = Raft::new(config.id, raft_config.clone(), net, log, sm).await?;
        // One node of a new cluster writes the controller's first entry (its
        // voters): the lowest id of --initial-cluster. The others start
        // empty and get it from the leader it becomes. Were every node to
        // write its own, each would campaign at once with an entry of its
        // own id, the votes would split, and the next round would wait a
        // random election timeout.
        if config.initial_cluster.keys().next() == Some(&config.id) {
            let voters: BTreeMap<NodeId, BasicNode> =
                config.initial_cluster.iter().map(|(id, a)| (*id, BasicNode { addr: a.clone() })).collect();
            match raft.initialize(voters).await {
                Ok(()) => {
                    info!("initialized the controller group with {:?}", config.initial_cluster);
                    tokio::spawn(form_controller(raft.clone()));
                }
                Err(e) if e.api_error().is_some() => {} // already initialized: a restart
                Err(e) => return Err(e.into()),
            }
        }
        let controller = Arc::new(Controller::new(config.id, raft, cluster, members.clone()));
        Ok(Arc::new(Node {
            id: config.id,
            addr: config.advertise_addr(),
            store,
            pool: pool.clone(),
            raft_config,
            controller,
            members,
            prober: Prober::default(),
            quiescer: Arc::new(crate::quiesce::Quiescer::new(
                config.id,
                match config.quiesce_after_ms {
                    0 => 0,
                    ms => ms.max(2 * config.election_timeout_max_ms),
                },
                Duration::from_millis(config.election_timeout_max_ms),
                Duration::from_millis(config.heartbeat_ms),
                pool,
            )),
            waker: crate::failover::Waker::default(),
            coordinator: Coordinator::default(),
            kafka_groups: Default::default(),
            metrics,
            partitions: RwLock::default(),
            partitions_changes: Default::default(),
            partitions_copy: Default::default(),
            census: Default::default(),
            reconcile_lock: tokio::sync::Mutex::new(()),
            acks_none_slots: Arc::new(tokio::sync::Semaphore::new(MAX_ACKS_NONE_IN_FLIGHT)),
            stopping: std::sync::atomic::AtomicBool::new(false),
            verified: crate::security::auth::VerifiedPasswords::new(),
            produce_quota: crate::security::quota::Quota::new(config.produce_quota_bytes_per_sec),
            fetch_quota: crate::security::quota::Quota::new(config.fetch_quota_bytes_per_sec),
            schemas: Default::default(),
            throttle,
            planning: tokio::sync::Mutex::new(()),
            replica_limit,
            config,
        }))
    }

    /// Starts the background tasks: reconciler, registration, prober, balancer.
    pub fn spawn_tasks(self: &Arc<Self>) {
        tokio::spawn(crate::reconciler::run(self.clone()));
        tokio::spawn(self.controller.clone().register_loop());
        tokio::spawn(catch_up_metadata(self.clone()));
        let n = self.clone();
        tokio::spawn(async move {
            loop {
                n.probe_round().await;
                tokio::time::sleep(crate::prober::PROBE_INTERVAL).await;
            }
        });
        tokio::spawn(crate::balancer::run(self.clone()));
        tokio::spawn(crate::balancer::run_auto(self.clone()));
        tokio::spawn(crate::coordinator::run(self.clone()));
        tokio::spawn(crate::retention::run(self.clone()));
        tokio::spawn(crate::mover::run(self.clone()));
        tokio::spawn(crate::quiesce::run(self.clone()));
        if let Some(via) = self.config.join.clone() {
            tokio::spawn(crate::join::run(self.clone(), via));
        }
    }

    pub fn partition(&self, group: GroupId) -> Option<Arc<Partition>> {
        self.partitions.read().expect("partitions lock").get(&group).cloned()
    }

    /// The open partitions by group, as of now, for a scan: a copy the
    /// scans share, made again only after a partition opened or closed.
    /// A scan holds no lock (a long read would hold up the writer that
    /// opens a partition and, behind it, every lookup of the Raft peer
    /// service), and a node whose partitions stay open copies nothing.
    pub(crate) fn partition_map(&self) -> PartitionMap {
        use std::sync::atomic::Ordering;
        let changes = self.partitions_changes.load(Ordering::Acquire);
        if let Some((made_at, copy)) = &*self.partitions_copy.lock().expect("partitions copy lock")
            && *made_at == changes
        {
            return copy.clone();
        }
        let (made_at, copy) = {
            let m = self.partitions.read().expect("partitions lock");
            (self.partitions_changes.load(Ordering::Acquire), Arc::new(m.clone()))
        };
        let mut kept = self.partitions_copy.lock().expect("partitions copy lock");
        if kept.as_ref().is_none_or(|(at, _)| *at < made_at) {
            *kept = Some((made_at, copy.clone()));
        }
        copy
    }

    /// The open groups sorted into quiet and awake, with what the reports
    /// say of the quiet ones: read again only after a group went quiet or
    /// woke, a partition opened or closed, or the metadata changed.
    pub(crate) fn census(&self) -> Arc<crate::census::Census> {
        let changes = self.quiescer.changes();
        let open = self.partition_map();
        let meta = self.meta();
        if let Some(c) = &*self.census.lock().expect("census lock")
            && c.holds(changes, &open, &meta)
        {
            return c.clone();
        }
        let c = Arc::new(crate::census::Census::take(self, changes, open, meta));
        *self.census.lock().expect("census lock") = Some(c.clone());
        c
    }

    /// How many partitions are open here.
    pub fn partition_count(&self) -> usize {
        self.partitions.read().expect("partitions lock").len()
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().expect("partitions lock").values().cloned().collect()
    }

    pub(crate) fn add_partition(&self, p: Arc<Partition>) {
        let mut m = self.partitions.write().expect("partitions lock");
        m.insert(p.group(), p);
        self.partitions_changes.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.metrics.groups.set(m.len() as i64);
    }

    pub(crate) fn remove_partition(&self, group: GroupId) -> Option<Arc<Partition>> {
        let mut m = self.partitions.write().expect("partitions lock");
        let p = m.remove(&group);
        self.partitions_changes.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
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

    /// UNAVAILABLE while this node, having joined, has not applied its own
    /// registration: until then its metadata misses topics that exist (and
    /// maybe everything), and answering from it would tell clients a topic
    /// is unknown — a definite error — when they should only ask elsewhere.
    pub fn check_metadata_known(&self) -> Result<()> {
        if self.config.join.is_some() && !self.meta().nodes.contains_key(&self.id) {
            return Err(NodeError::Unavailable("this node has not caught up with the cluster metadata yet".into()));
        }
        Ok(())
    }

    /// UNKNOWN_TOPIC for a topic this node's metadata lacks, once it has
    /// caught up with the controller since it started; UNAVAILABLE before
    /// (a node just restarted may not have applied a topic created while it
    /// was down, and the client should ask elsewhere or again).
    pub fn unknown_topic(&self, topic: &str) -> NodeError {
        if self.controller.caught_up() {
            NodeError::UnknownTopic(topic.to_string())
        } else {
            NodeError::Unavailable(format!(
                "this node has not caught up with the cluster metadata since it started; topic {topic:?} may exist"
            ))
        }
    }

    /// The partition group for `topic`/`partition`, checking both exist.
    pub fn locate(&self, topic: &str, partition: u32) -> Result<(GroupId, Vec<NodeId>)> {
        self.check_metadata_known()?;
        let meta = self.meta();
        let t = meta.topics.get(topic).ok_or_else(|| self.unknown_topic(topic))?;
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
            None => self.prober.reported_leader(group, replicas, self.id),
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
        let gone = self.prober.probe(targets, &self.pool).await;
        if !gone.is_empty() {
            self.quiescer.wake_shared_with(self, &gone);
            let rafts = self
                .partitions()
                .iter()
                .map(|p| (p.group(), p.raft().clone()))
                .chain([(CONTROLLER_GROUP, self.controller.raft().clone())])
                .collect();
            self.waker.peers_down(self.id, &gone, rafts);
        }
    }

    /// This node's own report: partitions hosted, their leaders and offsets.
    /// Peers ask for it twice a second each, so it reads afresh only the
    /// awake groups; the quiet ones come from the [`Node::census`], their
    /// leases judged once per voter set.
    pub fn node_info(&self) -> pb::NodeInfoResponse {
        let census = self.census();
        let acked = self.quiescer.acked_within_lease();
        let (mut leaders, mut under_replicated) = (0, 0);
        for l in &census.quiet_led {
            if self.quiescer.majority_acked(l.voters.iter().copied(), &acked) {
                leaders += l.groups;
                under_replicated += l.under_replicated;
            }
        }
        let mut awake = Vec::with_capacity(census.awake.len());
        let mut awake_ready = true;
        for (p, placed) in &census.awake {
            let (v, leads) = self.read_view(p, false);
            awake_ready &= !placed || v.behind.is_none();
            leaders += u32::from(leads);
            under_replicated += u32::from(leads && v.under_replicated);
            awake.push(crate::census::node_status(p.group(), &v));
        }
        let in_sync = census.settled_ready && awake_ready && crate::metrics::sample::controller_waiting(self).is_none();
        pb::NodeInfoResponse {
            id: self.id,
            addr: self.addr.clone(),
            leader_count: leaders,
            replica_count: (census.quiet.len() + census.awake.len()) as u32,
            groups: crate::census::merged(&census.quiet, awake),
            stopping: self.stopping.load(std::sync::atomic::Ordering::SeqCst),
            under_replicated,
            in_sync,
            rack: self.config.rack.clone(),
            kafka_addr: self.config.kafka_advertised_addr().unwrap_or_default(),
            controller_caught_up: self.controller.caught_up(),
            replica_limit: u32::try_from(self.replica_limit).unwrap_or(u32::MAX),
        }
    }

    /// What the reports say of `p`, read from its Raft state now; and
    /// whether it leads here with a lease. The voters, for a kept view's
    /// lease, are collected only for a view to be kept (`keep`).
    pub(crate) fn read_view(&self, p: &Partition, keep: bool) -> (crate::quiesce::QuietView, bool) {
        let rx = p.raft().metrics();
        let m = rx.borrow_watched();
        let led = crate::members::leads(&m, self.id);
        // The lease is looked at only where Raft says this node leads.
        let leads = led && p.is_leader_given(&m);
        let o = p.offsets();
        let view = crate::quiesce::QuietView {
            leader: m.current_leader,
            applied: m.last_applied.map_or(0, |l| l.index),
            log_start_offset: o.log_start_offset,
            high_watermark: o.high_watermark,
            behind: crate::metrics::sample::behind(&m),
            led,
            voters: if led && keep {
                crate::members::voters(m.membership_config.membership()).collect()
            } else {
                Vec::new()
            },
            under_replicated: led && under_replicated_group(&m, self.id),
        };
        (view, leads)
    }

    /// Hands the leadership of every group in `rafts` this node leads to a
    /// caught-up voter, asking again every [`HANDOFF_RETRY`], until none is
    /// led here or `limit` has passed. A transfer stops the group's writes
    /// only until the target wins its election (one round trip, as it has
    /// everything), where a stop without it would leave the group
    /// leaderless for an election timeout.
    async fn hand_off(&self, rafts: &[Raft], limit: Duration) {
        let started = Instant::now();
        let mut asked: HashMap<usize, Instant> = HashMap::new();
        loop {
            let led: Vec<usize> = (0..rafts.len()).filter(|i| rafts[*i].led_by(self.id)).collect();
            if led.is_empty() {
                if !asked.is_empty() {
                    info!(
                        groups = asked.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "handed off every leadership"
                    );
                }
                return;
            }
            if started.elapsed() >= limit {
                warn!(groups = led.len(), "still leading groups at the hand-off deadline; stopping anyway");
                return;
            }
            let live = self.live_nodes();
            for i in led {
                if asked.get(&i).is_some_and(|t| t.elapsed() < HANDOFF_RETRY) {
                    continue;
                }
                let m = rafts[i].metrics().borrow_watched().clone();
                let matched: BTreeMap<NodeId, Option<u64>> = m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .filter(|v| *v != self.id)
                    .map(|v| {
                        let idx = m.replication.as_ref().and_then(|r| r.get(&v).cloned().flatten()).map(|l| l.index);
                        (v, idx)
                    })
                    .collect();
                if let Some(to) = handoff_target(&matched, m.last_log_index, &live) {
                    let _ = rafts[i].trigger().transfer_leader(to).await;
                }
                asked.insert(i, Instant::now());
            }
            tokio::time::sleep(HANDOFF_POLL).await;
        }
    }

    /// Graceful stop: hand every leadership held here to a caught-up
    /// replica (within `shutdown_handoff_ms`), then stop every group and
    /// flush.
    pub async fn shutdown(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        // Appends held back by a full disk must not hold the stop.
        self.store.begin_close();
        let rafts: Vec<Raft> =
            self.partitions().iter().map(|p| p.raft().clone()).chain([self.controller.raft().clone()]).collect();
        // Transfers need every replica of a quiet group ticking.
        self.quiescer.wake_all_led(self).await;
        self.hand_off(&rafts, Duration::from_millis(self.config.shutdown_handoff_ms)).await;
        // All at once: one after another, thousands of groups took longer
        // than a service manager waits for a stop.
        futures::future::join_all(rafts.iter().map(|r| r.shutdown())).await;
        if let Err(e) = self.store.flush().await {
            warn!("final flush failed: {e}");
        }
    }
}

/// The open partitions by group, shared by the scans over them.
pub type PartitionMap = Arc<HashMap<GroupId, Arc<Partition>>>;

/// Whether some voter of a group led by `me` is not known to hold the log
/// up to within [`crate::metrics::sample::READY_SLACK_ENTRIES`] of its end.
pub fn under_replicated_group(m: &openraft::RaftMetrics<replog_raft_store::TypeConfig>, me: NodeId) -> bool {
    let last = m.last_log_index.unwrap_or(0);
    let repl = m.replication.as_ref();
    crate::members::voters(m.membership_config.membership()).filter(|v| *v != me).any(|v| {
        let held = repl.and_then(|r| r.get(&v).cloned().flatten()).map(|l| l.index);
        held.is_none_or(|h| h + crate::metrics::sample::READY_SLACK_ENTRIES < last)
    })
}

/// Whom a stopping leader hands a group to: among the other voters
/// (`matched`: the last log index each is known to hold), one that holds
/// everything (`last`) and is alive, else the most advanced live one, else
/// the most advanced of all. `None` when the group has no other voter.
pub fn handoff_target(matched: &BTreeMap<NodeId, Option<u64>>, last: Option<u64>, live: &[NodeId]) -> Option<NodeId> {
    let rank =
        |(id, m): (&NodeId, &Option<u64>)| (live.contains(id), *m >= last && m.is_some(), *m, std::cmp::Reverse(*id));
    matched.iter().max_by_key(|e| rank(*e)).map(|(id, _)| *id)
}

/// After a start, asks the controller leader for its read index until one
/// answers, and marks the metadata caught up once it is applied here
/// ([`crate::controller::Controller::caught_up`]); writes wait for it.
async fn catch_up_metadata(node: Arc<Node>) {
    const RETRY: Duration = Duration::from_millis(100);
    const APPLY_WAIT: Duration = Duration::from_secs(10);
    if let Some(ms) = std::env::var(CATCH_UP_DELAY_ENV).ok().and_then(|v| v.parse::<u64>().ok()) {
        warn!(ms, "{CATCH_UP_DELAY_ENV} is set: catching up with the controller is held back (a test's fault)");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let t0 = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let index = match node.controller.leader() {
            Some(l) if l == node.id => node.controller.read_index().await,
            Some(l) => match node.members.addr(l) {
                Some(addr) => ask_read_index(&node, &addr).await,
                None => Err(NodeError::Unavailable(format!("no address for controller leader {l}"))),
            },
            None => Err(NodeError::Unavailable("no controller leader yet".into())),
        };
        match index {
            Ok(i) => match node.controller.mark_caught_up(i, APPLY_WAIT).await {
                Ok(()) => {
                    info!(index = i, took_ms = t0.elapsed().as_millis() as u64, "metadata caught up: taking writes");
                    return;
                }
                Err(e) => warn!("metadata catching up: {e}"),
            },
            Err(e) if attempts.is_multiple_of(50) => warn!("metadata catching up (attempt {attempts}): {e}"),
            Err(e) => tracing::debug!("metadata catching up: {e}"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn ask_read_index(node: &Node, addr: &str) -> Result<u64> {
    let mut c = node.pool.replog_client(addr).map_err(NodeError::Unavailable)?;
    let mut req = tonic::Request::new(pb::ControllerReadIndexRequest {});
    req.set_timeout(Duration::from_secs(2));
    c.controller_read_index(req).await.map(|r| r.into_inner().index).map_err(|s| NodeError::from_remote(addr, s))
}

/// A new cluster's first controller election. The node that initialized
/// the group campaigns at once, usually before its peers listen, and its
/// next campaign would wait a random election timeout: up to
/// `--election-timeout-max-ms`, a minute where an operator chose long
/// leases. Until a leader is known it calls an election twice a second
/// instead (no other node can campaign before it leads: they hold no
/// voters yet).
async fn form_controller(raft: Raft) {
    const EVERY: std::time::Duration = std::time::Duration::from_millis(500);
    const GIVE_UP: std::time::Duration = std::time::Duration::from_secs(120);
    let start = std::time::Instant::now();
    while start.elapsed() < GIVE_UP {
        tokio::time::sleep(EVERY).await;
        // Term 0 is initialization's own vote, which names this node as
        // leader without an election: a leader is known from term 1 on.
        let known = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            m.current_term > 0 && m.current_leader.is_some()
        };
        if known {
            return;
        }
        if raft.trigger().elect(false).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_voters_when_handing_off_then_a_live_caught_up_one_is_chosen_first() {
        let m = BTreeMap::from([(2, Some(10)), (3, Some(12)), (4, None)]);
        assert_eq!(handoff_target(&m, Some(12), &[1, 2, 3, 4]), Some(3));
        // The caught-up one is down: the most advanced live one.
        assert_eq!(handoff_target(&m, Some(12), &[1, 2, 4]), Some(2));
        // Nobody known alive: still the most advanced.
        assert_eq!(handoff_target(&m, Some(12), &[1]), Some(3));
        // Alone in the group: nobody to hand to.
        assert_eq!(handoff_target(&BTreeMap::new(), Some(1), &[1]), None);
    }
}
