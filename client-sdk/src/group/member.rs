//! Membership of one group consumer: joining, the heartbeat task, taking in
//! assignments (grants and revocations), positions and commits.
//!
//! All of it is shared between the application's calls, the heartbeat task
//! and one fetch task per partition through [`Inner`]; its state sits
//! behind a mutex that is never held across an await.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use replog_proto::codes::ErrorCode;
use replog_proto::pb;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::fetcher::{self, Start};
use super::{GroupConsumerConfig, RebalanceEvent};
use crate::admin::{OffsetCommit, TopicPartition, partitions_of, to_pb_partitions};
use crate::client::{Call, Client};
use crate::consumer::ConsumedRecord;
use crate::error::{Error, Result};

/// Heartbeat interval until the coordinator names one.
const FIRST_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// Pause after a failed heartbeat or join before the next try.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Pause after a join the coordinator refused for good (say the topic was
/// deleted): the error goes to the application, the member tries again.
const REFUSED_PAUSE: Duration = Duration::from_secs(5);
/// Session timeout assumed until the coordinator names one.
const DEFAULT_SESSION: Duration = Duration::from_secs(10);
/// Rebalance events kept for a reader that lags; one that falls further
/// behind skips the oldest.
const EVENTS_KEPT: usize = 256;

/// A fetch response for the application, tagged with the partition's epoch
/// when it was fetched.
pub(crate) struct Fetched {
    pub tp: TopicPartition,
    pub epoch: u64,
    pub records: Result<Vec<ConsumedRecord>>,
}

/// A partition this member consumes.
struct Part {
    /// Changes whenever the partition is (re)granted or sought, so that
    /// responses fetched before are recognised and dropped.
    epoch: u64,
    /// Next offset to hand to the application; `None` until the start is
    /// known.
    delivered: Option<u64>,
    /// Next offset after the records the application is done with.
    processed: Option<u64>,
    /// The group's committed offset as this member last knew it.
    committed: Option<u64>,
    fetcher: Option<AbortHandle>,
}

impl Part {
    fn new(epoch: u64) -> Part {
        Part { epoch, delivered: None, processed: None, committed: None, fetcher: None }
    }

    /// Whether the application holds records of it that it has not finished.
    fn in_hand(&self) -> bool {
        self.processed < self.delivered
    }

    /// The offset to commit, if it is ahead of the committed one.
    fn to_commit(&self) -> Option<u64> {
        self.processed.filter(|p| self.committed.is_none_or(|c| *p > c))
    }

    fn stop(&mut self) {
        if let Some(h) = self.fetcher.take() {
            h.abort();
        }
    }
}

struct Membership {
    id: String,
    generation: u64,
}

struct State {
    topics: Vec<String>,
    member: Option<Membership>,
    /// The id to rejoin with after losing membership: the coordinator
    /// keeps it (and its assignment) if it still knows it.
    last_id: String,
    session_timeout: Duration,
    heartbeat_interval: Duration,
    last_heartbeat_ok: Instant,
    parts: BTreeMap<TopicPartition, Part>,
    /// Revoked while the application held records of them: reported as
    /// owned until it is done with them (next poll) or `since` is older
    /// than `max_poll_interval`.
    releasing: BTreeMap<TopicPartition, (Part, Instant)>,
    /// Let go, but their last commit is still in flight: reported as owned
    /// until it is answered, so the new owner starts after it.
    committing: BTreeSet<TopicPartition>,
    next_epoch: u64,
    errors: VecDeque<Error>,
}

impl State {
    fn epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    fn owned(&self) -> Vec<pb::TopicPartitions> {
        to_pb_partitions(self.parts.keys().chain(self.releasing.keys()).chain(self.committing.iter()))
    }
}

pub(crate) struct Inner {
    pub client: Client,
    pub group: String,
    pub cfg: GroupConsumerConfig,
    coordinator: OnceLock<u32>,
    state: Mutex<State>,
    pub tx: mpsc::Sender<Fetched>,
    heartbeat_now: Notify,
    /// Counts heartbeat answers taken in, for commits that wait for one.
    rounds: watch::Sender<u64>,
    /// Changes of this member's partitions, for [`super::GroupConsumer::rebalance_events`].
    pub events: broadcast::Sender<RebalanceEvent>,
}

impl Inner {
    pub fn new(client: Client, group: String, cfg: GroupConsumerConfig, tx: mpsc::Sender<Fetched>) -> Inner {
        let session = cfg.session_timeout.unwrap_or(DEFAULT_SESSION);
        Inner {
            client,
            group,
            cfg,
            coordinator: OnceLock::new(),
            state: Mutex::new(State {
                topics: Vec::new(),
                member: None,
                last_id: String::new(),
                session_timeout: session,
                heartbeat_interval: FIRST_HEARTBEAT_INTERVAL,
                last_heartbeat_ok: Instant::now(),
                parts: BTreeMap::new(),
                releasing: BTreeMap::new(),
                committing: BTreeSet::new(),
                next_epoch: 0,
                errors: VecDeque::new(),
            }),
            tx,
            heartbeat_now: Notify::new(),
            rounds: watch::Sender::new(0),
            events: broadcast::Sender::new(EVENTS_KEPT),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("group consumer state lock")
    }

    pub fn coordinator_partition(&self) -> Result<u32> {
        self.coordinator.get().copied().ok_or_else(|| Error::InvalidArgument("subscribe first".into()))
    }

    /// Learns which `__consumer_offsets` partition keeps the group (fixed
    /// for the life of the cluster; its leader may move, which routing
    /// follows).
    pub async fn find_coordinator(&self) -> Result<()> {
        if self.coordinator.get().is_none() {
            let c = self.client.find_coordinator(&self.group).await?;
            let _ = self.coordinator.set(c.partition);
        }
        Ok(())
    }

    pub fn set_topics(&self, topics: Vec<String>) {
        self.state().topics = topics;
    }

    pub fn member(&self) -> Option<(String, u64)> {
        self.state().member.as_ref().map(|m| (m.id.clone(), m.generation))
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.state().parts.keys().cloned().collect()
    }

    pub fn position(&self, tp: &TopicPartition) -> Option<u64> {
        self.state().parts.get(tp).and_then(|p| p.delivered)
    }

    pub fn is_current(&self, tp: &TopicPartition, epoch: u64) -> bool {
        self.state().parts.get(tp).is_some_and(|p| p.epoch == epoch)
    }

    pub fn push_error(&self, e: Error) {
        self.state().errors.push_front(e);
    }

    pub fn take_error(&self) -> Option<Error> {
        self.state().errors.pop_front()
    }

    /// An error for the application from a partition's fetch task, unless
    /// the partition moved on since.
    pub async fn report(&self, tp: &TopicPartition, epoch: u64, e: Error) -> bool {
        self.tx.send(Fetched { tp: tp.clone(), epoch, records: Err(e) }).await.is_ok()
    }

    /// Records where a partition's fetching starts (and the committed offset
    /// it starts from, if any). False if the partition moved on meanwhile.
    pub fn started(&self, tp: &TopicPartition, epoch: u64, offset: u64, committed: Option<u64>) -> bool {
        let mut st = self.state();
        match st.parts.get_mut(tp) {
            Some(p) if p.epoch == epoch => {
                p.delivered = Some(offset);
                p.processed = Some(offset);
                p.committed = committed;
                true
            }
            _ => false,
        }
    }

    /// Takes up to `room` of `records` (one response of `tp`) for the
    /// application, advancing the partition's position; returns them and
    /// the rest. Nothing is taken if the partition moved on.
    pub fn take(
        &self,
        tp: &TopicPartition,
        epoch: u64,
        mut records: Vec<ConsumedRecord>,
        room: usize,
    ) -> (Vec<ConsumedRecord>, Vec<ConsumedRecord>) {
        let mut st = self.state();
        let Some(p) = st.parts.get_mut(tp).filter(|p| p.epoch == epoch) else {
            return (Vec::new(), Vec::new());
        };
        let from = p.delivered.unwrap_or(0);
        records.retain(|r| r.offset >= from);
        let rest = if records.len() > room { records.split_off(room) } else { Vec::new() };
        if let Some(last) = records.last() {
            p.delivered = Some(last.offset + 1);
        }
        (records, rest)
    }

    /// The application is done with everything it was handed: positions
    /// become processed, and revoked partitions it held are let go.
    pub fn all_processed(self: &Arc<Self>) {
        let released: Vec<(TopicPartition, Part)> = {
            let mut st = self.state();
            for p in st.parts.values_mut() {
                p.processed = p.delivered;
            }
            std::mem::take(&mut st.releasing)
                .into_iter()
                .map(|(tp, (mut p, _))| {
                    p.processed = p.delivered;
                    (tp, p)
                })
                .collect()
        };
        if !released.is_empty() {
            self.release(released);
        }
    }

    /// Like [`Inner::all_processed`], for a commit: revoked partitions stay
    /// where they are (the next poll lets them go).
    pub fn all_delivered_processed(&self) {
        let mut st = self.state();
        for p in st.parts.values_mut() {
            p.processed = p.delivered;
        }
        for (p, _) in st.releasing.values_mut() {
            p.processed = p.delivered;
        }
    }

    /// Lets go of revoked partitions: commits their processed positions
    /// first if auto-commit is on and the coordinator still allows it, then
    /// heartbeats at once so that their new owner gets them soon.
    fn release(self: &Arc<Self>, parts: Vec<(TopicPartition, Part)>) {
        let offsets: Vec<OffsetCommit> = if self.cfg.auto_commit {
            parts
                .iter()
                .filter_map(|(tp, p)| Some(OffsetCommit::new(&tp.topic, tp.partition, p.to_commit()?)))
                .collect()
        } else {
            Vec::new()
        };
        let names: Vec<String> = parts.iter().map(|(tp, _)| tp.to_string()).collect();
        debug!(group = %self.group, partitions = ?names, "letting go of revoked partitions");
        if offsets.is_empty() {
            self.heartbeat_now.notify_one();
            return;
        }
        let tps: Vec<TopicPartition> = offsets.iter().map(|o| TopicPartition::new(&o.topic, o.partition)).collect();
        self.state().committing.extend(tps.iter().cloned());
        let inner = self.clone();
        tokio::spawn(async move {
            inner.try_commit_revoked(&offsets).await;
            let mut st = inner.state();
            for tp in &tps {
                st.committing.remove(tp);
            }
            drop(st);
            inner.heartbeat_now.notify_one();
        });
    }

    /// A best-effort commit of partitions just revoked. The coordinator
    /// refuses it when the partition has left this member's assignment
    /// already (their records after the last commit go to the new owner
    /// again: at least once).
    async fn try_commit_revoked(&self, offsets: &[OffsetCommit]) {
        let Some((member, generation)) = self.member() else { return };
        let Ok(part) = self.coordinator_partition() else { return };
        if let Err(e) = self.client.commit_at(part, &self.group, &member, generation, offsets).await {
            debug!(group = %self.group, "commit of revoked partitions refused: {e}");
        }
    }

    /// Commits the processed positions of the partitions this member owns
    /// (and, best effort, of revoked ones it still holds). A commit refused
    /// for a rebalance this member had not seen is retried once after a
    /// heartbeat, for what it still owns.
    pub async fn commit_processed(&self, metadata: &str) -> Result<()> {
        let partition = self.coordinator_partition()?;
        let revoked: Vec<OffsetCommit> = {
            let st = self.state();
            st.releasing
                .iter()
                .filter_map(|(tp, (p, _))| {
                    Some(OffsetCommit::new(&tp.topic, tp.partition, p.to_commit()?).with_metadata(metadata))
                })
                .collect()
        };
        if !revoked.is_empty() {
            self.try_commit_revoked(&revoked).await;
        }
        for attempt in 0.. {
            let (member, generation, offsets) = {
                let st = self.state();
                let Some(m) = &st.member else {
                    return Err(Error::Broker {
                        code: ErrorCode::UnknownMember,
                        message: format!(
                            "not a member of group {:?} right now (rejoining); the records will be delivered again",
                            self.group
                        ),
                        leader: None,
                    });
                };
                let offsets: Vec<OffsetCommit> = st
                    .parts
                    .iter()
                    .filter_map(|(tp, p)| {
                        Some(OffsetCommit::new(&tp.topic, tp.partition, p.to_commit()?).with_metadata(metadata))
                    })
                    .collect();
                (m.id.clone(), m.generation, offsets)
            };
            if offsets.is_empty() {
                return Ok(());
            }
            match self.client.commit_at(partition, &self.group, &member, generation, &offsets).await {
                Ok(()) => {
                    let mut st = self.state();
                    for o in &offsets {
                        if let Some(p) = st.parts.get_mut(&TopicPartition::new(&o.topic, o.partition)) {
                            p.committed = Some(p.committed.map_or(o.offset, |c| c.max(o.offset)));
                        }
                    }
                    return Ok(());
                }
                Err(e)
                    if attempt == 0
                        && matches!(e.code(), Some(ErrorCode::StaleGeneration | ErrorCode::PartitionNotAssigned)) =>
                {
                    debug!(group = %self.group, "commit refused ({e}); heartbeating, then committing again");
                    self.heartbeat_round().await;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    /// Commits exactly `offsets` in this member's current generation.
    pub async fn commit_exact(&self, offsets: &[OffsetCommit]) -> Result<()> {
        let partition = self.coordinator_partition()?;
        let (member, generation) = self.member().ok_or_else(|| Error::Broker {
            code: ErrorCode::UnknownMember,
            message: format!("not a member of group {:?} right now (rejoining)", self.group),
            leader: None,
        })?;
        self.client.commit_at(partition, &self.group, &member, generation, offsets).await?;
        let mut st = self.state();
        for o in offsets {
            if let Some(p) = st.parts.get_mut(&TopicPartition::new(&o.topic, o.partition)) {
                p.committed = Some(p.committed.map_or(o.offset, |c| c.max(o.offset)));
            }
        }
        Ok(())
    }

    /// Commits a start for the partitions granted to this member whose
    /// start it never looked up (their fetch task was still retrying, say
    /// through a failover) and for which the group has no committed offset:
    /// the offset the reset policy gives now. Without it, a member that
    /// stops early leaves such a partition uncommitted, and the group's next
    /// member — under `Latest` — would skip its records. Used on close.
    pub async fn commit_unstarted(&self) -> Result<()> {
        let tps: Vec<TopicPartition> =
            self.state().parts.iter().filter(|(_, p)| p.delivered.is_none()).map(|(tp, _)| tp.clone()).collect();
        let mut offsets = Vec::new();
        for tp in tps {
            let (offset, committed) = fetcher::resolve(self, &tp).await?;
            if committed.is_none() {
                offsets.push(OffsetCommit::new(&tp.topic, tp.partition, offset));
            }
        }
        if offsets.is_empty() {
            return Ok(());
        }
        debug!(group = %self.group, partitions = offsets.len(), "committing the start of partitions never started");
        self.commit_exact(&offsets).await
    }

    /// Asks the heartbeat task for a heartbeat now and waits until one was
    /// answered (or a session timeout passed).
    async fn heartbeat_round(&self) {
        let mut rx = self.rounds.subscribe();
        let seen = *rx.borrow_and_update();
        let limit = self.state().session_timeout;
        self.heartbeat_now.notify_one();
        let _ = tokio::time::timeout(limit, rx.wait_for(|r| *r > seen)).await;
    }

    pub fn seek(self: &Arc<Self>, tp: &TopicPartition, offset: u64) -> Result<()> {
        let mut st = self.state();
        let epoch = st.epoch();
        let Some(p) = st.parts.get_mut(tp) else {
            return Err(Error::InvalidArgument(format!(
                "{tp} is not assigned to this member of group {:?}",
                self.group
            )));
        };
        p.stop();
        p.epoch = epoch;
        p.delivered = Some(offset);
        p.processed = Some(offset);
        p.fetcher = Some(fetcher::spawn(self.clone(), tp.clone(), epoch, Start::At(offset)));
        Ok(())
    }

    pub fn stop_fetching(&self) {
        let mut st = self.state();
        for p in st.parts.values_mut() {
            p.stop();
        }
    }

    /// Joins (or rejoins) the group and takes in the assignment.
    pub async fn join(self: &Arc<Self>) -> Result<()> {
        let partition = self.coordinator_partition()?;
        let (member_id, topics) = {
            let st = self.state();
            (st.member.as_ref().map_or(st.last_id.clone(), |m| m.id.clone()), st.topics.clone())
        };
        let session_ms = self.cfg.session_timeout.map_or(0, |d| d.as_millis() as u32);
        let timeout = self.client.config().request_timeout;
        let req = pb::JoinGroupRequest {
            group: self.group.clone(),
            member_id,
            client_id: self.cfg.client_id.clone(),
            topics,
            strategy: self.cfg.assignor.to_pb(),
            session_timeout_ms: session_ms,
        };
        let r = self
            .client
            .group_call(partition, Call::Write, self.client.config().retry_deadline, |mut c| {
                let mut req = tonic::Request::new(req.clone());
                req.set_timeout(timeout);
                async move { c.join_group(req).await }
            })
            .await?;
        info!(group = %self.group, member = %r.member_id, generation = r.generation, "joined the group");
        {
            let mut st = self.state();
            st.member = Some(Membership { id: r.member_id.clone(), generation: r.generation });
            st.last_id = r.member_id;
            st.session_timeout = Duration::from_millis(r.session_timeout_ms as u64);
            st.heartbeat_interval = Duration::from_millis(r.heartbeat_interval_ms.max(1) as u64);
            st.last_heartbeat_ok = Instant::now();
        }
        self.apply(r.generation, partitions_of(&r.assignment));
        Ok(())
    }

    /// One heartbeat: says what this member consumes, takes in what it may
    /// consume now.
    async fn heartbeat(self: &Arc<Self>) -> Result<()> {
        let partition = self.coordinator_partition()?;
        let (req, interval, session) = {
            let st = self.state();
            let Some(m) = &st.member else { return Ok(()) };
            let req = pb::GroupHeartbeatRequest {
                group: self.group.clone(),
                member_id: m.id.clone(),
                generation: m.generation,
                owned: st.owned(),
            };
            (req, st.heartbeat_interval, st.session_timeout)
        };
        // A heartbeat is worth retrying only until the next one is due; a
        // slow coordinator must not hold the task past the session.
        let per_attempt = (session / 3).max(Duration::from_millis(100));
        let r = self
            .client
            .group_call(partition, Call::Read, interval.max(per_attempt), |mut c| {
                let mut req = tonic::Request::new(req.clone());
                req.set_timeout(per_attempt);
                async move { c.group_heartbeat(req).await }
            })
            .await?;
        {
            let mut st = self.state();
            st.last_heartbeat_ok = Instant::now();
            st.heartbeat_interval = Duration::from_millis(r.heartbeat_interval_ms.max(1) as u64);
        }
        self.apply(r.generation, partitions_of(&r.assignment));
        self.rounds.send_modify(|r| *r += 1);
        Ok(())
    }

    /// Takes in an assignment from the coordinator: revokes what is no
    /// longer in it, starts what is new.
    fn apply(self: &Arc<Self>, generation: u64, assignment: Vec<TopicPartition>) {
        let granted: BTreeSet<TopicPartition> = assignment.into_iter().collect();
        let mut released = Vec::new();
        let mut newly = Vec::new();
        let revoked: Vec<TopicPartition>;
        {
            let mut st = self.state();
            if let Some(m) = st.member.as_mut() {
                m.generation = generation;
            }
            revoked = st.parts.keys().filter(|tp| !granted.contains(*tp)).cloned().collect();
            for tp in revoked.iter().cloned() {
                let mut p = st.parts.remove(&tp).expect("revoked partition is owned");
                p.stop();
                if p.in_hand() {
                    debug!(group = %self.group, %tp, "revoked; let go once the application is done with its records");
                    st.releasing.insert(tp, (p, Instant::now()));
                } else {
                    released.push((tp, p));
                }
            }
            for tp in granted {
                if st.parts.contains_key(&tp) {
                    continue;
                }
                let epoch = st.epoch();
                let (part, start) = match st.releasing.remove(&tp) {
                    // Granted again before it was let go: go on from where
                    // the application is.
                    Some((mut p, _)) => {
                        let at = p.delivered.unwrap_or(0);
                        p.epoch = epoch;
                        (p, Start::At(at))
                    }
                    None => (Part::new(epoch), Start::Resolve),
                };
                debug!(group = %self.group, %tp, "granted");
                let mut part = part;
                part.fetcher = Some(fetcher::spawn(self.clone(), tp.clone(), epoch, start));
                newly.push(tp.clone());
                st.parts.insert(tp, part);
            }
        }
        // Without a reader, there is nobody to tell: that is not an error.
        if !revoked.is_empty() {
            let _ = self.events.send(RebalanceEvent::Revoked { generation, partitions: revoked });
        }
        if !newly.is_empty() {
            let _ = self.events.send(RebalanceEvent::Assigned { generation, partitions: newly });
        }
        if !released.is_empty() {
            self.release(released);
        }
    }

    /// Drops every partition without committing: this member is no longer
    /// in the group (or cannot tell), so another may own them already.
    fn lose_all(&self, why: &str) {
        let mut st = self.state();
        let lost: Vec<TopicPartition> = st.parts.keys().chain(st.releasing.keys()).cloned().collect();
        let n = lost.len();
        for p in st.parts.values_mut() {
            p.stop();
        }
        st.parts.clear();
        st.releasing.clear();
        st.committing.clear();
        st.member = None;
        drop(st);
        warn!(group = %self.group, partitions = n, "lost group membership ({why}); joining again");
        if !lost.is_empty() {
            let _ = self.events.send(RebalanceEvent::Lost { partitions: lost });
        }
    }

    /// Revoked partitions the application held past `max_poll_interval`
    /// are let go anyway.
    fn release_overdue(self: &Arc<Self>) {
        let overdue: Vec<(TopicPartition, Part)> = {
            let mut st = self.state();
            let limit = self.cfg.max_poll_interval;
            let late: Vec<TopicPartition> = st
                .releasing
                .iter()
                .filter(|(_, (_, since))| since.elapsed() >= limit)
                .map(|(tp, _)| tp.clone())
                .collect();
            late.into_iter().filter_map(|tp| st.releasing.remove(&tp).map(|(p, _)| (tp, p))).collect()
        };
        if !overdue.is_empty() {
            warn!(group = %self.group, partitions = overdue.len(), "no poll within max_poll_interval; letting go of revoked partitions");
            // Not processed: nothing of them is committed.
            let parts = overdue
                .into_iter()
                .map(|(tp, mut p)| {
                    p.processed = p.committed;
                    (tp, p)
                })
                .collect();
            self.release(parts);
        }
    }

    pub async fn leave(&self) -> Result<()> {
        let Some((member, _)) = self.member() else { return Ok(()) };
        let partition = self.coordinator_partition()?;
        let timeout = self.client.config().request_timeout;
        let group = self.group.clone();
        let r = self
            .client
            .group_call(partition, Call::Write, self.client.config().retry_deadline, |mut c| {
                let mut req =
                    tonic::Request::new(pb::LeaveGroupRequest { group: group.clone(), member_id: member.clone() });
                req.set_timeout(timeout);
                async move { c.leave_group(req).await }
            })
            .await;
        self.state().member = None;
        match r {
            Ok(_) => Ok(()),
            // Gone already (its session expired): nothing left to leave.
            Err(e) if e.code() == Some(ErrorCode::UnknownMember) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The heartbeat task: heartbeats at the coordinator's interval (or at
/// once when asked), rejoins after losing membership, and gives up the
/// partitions when the coordinator cannot be reached for a whole session.
pub(crate) async fn heartbeat_loop(inner: Arc<Inner>) {
    loop {
        let interval = inner.state().heartbeat_interval;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = inner.heartbeat_now.notified() => {}
        }
        inner.release_overdue();
        let is_member = inner.state().member.is_some();
        let r = if is_member { inner.heartbeat().await } else { inner.join().await };
        let Err(e) = r else { continue };
        match e.code() {
            Some(ErrorCode::UnknownMember | ErrorCode::UnknownGroup) => {
                inner.lose_all(&e.to_string());
                inner.heartbeat_now.notify_one();
            }
            _ if transient(&e) => {
                let (silent, session) = {
                    let st = inner.state();
                    (st.last_heartbeat_ok.elapsed(), st.session_timeout)
                };
                debug!(group = %inner.group, "heartbeat failed, retrying: {e}");
                if is_member && silent >= session {
                    inner.lose_all(&format!("no heartbeat answered for {silent:?}"));
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                inner.heartbeat_now.notify_one();
            }
            _ => {
                warn!(group = %inner.group, "the coordinator refused this member: {e}");
                inner.push_error(e);
                if is_member {
                    inner.lose_all("refused");
                }
                tokio::time::sleep(REFUSED_PAUSE).await;
            }
        }
    }
}

/// Whether an error is the cluster's passing state (a failover, a
/// connection lost) rather than something the application must hear of.
pub(crate) fn transient(e: &Error) -> bool {
    match e {
        Error::DeadlineExceeded { last, .. } => transient(last),
        Error::Indeterminate { last, .. } => transient(last),
        e => e.is_retryable(),
    }
}
