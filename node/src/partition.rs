//! A partition as the client handlers see it: log terms — high watermark,
//! log start, offsets — with append, read and wait. The Raft group behind it
//! stays inside this type; what Raft says is turned into [`NodeError`] here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::ClientWriteError;
use openraft::impls::ProgressResponder;
use replog_proto::batch::BatchHeader;
use replog_raft_store::groups::{Committed, GroupCmd, GroupResult};
use replog_raft_store::partition::{Groups, Offsets, PartitionReader, Queues, StoredBatch};
use replog_raft_store::queues::{QueueCmd, QueueResult};
use replog_raft_store::{GroupId, NodeId, Raft, Request, Response};
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use crate::error::{NodeError, Result};
use crate::members::{Leadership, Members};
use crate::proposal_order::ProposalOrder;
use crate::quiesce::{Quiescer, Quiet};

/// Longest a read waits for its ReadIndex round ([`Partition::catch_up`]).
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(5);

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    pub record_count: u32,
    /// The high watermark once the batch was applied.
    pub high_watermark: u64,
}

/// What a read asks for.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_bytes: usize,
    pub max_records: usize,
    /// Long-poll: how long to wait for `min_bytes` of records.
    pub max_wait: Duration,
    /// Long-poll: answer once this many bytes of batches are there (0 or 1:
    /// any record).
    pub min_bytes: usize,
    /// Serve from this replica even if it does not lead (committed records
    /// only, possibly behind the leader).
    pub any_replica: bool,
}

/// Batches read, with the offsets they were read under.
#[derive(Debug)]
pub struct Read {
    pub batches: Vec<StoredBatch>,
    pub offsets: Offsets,
}

/// One partition hosted on this node (opened by the reconciler).
pub struct Partition {
    pub(crate) group: GroupId,
    /// `topic/partition`, for messages.
    pub(crate) name: String,
    pub(crate) me: NodeId,
    pub(crate) raft: Raft,
    pub(crate) reader: PartitionReader,
    pub(crate) members: Arc<Members>,
    /// The controller's [`crate::controller::Controller::caught_up`] flag.
    pub(crate) metadata_caught_up: Arc<AtomicBool>,
    /// Whether the group is quiet (not ticking; see [`crate::quiesce`]).
    pub(crate) quiet: Quiet,
    pub(crate) quiescer: Arc<Quiescer>,
    /// Idempotent batches proposed in their producers' sequence order.
    pub(crate) order: ProposalOrder,
}

impl Partition {
    pub fn group(&self) -> GroupId {
        self.group
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The leader as this replica knows it; none while this replica
    /// leads without its lease (a majority has not acknowledged it for an
    /// election timeout: it is likely cut off, and another is being
    /// elected).
    pub fn leader(&self) -> Option<NodeId> {
        match self.raft.leader() {
            Some(l) if l == self.me && !self.is_leader() => None,
            l => l,
        }
    }

    /// Whether this replica leads and holds its lease: Raft's (a majority
    /// acknowledged a heartbeat within it) or, while the group is quiet or
    /// just woken, the one node liveness gives ([`Quiescer::holds_quiet_lease`]).
    pub fn is_leader(&self) -> bool {
        self.is_leader_given(&self.raft.metrics().borrow_watched())
    }

    /// [`Self::is_leader`], with `m` the group's Raft metrics as just read
    /// (a scan over every partition reads them once).
    pub fn is_leader_given(&self, m: &openraft::RaftMetrics<replog_raft_store::TypeConfig>) -> bool {
        crate::members::leased(m, self.me, self.raft.lease()) || self.quiescer.holds_quiet_lease_given(self, m)
    }

    /// Whether the group is quiet here.
    pub fn is_quiet(&self) -> bool {
        self.quiet.is_asleep()
    }

    /// Whether this replica leads by Raft's account, lease or not: for
    /// answers that change nothing replicated (a Kafka group heartbeat)
    /// through a moment without the lease.
    pub fn led_here(&self) -> bool {
        self.raft.led_by(self.me)
    }

    /// Resolves once this replica no longer leads with its lease.
    async fn lease_lost(&self) {
        let lease = self.raft.lease();
        let step = (lease / 4).max(Duration::from_millis(10));
        while self.is_leader() {
            tokio::time::sleep(step).await;
        }
    }

    pub fn offsets(&self) -> Offsets {
        self.reader.offsets()
    }

    /// The Raft log index this replica has applied through, if any.
    pub fn last_applied_index(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().last_applied.map(|l| l.index)
    }

    /// The Raft group itself: for the peer service, leadership moves and
    /// shutdown, never for client handlers.
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    fn not_leader(&self, leader: Option<NodeId>) -> NodeError {
        self.members.not_leader(self.name.clone(), leader)
    }

    /// Checks that this replica leads with its lease, for a client
    /// operation: a quiet group wakes.
    pub fn ensure_leader(&self) -> Result<()> {
        self.quiescer.touch(self);
        if self.is_leader() { Ok(()) } else { Err(self.not_leader(self.leader())) }
    }

    /// Records are appended only at the leader, and only once this node's
    /// metadata has caught up with the controller since it started
    /// ([`crate::controller::Controller::caught_up`]): before that it may
    /// still list a topic deleted just before a power failure.
    fn ensure_appendable(&self) -> Result<()> {
        self.ensure_leader()?;
        if !self.metadata_caught_up.load(Ordering::Acquire) {
            return Err(NodeError::Unavailable(format!(
                "{}: this node's metadata is catching up with the controller since it started; retry",
                self.name
            )));
        }
        Ok(())
    }

    fn append_cmd(batch: Bytes, header: &BatchHeader) -> Request {
        Request::Append { batch, record_count: header.record_count, max_timestamp_ms: header.max_timestamp_ms }
    }

    /// Appends a validated batch and waits until a majority has it on disk
    /// and it is applied, or `timeout` passes. An idempotent producer's
    /// batches are proposed in its sequence order ([`ProposalOrder`]).
    pub async fn append(&self, batch: Bytes, header: &BatchHeader, timeout: Duration) -> Result<Appended> {
        self.ensure_appendable()?;
        raft_lease(&self.raft, self.me).await;
        let cmd = Self::append_cmd(batch, header);
        self.order.wait_turn(&header.producer).await;
        let (responder, written) = ProgressResponder::complete_only();
        self.raft
            .client_write_ff(cmd, Some(responder))
            .await
            .map_err(|e| NodeError::Unavailable(format!("{}: {e}", self.name)))?;
        self.order.proposed(&header.producer, header.record_count);
        let resp = match tokio::select! {
            r = tokio::time::timeout(timeout, written) => r,
            _ = self.lease_lost() => {
                // Cut off from its majority (or deposed): the batch may still
                // commit under this term if the cut heals, so the outcome is
                // unknown; the producer retries where a majority is.
                return Err(NodeError::Unavailable(format!(
                    "{}: this replica lost its leader lease while the batch was in flight; \
                     it may have been appended",
                    self.name
                )));
            }
        } {
            Err(_) => {
                return Err(NodeError::Timeout(format!(
                    "{} not committed within {timeout:?}; it may still be appended",
                    self.name
                )));
            }
            Ok(Err(_)) => {
                return Err(NodeError::Unavailable(format!(
                    "{}: the Raft group stopped with the batch in flight; it may have been appended",
                    self.name
                )));
            }
            Ok(Ok(Err(e))) => {
                return Err(match e {
                    // Proposed, then leadership moved: it may still commit.
                    ClientWriteError::LogEntryDiscarded(_) => NodeError::Unavailable(format!(
                        "{}: leadership changed; the batch may have been appended",
                        self.name
                    )),
                    ClientWriteError::ForwardToLeader(f) => self.not_leader(f.leader_id),
                    other => NodeError::Unavailable(format!("{}: {other}", self.name)),
                });
            }
            Ok(Ok(Ok(r))) => r,
        };
        match resp.data {
            Response::Appended { base_offset, record_count } => {
                Ok(Appended { base_offset, record_count, high_watermark: self.offsets().high_watermark })
            }
            Response::Rejected(r) => Err(NodeError::Rejected(r)),
            other => Err(NodeError::Internal(format!("append answered {other:?}"))),
        }
    }

    /// Starts appending a validated batch without waiting for it (acks=none).
    /// `slot` is held until the write ends or `timeout` passes: on a leader
    /// that was deposed or lost its majority the write may never finish,
    /// and the slot must not be held forever (the entry may still commit
    /// later; only the wait ends).
    pub fn append_detached(
        &self,
        batch: Bytes,
        header: &BatchHeader,
        timeout: Duration,
        slot: OwnedSemaphorePermit,
    ) -> Result<()> {
        self.ensure_appendable()?;
        let cmd = Self::append_cmd(batch, header);
        let raft = self.raft.clone();
        let name = self.name.clone();
        let me = self.me;
        tokio::spawn(async move {
            let write = async {
                raft_lease(&raft, me).await;
                raft.client_write(cmd).await
            };
            if tokio::time::timeout(timeout, write).await.is_err() {
                debug!(partition = %name, ?timeout, "acks=none write not committed in time; its slot is released");
            }
            drop(slot);
        });
        Ok(())
    }

    /// Committed batches from `offset` on, within `limits`; at the high
    /// watermark, waits up to `limits.max_wait` for a record.
    pub async fn read(&self, offset: u64, limits: ReadLimits) -> Result<Read> {
        if !limits.any_replica {
            self.ensure_leader()?;
        }
        let mut offsets = self.offsets();
        // Served from what is applied here only under Raft's own lease: a
        // leader just woken from quiet holds its lease through liveness
        // until its first heartbeat is acknowledged, and confirms once.
        let settled = self.raft.applied_own_term() && self.raft.leased_by(self.me, self.raft.lease());
        if !limits.any_replica && needs_catch_up(offset, offsets.high_watermark, settled) {
            self.catch_up().await?;
            offsets = self.offsets();
        }
        if offset < offsets.log_start_offset || offset > offsets.high_watermark {
            return Err(NodeError::OffsetOutOfRange {
                offset,
                log_start: offsets.log_start_offset,
                high_watermark: offsets.high_watermark,
            });
        }
        let deadline = tokio::time::Instant::now() + limits.max_wait;
        loop {
            let batches = self.reader.read(offset, limits.max_bytes, limits.max_records)?;
            // Taken after the read, so the answer never claims a high
            // watermark below what it returns.
            offsets = self.offsets();
            let bytes: usize = batches.iter().map(|b| b.batch.len()).sum();
            let now = tokio::time::Instant::now();
            if bytes >= limits.min_bytes.max(1) || now >= deadline {
                return Ok(Read { batches, offsets });
            }
            // Not enough yet: wait for the high watermark to move, then look again.
            self.wait_for(offsets.high_watermark, deadline - now).await;
        }
    }

    /// Waits until the high watermark passes `offset` or `wait` elapses.
    pub async fn wait_for(&self, offset: u64, wait: Duration) -> Offsets {
        self.reader.wait_beyond(offset, wait).await
    }

    /// Offsets as the leader knows them once everything committed before the
    /// call is applied here.
    pub async fn current_offsets(&self) -> Result<Offsets> {
        self.ensure_leader()?;
        self.catch_up().await?;
        Ok(self.offsets())
    }

    /// The first record at or after `ts` (offset, timestamp), at the leader.
    pub async fn offset_for_time(&self, ts: i64) -> Result<Option<(u64, i64)>> {
        self.ensure_leader()?;
        self.catch_up().await?;
        Ok(self.reader.offset_for_time(ts)?)
    }

    /// Proposes `req` at the leader and waits until it is applied.
    async fn write(&self, req: Request) -> Result<Response> {
        self.ensure_leader()?;
        raft_lease(&self.raft, self.me).await;
        match self.raft.client_write(req).await {
            Ok(r) => match r.data {
                Response::Rejected(r) => Err(NodeError::Rejected(r)),
                other => Ok(other),
            },
            Err(e) => Err(match e.forward_to_leader() {
                Some(f) => self.not_leader(f.leader_id),
                None => NodeError::Unavailable(format!("{}: {e}", self.name)),
            }),
        }
    }

    /// Applies a consumer-group command through the partition's Raft group
    /// (partitions of `__consumer_offsets`), at the leader.
    pub async fn propose_group(&self, cmd: GroupCmd) -> Result<GroupResult> {
        match self.write(Request::Group(cmd)).await? {
            Response::Group(g) => Ok(g),
            other => Err(NodeError::Internal(format!("group command answered {other:?}"))),
        }
    }

    /// Releases every record below `log_start` (rounded down to its batch)
    /// on every replica, at the leader; returns the new log start.
    pub async fn truncate(&self, log_start: u64) -> Result<u64> {
        match self.write(Request::Truncate { log_start_offset: log_start }).await? {
            Response::Truncated { log_start_offset } => Ok(log_start_offset),
            other => Err(NodeError::Internal(format!("truncate answered {other:?}"))),
        }
    }

    /// The log start that releases batches older than `cutoff_ms`, and the
    /// one that keeps at most `limit` bytes (see the retention task).
    pub fn start_for_time(&self, cutoff_ms: i64) -> Result<u64> {
        Ok(self.reader.start_for_time(cutoff_ms)?)
    }

    pub fn start_for_size(&self, limit: u64) -> Result<u64> {
        Ok(self.reader.start_for_size(limit)?)
    }

    /// Gives back the disk space of records released below the log start,
    /// on this replica: once a whole segment file lies below the first
    /// retained batch, a snapshot (references, no copy) is taken so that
    /// Raft may drop the log prefix, and the prefix is purged. A replica
    /// that needs the released prefix later gets that snapshot instead.
    pub async fn release_log(&self, wait: Duration) -> Result<()> {
        let o = self.offsets();
        if o.log_start_offset == 0 {
            return Ok(());
        }
        let m = self.raft.metrics().borrow_watched().clone();
        let upto = match self.reader.first_retained_log_index()? {
            Some(i) => i.saturating_sub(1),
            // Nothing retained: every entry applied so far can go.
            None if o.log_start_offset == o.high_watermark => match m.last_applied {
                Some(l) => l.index,
                None => return Ok(()),
            },
            // The first retained batch is in an installed snapshot's data
            // file, and the log holds only what came after that snapshot.
            None => return Ok(()),
        };
        if upto == 0 || m.purged.is_some_and(|p| p.index >= upto) || !self.reader.releases_a_segment(upto) {
            return Ok(());
        }
        let unavailable = |e: &dyn std::fmt::Display| NodeError::Unavailable(format!("{}: {e}", self.name));
        if m.snapshot.is_none_or(|s| s.index < upto) {
            self.raft.trigger().snapshot().await.map_err(|e| unavailable(&e))?;
            let waiter = self.raft.wait(Some(wait));
            waiter
                .metrics(|m| m.snapshot.is_some_and(|s| s.index >= upto), "a snapshot covering the released prefix")
                .await
                .map_err(|e| unavailable(&e))?;
        }
        self.raft.trigger().purge_log(upto).await.map_err(|e| unavailable(&e))
    }

    /// Applies a queue-group command through the partition's Raft group,
    /// at the leader.
    pub async fn propose_queue(&self, cmd: QueueCmd) -> Result<QueueResult> {
        self.ensure_leader()?;
        raft_lease(&self.raft, self.me).await;
        match self.raft.client_write(Request::Queue(cmd)).await {
            Ok(r) => match r.data {
                Response::Queue(q) => Ok(q),
                Response::Rejected(r) => Err(NodeError::Rejected(r)),
                other => Err(NodeError::Internal(format!("queue command answered {other:?}"))),
            },
            Err(e) => Err(match e.api_error() {
                // Proposed, then leadership moved: it may still commit.
                Some(ClientWriteError::LogEntryDiscarded(_)) => NodeError::Unavailable(format!(
                    "{}: leadership changed; the queue command may have been applied",
                    self.name
                )),
                _ => match e.forward_to_leader() {
                    Some(f) => self.not_leader(f.leader_id),
                    None => NodeError::Unavailable(format!("{}: {e}", self.name)),
                },
            }),
        }
    }

    /// The queue groups consuming this partition, as the leader knows them
    /// once everything committed before the call is applied.
    pub async fn queues(&self) -> Result<Queues> {
        self.ensure_leader()?;
        self.catch_up().await?;
        Ok(self.reader.queues())
    }

    /// The queue groups as applied on this replica, without a round.
    pub fn queues_here(&self) -> Queues {
        self.reader.queues()
    }

    /// Waits until a record arrives past `high_watermark`, a queue group
    /// changes, or `wait` elapses.
    pub async fn wait_queue_change(&self, high_watermark: u64, wait: Duration) {
        self.reader.wait_beyond_or_queue_change(high_watermark, wait).await
    }

    /// The consumer groups kept here, as the leader knows them once
    /// everything committed before the call is applied.
    pub async fn groups(&self) -> Result<Groups> {
        self.ensure_leader()?;
        self.catch_up().await?;
        Ok(self.reader.groups())
    }

    /// The groups as applied on this replica, without a round (for the
    /// coordinator's timers, which act only through Raft anyway).
    pub fn groups_here(&self) -> Groups {
        self.reader.groups()
    }

    /// Committed offsets of `group`, read after [`Partition::groups`].
    pub fn committed(&self, group: &str) -> Result<Vec<(String, u32, Committed)>> {
        Ok(self.reader.committed(group)?)
    }

    /// A ReadIndex round: once it returns, everything committed before it
    /// started is applied here. Bounded by [`CATCH_UP_DEADLINE`]: a read
    /// that cannot confirm the leadership or apply up to the index in time
    /// answers UNAVAILABLE (retried) rather than hold the client, and on a
    /// Kafka connection every answer behind it.
    async fn catch_up(&self) -> Result<()> {
        let round = self.raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex);
        match tokio::time::timeout(CATCH_UP_DEADLINE, round).await {
            Ok(r) => r.map(|_| ()).map_err(|e| match e.forward_to_leader() {
                Some(f) => self.not_leader(f.leader_id),
                None => NodeError::Unavailable(format!("{}: {e}", self.name)),
            }),
            Err(_) => Err(NodeError::Unavailable(format!(
                "{}: the leader did not confirm its leadership and catch up within {CATCH_UP_DEADLINE:?}",
                self.name
            ))),
        }
    }
}

/// Whether a leader must catch up to the commit index (a ReadIndex round)
/// before it answers a read at `offset`. A leader fresh from an election
/// may not yet have applied everything its predecessor acknowledged and
/// served, so until it has applied an entry of its own term its high
/// watermark can be stale, and every answer carries it: a reader that
/// takes it as "the end" (read to end, consumer lag, a replay's stop)
/// would miss acknowledged records. Once it has, and while it holds Raft's
/// own lease (no newer leader can exist) — `settled` — its high watermark
/// covers every acknowledged record (a leader acknowledges a write only
/// once it has applied it), so an answer at the high watermark, "nothing
/// more", hides nothing acknowledged and needs no round: a consumer at the
/// end of its partitions pays none per poll. A read past it still takes
/// one before it is called out of range.
fn needs_catch_up(offset: u64, high_watermark: u64, settled: bool) -> bool {
    !settled || offset > high_watermark
}

/// Waits, at most a lease, until Raft takes a write at the replica `me` of
/// `raft`'s group again. A leader woken from quiet holds its lease through
/// liveness ([`Partition::is_leader`]), but openraft takes writes only
/// under its own lease (a majority acknowledged a heartbeat within it),
/// which lapsed while the group slept: it would refuse the first write
/// after a nap as not led, and the client would back off for tens of
/// milliseconds. The wake-up sent a heartbeat; this waits for its
/// acknowledgements, one round trip. Returns at once while the lease holds,
/// and once `me` no longer leads (the write is then refused as not led).
async fn raft_lease(raft: &Raft, me: NodeId) {
    let lease = raft.lease();
    let ready = move |m: &openraft::RaftMetrics<replog_raft_store::TypeConfig>| {
        !crate::members::leads(m, me) || crate::members::leased(m, me, lease)
    };
    if ready(&raft.metrics().borrow_watched()) {
        return;
    }
    let _ = raft.wait(Some(lease)).metrics(ready, "the Raft lease back").await;
}

#[cfg(test)]
mod tests {
    //! The catch-up decision on its own: the window in which a new leader
    //! has not applied what its predecessor committed closes within
    //! milliseconds, so real nodes cannot be held inside it on demand.

    use super::*;

    const SETTLED: bool = true;
    const FRESH: bool = false;

    #[test]
    fn given_a_read_past_the_high_watermark_then_the_leader_catches_up_first() {
        assert!(needs_catch_up(11, 10, SETTLED), "it must not be called out of range on a stale view");
    }

    #[test]
    fn given_a_settled_leader_then_reads_up_to_the_high_watermark_spend_no_round() {
        assert!(!needs_catch_up(10, 10, SETTLED), "every acknowledged record is applied at a settled leader");
        assert!(!needs_catch_up(9, 10, SETTLED), "records below the high watermark are committed and applied");
    }

    #[test]
    fn given_a_leader_that_has_not_applied_an_entry_of_its_term_then_every_read_catches_up_first() {
        // The answer's high watermark would be its predecessor's of some
        // time ago: a read from 0 to "the end" would stop short of records
        // already acknowledged.
        assert!(needs_catch_up(0, 10, FRESH));
        assert!(needs_catch_up(10, 10, FRESH));
    }
}
