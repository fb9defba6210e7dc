//! The node's storage: segment logs, the sled database for small state, and
//! the group-commit flusher that makes both durable.
//!
//! Layout under the data directory:
//! - `logs/<group>/` — each group's Raft log as segment files
//!   ([`crate::segment`]): every record payload lives here, written once.
//! - `sled/` — one sled database with two trees per group: `meta/<group>`
//!   (vote, committed, purge point) and `sm/<group>` (state machine: applied
//!   id, offsets, the offset index, producer state). Every value in it is
//!   small: sled keeps large values in memory for good (measured in
//!   docs/architecture.md), so payloads never go there.
//!
//! Durability: appends write their frames and mark the segment file dirty;
//! the flusher thread takes every caller queued while the last round ran
//! (group commit), fdatasyncs every dirty file — in parallel when there are
//! several — and only then reports them flushed. Callers that need sled's
//! state on disk too (votes, purge points) ask for a full round: sled's
//! `flush()` ends in `sync_file_range`, which survives neither power loss
//! nor a drive cache, so the flusher follows it with `fdatasync` of sled's
//! data file and of every blob file sled wrote or grew since the last
//! round.
//!
//! A failed fsync stops the process: after an fsync error Linux may drop the
//! dirty pages and report later fsyncs as successful, so nothing written
//! afterwards could be trusted as durable.
//!
//! `REPLOG_UNSAFE_SKIP_FSYNC=1` makes every fsync a no-op. It exists only so
//! the power-failure tests can show that they catch a broker that does not
//! sync; a node started with it logs that it is unsafe.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use crate::disk::DiskGuard;
use crate::observe::{self, Observer};
use crate::segment::SegmentLog;
use crate::types::GroupId;

/// sled's segment size. Values above a quarter of it become blob files.
const SLED_SEGMENT_SIZE: usize = 8 << 20;
/// The largest encoded Raft entry. Entries live in segment files, so this is
/// only a sanity bound on what one Raft message may carry.
pub const MAX_ENTRY_BYTES: usize = 64 << 20;
/// Environment switch that disables fsync (power-failure tests only).
pub const SKIP_FSYNC_ENV: &str = "REPLOG_UNSAFE_SKIP_FSYNC";

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// sled page cache size (sled holds only small state).
    pub cache_capacity_bytes: u64,
    /// A log segment is sealed and a new one started past this size.
    pub segment_bytes: u64,
    /// Free space the node keeps on its data volume ([`crate::disk`]).
    pub min_free_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { cache_capacity_bytes: 64 << 20, segment_bytes: 64 << 20, min_free_bytes: 256 << 20 }
    }
}

/// Counters describing the flusher, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct FlushStats {
    /// Completed flush rounds.
    pub flushes: AtomicU64,
    /// Callers served by those rounds (waiters / flushes = sharing factor).
    pub waiters: AtomicU64,
    /// Files fdatasync'd by those rounds.
    pub files_synced: AtomicU64,
    /// Total time spent in flush rounds, in microseconds.
    pub micros: AtomicU64,
    pub errors: AtomicU64,
}

/// A file written since it was last synced, and whether it needs `fsync`
/// (a directory or metadata change) rather than `fdatasync`.
type DirtyFile = (Arc<File>, bool);

/// Files written since they were last synced.
pub(crate) struct Syncer {
    dirty: Mutex<HashMap<usize, DirtyFile>>,
    skip: bool,
}

impl Syncer {
    pub(crate) fn new(skip: bool) -> Syncer {
        Syncer { dirty: Mutex::default(), skip }
    }

    /// Notes that `file` was written (`all`: a directory or metadata change,
    /// synced with `fsync` rather than `fdatasync`). Call after the write.
    pub(crate) fn mark(&self, file: &Arc<File>, all: bool) {
        let key = Arc::as_ptr(file) as usize;
        let mut d = self.dirty.lock().expect("dirty lock");
        let e = d.entry(key).or_insert_with(|| (file.clone(), all));
        e.1 |= all;
    }

    /// Syncs `file` now, on the caller's thread (rare paths: sealing a
    /// segment, truncating a log).
    pub(crate) fn sync_now(&self, file: &File, all: bool) -> io::Result<()> {
        if self.skip {
            return Ok(());
        }
        if all { file.sync_all() } else { file.sync_data() }
    }

    fn take(&self) -> Vec<DirtyFile> {
        std::mem::take(&mut *self.dirty.lock().expect("dirty lock")).into_values().collect()
    }

    /// Syncs `files`, several at once when there are many: the filesystem
    /// can commit concurrent syncs together.
    fn sync_all(&self, files: Vec<DirtyFile>, pool: &mut SyncPool) -> io::Result<()> {
        if self.skip || files.is_empty() {
            return Ok(());
        }
        pool.sync(files)
    }
}

/// Most fdatasyncs one round issues at once.
const SYNC_THREADS: usize = 8;

fn sync_file((f, all): &DirtyFile) -> io::Result<()> {
    if *all { f.sync_all() } else { f.sync_data() }
}

/// The flusher's helpers for rounds with several dirty files: threads kept
/// for the store's life, started as rounds first need them (at most
/// [`SYNC_THREADS`] - 1; the flusher syncs one share itself). Threads
/// spawned for each round instead cost a clone, a stack and an exit apiece,
/// hundreds of times a second under load.
struct SyncPool {
    workers: Vec<mpsc::Sender<Vec<DirtyFile>>>,
    done_tx: mpsc::Sender<io::Result<()>>,
    done: mpsc::Receiver<io::Result<()>>,
}

impl SyncPool {
    fn new() -> SyncPool {
        let (done_tx, done) = mpsc::channel();
        SyncPool { workers: Vec::new(), done_tx, done }
    }

    /// Syncs `files`, shared out over the flusher's thread and up to
    /// [`SYNC_THREADS`] - 1 helpers; the first error, if any.
    fn sync(&mut self, mut files: Vec<DirtyFile>) -> io::Result<()> {
        let shares = files.len().min(SYNC_THREADS);
        let chunk = files.len().div_ceil(shares);
        let mut handed = 0;
        while files.len() > chunk {
            let Some(helper) = self.helper(handed) else {
                // No thread to be had: the flusher syncs the rest itself.
                break;
            };
            let share = files.split_off(files.len() - chunk);
            if let Err(mpsc::SendError(share)) = helper.send(share) {
                files.extend(share);
                break;
            }
            handed += 1;
        }
        let mut result = files.iter().try_for_each(sync_file);
        for _ in 0..handed {
            // Every share is answered, a panic's too (see `helper`).
            let theirs = self.done.recv().unwrap_or_else(|_| Err(io::Error::other("sync thread ended")));
            result = result.and(theirs);
        }
        result
    }

    /// Helper `i`, started on first use; `None` if no thread can be started.
    fn helper(&mut self, i: usize) -> Option<&mpsc::Sender<Vec<DirtyFile>>> {
        if i == self.workers.len() {
            let (tx, rx) = mpsc::channel::<Vec<DirtyFile>>();
            let done = self.done_tx.clone();
            let started = std::thread::Builder::new().name(format!("replog-sync-{i}")).spawn(move || {
                for share in rx {
                    // Each share's answer, even a panic's: the round waits for it.
                    let r = std::panic::catch_unwind(|| share.iter().try_for_each(sync_file))
                        .unwrap_or_else(|_| Err(io::Error::other("sync thread panicked")));
                    if done.send(r).is_err() {
                        return;
                    }
                }
            });
            if let Err(e) = started {
                tracing::warn!("starting a sync thread: {e}; the flusher syncs its share itself");
                return None;
            }
            self.workers.push(tx);
        }
        self.workers.get(i)
    }
}

struct FlushRequest {
    /// sled's state must be on disk too, not only the logs.
    sled: bool,
    cb: Box<dyn FnOnce(io::Result<()>) + Send>,
}

pub struct Store {
    db: sled::Db,
    dir: PathBuf,
    cfg: StoreConfig,
    syncer: Arc<Syncer>,
    logs: Mutex<HashMap<GroupId, Arc<SegmentLog>>>,
    disk: DiskGuard,
    closing: AtomicBool,
    tx: Option<mpsc::Sender<FlushRequest>>,
    flusher: Option<std::thread::JoinHandle<()>>,
    stats: Arc<FlushStats>,
    observer: observe::Slot,
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the channel stops the flusher; joining it releases its
        // handle on the database (and sled's file lock), so the same
        // directory can be reopened at once.
        self.tx.take();
        if let Some(t) = self.flusher.take() {
            // A flush callback may still hold the last handle; then this
            // runs on the flusher itself, which ends once the loop sees
            // the closed channel, and must not wait for itself.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// Key in a group's `meta` tree naming its current state machine tree.
const KEY_SM_TREE: &[u8] = b"sm_tree";

/// The name of a group's sled tree of `kind` (`meta` or `sm`).
fn tree_name(kind: &str, group: GroupId) -> String {
    format!("{kind}/{group:016x}")
}

fn group_dir_name(group: GroupId) -> String {
    format!("{group:016x}")
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

impl Store {
    pub fn open(dir: &Path, cfg: &StoreConfig) -> io::Result<Arc<Store>> {
        let skip = std::env::var(SKIP_FSYNC_ENV).is_ok_and(|v| v == "1");
        if skip {
            tracing::error!("{SKIP_FSYNC_ENV}=1: fsync is disabled; acknowledged writes can be lost on power failure");
        }
        let sled_dir = dir.join("sled");
        let logs_dir = dir.join("logs");
        fs::create_dir_all(&sled_dir)?;
        fs::create_dir_all(&logs_dir)?;
        let db = sled::Config::new()
            .path(&sled_dir)
            .cache_capacity(cfg.cache_capacity_bytes)
            .segment_size(SLED_SEGMENT_SIZE)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(sled_err)?;
        // sled writes its `conf` file once and never syncs it.
        if let Ok(conf) = File::open(sled_dir.join("conf")) {
            conf.sync_all()?;
        }
        // Make the directory entries durable once.
        for d in [&sled_dir, &logs_dir, &dir.to_path_buf()] {
            sync_dir(d)?;
        }
        if let Some(parent) = dir.parent()
            && let Ok(d) = File::open(parent)
        {
            let _ = d.sync_all();
        }
        let disk = DiskGuard::new(dir, cfg.min_free_bytes)?;
        let data_file = File::open(sled_dir.join("db"))?;
        let blobs = BlobSyncer::new(sled_dir.join("blobs"));
        let stats = Arc::new(FlushStats::default());
        let syncer = Arc::new(Syncer::new(skip));
        let (tx, rx) = mpsc::channel::<FlushRequest>();
        let observer = observe::Slot::default();
        let flusher = {
            let db = db.clone();
            let stats = stats.clone();
            let syncer = syncer.clone();
            let observer = observer.clone();
            std::thread::Builder::new()
                .name("replog-flusher".into())
                .spawn(move || flusher(db, data_file, blobs, syncer, rx, stats, observer))?
        };
        Ok(Arc::new(Store {
            db,
            dir: dir.to_path_buf(),
            cfg: cfg.clone(),
            syncer,
            logs: Mutex::default(),
            disk,
            closing: AtomicBool::new(false),
            tx: Some(tx),
            flusher: Some(flusher),
            stats,
            observer,
        }))
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

    /// Free space on the data volume and what may be written.
    /// Installs the observer that storage reports its work to (the node's
    /// metrics); false if one is installed already.
    pub fn set_observer(&self, o: Arc<dyn Observer>) -> bool {
        self.observer.set(o)
    }

    /// Reports to the observer, if there is one.
    pub(crate) fn observe(&self, f: impl FnOnce(&dyn Observer)) {
        self.observer.with(f)
    }

    /// The directory of `group`'s log segments (for its size on disk).
    pub fn log_dir(&self, group: GroupId) -> PathBuf {
        self.dir.join("logs").join(group_dir_name(group))
    }

    pub fn disk(&self) -> &DiskGuard {
        &self.disk
    }

    /// Marks the store as shutting down: appends waiting for disk space
    /// give up instead of holding the node's shutdown.
    pub fn begin_close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    fn request(&self, sled: bool, cb: Box<dyn FnOnce(io::Result<()>) + Send>) {
        let Some(tx) = &self.tx else {
            return cb(Err(io::Error::other("store closed")));
        };
        if let Err(mpsc::SendError(r)) = tx.send(FlushRequest { sled, cb }) {
            (r.cb)(Err(io::Error::other("flusher stopped")));
        }
    }

    /// Queues `cb` to run once every log write made so far is on disk.
    pub fn flush_logs_then(&self, cb: impl FnOnce(io::Result<()>) + Send + 'static) {
        self.request(false, Box::new(cb));
    }

    /// Waits until everything written so far — logs and sled state — is on disk.
    pub async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.request(
            true,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await.map_err(|_| io::Error::other("flusher stopped"))?
    }

    /// The Raft log of `group`, opened (and recovered) on first use. Every
    /// caller shares the one instance.
    pub fn log(&self, group: GroupId) -> io::Result<Arc<SegmentLog>> {
        let mut logs = self.logs.lock().expect("logs lock");
        if let Some(l) = logs.get(&group) {
            return Ok(l.clone());
        }
        let dir = self.log_dir(group);
        let log = Arc::new(SegmentLog::open(dir, group, self.cfg.segment_bytes, self.syncer.clone())?);
        logs.insert(group, log.clone());
        Ok(log)
    }

    pub fn meta_tree(&self, group: GroupId) -> io::Result<sled::Tree> {
        self.db.open_tree(tree_name("meta", group)).map_err(sled_err)
    }

    /// The state machine tree of `group` and its name. Installing a snapshot
    /// fills a fresh tree and then points the group at it
    /// ([`Store::switch_sm_tree`]); trees left over by an install that did
    /// not finish are dropped here.
    pub fn sm_tree(&self, group: GroupId) -> io::Result<(String, sled::Tree)> {
        let name = match self.meta_tree(group)?.get(KEY_SM_TREE).map_err(sled_err)? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => tree_name("sm", group),
        };
        for other in self.sm_tree_names(group) {
            if other != name {
                self.db.drop_tree(other).map_err(sled_err)?;
            }
        }
        let tree = self.db.open_tree(&name).map_err(sled_err)?;
        Ok((name, tree))
    }

    /// Every state machine tree `group` has (normally one).
    fn sm_tree_names(&self, group: GroupId) -> Vec<String> {
        let base = tree_name("sm", group);
        self.db
            .tree_names()
            .into_iter()
            .filter_map(|n| String::from_utf8(n.to_vec()).ok())
            .filter(|n| *n == base || n.strip_prefix(&base).is_some_and(|rest| rest.starts_with('@')))
            .collect()
    }

    /// A new, empty state machine tree for `group`, not yet in use.
    pub fn fresh_sm_tree(&self, group: GroupId) -> io::Result<(String, sled::Tree)> {
        let base = tree_name("sm", group);
        let next = self
            .sm_tree_names(group)
            .iter()
            .filter_map(|n| n.strip_prefix(&base)?.strip_prefix('@')?.parse::<u64>().ok())
            .max()
            .map_or(1, |n| n + 1);
        let name = format!("{base}@{next}");
        let tree = self.db.open_tree(&name).map_err(sled_err)?;
        tree.clear().map_err(sled_err)?;
        Ok((name, tree))
    }

    /// Points `group` at the state machine tree `name` (durably), then drops
    /// the tree it used before.
    pub async fn switch_sm_tree(&self, group: GroupId, name: &str, old: &str) -> io::Result<()> {
        self.meta_tree(group)?.insert(KEY_SM_TREE, name.as_bytes()).map_err(sled_err)?;
        self.flush().await?;
        if old != name {
            self.db.drop_tree(old).map_err(sled_err)?;
        }
        Ok(())
    }

    /// Groups that have state on this node.
    pub fn groups(&self) -> Vec<GroupId> {
        let from_sled = self
            .db
            .tree_names()
            .into_iter()
            .filter_map(|n| std::str::from_utf8(&n).ok()?.strip_prefix("meta/").map(str::to_string));
        let from_logs = fs::read_dir(self.dir.join("logs"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok());
        let mut v: Vec<GroupId> = from_sled.chain(from_logs).filter_map(|h| u64::from_str_radix(&h, 16).ok()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Deletes everything of `group` and waits for that to be durable. The
    /// group's Raft instance must be stopped first.
    pub async fn drop_group(&self, group: GroupId) -> io::Result<()> {
        self.logs.lock().expect("logs lock").remove(&group);
        let logs_dir = self.dir.join("logs");
        match fs::remove_dir_all(logs_dir.join(group_dir_name(group))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        sync_dir(&logs_dir)?;
        for name in self.sm_tree_names(group) {
            self.db.drop_tree(name).map_err(sled_err)?;
        }
        self.db.drop_tree(tree_name("meta", group)).map_err(sled_err)?;
        self.flush().await
    }
}

/// Finds and fsyncs blob files sled wrote or grew since the last round.
/// sled names a blob by the log sequence number it reserved for it, but
/// creates the file later, so names say nothing about which files are new:
/// every file whose length differs from the length last synced is synced.
pub(crate) struct BlobSyncer {
    dir: PathBuf,
    synced: HashMap<OsString, u64>,
}

impl BlobSyncer {
    pub(crate) fn new(dir: PathBuf) -> BlobSyncer {
        BlobSyncer { dir, synced: HashMap::new() }
    }

    /// Syncs every new or changed blob file and returns their names.
    pub(crate) fn sync_new(&mut self, skip: bool) -> io::Result<Vec<OsString>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut seen = HashMap::with_capacity(self.synced.len());
        let mut synced = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let f = match File::open(entry.path()) {
                Ok(f) => f,
                // Already garbage-collected by sled: nothing to make durable.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let len = f.metadata()?.len();
            if self.synced.get(&name) != Some(&len) {
                if !skip {
                    f.sync_data()?;
                }
                synced.push(name.clone());
            }
            seen.insert(name, len);
        }
        if !synced.is_empty() && !skip {
            sync_dir(&self.dir)?;
        }
        self.synced = seen;
        Ok(synced)
    }
}

fn flusher(
    db: sled::Db,
    data_file: File,
    mut blobs: BlobSyncer,
    syncer: Arc<Syncer>,
    rx: mpsc::Receiver<FlushRequest>,
    stats: Arc<FlushStats>,
    observer: observe::Slot,
) {
    let mut pool = SyncPool::new();
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(r) = rx.try_recv() {
            waiting.push(r);
        }
        let t0 = Instant::now();
        // Taken after the requests: every write a request follows is in it.
        let files = syncer.take();
        let count = files.len();
        let mut result = syncer.sync_all(files, &mut pool);
        if result.is_ok() && waiting.iter().any(|r| r.sled) {
            result = db
                .flush()
                .map_err(sled_err)
                .and_then(|_| blobs.sync_new(syncer.skip))
                .and_then(|_| syncer.sync_now(&data_file, false));
        }
        let took = t0.elapsed();
        observer.with(|o| o.flush_round(took, waiting.len(), count));
        stats.micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        stats.flushes.fetch_add(1, Ordering::Relaxed);
        stats.waiters.fetch_add(waiting.len() as u64, Ordering::Relaxed);
        stats.files_synced.fetch_add(count as u64, Ordering::Relaxed);
        if result.is_err() {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        for r in waiting {
            (r.cb)(match &result {
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn names(v: Vec<OsString>) -> Vec<String> {
        let mut v: Vec<String> = v.into_iter().map(|n| n.into_string().unwrap()).collect();
        v.sort();
        v
    }

    /// A round of several files shares them over helpers kept from round to
    /// round, and a share that fails (an fdatasync of a pipe: EINVAL) fails
    /// the round, whether the flusher or a helper synced it.
    #[test]
    fn a_sync_pool_keeps_its_helpers_across_rounds_and_reports_a_failed_share() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<DirtyFile> = (0..12)
            .map(|i| {
                let mut f = File::create(dir.path().join(format!("f{i}"))).unwrap();
                f.write_all(b"x").unwrap();
                (Arc::new(f), i == 0)
            })
            .collect();
        let mut pool = SyncPool::new();
        for _ in 0..3 {
            pool.sync(files.clone()).unwrap();
        }
        // 12 files, at most 8 shares: 6 shares of 2, the flusher's and five
        // helpers'.
        assert_eq!(pool.workers.len(), 5);
        pool.sync(files[..1].to_vec()).unwrap();
        assert_eq!(pool.workers.len(), 5, "one file is synced by the flusher alone");

        let pipe = || {
            let (r, _w) = std::io::pipe().unwrap();
            (Arc::new(File::from(std::os::fd::OwnedFd::from(r))), false)
        };
        let mut last = files.clone();
        last.push(pipe());
        assert!(pool.sync(last).is_err(), "a helper's share failed");
        let mut first = vec![pipe()];
        first.extend(files.iter().cloned());
        assert!(pool.sync(first).is_err(), "the flusher's own share failed");
        let mut middle = files.clone();
        middle.insert(6, pipe());
        assert!(pool.sync(middle).is_err(), "a middle helper's share failed");
        pool.sync(files).unwrap();
    }

    /// sled reserves a blob's number before it creates the file, so a file
    /// with a lower number can appear after a higher one was synced, and a
    /// file can still be growing when a round syncs it. Both must be synced
    /// by a later round.
    #[test]
    fn blob_files_that_appear_late_or_grow_are_synced_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = BlobSyncer::new(dir.path().to_path_buf());
        assert!(b.sync_new(false).unwrap().is_empty());
        fs::write(dir.path().join("100"), b"first").unwrap();
        assert_eq!(names(b.sync_new(false).unwrap()), ["100"]);
        assert!(b.sync_new(false).unwrap().is_empty(), "an unchanged file is not synced again");
        fs::write(dir.path().join("50"), b"late").unwrap();
        fs::OpenOptions::new().append(true).open(dir.path().join("100")).unwrap().write_all(b" more").unwrap();
        assert_eq!(names(b.sync_new(false).unwrap()), ["100", "50"]);
    }
}
