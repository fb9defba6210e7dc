//! `RaftLogStorage` for one group on sled.
//!
//! Entries live in the group's `log/` tree under big-endian indexes; the
//! vote, the committed log id and the last purged log id live in `meta/`.
//! `append` writes the entries as one atomic sled batch and hands the
//! flush callback to the store's group-commit flusher, so openraft counts
//! an entry only once it is fsync'd.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use crate::store::{Store, decode, encode, sled_err};
use crate::types::{Entry, GroupId, LogId, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";

/// The Raft log of one group. Clones share the same trees.
#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
    group: GroupId,
    log: sled::Tree,
    meta: sled::Tree,
}

impl LogStore {
    pub fn open(store: Arc<Store>, group: GroupId) -> io::Result<LogStore> {
        let log = store.log_tree(group)?;
        let meta = store.meta_tree(group)?;
        Ok(LogStore { store, group, log, meta })
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The raw log tree, for the partition read path.
    pub fn tree(&self) -> &sled::Tree {
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

pub(crate) fn idx_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn to_sled_range<RB: RangeBounds<u64>>(range: &RB) -> (Bound<[u8; 8]>, Bound<[u8; 8]>) {
    let start = match range.start_bound() {
        Bound::Included(i) => Bound::Included(idx_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(idx_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    };
    let end = match range.end_bound() {
        Bound::Included(i) => Bound::Included(idx_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(idx_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let mut out = Vec::new();
        for kv in self.log.range(to_sled_range(&range)) {
            let (_, v) = kv.map_err(sled_err)?;
            out.push(decode::<Entry>(&v)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let last = match self.log.last().map_err(sled_err)? {
            Some((_, v)) => Some(decode::<Entry>(&v)?.log_id),
            None => last_purged,
        };
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
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for e in entries {
            batch.insert(&idx_key(e.log_id.index)[..], encode(&e)?);
        }
        self.log.apply_batch(batch).map_err(sled_err)?;
        self.store.flush_then(move |r| callback.io_completed(r));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let start = match &last_log_id {
            Some(l) => Bound::Excluded(idx_key(l.index)),
            None => Bound::Unbounded,
        };
        let mut batch = sled::Batch::default();
        for kv in self.log.range((start, Bound::Unbounded)) {
            let (k, _) = kv.map_err(sled_err)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(sled_err)?;
        // Rare (leader change with a divergent tail); make it durable before
        // the entries that replace it are written.
        self.store.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: a crash in between leaves extra
        // entries, never a hole.
        self.put_meta(KEY_PURGED, &log_id)?;
        let mut batch = sled::Batch::default();
        for kv in self.log.range(..=idx_key(log_id.index)) {
            let (k, _) = kv.map_err(sled_err)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(sled_err)?;
        Ok(())
    }
}
