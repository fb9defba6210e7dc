//! A partition's state over its Raft log, and the fetch read path.
//!
//! The state machine keeps, in the group's `sm/` tree:
//! - `partition` → [`PartitionState`] (next offset, log start offset);
//! - `o<base offset>` → [`IndexEntry`]: where the batch starting at that
//!   offset lives — a Raft log index, or (after a snapshot install) a copy in
//!   this tree under `b<base offset>` — with its record count.
//!
//! Readers ([`PartitionReader`]) never touch Raft: they read the trees
//! directly, bounded by the high watermark the state machine publishes
//! after each apply. Everything below the high watermark is committed, and
//! committed log entries are never truncated, so the read is safe on any
//! replica.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use openraft::EntryPayload;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::store::{decode, sled_err};
use crate::types::{Entry, Request};

pub(crate) const KEY_STATE: &[u8] = b"partition";
const PREFIX_INDEX: u8 = b'o';
const PREFIX_BATCH: u8 = b'b';

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Offset the next appended record gets; the high watermark.
    pub next_offset: u64,
    /// First offset still retained.
    pub log_start_offset: u64,
}

/// Offsets a reader may see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offsets {
    pub log_start_offset: u64,
    pub high_watermark: u64,
}

impl From<PartitionState> for Offsets {
    fn from(s: PartitionState) -> Offsets {
        Offsets { log_start_offset: s.log_start_offset, high_watermark: s.next_offset }
    }
}

/// Where a batch is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// In the Raft log at this index.
    Log(u64),
    /// Copied into the state machine tree by a snapshot install.
    Snapshot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub location: Location,
    pub record_count: u32,
    pub max_timestamp_ms: i64,
}

impl IndexEntry {
    const LEN: usize = 1 + 8 + 4 + 8;

    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        let (kind, idx) = match self.location {
            Location::Log(i) => (0u8, i),
            Location::Snapshot => (1u8, 0),
        };
        b[0] = kind;
        b[1..9].copy_from_slice(&idx.to_be_bytes());
        b[9..13].copy_from_slice(&self.record_count.to_be_bytes());
        b[13..21].copy_from_slice(&self.max_timestamp_ms.to_be_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> io::Result<IndexEntry> {
        if b.len() != Self::LEN {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad offset index entry"));
        }
        let idx = u64::from_be_bytes(b[1..9].try_into().unwrap_or_default());
        let location = match b[0] {
            0 => Location::Log(idx),
            1 => Location::Snapshot,
            k => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad location kind {k}")));
            }
        };
        Ok(IndexEntry {
            location,
            record_count: u32::from_be_bytes(b[9..13].try_into().unwrap_or_default()),
            max_timestamp_ms: i64::from_be_bytes(b[13..21].try_into().unwrap_or_default()),
        })
    }
}

pub(crate) fn index_key(base_offset: u64) -> [u8; 9] {
    let mut k = [PREFIX_INDEX; 9];
    k[1..].copy_from_slice(&base_offset.to_be_bytes());
    k
}

pub(crate) fn batch_key(base_offset: u64) -> [u8; 9] {
    let mut k = [PREFIX_BATCH; 9];
    k[1..].copy_from_slice(&base_offset.to_be_bytes());
    k
}

fn base_of(key: &[u8]) -> io::Result<u64> {
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

/// Read access to a partition. Cheap to clone.
#[derive(Clone)]
pub struct PartitionReader {
    pub(crate) log: sled::Tree,
    pub(crate) sm: sled::Tree,
    pub(crate) offsets: watch::Receiver<Offsets>,
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
    pub fn read(&self, offset: u64, max_bytes: usize, max_records: usize) -> io::Result<Vec<StoredBatch>> {
        let hw = self.offsets().high_watermark;
        let mut out = Vec::new();
        if offset >= hw {
            return Ok(out);
        }
        // The batch containing `offset` starts at or before it.
        let start = match self.sm.range(index_key(0)..=index_key(offset)).next_back() {
            Some(kv) => base_of(&kv.map_err(sled_err)?.0)?,
            None => offset,
        };
        let (mut bytes, mut records) = (0usize, 0usize);
        for kv in self.sm.range(index_key(start)..index_key(hw)) {
            let (k, v) = kv.map_err(sled_err)?;
            let base = base_of(&k)?;
            let ie = IndexEntry::decode(&v)?;
            if base + ie.record_count as u64 <= offset {
                continue;
            }
            let batch = self.load(base, ie)?;
            bytes += batch.len();
            records += ie.record_count as usize;
            out.push(StoredBatch { base_offset: base, record_count: ie.record_count, batch });
            if bytes >= max_bytes || records >= max_records {
                break;
            }
        }
        Ok(out)
    }

    fn load(&self, base: u64, ie: IndexEntry) -> io::Result<Bytes> {
        let missing = || io::Error::new(io::ErrorKind::NotFound, format!("batch at offset {base} is no longer stored"));
        match ie.location {
            Location::Snapshot => {
                let v = self.sm.get(batch_key(base)).map_err(sled_err)?.ok_or_else(missing)?;
                Ok(Bytes::copy_from_slice(&v))
            }
            Location::Log(index) => {
                let v = self.log.get(index.to_be_bytes()).map_err(sled_err)?.ok_or_else(missing)?;
                let entry: Entry = decode(&v)?;
                match entry.payload {
                    EntryPayload::Normal(Request::Append { batch, .. }) => Ok(batch),
                    _ => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("log index {index} for offset {base} is not an append"),
                    )),
                }
            }
        }
    }

    /// Every stored batch below the high watermark, in offset order.
    pub fn all_batches(&self) -> io::Result<Vec<StoredBatch>> {
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
            IndexEntry { location: Location::Log(7), record_count: 3, max_timestamp_ms: -1 },
            IndexEntry { location: Location::Snapshot, record_count: u32::MAX, max_timestamp_ms: i64::MAX },
        ] {
            assert_eq!(IndexEntry::decode(&ie.encode()).unwrap(), ie);
        }
        assert!(IndexEntry::decode(&[9u8; 21]).is_err());
    }
}
