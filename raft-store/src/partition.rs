//! A partition's state over its Raft log, and the fetch read path.
//!
//! The state machine keeps, in the group's `sm/` tree:
//! - `partition` → [`PartitionState`] (next offset, log start offset);
//! - `o<base offset>` → [`IndexEntry`]: where the batch starting at that
//!   offset lives — a Raft log index, or (after a snapshot install) a place
//!   in the installed snapshot's data file — with its record count, size
//!   and newest timestamp;
//! - `t<timestamp>` → base offset: the time index, one entry for each batch
//!   that raised the partition's newest timestamp. The first entry at or
//!   after T names the first batch holding a record at or after T, since
//!   every record before it is older.
//!
//! Readers ([`PartitionReader`]) never touch Raft: they read the index and
//! the segment log directly, bounded by the high watermark the state
//! machine publishes after each apply. Everything below the high watermark
//! is committed, and committed log entries are never truncated, so the read
//! is safe on any replica.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use openraft::EntryPayload;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::StoreError;
use crate::groups::{Committed, GroupState, offsets_prefix, parse_offset_key};
use crate::queues::QueueState;
use crate::segment::SegmentLog;
use crate::store::sled_err;
use crate::types::Request;

pub(crate) const KEY_STATE: &[u8] = b"partition";
const PREFIX_INDEX: u8 = b'o';
const PREFIX_TIME: u8 = b't';

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Offset the next appended record gets; the high watermark.
    pub next_offset: u64,
    /// First offset still retained.
    pub log_start_offset: u64,
    /// Newest record timestamp appended so far (the time index grows when
    /// a batch raises it).
    pub max_timestamp_ms: Option<i64>,
    /// Encoded size of every retained batch.
    pub retained_bytes: u64,
}

/// Offsets a reader may see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offsets {
    pub log_start_offset: u64,
    pub high_watermark: u64,
    /// Encoded size of the retained batches (what size retention bounds).
    pub retained_bytes: u64,
}

impl From<PartitionState> for Offsets {
    fn from(s: PartitionState) -> Offsets {
        Offsets {
            log_start_offset: s.log_start_offset,
            high_watermark: s.next_offset,
            retained_bytes: s.retained_bytes,
        }
    }
}

/// Where a batch is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// In the Raft log at this index.
    Log(u64),
    /// At this byte position of the installed snapshot's data file.
    Snapshot(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub location: Location,
    pub record_count: u32,
    pub max_timestamp_ms: i64,
    /// Encoded size of the batch.
    pub bytes: u32,
}

impl IndexEntry {
    const LEN: usize = 1 + 8 + 4 + 8 + 4;

    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        let (kind, at) = match self.location {
            Location::Log(i) => (0u8, i),
            Location::Snapshot(p) => (1u8, p),
        };
        b[0] = kind;
        b[1..9].copy_from_slice(&at.to_be_bytes());
        b[9..13].copy_from_slice(&self.record_count.to_be_bytes());
        b[13..21].copy_from_slice(&self.max_timestamp_ms.to_be_bytes());
        b[21..25].copy_from_slice(&self.bytes.to_be_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> io::Result<IndexEntry> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad offset index entry");
        if b.len() != Self::LEN {
            return Err(bad());
        }
        let at = u64::from_be_bytes(b[1..9].try_into().map_err(|_| bad())?);
        let location = match b[0] {
            0 => Location::Log(at),
            1 => Location::Snapshot(at),
            k => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad location kind {k}")));
            }
        };
        Ok(IndexEntry {
            location,
            record_count: u32::from_be_bytes(b[9..13].try_into().map_err(|_| bad())?),
            max_timestamp_ms: i64::from_be_bytes(b[13..21].try_into().map_err(|_| bad())?),
            bytes: u32::from_be_bytes(b[21..25].try_into().map_err(|_| bad())?),
        })
    }
}

pub(crate) fn index_key(base_offset: u64) -> [u8; 9] {
    let mut k = [PREFIX_INDEX; 9];
    k[1..].copy_from_slice(&base_offset.to_be_bytes());
    k
}

/// The time index is sparse: `time_key(t) → base` says that the batch at
/// `base` is the first whose newest record is at `t` or later (the newest
/// timestamp so far rose to `t` there). Apply adds such an entry where the
/// newest timestamp rises by at least this much since the last entry, or
/// rises at all once [`TIME_INDEX_BATCHES`] batches have gone by since it,
/// so a busy partition writes one every 100 ms of record time, not one per
/// batch. A rise more than that many batches past an entry is therefore an
/// entry itself, and a lookup reads at most that many offset-index entries
/// ([`PartitionReader::first_batch_at`]). Older trees hold an entry for
/// every rise, which the lookup reads alike.
pub(crate) const TIME_INDEX_MS: i64 = 100;
/// See [`TIME_INDEX_MS`].
pub(crate) const TIME_INDEX_BATCHES: u32 = 1024;

/// Which appended batches get a time-index entry (see [`TIME_INDEX_MS`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeIndexing {
    /// The newest entry's timestamp.
    last: Option<i64>,
    /// Batches since it (as many as allow no more when not known).
    since: u32,
}

impl TimeIndexing {
    /// After an index whose newest entry is at `last`.
    pub(crate) fn after(last: Option<i64>) -> Self {
        TimeIndexing { last, since: TIME_INDEX_BATCHES }
    }

    /// One more batch, whose newest record is at `ts`; `rose`: it raised
    /// the partition's newest timestamp. Whether it gets an entry.
    pub(crate) fn batch(&mut self, rose: bool, ts: i64) -> bool {
        let entry = rose
            && (self.since >= TIME_INDEX_BATCHES || self.last.is_none_or(|t| ts >= t.saturating_add(TIME_INDEX_MS)));
        if entry {
            (self.last, self.since) = (Some(ts), 0);
        }
        self.since = self.since.saturating_add(1);
        entry
    }
}

/// Time index key: timestamps sort as unsigned big-endian once the sign bit
/// is flipped.
pub(crate) fn time_key(ts: i64) -> [u8; 9] {
    let mut k = [PREFIX_TIME; 9];
    k[1..].copy_from_slice(&((ts as u64) ^ (1 << 63)).to_be_bytes());
    k
}

/// The timestamp of a time index key.
pub(crate) fn time_of(key: &[u8]) -> io::Result<i64> {
    Ok((base_of(key)? ^ (1 << 63)) as i64)
}

/// The base offset a time index entry holds.
fn time_entry_base(v: &[u8]) -> io::Result<u64> {
    Ok(u64::from_be_bytes(v.try_into().map_err(|_| io::Error::other("bad time index entry"))?))
}

pub(crate) fn base_of(key: &[u8]) -> io::Result<u64> {
    key.get(1..9)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad offset index key"))
}

/// One stored batch as a fetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    pub base_offset: u64,
    pub record_count: u32,
    pub batch: Bytes,
}

/// The data file of the snapshot this replica installed last, if any, with
/// its path.
pub(crate) type InstalledData = Arc<RwLock<Option<(Arc<File>, std::path::PathBuf)>>>;

/// The state machine's sled tree. Installing a snapshot fills a fresh tree
/// and swaps it in, so readers look the tree up on every read.
pub(crate) type SmTree = Arc<RwLock<sled::Tree>>;

/// Every consumer group a partition keeps, by name.
pub type Groups = Arc<BTreeMap<String, GroupState>>;

/// Every queue group consuming a partition, by name.
pub type Queues = Arc<BTreeMap<String, Arc<QueueState>>>;

/// Read access to a partition. Cheap to clone.
#[derive(Clone)]
pub struct PartitionReader {
    pub(crate) log: Arc<SegmentLog>,
    pub(crate) sm: SmTree,
    pub(crate) installed: InstalledData,
    pub(crate) offsets: watch::Receiver<Offsets>,
    pub(crate) groups: watch::Receiver<Groups>,
    pub(crate) queues: watch::Receiver<Queues>,
}

impl PartitionReader {
    pub fn offsets(&self) -> Offsets {
        *self.offsets.borrow()
    }

    /// Waits until the high watermark passes `offset` or `wait` elapses.
    pub async fn wait_beyond(&self, offset: u64, wait: Duration) -> Offsets {
        let mut rx = self.offsets.clone();
        let _ = tokio::time::timeout(wait, rx.wait_for(|o| o.high_watermark > offset)).await;
        self.offsets()
    }

    /// Batches holding records from `offset` on, below the high watermark,
    /// up to `max_bytes` (at least one batch) and `max_records`.
    pub fn read(&self, offset: u64, max_bytes: usize, max_records: usize) -> Result<Vec<StoredBatch>, StoreError> {
        self.read_below(offset, self.offsets().high_watermark, max_bytes, max_records)
    }

    pub(crate) fn read_below(
        &self,
        offset: u64,
        hw: u64,
        max_bytes: usize,
        max_records: usize,
    ) -> Result<Vec<StoredBatch>, StoreError> {
        if offset >= hw {
            return Ok(Vec::new());
        }
        // The batch containing `offset` starts at or before it.
        let sm = self.tree();
        let start = match sm.range(index_key(0)..=index_key(offset)).next_back() {
            Some(kv) => base_of(&kv.map_err(sled_err)?.0)?,
            None => offset,
        };
        // Plan from the index alone, then read the log in one pass.
        let (mut bytes, mut records) = (0usize, 0usize);
        let mut plan = Vec::new();
        for kv in sm.range(index_key(start)..index_key(hw)) {
            let (k, v) = kv.map_err(sled_err)?;
            let base = base_of(&k)?;
            let ie = IndexEntry::decode(&v)?;
            if base + ie.record_count as u64 <= offset {
                continue;
            }
            bytes += ie.bytes as usize;
            records += ie.record_count as usize;
            plan.push((base, ie));
            if bytes >= max_bytes || records >= max_records {
                break;
            }
        }
        let log_range = plan.iter().filter_map(|(_, ie)| match ie.location {
            Location::Log(i) => Some(i),
            Location::Snapshot(_) => None,
        });
        let from_log: HashMap<u64, Bytes> = match (log_range.clone().min(), log_range.max()) {
            (Some(lo), Some(hi)) => self
                .log
                .read(lo, hi + 1, usize::MAX)?
                .into_iter()
                .filter_map(|e| match e.payload {
                    EntryPayload::Normal(Request::Append { batch, .. }) => Some((e.log_id.index, batch)),
                    _ => None,
                })
                .collect(),
            _ => HashMap::new(),
        };
        let evicted = |base: u64| {
            let o = self.offsets();
            StoreError::Evicted { offset: base, log_start: o.log_start_offset, high_watermark: o.high_watermark }
        };
        // Released by retention since the caller looked at the offsets: the
        // index no longer holds the batch, so the plan would skip ahead.
        if offset < self.offsets().log_start_offset {
            return Err(evicted(offset));
        }
        let mut out = Vec::with_capacity(plan.len());
        for (base, ie) in plan {
            let batch = match ie.location {
                Location::Log(i) => from_log.get(&i).cloned().ok_or_else(|| evicted(base))?,
                Location::Snapshot(pos) => self.load_installed(pos, ie.bytes)?.ok_or_else(|| evicted(base))?,
            };
            out.push(StoredBatch { base_offset: base, record_count: ie.record_count, batch });
        }
        Ok(out)
    }

    fn tree(&self) -> sled::Tree {
        self.sm.read().expect("sm tree lock").clone()
    }

    fn load_installed(&self, pos: u64, len: u32) -> io::Result<Option<Bytes>> {
        let Some((file, _)) = self.installed.read().expect("installed lock").clone() else {
            return Ok(None);
        };
        let mut buf = BytesMut::zeroed(len as usize);
        file.read_exact_at(&mut buf, pos)?;
        Ok(Some(buf.freeze()))
    }

    /// The base offset of the first retained batch holding a record at or
    /// after `ts` (whose newest record is), or None if there is none.
    ///
    /// The time index brackets it: every batch up to the last entry below
    /// `ts` is older, the first entry at or after `ts` is such a batch, and
    /// any earlier one rose within [`TIME_INDEX_BATCHES`] batches after the
    /// entry below (else it would be an entry). The offset index says each
    /// of those batches' newest record.
    fn first_batch_at(&self, ts: i64) -> Result<Option<u64>, StoreError> {
        let o = self.offsets();
        let tree = self.tree();
        let below = tree.range(time_key(i64::MIN)..time_key(ts)).next_back().transpose().map_err(sled_err)?;
        let from = match below {
            Some((_, v)) => time_entry_base(&v)?.max(o.log_start_offset),
            None => o.log_start_offset,
        };
        let at = tree.range(time_key(ts)..=time_key(i64::MAX)).next().transpose().map_err(sled_err)?;
        let to = match at {
            Some((_, v)) => Some(time_entry_base(&v)?.max(o.log_start_offset)).filter(|t| *t < o.high_watermark),
            None => None,
        };
        let end = to.unwrap_or(o.high_watermark).max(from);
        let between = tree.range(index_key(from)..index_key(end)).take(TIME_INDEX_BATCHES as usize + 1);
        for kv in between {
            let (k, v) = kv.map_err(sled_err)?;
            if IndexEntry::decode(&v)?.max_timestamp_ms >= ts {
                return Ok(Some(base_of(&k)?));
            }
        }
        Ok(to)
    }

    /// The first record at or after `ts`: `(offset, its timestamp)`, or
    /// None if every retained record is older.
    pub fn offset_for_time(&self, ts: i64) -> Result<Option<(u64, i64)>, StoreError> {
        let o = self.offsets();
        let Some(base) = self.first_batch_at(ts)? else { return Ok(None) };
        // Scan from that batch to the first record at or after `ts`;
        // normally within the first batch.
        let mut at = base;
        while at < o.high_watermark {
            let batches = self.read_below(at, o.high_watermark, 1 << 20, usize::MAX)?;
            if batches.is_empty() {
                break;
            }
            for b in batches {
                let (_, records) = replog_proto::batch::decode(&b.batch)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                for (i, r) in records.iter().enumerate() {
                    let offset = b.base_offset + i as u64;
                    if offset >= at && r.timestamp_ms >= ts {
                        return Ok(Some((offset, r.timestamp_ms)));
                    }
                }
                at = b.base_offset + b.record_count as u64;
            }
        }
        Ok(None)
    }

    /// The log start that releases every batch older than `cutoff_ms`:
    /// the first batch holding a record at or after it (the high watermark
    /// if there is none).
    pub fn start_for_time(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        Ok(self.first_batch_at(cutoff_ms)?.unwrap_or(self.offsets().high_watermark))
    }

    /// The log start that keeps at most `limit` bytes of batches, newest
    /// first. Reads only the batches it would release.
    pub fn start_for_size(&self, limit: u64) -> Result<u64, StoreError> {
        let o = self.offsets();
        let mut over = o.retained_bytes.saturating_sub(limit);
        if over == 0 {
            return Ok(o.log_start_offset);
        }
        for kv in self.tree().range(index_key(o.log_start_offset)..index_key(o.high_watermark)) {
            let (k, v) = kv.map_err(sled_err)?;
            if over == 0 {
                return Ok(base_of(&k)?);
            }
            over = over.saturating_sub(IndexEntry::decode(&v)?.bytes as u64);
        }
        Ok(o.high_watermark)
    }

    /// The Raft log index of the first retained batch held in the log, if
    /// the first retained batch is there: every log entry below it has been
    /// released (the state machine keeps what the others changed). `None`
    /// when the first retained batch sits in an installed snapshot's data
    /// file, or no batch is retained.
    pub fn first_retained_log_index(&self) -> Result<Option<u64>, StoreError> {
        let o = self.offsets();
        let first = self.tree().range(index_key(o.log_start_offset)..index_key(o.high_watermark)).next();
        Ok(match first.transpose().map_err(sled_err)? {
            Some((_, v)) => match IndexEntry::decode(&v)?.location {
                Location::Log(i) => Some(i),
                Location::Snapshot(_) => None,
            },
            None => None,
        })
    }

    /// Whether releasing the log through `index` would give a segment
    /// file back.
    pub fn releases_a_segment(&self, index: u64) -> bool {
        self.log.releases_a_segment(index)
    }

    /// Consumer groups this partition keeps (partitions of
    /// `__consumer_offsets`; empty elsewhere), as applied here.
    pub fn groups(&self) -> Groups {
        self.groups.borrow().clone()
    }

    /// Queue groups consuming this partition, as applied here.
    pub fn queues(&self) -> Queues {
        self.queues.borrow().clone()
    }

    /// Waits until the high watermark passes `offset`, a queue group
    /// changes, or `wait` elapses.
    pub async fn wait_beyond_or_queue_change(&self, offset: u64, wait: Duration) {
        let mut offsets = self.offsets.clone();
        let mut queues = self.queues.clone();
        queues.mark_unchanged();
        let _ = tokio::time::timeout(wait, async {
            tokio::select! {
                _ = offsets.wait_for(|o| o.high_watermark > offset) => {}
                _ = queues.changed() => {}
            }
        })
        .await;
    }

    /// Committed offsets of `group`: `(topic, partition, committed)`.
    pub fn committed(&self, group: &str) -> Result<Vec<(String, u32, Committed)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree().scan_prefix(offsets_prefix(group)) {
            let (k, v) = kv.map_err(sled_err)?;
            if let Some((g, t, p)) = parse_offset_key(&k)
                && g == group
            {
                out.push((t, p, crate::store::decode(&v)?));
            }
        }
        Ok(out)
    }

    /// Every stored batch below the high watermark, in offset order.
    pub fn all_batches(&self) -> Result<Vec<StoredBatch>, StoreError> {
        let o = self.offsets();
        self.read(o.log_start_offset, usize::MAX, usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entry_round_trips() {
        for ie in [
            IndexEntry { location: Location::Log(7), record_count: 3, max_timestamp_ms: -1, bytes: 90 },
            IndexEntry {
                location: Location::Snapshot(1 << 40),
                record_count: u32::MAX,
                max_timestamp_ms: i64::MAX,
                bytes: u32::MAX,
            },
        ] {
            assert_eq!(IndexEntry::decode(&ie.encode()).unwrap(), ie);
        }
        assert!(IndexEntry::decode(&[9u8; 25]).is_err());
        assert!(IndexEntry::decode(&[0u8; 21]).is_err());
    }
}
