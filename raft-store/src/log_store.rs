//! `RaftLogStorage` for one group: entries in the group's segment log
//! ([`crate::segment`]), the vote, the committed log id and the last purged
//! log id in its sled `meta/` tree.
//!
//! `append` writes the frames and hands the flush callback to the store's
//! group-commit flusher, so openraft counts an entry only once it is
//! fsync'd.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use crate::segment::SegmentLog;
use crate::store::{Store, decode, encode, sled_err};
use crate::types::{Entry, GroupId, LogId, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";

/// How often an append held back by a full disk looks again.
const DISK_WAIT: Duration = Duration::from_millis(200);
/// How often it says so in the log.
const DISK_WARN_EVERY: Duration = Duration::from_secs(10);

/// Bytes of entries one replication message carries at most (at least one
/// entry): bounds the memory a lagging follower's catch-up costs.
const MAX_READ_BYTES: usize = 8 << 20;

/// The Raft log of one group. Clones share the same log.
#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
    log: Arc<SegmentLog>,
    meta: sled::Tree,
}

impl LogStore {
    pub fn open(store: Arc<Store>, group: GroupId) -> io::Result<LogStore> {
        let log = store.log(group)?;
        let meta = store.meta_tree(group)?;
        let ls = LogStore { store, log, meta };
        if let Some(p) = ls.get_meta::<LogId>(KEY_PURGED)? {
            ls.log.set_floor(p.index + 1);
        }
        Ok(ls)
    }

    pub fn group(&self) -> GroupId {
        self.log.group()
    }

    /// The segment log, for the partition read path.
    pub fn segments(&self) -> &Arc<SegmentLog> {
        &self.log
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.meta.get(key).map_err(sled_err)? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], v: &T) -> io::Result<()> {
        self.meta.insert(key, encode(v)?).map_err(sled_err)?;
        Ok(())
    }
}

fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(i) => i.saturating_add(1),
        Bound::Excluded(i) => *i,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = bounds(&range);
        self.log.read(start, end, usize::MAX)
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        let got = self.log.read(start, end, MAX_READ_BYTES)?;
        if got.first().is_some_and(|e| e.log_id.index != start) {
            // `start` was purged just now: the run that follows would be sent
            // after `start - 1` and leave a hole in the follower's log.
            // Nothing is returned instead; replication takes that as a
            // heartbeat and asks again.
            tracing::warn!(group = self.group(), start, "replication read below the purged log start");
            return Ok(Vec::new());
        }
        Ok(got)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl LogStore {
    /// Appends once the data volume has room, waiting (not failing) while
    /// it has not: an append error would stop the group for good, whereas a
    /// full follower that waits only falls behind, and catches up when space
    /// comes back ([`crate::disk`]).
    async fn append_when_there_is_room(&self, entries: &[Entry]) -> io::Result<u64> {
        let mut warned: Option<Instant> = None;
        loop {
            if self.store.disk().accepts_appends() {
                match self.log.append(entries) {
                    Ok(end) => return Ok(end),
                    Err(e) if matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded) => {}
                    Err(e) => return Err(e),
                }
            }
            if self.store.closing() {
                return Err(io::Error::other("shutting down while the log waited for disk space"));
            }
            if warned.is_none_or(|t| t.elapsed() >= DISK_WARN_EVERY) {
                tracing::warn!(
                    group = self.group(),
                    free_bytes = self.store.disk().free(),
                    "data volume full: log appends wait for space"
                );
                warned = Some(Instant::now());
            }
            tokio::time::sleep(DISK_WAIT).await;
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let last = self.log.last_log_id().or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // A vote must survive a crash before it is acted on.
        self.put_meta(KEY_VOTE, vote)?;
        self.store.flush().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not flushed: losing it only means re-applying from the state
        // machine's own applied index after a crash.
        self.put_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let committed = self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten();
        // sled may have kept a committed id whose entries a crash took from
        // the log's unsynced tail. Every entry still held at or below it is
        // committed; the rest will come back from the leader.
        let last = self.log.last_log_id();
        Ok(match (committed, last) {
            (Some(c), Some(l)) if c.index > l.index => Some(l),
            (c, _) => c,
        })
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let t0 = Instant::now();
        let epoch = self.log.epoch();
        let end = self.append_when_there_is_room(&entries).await?;
        let log = self.log.clone();
        let (store, count) = (self.store.clone(), entries.len());
        self.store.flush_logs_then(move |r| {
            if r.is_ok() {
                log.mark_durable(end, epoch);
                store.observe(|o| o.log_append(t0.elapsed(), count));
            }
            // Let go of the store before the waiter resumes: whoever drops
            // the last handle closes it on their own thread, so a store
            // dropped after its last append can be reopened at once.
            drop((log, store));
            callback.io_completed(r)
        });
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        // Rare (leader change with a divergent tail); the cut is fsync'd
        // before the entries that replace it are written.
        self.log.truncate_after(last_log_id.map(|l| l.index))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // The purge point is durable before any file goes, so a crash in
        // between leaves extra entries, never a hole.
        self.put_meta(KEY_PURGED, &log_id)?;
        self.store.flush().await?;
        self.log.purge_through(log_id.index)
    }
}
