//! The node's sled database and the group-commit flusher.
//!
//! One sled `Db` per node; each Raft group owns three trees:
//! `log/<group>` (entries by big-endian index), `meta/<group>` (vote,
//! committed, last purged) and `sm/<group>` (state machine).
//!
//! Durability: sled's `flush()` ends in `sync_file_range`, which does not
//! flush the drive's cache or file metadata, so after every flush the
//! flusher also calls `fdatasync` on sled's data file. Every appender that
//! queued while a flush was running shares the next one (group commit):
//! many groups appending at once cost one fsync, not one each.
//! sled writes any log item above its blob threshold (a quarter of the
//! segment size) — a large value, or a whole consolidated leaf holding
//! several entries — to a file of its own under `blobs/`, and never syncs
//! those files. The flusher therefore also fsyncs every blob file created
//! since its last round, and the `blobs` directory, before it reports
//! anything durable.
//!
//! A failed flush or fsync stops the process: after an fsync error Linux
//! may drop the dirty pages and report later fsyncs as successful, so
//! nothing written afterwards could be trusted as durable.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use crate::types::GroupId;

/// sled's segment size. Values above a quarter of it (minus a header)
/// become unsynced blob files, so the largest entry must stay below that.
pub const SEGMENT_SIZE: usize = 8 << 20;
/// The largest encoded Raft entry that stays inline in sled's log.
pub const MAX_INLINE_ENTRY_BYTES: usize = SEGMENT_SIZE / 4 - 1024;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// sled page cache size.
    pub cache_capacity_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { cache_capacity_bytes: 256 << 20 }
    }
}

/// Counters describing the flusher, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct FlushStats {
    /// Completed flush + fsync rounds.
    pub flushes: AtomicU64,
    /// Callers served by those rounds (waiters / flushes = sharing factor).
    pub waiters: AtomicU64,
    /// Total time spent in flush + fsync, in microseconds.
    pub micros: AtomicU64,
    pub errors: AtomicU64,
}

type FlushCallback = Box<dyn FnOnce(io::Result<()>) + Send>;

pub struct Store {
    db: sled::Db,
    dir: PathBuf,
    tx: Option<mpsc::Sender<FlushCallback>>,
    flusher: Option<std::thread::JoinHandle<()>>,
    stats: Arc<FlushStats>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the channel stops the flusher; joining it releases its
        // handle on the database (and sled's file lock), so the same
        // directory can be reopened at once.
        self.tx.take();
        if let Some(t) = self.flusher.take() {
            let _ = t.join();
        }
    }
}

impl Store {
    pub fn open(dir: &Path, cfg: &StoreConfig) -> io::Result<Arc<Store>> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cfg.cache_capacity_bytes)
            .segment_size(SEGMENT_SIZE)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(sled_err)?;
        // Make the data file's directory entry durable once.
        File::open(dir)?.sync_all()?;
        if let Some(parent) = dir.parent()
            && let Ok(d) = File::open(parent)
        {
            let _ = d.sync_all();
        }
        let data_file = File::open(dir.join("db"))?;
        let blobs = BlobSyncer::new(dir.join("blobs"));
        let stats = Arc::new(FlushStats::default());
        let (tx, rx) = mpsc::channel::<FlushCallback>();
        let flusher = {
            let db = db.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("replog-flusher".into())
                .spawn(move || flusher(db, data_file, blobs, rx, stats))?
        };
        Ok(Arc::new(Store { db, dir: dir.to_path_buf(), tx: Some(tx), flusher: Some(flusher), stats }))
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> &Arc<FlushStats> {
        &self.stats
    }

    /// Queues `cb` to run after everything written so far is on disk.
    pub fn flush_then(&self, cb: impl FnOnce(io::Result<()>) + Send + 'static) {
        let Some(tx) = &self.tx else {
            return cb(Err(io::Error::other("store closed")));
        };
        if let Err(mpsc::SendError(cb)) = tx.send(Box::new(cb)) {
            cb(Err(io::Error::other("flusher stopped")));
        }
    }

    /// Waits until everything written so far is on disk.
    pub async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.flush_then(move |r| {
            let _ = tx.send(r);
        });
        rx.await.map_err(|_| io::Error::other("flusher stopped"))?
    }

    pub fn log_tree(&self, group: GroupId) -> io::Result<sled::Tree> {
        self.db.open_tree(format!("log/{group:016x}")).map_err(sled_err)
    }

    pub fn meta_tree(&self, group: GroupId) -> io::Result<sled::Tree> {
        self.db.open_tree(format!("meta/{group:016x}")).map_err(sled_err)
    }

    pub fn sm_tree(&self, group: GroupId) -> io::Result<sled::Tree> {
        self.db.open_tree(format!("sm/{group:016x}")).map_err(sled_err)
    }

    /// Groups that have state on this node.
    pub fn groups(&self) -> Vec<GroupId> {
        let mut v: Vec<GroupId> = self
            .db
            .tree_names()
            .iter()
            .filter_map(|n| std::str::from_utf8(n).ok()?.strip_prefix("meta/").map(str::to_string))
            .filter_map(|h| u64::from_str_radix(&h, 16).ok())
            .collect();
        v.sort_unstable();
        v
    }

    /// Deletes every tree of `group` and waits for that to be durable.
    pub async fn drop_group(&self, group: GroupId) -> io::Result<()> {
        for name in [format!("log/{group:016x}"), format!("sm/{group:016x}"), format!("meta/{group:016x}")] {
            self.db.drop_tree(name).map_err(sled_err)?;
        }
        self.flush().await
    }
}

/// Finds and fsyncs blob files sled wrote since the last round. Blob files
/// are named by the log sequence number at which they were written, which
/// only grows.
struct BlobSyncer {
    dir: PathBuf,
    synced_through: Option<u64>,
}

impl BlobSyncer {
    fn new(dir: PathBuf) -> BlobSyncer {
        BlobSyncer { dir, synced_through: None }
    }

    fn sync_new(&mut self) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut newest = self.synced_through;
        let mut any = false;
        for entry in entries {
            let entry = entry?;
            let Some(lsn) = entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else { continue };
            if self.synced_through.is_some_and(|s| lsn <= s) {
                continue;
            }
            match File::open(entry.path()) {
                Ok(f) => f.sync_data()?,
                // Already garbage-collected by sled: nothing to make durable.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            newest = newest.max(Some(lsn));
            any = true;
        }
        if any {
            File::open(&self.dir)?.sync_all()?;
        }
        self.synced_through = newest;
        Ok(())
    }
}

fn flusher(
    db: sled::Db,
    data_file: File,
    mut blobs: BlobSyncer,
    rx: mpsc::Receiver<FlushCallback>,
    stats: Arc<FlushStats>,
) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(cb) = rx.try_recv() {
            waiting.push(cb);
        }
        let t0 = Instant::now();
        let result = db.flush().map_err(sled_err).and_then(|_| blobs.sync_new()).and_then(|_| data_file.sync_data());
        stats.micros.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        stats.flushes.fetch_add(1, Ordering::Relaxed);
        stats.waiters.fetch_add(waiting.len() as u64, Ordering::Relaxed);
        if result.is_err() {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        for cb in waiting {
            cb(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
        if let Err(e) = result {
            tracing::error!("storage flush failed: {e}; stopping, since later writes could not be made durable");
            std::process::abort();
        }
    }
}

pub fn sled_err(e: sled::Error) -> io::Error {
    match e {
        sled::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

pub(crate) fn codec_err(e: bincode::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    bincode::serialize(v).map_err(codec_err)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    bincode::deserialize(b).map_err(codec_err)
}
