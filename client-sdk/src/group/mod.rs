//! The group consumer: members of a consumer group share the partitions of
//! the topics they subscribe to, and the group remembers how far it got.
//!
//! # How it works
//!
//! [`GroupConsumer::subscribe`] finds the group's coordinator (the leader
//! of the group's partition of `__consumer_offsets`) and joins. The
//! coordinator assigns partitions itself; a background task heartbeats at
//! the interval the coordinator asks for, reports what this member
//! consumes, and takes in the assignment each answer carries:
//!
//! - a partition granted to the member starts at the group's committed
//!   offset, or — when the group never committed one — at
//!   [`AutoOffsetReset`] (earliest or latest);
//! - a partition taken away is *revoked*: its fetching stops at once and
//!   whatever was fetched but not handed to the application is dropped.
//!   If the application still holds records of it (returned by the last
//!   [`GroupConsumer::poll`]), the member keeps reporting it as its own
//!   until the next `poll` (the application is then done with them), so
//!   that no other member starts on it meanwhile; with auto-commit its
//!   position is committed if the coordinator still allows it; then the
//!   next heartbeat says it is let go, and the coordinator grants it to its
//!   new owner. The coordinator never grants a partition to a member while
//!   another one reports owning it, so two members of a group never
//!   consume one partition at the same time.
//!
//! Fetching is a long poll per partition (`min_bytes`, `max_wait_ms` of
//! [`FetchOptions`]) in a task of its own, into a bounded buffer that
//! [`GroupConsumer::poll`] drains. Partition leader failovers, coordinator
//! failovers and transport errors are retried inside — they never reach
//! the application; a member whose session the coordinator expired (it was
//! cut off too long) drops its partitions and joins again.
//!
//! # Delivery guarantee: at least once
//!
//! A committed offset is the next offset to consume. [`GroupConsumer::commit`]
//! and auto-commit commit the positions of records the application is done
//! with: auto-commit, at the start of a `poll`, the positions of everything
//! earlier polls returned — so with the usual loop (process each batch
//! before polling again) a record is committed only after it was
//! processed. Every record is therefore processed **at least once**. After
//! a member fails (crash, or a session that expired) or a partition moves
//! in a rebalance, the records of that partition after its last commit are
//! delivered again, to its new owner — once more per such event, never
//! skipped. A commit never moves a committed offset back; only
//! `replog group reset-offsets` on a group without members does.
//!
//! ```no_run
//! use replog_client::{Client, GroupConsumer, GroupConsumerConfig};
//!
//! # async fn run() -> replog_client::Result<()> {
//! let client = Client::connect(["127.0.0.1:7001", "127.0.0.1:7002"]).await?;
//! let mut consumer = GroupConsumer::new(client, "billing", GroupConsumerConfig::default());
//! consumer.subscribe(&["orders"]).await?;
//! for _ in 0..100 {
//!     for record in consumer.poll().await? {
//!         println!("{}/{} @{}: {:?}", record.topic, record.partition, record.offset, record.value);
//!     }
//!     // Auto-commit commits what the loop processed, at the next poll.
//! }
//! consumer.close().await?; // commits and leaves: the others take over at once
//! # Ok(()) }
//! ```

mod fetcher;
mod member;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use replog_proto::pb;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::admin::{CommittedOffset, OffsetCommit, OffsetSpec, TopicPartition};
use crate::client::Client;
use crate::consumer::{ConsumedRecord, FetchOptions};
use crate::error::{Error, Result};
pub(crate) use member::transient;
use member::{Fetched, Inner};

/// How the coordinator spreads partitions over the members of a group.
///
/// ```
/// use replog_client::{Assignor, GroupConsumerConfig};
/// let cfg = GroupConsumerConfig { assignor: Assignor::RoundRobin, ..Default::default() };
/// assert_eq!(cfg.assignor.name(), "round-robin");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Assignor {
    /// Even spread; a change of membership moves as few partitions as
    /// possible (the default).
    #[default]
    Uniform,
    /// Per topic, consecutive ranges of partitions to members in id order.
    Range,
    /// All partitions dealt to the members in turn.
    RoundRobin,
}

impl Assignor {
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
            Assignor::RoundRobin => "round-robin",
        }
    }

    pub(crate) fn to_pb(self) -> i32 {
        (match self {
            Assignor::Uniform => pb::AssignmentStrategy::Uniform,
            Assignor::Range => pb::AssignmentStrategy::Range,
            Assignor::RoundRobin => pb::AssignmentStrategy::RoundRobin,
        }) as i32
    }

    pub(crate) fn from_pb(v: i32) -> Assignor {
        match pb::AssignmentStrategy::try_from(v) {
            Ok(pb::AssignmentStrategy::Range) => Assignor::Range,
            Ok(pb::AssignmentStrategy::RoundRobin) => Assignor::RoundRobin,
            _ => Assignor::Uniform,
        }
    }
}

/// Where a member starts on a partition for which its group has no
/// committed offset (or whose committed offset retention has since
/// released).
///
/// ```
/// use replog_client::{AutoOffsetReset, GroupConsumerConfig};
/// let replay_all = GroupConsumerConfig { auto_offset_reset: AutoOffsetReset::Earliest, ..Default::default() };
/// assert_eq!(GroupConsumerConfig::default().auto_offset_reset, AutoOffsetReset::Latest);
/// # let _ = replay_all;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoOffsetReset {
    /// The first retained record.
    Earliest,
    /// Only records produced from now on (the default).
    #[default]
    Latest,
}

/// Settings of a [`GroupConsumer`]. The defaults suit most uses.
///
/// ```
/// use std::time::Duration;
/// use replog_client::GroupConsumerConfig;
/// let cfg = GroupConsumerConfig {
///     auto_commit: false, // commit by hand after processing
///     session_timeout: Some(Duration::from_secs(6)),
///     ..Default::default()
/// };
/// cfg.validate().unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct GroupConsumerConfig {
    /// Names the member in `group describe`; member ids start with it.
    pub client_id: String,
    /// A member not heard from for this long loses its partitions. `None`:
    /// the broker's default (`group_session_timeout_ms`, 10 s).
    pub session_timeout: Option<Duration>,
    pub assignor: Assignor,
    /// Commit the positions of processed records every
    /// `auto_commit_interval`, at the start of a poll and on close.
    pub auto_commit: bool,
    pub auto_commit_interval: Duration,
    pub auto_offset_reset: AutoOffsetReset,
    /// Long-poll fetch settings, per partition.
    pub fetch: FetchOptions,
    /// Most records one [`GroupConsumer::poll`] returns.
    pub max_poll_records: usize,
    /// How long [`GroupConsumer::poll`] waits for records.
    pub poll_timeout: Duration,
    /// A revoked partition whose records the application still holds is
    /// let go at the next poll, or after this long without one.
    pub max_poll_interval: Duration,
    /// Fetch responses buffered ahead of the application, over all its
    /// partitions (each up to `fetch.max_bytes`).
    pub buffered_responses: usize,
}

impl Default for GroupConsumerConfig {
    fn default() -> Self {
        GroupConsumerConfig {
            client_id: format!("consumer-{}", std::process::id()),
            session_timeout: None,
            assignor: Assignor::Uniform,
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            auto_offset_reset: AutoOffsetReset::Latest,
            fetch: FetchOptions { max_bytes: 1 << 20, ..FetchOptions::default() },
            max_poll_records: 10_000,
            poll_timeout: Duration::from_secs(1),
            max_poll_interval: Duration::from_secs(300),
            buffered_responses: 16,
        }
    }
}

impl GroupConsumerConfig {
    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.to_string()));
        if self.max_poll_records == 0 {
            return bad("max_poll_records must be at least 1");
        }
        if self.buffered_responses == 0 {
            return bad("buffered_responses must be at least 1");
        }
        if self.auto_commit && self.auto_commit_interval.is_zero() {
            return bad("auto_commit_interval must be above zero");
        }
        if self.session_timeout.is_some_and(|s| s < Duration::from_millis(100)) {
            return bad("session_timeout must be at least 100 ms");
        }
        if self.client_id.is_empty() {
            return bad("client_id must not be empty");
        }
        Ok(())
    }
}

/// A change of one member's partitions, from
/// [`GroupConsumer::rebalance_events`], in the order the member took it in.
///
/// ```no_run
/// use futures::StreamExt;
/// use replog_client::RebalanceEvent;
/// # async fn run(consumer: &replog_client::GroupConsumer) {
/// let mut events = std::pin::pin!(consumer.rebalance_events());
/// while let Some(e) = events.next().await {
///     match e {
///         RebalanceEvent::Assigned { generation, partitions } => println!("gen {generation}: got {partitions:?}"),
///         RebalanceEvent::Revoked { generation, partitions } => println!("gen {generation}: gave up {partitions:?}"),
///         RebalanceEvent::Lost { partitions } => println!("lost {partitions:?} with the membership"),
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// Granted by the coordinator: fetching starts at the group's committed
    /// offset (or by [`AutoOffsetReset`]).
    Assigned { generation: u64, partitions: Vec<TopicPartition> },
    /// Taken away in a rebalance: fetching stopped. Records of them that
    /// the application already holds are still its own until the next
    /// poll; with auto-commit their positions are committed then, before
    /// the partitions are let go to their new owner.
    Revoked { generation: u64, partitions: Vec<TopicPartition> },
    /// Lost with the membership (the session expired, or the coordinator
    /// refused the member): nothing more of them is committed, and another
    /// member may own them already. The member joins again by itself.
    Lost { partitions: Vec<TopicPartition> },
}

/// A member of a consumer group: it consumes the partitions the group's
/// coordinator assigns it and commits how far it got. See the
/// [module documentation](self) for the protocol and the delivery
/// guarantee (at least once).
///
/// Dropping a consumer without [`GroupConsumer::close`] stops it like a
/// crash: no commit, no leave; its partitions move to the other members
/// once its session times out.
///
/// ```no_run
/// use replog_client::{Client, GroupConsumer, GroupConsumerConfig};
///
/// # async fn process(_: &replog_client::ConsumedRecord) {}
/// # async fn run() -> replog_client::Result<()> {
/// let client = Client::connect(["127.0.0.1:7001"]).await?;
/// let cfg = GroupConsumerConfig { auto_commit: false, ..Default::default() };
/// let mut consumer = GroupConsumer::new(client, "billing", cfg);
/// consumer.subscribe(&["orders", "refunds"]).await?;
/// loop {
///     let records = consumer.poll().await?;
///     for r in &records {
///         process(r).await;
///     }
///     if !records.is_empty() {
///         consumer.commit().await?; // after processing: at least once
///     }
/// #   break;
/// }
/// # Ok(()) }
/// ```
pub struct GroupConsumer {
    inner: Arc<Inner>,
    rx: mpsc::Receiver<Fetched>,
    /// The part of a response beyond `max_poll_records`, for the next polls.
    leftover: VecDeque<Fetched>,
    heartbeat: Option<JoinHandle<()>>,
    last_auto_commit: Instant,
    auto_commit: Option<JoinHandle<()>>,
    closed: bool,
}

impl GroupConsumer {
    /// A consumer of `group`; it joins on [`GroupConsumer::subscribe`].
    pub fn new(client: Client, group: &str, config: GroupConsumerConfig) -> GroupConsumer {
        let (tx, rx) = mpsc::channel(config.buffered_responses.max(1));
        GroupConsumer {
            inner: Arc::new(Inner::new(client, group.to_string(), config, tx)),
            rx,
            leftover: VecDeque::new(),
            heartbeat: None,
            last_auto_commit: Instant::now(),
            auto_commit: None,
            closed: false,
        }
    }

    /// Joins the group for `topics` (or changes the subscription of a
    /// member that joined already). Returns once the coordinator has
    /// answered; partitions it grants start being fetched at once. Fails
    /// with the broker's code for an unknown topic or a bad group name.
    pub async fn subscribe<S: AsRef<str>>(&mut self, topics: &[S]) -> Result<()> {
        self.check_open()?;
        self.inner.cfg.validate()?;
        let topics: Vec<String> = topics.iter().map(|t| t.as_ref().to_string()).collect();
        if topics.is_empty() {
            return Err(Error::InvalidArgument("subscribe to at least one topic".into()));
        }
        self.inner.find_coordinator().await?;
        self.inner.set_topics(topics);
        self.inner.join().await?;
        if self.heartbeat.is_none() {
            self.heartbeat = Some(tokio::spawn(member::heartbeat_loop(self.inner.clone())));
        }
        Ok(())
    }

    /// The next records of the partitions this member owns, waiting up to
    /// [`GroupConsumerConfig::poll_timeout`] for some (empty if none came).
    ///
    /// Calling `poll` says that the application is done with the records
    /// earlier polls returned: auto-commit may commit their positions now,
    /// and revoked partitions whose records it held are let go.
    ///
    /// Errors are the application's to act on (a topic deleted under the
    /// group, a corrupt batch); failovers and membership changes are
    /// handled inside and never returned.
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>> {
        let (max, wait) = (self.inner.cfg.max_poll_records, self.inner.cfg.poll_timeout);
        self.poll_up_to(max, wait).await
    }

    /// [`GroupConsumer::poll`] waiting up to `wait`.
    pub async fn poll_for(&mut self, wait: Duration) -> Result<Vec<ConsumedRecord>> {
        let max = self.inner.cfg.max_poll_records;
        self.poll_up_to(max, wait).await
    }

    /// The records one at a time, as a stream that never ends by itself.
    /// Asking for the next record says the application is done with the
    /// previous one, as [`GroupConsumer::poll`] does for a batch.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// # async fn run(mut consumer: replog_client::GroupConsumer) -> replog_client::Result<()> {
    /// let mut records = std::pin::pin!(consumer.stream());
    /// while let Some(record) = records.next().await {
    ///     let record = record?;
    ///     println!("{}/{} @{}", record.topic, record.partition, record.offset);
    /// #   break;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream(&mut self) -> impl Stream<Item = Result<ConsumedRecord>> + '_ {
        futures::stream::unfold(self, |c| async move {
            let wait = c.inner.cfg.poll_timeout;
            loop {
                match c.poll_up_to(1, wait).await {
                    Ok(mut v) => match v.pop() {
                        Some(r) => return Some((Ok(r), c)),
                        None => continue,
                    },
                    Err(e) => return Some((Err(e), c)),
                }
            }
        })
    }

    async fn poll_up_to(&mut self, max: usize, wait: Duration) -> Result<Vec<ConsumedRecord>> {
        self.check_open()?;
        if self.heartbeat.is_none() {
            return Err(Error::InvalidArgument("subscribe before polling".into()));
        }
        // The application is back: whatever it was handed is processed.
        self.inner.all_processed();
        self.maybe_auto_commit();
        if let Some(e) = self.inner.take_error() {
            return Err(e);
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            while out.len() < max {
                let Some(f) = self.leftover.pop_front() else { break };
                self.deliver(f, max, &mut out)?;
            }
            while out.len() < max {
                match self.rx.try_recv() {
                    Ok(f) => self.deliver(f, max, &mut out)?,
                    Err(_) => break,
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(f)) => self.deliver(f, max, &mut out)?,
                Ok(None) | Err(_) => return Ok(out),
            }
        }
    }

    /// Hands the records of one response to the application, if their
    /// partition is still this member's at the same epoch; keeps what is
    /// beyond `max` for the next poll.
    fn deliver(&mut self, f: Fetched, max: usize, out: &mut Vec<ConsumedRecord>) -> Result<()> {
        let records = match f.records {
            Ok(r) => r,
            Err(e) => {
                if !self.inner.is_current(&f.tp, f.epoch) {
                    return Ok(());
                }
                if out.is_empty() {
                    return Err(e);
                }
                // Records first; the error comes with the next poll.
                self.inner.push_error(e);
                return Ok(());
            }
        };
        let room = max - out.len();
        let (taken, rest) = self.inner.take(&f.tp, f.epoch, records, room);
        out.extend(taken);
        if !rest.is_empty() {
            self.leftover.push_front(Fetched { tp: f.tp, epoch: f.epoch, records: Ok(rest) });
        }
        Ok(())
    }

    fn maybe_auto_commit(&mut self) {
        if !self.inner.cfg.auto_commit || self.last_auto_commit.elapsed() < self.inner.cfg.auto_commit_interval {
            return;
        }
        if self.auto_commit.as_ref().is_some_and(|h| !h.is_finished()) {
            return; // the last one is still in flight
        }
        self.last_auto_commit = Instant::now();
        let inner = self.inner.clone();
        self.auto_commit = Some(tokio::spawn(async move {
            if let Err(e) = inner.commit_processed("").await {
                warn!(group = %inner.group, "auto-commit failed (the records will be delivered again): {e}");
            }
        }));
    }

    /// Commits the positions after every record the polls returned so far,
    /// for the partitions this member owns, and waits until the commit is
    /// replicated. Call it after processing the records.
    ///
    /// If the group rebalanced meanwhile, the commit is retried in the new
    /// generation for what the member still owns; a partition already
    /// taken away cannot be committed by this member (its records may be
    /// delivered again to the new owner).
    pub async fn commit(&mut self) -> Result<()> {
        self.commit_with_metadata("").await
    }

    /// [`GroupConsumer::commit`], storing `metadata` with every offset
    /// (at most 4 KiB; `group describe` and [`Client::committed_offsets`]
    /// show it).
    pub async fn commit_with_metadata(&mut self, metadata: &str) -> Result<()> {
        self.check_open()?;
        self.inner.all_delivered_processed();
        self.inner.commit_processed(metadata).await
    }

    /// Starts [`GroupConsumer::commit`] in the background and returns at
    /// once; await the handle for its outcome (or drop it).
    pub fn commit_async(&mut self) -> JoinHandle<Result<()>> {
        self.inner.all_delivered_processed();
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.commit_processed("").await })
    }

    /// Commits exactly these offsets (with their metadata) for this member.
    /// The coordinator's answer comes back as is: PARTITION_NOT_ASSIGNED for
    /// a partition that is not this member's, STALE_GENERATION after a
    /// rebalance this member has not seen yet.
    pub async fn commit_offsets(&mut self, offsets: &[OffsetCommit]) -> Result<()> {
        self.check_open()?;
        self.inner.commit_exact(offsets).await
    }

    /// The group's committed offsets for `partitions` (all when empty).
    pub async fn committed(&self, partitions: &[TopicPartition]) -> Result<Vec<CommittedOffset>> {
        let p = self.inner.coordinator_partition()?;
        self.inner.client.committed_at(p, &self.inner.group, partitions).await
    }

    /// Every later change of this member's partitions, as a stream: the
    /// assignment-change feed for an application that keeps state per
    /// partition (flush on [`RebalanceEvent::Revoked`], drop on
    /// [`RebalanceEvent::Lost`]). Each call starts a stream of its own; one
    /// that falls more than 256 events behind skips the oldest. It ends
    /// when the consumer is dropped or closed.
    pub fn rebalance_events(&self) -> impl Stream<Item = RebalanceEvent> + Send + 'static {
        futures::stream::unfold(self.inner.events.subscribe(), |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((e, rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        debug!("rebalance events: a slow reader skipped {n}");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// Partitions this member consumes now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.inner.assignment()
    }

    /// The next offset [`GroupConsumer::poll`] returns for `tp`, once its
    /// start is known.
    pub fn position(&self, tp: &TopicPartition) -> Option<u64> {
        self.inner.position(tp)
    }

    /// This member's id while it is in the group.
    pub fn member_id(&self) -> Option<String> {
        self.inner.member().map(|(id, _)| id)
    }

    /// The group generation of the last heartbeat.
    pub fn generation(&self) -> Option<u64> {
        self.inner.member().map(|(_, g)| g)
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.inner.group
    }

    /// Consumes `tp` from `offset` on (records before it fetched already
    /// are dropped). `tp` must be one of this member's partitions. A seek
    /// changes no committed offset by itself, and a commit never moves one
    /// back: to replay a group, reset its offsets while it has no members.
    pub fn seek(&mut self, tp: &TopicPartition, offset: u64) -> Result<()> {
        self.check_open()?;
        self.inner.seek(tp, offset)
    }

    /// Seeks `partitions` (all this member's when empty) to their first
    /// retained record.
    pub async fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_by(OffsetSpec::Earliest, partitions).await
    }

    /// Seeks `partitions` (all this member's when empty) to their end: only
    /// records produced from now on.
    pub async fn seek_to_end(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_by(OffsetSpec::Latest, partitions).await
    }

    /// Seeks `partitions` (all this member's when empty) to their first
    /// record with a timestamp at or after `timestamp_ms` (to their end
    /// where there is none).
    pub async fn seek_to_timestamp(&mut self, timestamp_ms: i64, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_by(OffsetSpec::Timestamp(timestamp_ms), partitions).await
    }

    async fn seek_by(&mut self, spec: OffsetSpec, partitions: &[TopicPartition]) -> Result<()> {
        self.check_open()?;
        let tps = if partitions.is_empty() { self.assignment() } else { partitions.to_vec() };
        for tp in tps {
            let o = self.inner.client.list_offsets(&tp.topic, tp.partition, spec).await?;
            debug!(group = %self.inner.group, %tp, offset = o.offset, ?spec, "seek");
            self.inner.seek(&tp, o.offset)?;
        }
        Ok(())
    }

    /// Stops consuming, commits the positions of everything returned so far
    /// (with auto-commit on; for an owned partition it never started on and
    /// the group never committed, the start the reset policy gives), and leaves the group so that the other
    /// members take over its partitions at once.
    pub async fn close(mut self) -> Result<()> {
        self.closed = true;
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        self.inner.stop_fetching();
        let committed = if self.inner.cfg.auto_commit {
            self.inner.all_delivered_processed();
            let done = self.inner.commit_processed("").await;
            // Partitions it never got to start on keep their place too.
            match done {
                Ok(()) => self.inner.commit_unstarted().await,
                e => e,
            }
        } else {
            Ok(())
        };
        let left = self.inner.leave().await;
        committed.and(left)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(Error::InvalidArgument("the consumer is closed".into()));
        }
        Ok(())
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        if let Some(h) = self.auto_commit.take() {
            h.abort();
        }
        self.inner.stop_fetching();
    }
}
