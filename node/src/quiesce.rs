//! Quiet partitions: an idle partition group stops ticking on every replica,
//! so that thousands of idle partitions per node cost next to nothing.
//!
//! A Raft group ticks several times per heartbeat interval on every replica
//! and its leader sends a heartbeat to each follower every interval, written
//! or not: with thousands of groups per node the ticks and heartbeats alone
//! take the cores. Here, as with CockroachDB's quiesced ranges and TiKV's
//! hibernating regions, node-to-node liveness stands in for the idle groups'
//! heartbeats:
//!
//! - Every node calls every peer's `Quiesce` each [`PING`]; the calls are
//!   the liveness (when each peer was last heard, and its incarnation,
//!   which changes when it restarts).
//! - A leader whose group has had no client operation for
//!   `quiesce_after_ms`, with every voter holding the whole log, all of it
//!   committed and applied, asks its followers to let the group sleep; each
//!   follower that holds exactly that log under that leader and term stops
//!   the group's ticks and says so. When all have, the leader stops its own.
//! - A quiet group refuses votes: its leader is alive (else it would have
//!   woken, below), and a candidate (a restarted replica) must not win
//!   against it. A quiet leader asked for a vote wakes up, so that the
//!   candidate hears it.
//! - It wakes on any client operation at the leader (which ticks again,
//!   sends a heartbeat at once and tells the followers), on an append with
//!   entries at a follower, before a leadership transfer or a move, and at
//!   a follower when its leader's node has not been heard for
//!   [`Quiescer::dead_after`], restarted, or is gone: the follower ticks
//!   again and, its leader long silent, elects at once.
//! - A quiet leader has no Raft lease (no heartbeats are acknowledged): it
//!   holds its lease through liveness instead, as long as a majority of its
//!   voters' nodes answered a ping sent within the lease. Followers wake
//!   only after [`Quiescer::dead_after`] (longer than the lease) without
//!   hearing it, so no other leader is elected while that lease holds.
//!   Reads at a leader without its Raft lease take a ReadIndex round;
//!   writes wait for the Raft lease to come back (the acknowledgements of
//!   the heartbeat sent on waking, one round trip), since openraft takes
//!   writes only under it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use replog_proto::pb;
use replog_raft_store::{GroupId, NodeId, Raft};
use tracing::debug;

use crate::members::{Leadership, voters};
use crate::node::Node;
use crate::partition::Partition;

/// Between two liveness calls to a peer.
pub const PING: Duration = Duration::from_millis(100);
/// Idle leaders are looked for every this many pings.
const CHECK_EVERY: u32 = 5;
/// Every quiet follower's Raft state is compared with what it went quiet
/// under every this many pings: the heartbeat that brings a new leader
/// wakes it at once ([`Quiescer::heartbeat_reaches`]); this is the net
/// under that.
const SWEEP_EVERY: u32 = 50;
/// The shortest silence after which a quiet follower takes its leader's
/// node for gone. A node short of CPU (thousands of groups electing at a
/// cluster start) answers pings late; waking every group it leads on that
/// would add their ticks and heartbeats to the load that made it late, and
/// the cluster would never settle. Liveness leases elsewhere are seconds
/// too (CockroachDB's node liveness: 9 s). Only quiet groups wait this
/// long; a ticking group fails over on its election timeout.
const ORPHANED_AFTER_MIN: Duration = Duration::from_secs(3);

/// A partition's quiet state.
#[derive(Default)]
pub struct Quiet {
    asleep: AtomicBool,
    /// Milliseconds since the node started at the last client operation
    /// and at the last wake-up.
    active_ms: AtomicU64,
    woke_ms: AtomicU64,
    /// While asleep: the leader and term it went quiet under.
    under: Mutex<Option<(NodeId, u64)>>,
    /// Times the group went quiet: which nap a [`QuietView`] was read in.
    naps: AtomicU64,
    /// What scans report of the group, read once in the current nap.
    view: Mutex<Option<(u64, QuietView)>>,
}

/// What the node's reports (`NodeInfo`, readiness) say of a group, as read
/// from its Raft state; a quiet group's is read once per nap and kept: its
/// Raft state does not move until it wakes (a write, an append with
/// entries, a vote, a heartbeat from another leader or a silent leader
/// wakes it first), so the thousands of quiet groups of a node are not read
/// again for every report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietView {
    pub leader: Option<NodeId>,
    pub applied: u64,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub behind: Option<crate::metrics::sample::Behind>,
    /// Led here by Raft's account; then, in a kept view, its voters (for
    /// the lease through liveness), and whether one is behind.
    pub led: bool,
    pub voters: Vec<NodeId>,
    pub under_replicated: bool,
}

impl Quiet {
    /// The current nap, if asleep: a view read now may be kept with
    /// [`Self::keep_view`] under it.
    pub fn nap(&self) -> Option<u64> {
        self.is_asleep().then(|| self.naps.load(Ordering::SeqCst))
    }

    /// Keeps `view`, read during nap `nap`, unless the group has woken
    /// since (or slept again).
    pub fn keep_view(&self, nap: u64, view: QuietView) {
        let mut kept = self.view.lock().expect("view lock");
        if self.is_asleep() && self.naps.load(Ordering::SeqCst) == nap {
            *kept = Some((nap, view));
        }
    }

    /// `f` of the view kept for the current nap; None while awake or before
    /// one is kept.
    pub fn with_view<R>(&self, f: impl FnOnce(&QuietView) -> R) -> Option<R> {
        if !self.is_asleep() {
            return None;
        }
        let kept = self.view.lock().expect("view lock");
        match &*kept {
            Some((nap, v)) if *nap == self.naps.load(Ordering::SeqCst) => Some(f(v)),
            _ => None,
        }
    }

    pub fn is_asleep(&self) -> bool {
        self.asleep.load(Ordering::SeqCst)
    }

    /// While asleep, the leader and term it went quiet under: its Raft
    /// state does not move while it sleeps, so a scan can read this from
    /// the partition itself instead of its Raft metrics.
    pub fn asleep_under(&self) -> Option<(NodeId, u64)> {
        if !self.is_asleep() {
            return None;
        }
        *self.under.lock().expect("quiet lock")
    }

    /// Stops `raft`'s ticks and marks the group asleep under `leader`'s
    /// `term`.
    fn sleep(&self, raft: &Raft, leader: NodeId, term: u64) {
        let mut under = self.under.lock().expect("quiet lock");
        *under = Some((leader, term));
        raft.runtime_config().tick(false);
        self.naps.fetch_add(1, Ordering::SeqCst);
        self.asleep.store(true, Ordering::SeqCst);
    }

    /// Holds `raft`'s ticks (its election timer) until [`Self::release`]:
    /// see [`crate::start_pacer`].
    pub(crate) fn hold(&self, raft: &Raft) {
        let _under = self.under.lock().expect("quiet lock");
        raft.runtime_config().tick(false);
    }

    /// Lets a held group tick, unless it has gone quiet meanwhile (its
    /// wake-up ticks it then). Under the lock [`Self::sleep`] holds, so a
    /// group going quiet at the same time is never left ticking.
    pub(crate) fn release(&self, raft: &Raft) {
        let _under = self.under.lock().expect("quiet lock");
        if !self.is_asleep() {
            raft.runtime_config().tick(true);
        }
    }

    /// Marks the group awake at `now_ms` (its ticks are the caller's);
    /// false if it was not asleep.
    fn mark_awake(&self, now_ms: u64) -> bool {
        if !self.asleep.swap(false, Ordering::SeqCst) {
            return false;
        }
        self.woke_ms.store(now_ms, Ordering::SeqCst);
        self.under.lock().expect("quiet lock").take();
        self.view.lock().expect("view lock").take();
        true
    }
}

/// What this node knows of a peer's liveness.
#[derive(Clone, Copy)]
struct Peer {
    /// The last call from it or answer by it.
    heard: Instant,
    /// When the newest of this node's calls that it answered was sent.
    acked: Option<Instant>,
    incarnation: u64,
}

/// Node liveness and the quiet groups of this node.
pub struct Quiescer {
    me: NodeId,
    incarnation: u64,
    started: Instant,
    /// None: groups never go quiet.
    idle_after: Option<Duration>,
    lease: Duration,
    /// How long a follower told to wake waits before it ticks (two
    /// heartbeat intervals): its election timer has long expired, and
    /// ticking before the woken leader's first heartbeat has arrived would
    /// start an election against a live leader.
    settle: Duration,
    peers: Mutex<HashMap<NodeId, Peer>>,
    /// Wake-ups to tell each peer on the next call.
    wakes: Mutex<HashMap<NodeId, Vec<GroupId>>>,
    /// Groups that went quiet or woke here so far, each counted after the
    /// change: a [`crate::census::Census`] read at one count holds until
    /// the next.
    changes: AtomicU64,
    /// Where a woken leader's heartbeats are hurried.
    pool: Arc<crate::raft_net::PeerPool>,
}

impl Quiescer {
    pub fn new(
        me: NodeId,
        idle_after_ms: u64,
        lease: Duration,
        heartbeat: Duration,
        pool: Arc<crate::raft_net::PeerPool>,
    ) -> Quiescer {
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            .max(1);
        Quiescer {
            me,
            incarnation,
            started: Instant::now(),
            idle_after: (idle_after_ms > 0).then(|| Duration::from_millis(idle_after_ms)),
            lease,
            settle: heartbeat * 2,
            peers: Mutex::default(),
            wakes: Mutex::default(),
            changes: AtomicU64::new(0),
            pool,
        }
    }

    /// How long a follower of a quiet group waits without hearing its
    /// leader's node before it wakes the group: past the lease the leader
    /// holds through liveness, by two pings, and at least
    /// [`ORPHANED_AFTER_MIN`].
    pub fn dead_after(&self) -> Duration {
        (self.lease + PING * 2).max(ORPHANED_AFTER_MIN)
    }

    /// How many times a group went quiet or woke here so far.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Marks `p` awake (its ticks are the caller's); false if it was not
    /// asleep.
    fn mark_awake(&self, p: &Partition) -> bool {
        let woke = p.quiet.mark_awake(self.now_ms());
        if woke {
            self.changes.fetch_add(1, Ordering::SeqCst);
        }
        woke
    }

    /// Puts `p` to sleep under `leader`'s `term` ([`Quiet::sleep`]).
    fn sleep(&self, p: &Partition, leader: NodeId, term: u64) {
        p.quiet.sleep(p.raft(), leader, term);
        self.changes.fetch_add(1, Ordering::SeqCst);
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Notes a client operation on `p`: it stays awake, or wakes.
    pub fn touch(&self, p: &Partition) {
        p.quiet.active_ms.store(self.now_ms(), Ordering::SeqCst);
        if p.quiet.is_asleep() && p.raft().led_by(self.me) {
            self.wake(p);
        }
    }

    /// Wakes `p` here; at its leader also sends a heartbeat at once (the
    /// Raft lease comes back with its acknowledgements) and has the
    /// followers woken with the next pings.
    pub fn wake(&self, p: &Partition) {
        if !self.mark_awake(p) {
            return;
        }
        p.raft().runtime_config().tick(true);
        if p.raft().led_by(self.me) {
            // Writes here wait for this heartbeat's acknowledgements.
            self.pool.hurry_heartbeats(p.group());
            let raft = p.raft().clone();
            tokio::spawn(async move {
                let _ = raft.trigger().heartbeat().await;
            });
            let mut wakes = self.wakes.lock().expect("wakes lock");
            for f in self.followers(p.raft()) {
                wakes.entry(f).or_default().push(p.group());
            }
        }
        debug!(partition = p.name(), "woke");
    }

    /// Wakes a follower its leader told to: at once it stops refusing votes
    /// and counting as quiet, and it ticks again [`Self::settle`] later,
    /// once the leader's heartbeats (sent as the leader woke) have
    /// refreshed its election timer.
    fn wake_follower(&self, p: Arc<Partition>) {
        if p.raft().led_by(self.me) || !self.mark_awake(&p) {
            return;
        }
        let settle = self.settle;
        tokio::spawn(async move {
            tokio::time::sleep(settle).await;
            if !p.quiet.is_asleep() {
                p.raft().runtime_config().tick(true);
            }
        });
    }

    /// Wakes `p` and, at its leader, its followers before returning: for a
    /// leadership transfer or a move, whose votes and appends need every
    /// replica ticking. Followers may sleep under an awake leader (it woke
    /// for a read, or one went quiet and the leader did not), so they are
    /// told whatever the leader's own state.
    pub async fn wake_everywhere(&self, node: &Node, p: &Partition) {
        self.wake(p);
        self.wake_followers(node, &[p]).await;
    }

    /// Wakes every group led here, and its followers, before returning (a
    /// stopping node's hand-off).
    pub async fn wake_all_led(&self, node: &Node) {
        let parts = node.partitions();
        let parts: Vec<&Partition> = parts.iter().map(|p| &**p).filter(|p| p.raft().led_by(self.me)).collect();
        for p in &parts {
            self.wake(p);
        }
        self.wake_followers(node, &parts).await;
    }

    /// Tells the followers of those of `parts` led here to wake, one call
    /// per peer, and waits for the answers.
    async fn wake_followers(&self, node: &Node, parts: &[&Partition]) {
        let mut per_peer: BTreeMap<NodeId, Vec<GroupId>> = BTreeMap::new();
        for p in parts.iter().filter(|p| p.raft().led_by(self.me)) {
            for f in self.followers(p.raft()) {
                per_peer.entry(f).or_default().push(p.group());
            }
        }
        let calls = per_peer.into_iter().map(|(peer, wake)| {
            let req = pb::QuiesceRequest { from: self.me, incarnation: self.incarnation, sleep: Vec::new(), wake };
            self.call(node, peer, req)
        });
        futures::future::join_all(calls).await;
    }

    /// Whether `p`, quiet (or woken within the lease) and led here, holds
    /// its lease through liveness: a majority of its voters, this node
    /// included, answered a ping sent within the lease.
    pub fn holds_quiet_lease(&self, p: &Partition) -> bool {
        self.holds_quiet_lease_given(p, &p.raft().metrics().borrow_watched())
    }

    /// [`Self::holds_quiet_lease`], with `m` the group's Raft metrics as
    /// just read.
    pub fn holds_quiet_lease_given(
        &self,
        p: &Partition,
        m: &openraft::RaftMetrics<replog_raft_store::TypeConfig>,
    ) -> bool {
        let q = &p.quiet;
        let woke_within =
            self.now_ms().saturating_sub(q.woke_ms.load(Ordering::SeqCst)) < self.lease.as_millis() as u64;
        if !(q.is_asleep() || (woke_within && q.woke_ms.load(Ordering::SeqCst) > 0))
            || !crate::members::leads(m, self.me)
        {
            return false;
        }
        self.majority_acked(voters(m.membership_config.membership()), &self.acked_within_lease())
    }

    /// The peers that answered a ping sent within the lease.
    pub fn acked_within_lease(&self) -> Vec<NodeId> {
        let peers = self.peers.lock().expect("peers lock");
        peers.iter().filter(|(_, p)| p.acked.is_some_and(|t| t.elapsed() < self.lease)).map(|(id, _)| *id).collect()
    }

    /// Whether a majority of `voters`, this node included, is in `acked`
    /// ([`Self::acked_within_lease`]): the lease of a quiet leader.
    pub fn majority_acked(&self, voters: impl IntoIterator<Item = NodeId>, acked: &[NodeId]) -> bool {
        let (mut all, mut fresh) = (0, 0);
        for v in voters {
            all += 1;
            fresh += usize::from(v == self.me || acked.contains(&v));
        }
        fresh * 2 > all
    }

    /// The peer service's side of a call from `req.from`.
    pub fn answer(&self, node: &Node, req: pb::QuiesceRequest) -> pb::QuiesceResponse {
        self.heard(node, req.from, req.incarnation, None);
        for g in req.wake {
            if let Some(p) = node.partition(g) {
                self.wake_follower(p);
            }
        }
        let mut slept = Vec::new();
        for s in req.sleep {
            if let Some(p) = node.partition(s.group_id)
                && self.sleep_follower(&p, req.from, s.term, s.last_log_index)
            {
                slept.push(s.group_id);
            }
        }
        pb::QuiesceResponse { incarnation: self.incarnation, slept }
    }

    /// Puts a follower to sleep if it holds exactly what its leader asks
    /// for: that leader and term, that whole log, all of it applied.
    fn sleep_follower(&self, p: &Partition, leader: NodeId, term: u64, last: u64) -> bool {
        let holds = {
            let m = p.raft().metrics();
            let m = m.borrow_watched();
            m.state == ServerState::Follower
                && m.current_leader == Some(leader)
                && m.current_term == term
                && m.last_log_index == Some(last)
                && m.last_applied.is_some_and(|l| l.index == last)
        };
        if !holds {
            return false;
        }
        self.sleep(p, leader, term);
        true
    }

    /// Records that `from` was heard; a new incarnation means it restarted
    /// and lost every group's state: the groups it shares with this node
    /// that sleep wake, so that it hears their leaders (or elects).
    fn heard(&self, node: &Node, from: NodeId, incarnation: u64, acked: Option<Instant>) {
        let restarted = {
            let mut peers = self.peers.lock().expect("peers lock");
            let now = Instant::now();
            let p = peers.entry(from).or_insert(Peer { heard: now, acked: None, incarnation });
            p.heard = now;
            if acked.is_some_and(|a| p.acked.is_none_or(|b| a > b)) {
                p.acked = acked;
            }
            let restarted = p.incarnation != incarnation;
            p.incarnation = incarnation;
            restarted
        };
        if restarted {
            debug!(peer = from, "peer restarted: waking the quiet groups it shares");
            self.wake_shared_with(node, &[from]);
        }
    }

    /// Wakes every quiet group here led by one of `peers` or, led here,
    /// with one of them as a voter.
    pub fn wake_shared_with(&self, node: &Node, peers: &[NodeId]) {
        let woken: Vec<Arc<Partition>> = node
            .partition_map()
            .values()
            .filter(|p| {
                p.quiet.is_asleep() && {
                    let led_by_peer =
                        p.quiet.under.lock().expect("quiet lock").is_some_and(|(l, _)| peers.contains(&l));
                    led_by_peer
                        || (p.raft().led_by(self.me) && self.followers(p.raft()).iter().any(|v| peers.contains(v)))
                }
            })
            .cloned()
            .collect();
        for p in woken {
            self.wake(&p);
        }
    }

    async fn call(&self, node: &Node, peer: NodeId, req: pb::QuiesceRequest) -> Option<pb::QuiesceResponse> {
        let addr = node.members.addr(peer)?;
        let mut client = node.pool.client(&addr).ok()?;
        let sent = Instant::now();
        let r = tokio::time::timeout(PING * 5, client.quiesce(req)).await.ok()?.ok()?.into_inner();
        self.heard(node, peer, r.incarnation, Some(sent));
        Some(r)
    }

    /// Quiet followers whose leader's node has not been heard for
    /// [`Self::dead_after`] wake; with `changed`, also those whose Raft
    /// names another leader or term than the one they went quiet under.
    /// Cheap when no peer is silent and `changed` is off: nothing is read.
    fn wake_orphans(&self, node: &Node, changed: bool) {
        let dead_after = self.dead_after();
        let silent: Vec<NodeId> = {
            let peers = self.peers.lock().expect("peers lock");
            node.members
                .all()
                .into_keys()
                .filter(|id| *id != self.me)
                .filter(|id| peers.get(id).is_none_or(|l| l.heard.elapsed() >= dead_after))
                .collect()
        };
        if silent.is_empty() && !changed {
            return;
        }
        let mut woken = Vec::new();
        for p in node.partition_map().values() {
            if !p.quiet.is_asleep() {
                continue;
            }
            let Some((leader, term)) = *p.quiet.under.lock().expect("quiet lock") else { continue };
            if leader == self.me {
                continue;
            }
            let moved = changed && moved(p, leader, term);
            if moved || silent.contains(&leader) {
                debug!(partition = p.name(), leader, moved, "quiet follower wakes");
                woken.push(p.clone());
            }
        }
        for p in woken {
            self.wake(&p);
        }
    }

    /// A heartbeat from `from`'s `term` is reaching `p`: a quiet group that
    /// went quiet under another leader or term wakes at once. One was
    /// elected without this replica: a follower must tick again, and a
    /// leader that went quiet here has been deposed (its kept view would
    /// still say it leads).
    pub fn heartbeat_reaches(&self, p: &Partition, from: NodeId, term: u64) {
        if let Some((leader, quiet_term)) = p.quiet.asleep_under()
            && (leader, quiet_term) != (from, term)
        {
            debug!(partition = p.name(), leader, from, term, "quiet follower hears another leader");
            self.wake(p);
        }
    }

    /// Groups led here that may go quiet: idle long enough, every voter
    /// holding the whole log, all of it committed and applied, no learner
    /// and no joint configuration. Each with its term and last log index.
    fn idle_led(&self, node: &Node, idle_after: Duration) -> Vec<(Arc<Partition>, u64, u64, Vec<NodeId>)> {
        let now = self.now_ms();
        let idle_ms = idle_after.as_millis() as u64;
        let mut out = Vec::new();
        // Only awake groups: a quiet one has nothing to do here.
        for (p, _) in &node.census().awake {
            let q = &p.quiet;
            if q.is_asleep()
                || now.saturating_sub(q.active_ms.load(Ordering::SeqCst)) < idle_ms
                || now.saturating_sub(q.woke_ms.load(Ordering::SeqCst)) < idle_ms
                || !p.raft().leased_by(self.me, self.lease)
            {
                continue;
            }
            let m = p.raft().metrics();
            let m = m.borrow_watched();
            let mem = m.membership_config.membership();
            let Some(last) = m.last_log_index else { continue };
            if mem.learner_ids().next().is_some()
                || mem.get_joint_config().len() > 1
                || m.local_committed.is_none_or(|c| c.index != last)
                || m.last_applied.is_none_or(|a| a.index != last)
            {
                continue;
            }
            let followers: Vec<NodeId> = voters(mem).filter(|v| *v != self.me).collect();
            let repl = m.replication.as_ref();
            let all_hold = followers
                .iter()
                .all(|f| repl.and_then(|r| r.get(f).cloned().flatten()).is_some_and(|l| l.index == last));
            if all_hold && !followers.is_empty() {
                out.push((p.clone(), m.current_term, last, followers));
            }
        }
        out
    }

    /// One round: a call to every peer (liveness, wake-ups, sleep requests
    /// every [`CHECK_EVERY`] rounds); leaders whose followers all went
    /// quiet go quiet themselves.
    async fn round(&self, node: &Node, check_idle: bool, sweep: bool) {
        let candidates = match self.idle_after {
            Some(after) if check_idle => self.idle_led(node, after),
            _ => Vec::new(),
        };
        let mut sleep: BTreeMap<NodeId, Vec<pb::QuiesceGroup>> = BTreeMap::new();
        for (p, term, last, followers) in &candidates {
            for f in followers {
                sleep.entry(*f).or_default().push(pb::QuiesceGroup {
                    group_id: p.group(),
                    term: *term,
                    last_log_index: *last,
                });
            }
        }
        let mut wakes = std::mem::take(&mut *self.wakes.lock().expect("wakes lock"));
        let mut targets = node.members.all();
        targets.remove(&self.me);
        let calls = targets.into_keys().map(|peer| {
            let req = pb::QuiesceRequest {
                from: self.me,
                incarnation: self.incarnation,
                sleep: sleep.remove(&peer).unwrap_or_default(),
                wake: wakes.remove(&peer).unwrap_or_default(),
            };
            async move { (peer, self.call(node, peer, req).await) }
        });
        let answers: HashMap<NodeId, Vec<GroupId>> =
            futures::future::join_all(calls).await.into_iter().filter_map(|(peer, r)| Some((peer, r?.slept))).collect();
        for (p, term, last, followers) in candidates {
            let all_slept = followers.iter().all(|f| answers.get(f).is_some_and(|s| s.contains(&p.group())));
            if !all_slept {
                continue;
            }
            // Nothing may have happened since the candidates were taken.
            let unchanged = {
                let m = p.raft().metrics();
                let m = m.borrow_watched();
                m.current_term == term && m.last_log_index == Some(last)
            };
            let idle_ms = self.idle_after.map_or(0, |d| d.as_millis() as u64);
            if !unchanged
                || !p.raft().led_by(self.me)
                || self.now_ms().saturating_sub(p.quiet.active_ms.load(Ordering::SeqCst)) < idle_ms
            {
                continue;
            }
            let active = p.quiet.active_ms.load(Ordering::SeqCst);
            self.sleep(&p, self.me, term);
            // A client operation that came between the check above and the
            // store saw the group awake and did not wake it: it does now.
            if p.quiet.active_ms.load(Ordering::SeqCst) != active {
                self.wake(&p);
                continue;
            }
            debug!(partition = p.name(), "quiet");
        }
        self.wake_orphans(node, sweep);
    }

    /// The voters of `raft`'s group other than this node.
    fn followers(&self, raft: &Raft) -> Vec<NodeId> {
        voters(raft.metrics().borrow_watched().membership_config.membership()).filter(|v| *v != self.me).collect()
    }

    /// Quiet groups hosted here.
    pub fn asleep(&self, node: &Node) -> usize {
        node.partition_map().values().filter(|p| p.quiet.is_asleep()).count()
    }
}

/// Whether `p`'s Raft names another leader or term than `leader`'s `term`.
fn moved(p: &Partition, leader: NodeId, term: u64) -> bool {
    let m = p.raft().metrics();
    let m = m.borrow_watched();
    m.current_leader != Some(leader) || m.current_term != term
}

/// The liveness calls and the quiet-group bookkeeping, until the node stops.
pub async fn run(node: Arc<Node>) {
    let mut n: u32 = 0;
    loop {
        if node.stopping.load(Ordering::SeqCst) {
            return;
        }
        let started = Instant::now();
        node.quiescer.round(&node, n.is_multiple_of(CHECK_EVERY), n.is_multiple_of(SWEEP_EVERY)).await;
        n = n.wrapping_add(1);
        tokio::time::sleep(PING.saturating_sub(started.elapsed())).await;
    }
}
