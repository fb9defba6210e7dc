//! `RaftStateMachine` for replog groups.
//!
//! A group is either the controller (cluster metadata) or a partition
//! (offset index over the Raft log). The persisted state machine is always
//! consistent with its own applied index; it is not fsync'd, because
//! openraft re-applies committed entries from that index on restart.
//!
//! An apply persists in one of two ways ([`Writes`]):
//! - *Appends only* (the hot path): the new offset- and time-index entries
//!   are inserted first, then one value, the apply tail (`KEY_APPLY_TAIL`:
//!   applied id, membership, partition state and the state of every
//!   producer changed since the last atomic write). sled recovers a prefix
//!   of its writes in order, so after a crash either the tail is there with
//!   every index entry it counts, or the previous tail is, and the index
//!   entries beyond it are the same ones re-applying the log writes again.
//!   On open the tail overrides the producer keys, which only atomic writes
//!   update. Each tail names again every producer an earlier tail named
//!   (at most [`TAIL_PRODUCERS`], else the apply is written atomically), so
//!   a producer's newest state never rests in a tail that a later one
//!   replaced.
//! - *Anything else* (truncation, group offsets, queues, producer
//!   evictions, every controller apply): one atomic sled batch with the
//!   applied id and the state, which also removes the apply tail.
//!
//! The difference is cost: an atomic sled batch seals and writes sled's IO
//! buffer (a write and a `sync_file_range` on one of its IO threads) twice,
//! at every apply on every replica; the inserts of the hot path join the
//! buffer and reach the disk with sled's next flush. The hot path is two
//! inserts per batch, the offset-index entry and the tail, and a
//! time-index entry at most every 100 ms of record time or 1,024 batches
//! ([`crate::partition::TIME_INDEX_MS`]).
//!
//! Applied state is never persisted ahead of the local log: before an
//! apply's sled batch is written, the entries it covers must be fsync'd in
//! this replica's own segment log (a follower can learn that an entry is
//! committed before its own copy is on disk). Otherwise a power failure
//! could leave the offset index pointing at entries the log lost.
//!
//! Snapshots carry everything a replica needs to serve the group: the
//! cluster metadata, or a partition's state *and every retained batch*, so a
//! replica that installs one can serve (and lead) without losing records.
//! The current snapshot is kept as a file in the group's log directory
//! (`snapshot`), and the batches of an installed one in a data file beside
//! it (`installed-<index>.data`), so that sled holds only small values.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::sync::{Arc, RwLock};

use futures::TryStreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tokio::sync::watch;
use tracing::warn;

use crate::controller::{ClusterMeta, ControllerResult};
use crate::error::Rejection;
use crate::groups::{
    self, Committed, GROUP_PREFIX, GroupState, OFFSET_PREFIX, group_key, offsets_prefix, parse_offset_key,
};
use crate::partition::{
    Groups, IndexEntry, InstalledData, KEY_STATE, Location, Offsets, PartitionReader, PartitionState, Queues, SmTree,
    TimeIndexing, base_of, index_key, time_key, time_of,
};
use crate::producers::{self, ProducerState, SeqBatch, SeqCheck};
use crate::queues::{self, LogBounds, QUEUE_PREFIX, QueueState, queue_key};
use crate::segment::SegmentLog;
use crate::snapshot::{self, Header, HeaderBody, StreamReader};
use crate::store::{Store, decode, encode, sled_err};
use crate::types::{
    GroupId, LogId, Request, Response, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};

const KEY_APPLIED: &[u8] = b"applied";
/// The last appends-only apply: [`ApplyTail`]. Overrides `applied`, the
/// partition state and the producer keys it names, while it exists.
const KEY_APPLY_TAIL: &[u8] = b"applied-tail";
/// Most producers an apply tail names; past that, the apply is written
/// atomically and puts them under their own keys.
const TAIL_PRODUCERS: usize = 32;
const KEY_CLUSTER: &[u8] = b"cluster";
/// Name of the installed snapshot's data file, if one was installed.
const KEY_INSTALLED: &[u8] = b"installed";
/// Index entries written per sled batch while a snapshot is installed.
const INSTALL_BATCH: usize = 10_000;

/// The small state a snapshot install replaces, once it is switched to.
enum NewState {
    Controller(ClusterMeta),
    Partition(PartitionState, Vec<(i64, ProducerState)>, Vec<(String, GroupState)>, Vec<(String, QueueState)>),
}

/// The offset index entries of `[lo, hi)`, from the batch holding `lo`.
fn index_entries(
    tree: &sled::Tree,
    lo: u64,
    hi: u64,
) -> io::Result<impl Iterator<Item = io::Result<(u64, IndexEntry)>> + use<>> {
    let start = match tree.range(index_key(0)..=index_key(lo)).next_back() {
        Some(kv) => base_of(&kv.map_err(sled_err)?.0)?,
        None => lo,
    };
    Ok(tree.range(index_key(start)..index_key(hi)).map(|kv| {
        let (k, v) = kv.map_err(sled_err)?;
        Ok((base_of(&k)?, IndexEntry::decode(&v)?))
    }))
}

/// The value of `KEY_APPLY_TAIL`: applied id, membership, partition state,
/// and the state of every producer changed since the last atomic write.
type ApplyTail = (Option<LogId>, StoredMembership, PartitionState, Vec<(i64, ProducerState)>);

/// What one apply writes to the state machine tree, in order.
#[derive(Default)]
struct Writes {
    /// Inserts and removals, in the order the apply made them.
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// A write other than an offset- or time-index entry was made: the
    /// apply persists as one atomic batch.
    atomic: bool,
    /// Producers whose state the apply changed (written from the state at
    /// the end of the apply).
    producers: BTreeSet<i64>,
}

impl Writes {
    /// An offset- or time-index entry: derived from the log alone.
    fn index(&mut self, key: &[u8], value: &[u8]) {
        self.ops.push((key.to_vec(), Some(value.to_vec())));
    }

    fn insert(&mut self, key: impl AsRef<[u8]>, value: Vec<u8>) {
        self.atomic = true;
        self.ops.push((key.as_ref().to_vec(), Some(value)));
    }

    fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.atomic = true;
        self.ops.push((key.as_ref().to_vec(), None));
    }

    fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch
    }
}

/// What a group's state machine holds.
pub enum Kind {
    Controller {
        meta: ClusterMeta,
        tx: watch::Sender<Arc<ClusterMeta>>,
    },
    Partition {
        state: PartitionState,
        producers: HashMap<i64, ProducerState>,
        tx: watch::Sender<Offsets>,
        /// Consumer groups (partitions of `__consumer_offsets` only).
        groups: BTreeMap<String, GroupState>,
        groups_tx: watch::Sender<Groups>,
        /// Queue groups consuming this partition.
        queues: BTreeMap<String, Arc<QueueState>>,
        queues_tx: watch::Sender<Queues>,
    },
}

pub struct GroupStateMachine {
    group: GroupId,
    store: Arc<Store>,
    sm: SmTree,
    /// The name of the tree in `sm`.
    sm_name: String,
    log: Arc<SegmentLog>,
    installed: InstalledData,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    kind: Kind,
    /// Offsets committed by entries of the apply in progress, not yet in
    /// the tree: later entries of the same apply must see them.
    pending_offsets: HashMap<Vec<u8>, Option<Committed>>,
    /// Base offsets and sizes of batches appended by the apply in progress,
    /// not yet in the tree (a truncation in the same apply must see them).
    pending_bases: Vec<(u64, u32)>,
    /// A truncation of the apply in progress released every batch of the
    /// installed snapshot's data file: the file goes once the apply is
    /// persisted.
    release_installed: bool,
    /// A storage error met by the apply in progress: it fails as a whole.
    apply_error: Option<io::Error>,
    /// Queue groups changed by the apply in progress, written once at its end.
    dirty_queues: BTreeSet<String>,
    /// The tree holds an apply tail (`KEY_APPLY_TAIL`).
    has_tail: bool,
    /// Which appended batches get a time-index entry.
    time_index: TimeIndexing,
    /// Producers whose state the tree holds only in the apply tail: every
    /// tail names them all again, until an atomic write puts them under
    /// their own keys.
    tail_producers: BTreeSet<i64>,
}

impl GroupStateMachine {
    /// Opens (or creates) the controller group's state machine.
    pub fn open_controller(store: &Arc<Store>, group: GroupId) -> io::Result<GroupStateMachine> {
        let (name, sm) = store.sm_tree(group)?;
        let meta: ClusterMeta = match sm.get(KEY_CLUSTER).map_err(sled_err)? {
            Some(v) => decode(&v)?,
            None => ClusterMeta::default(),
        };
        let (tx, _) = watch::channel(Arc::new(meta.clone()));
        Self::open(store, group, name, sm, Kind::Controller { meta, tx }, None, BTreeSet::new())
    }

    /// Opens (or creates) a partition group's state machine.
    pub fn open_partition(store: &Arc<Store>, group: GroupId) -> io::Result<GroupStateMachine> {
        let (name, sm) = store.sm_tree(group)?;
        let state: PartitionState = match sm.get(KEY_STATE).map_err(sled_err)? {
            Some(v) => decode(&v)?,
            None => PartitionState::default(),
        };
        let mut producers = HashMap::new();
        for kv in sm.scan_prefix([producers::KEY_PREFIX]) {
            let (k, v) = kv.map_err(sled_err)?;
            if let Some(id) = producers::id_of(&k) {
                producers.insert(id, decode(&v)?);
            }
        }
        let mut groups = BTreeMap::new();
        for kv in sm.scan_prefix([GROUP_PREFIX]) {
            let (k, v) = kv.map_err(sled_err)?;
            groups.insert(String::from_utf8_lossy(&k[1..]).into_owned(), decode(&v)?);
        }
        let mut queues = BTreeMap::new();
        for kv in sm.scan_prefix([QUEUE_PREFIX]) {
            let (k, v) = kv.map_err(sled_err)?;
            queues.insert(String::from_utf8_lossy(&k[1..]).into_owned(), Arc::new(decode(&v)?));
        }
        let mut state = state;
        let mut applied = None;
        let mut tail_producers = BTreeSet::new();
        if let Some(v) = sm.get(KEY_APPLY_TAIL).map_err(sled_err)? {
            let (last, membership, s, changed): ApplyTail = decode(&v)?;
            state = s;
            tail_producers.extend(changed.iter().map(|(id, _)| *id));
            producers.extend(changed);
            applied = Some((last, membership));
        }
        let (tx, _) = watch::channel(Offsets::from(state));
        let (groups_tx, _) = watch::channel(Arc::new(groups.clone()));
        let (queues_tx, _) = watch::channel(Arc::new(queues.clone()));
        Self::open(
            store,
            group,
            name,
            sm,
            Kind::Partition { state, producers, tx, groups, groups_tx, queues, queues_tx },
            applied,
            tail_producers,
        )
    }

    fn open(
        store: &Arc<Store>,
        group: GroupId,
        sm_name: String,
        sm: sled::Tree,
        kind: Kind,
        tail: Option<(Option<LogId>, StoredMembership)>,
        tail_producers: BTreeSet<i64>,
    ) -> io::Result<GroupStateMachine> {
        let has_tail = tail.is_some();
        let (last_applied, membership) = match (tail, sm.get(KEY_APPLIED).map_err(sled_err)?) {
            (Some(t), _) => t,
            (None, Some(v)) => decode(&v)?,
            (None, None) => (None, StoredMembership::default()),
        };
        let log = store.log(group)?;
        let installed = match sm.get(KEY_INSTALLED).map_err(sled_err)? {
            Some(name) => {
                let path = log.dir().join(String::from_utf8_lossy(&name).into_owned());
                Some((Arc::new(File::open(&path)?), path))
            }
            None => None,
        };
        GroupStateMachine {
            group,
            store: store.clone(),
            sm: Arc::new(RwLock::new(sm)),
            sm_name,
            log,
            installed: Arc::new(RwLock::new(installed)),
            last_applied,
            membership,
            kind,
            pending_offsets: HashMap::new(),
            pending_bases: Vec::new(),
            release_installed: false,
            apply_error: None,
            dirty_queues: BTreeSet::new(),
            has_tail,
            tail_producers,
            time_index: TimeIndexing::after(None),
        }
        .with_time_index()
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Takes the newest time-index entry from the tree.
    fn with_time_index(mut self) -> io::Result<Self> {
        self.time_index = TimeIndexing::after(newest_time_entry(&self.tree())?);
        Ok(self)
    }

    fn tree(&self) -> sled::Tree {
        self.sm.read().expect("sm tree lock").clone()
    }

    /// The small state as it stands, for a snapshot header.
    fn header(&self) -> io::Result<Header> {
        let body = match &self.kind {
            Kind::Controller { meta, .. } => HeaderBody::Controller(meta.clone()),
            Kind::Partition { state, producers, groups, queues, .. } => HeaderBody::Partition {
                state: *state,
                queues: queues.iter().map(|(k, v)| (k.clone(), QueueState::clone(v))).collect(),
                producers: producers.iter().map(|(k, v)| (*k, v.clone())).collect(),
                groups: groups.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                offsets: self
                    .tree()
                    .scan_prefix([OFFSET_PREFIX])
                    .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(sled_err))
                    .collect::<io::Result<_>>()?,
            },
        };
        Ok(Header { last_applied: self.last_applied, membership: self.membership.clone(), body })
    }

    /// Builds a snapshot of the state as applied right now (see
    /// [`crate::snapshot`]): cheap, since the records stay where they are.
    fn build_snapshot_now(&self) -> io::Result<Snapshot> {
        let header = self.header()?;
        let installed = self.installed.read().expect("installed lock").as_ref().map(|(_, p)| p.clone());
        let tree = self.tree();
        let (lo, hi) = match &self.kind {
            Kind::Partition { state, .. } => (state.log_start_offset, state.next_offset),
            Kind::Controller { .. } => (0, 0),
        };
        let dir = snapshot::build(&self.log, installed.as_deref(), &header, index_entries(&tree, lo, hi)?)?;
        let meta = SnapshotMeta { last_log_id: header.last_applied, last_membership: header.membership };
        // Older snapshots go; one being sent keeps its files until it is done.
        snapshot::current(self.log.dir())?;
        Ok(Snapshot { meta, snapshot: SnapshotData::Built(dir) })
    }

    /// Replaces the whole state with `data`'s: filled into a fresh tree, with
    /// the batches in a data file of their own, then switched to at once,
    /// so a crash midway leaves the old state whole.
    async fn install(&mut self, meta: &SnapshotMeta, data: &SnapshotData) -> io::Result<()> {
        let (mut reader, header) = StreamReader::open(data.stream()?)?;
        let (new_name, tree) = self.store.fresh_sm_tree(self.group)?;
        let mut batch = sled::Batch::default();
        let mut new_installed = None;
        let dir = self.log.dir().to_path_buf();
        let new_kind_state;
        match (&self.kind, header.body) {
            (Kind::Controller { .. }, HeaderBody::Controller(m)) => {
                if reader.next_batch()?.is_some() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "a controller snapshot holds no batches"));
                }
                batch.insert(KEY_CLUSTER, encode(&m)?);
                new_kind_state = Some(NewState::Controller(m));
            }
            (Kind::Partition { .. }, HeaderBody::Partition { state, producers: p, groups: g, offsets, queues: q }) => {
                for (name, st) in &q {
                    batch.insert(queue_key(name), encode(st)?);
                }
                for (id, st) in &p {
                    batch.insert(&producers::key(*id)[..], encode(st)?);
                }
                for (name, st) in &g {
                    batch.insert(group_key(name), encode(st)?);
                }
                for (k, v) in offsets {
                    batch.insert(k, v);
                }
                batch.insert(KEY_STATE, encode(&state)?);
                // The batches go to a data file of their own, durable before
                // the index that points into it.
                let name = format!("installed-{}.data", meta.last_log_id.map_or(0, |l| l.index));
                let tmp = dir.join(format!("{name}.tmp"));
                let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
                let (mut pos, mut n, mut newest) = (0u64, 0usize, None::<i64>);
                let mut time_index = TimeIndexing::after(None);
                while let Some(b) = reader.next_batch()? {
                    out.write_all(&b.batch)?;
                    let ie = IndexEntry {
                        location: Location::Snapshot(pos),
                        record_count: b.count,
                        max_timestamp_ms: b.max_ts,
                        bytes: b.batch.len() as u32,
                    };
                    batch.insert(&index_key(b.base)[..], &ie.encode()[..]);
                    // The time index, rebuilt as apply would have built it.
                    let rose = newest.is_none_or(|m| b.max_ts > m);
                    if rose {
                        newest = Some(b.max_ts);
                    }
                    if time_index.batch(rose, b.max_ts) {
                        batch.insert(&time_key(b.max_ts)[..], &b.base.to_be_bytes()[..]);
                    }
                    pos += b.batch.len() as u64;
                    n += 1;
                    if n % INSTALL_BATCH == 0 {
                        tree.apply_batch(std::mem::take(&mut batch)).map_err(sled_err)?;
                    }
                }
                let out = out.into_inner().map_err(|e| e.into_error())?;
                out.sync_all()?;
                fs::rename(&tmp, dir.join(&name))?;
                File::open(&dir)?.sync_all()?;
                batch.insert(KEY_INSTALLED, name.as_bytes());
                new_installed = Some(dir.join(&name));
                new_kind_state = Some(NewState::Partition(state, p, g, q));
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("snapshot for group {} is of the wrong kind", self.group),
                ));
            }
        }
        batch.insert(KEY_APPLIED, encode(&(&meta.last_log_id, &meta.last_membership))?);
        tree.apply_batch(batch).map_err(sled_err)?;
        let newest_time = newest_time_entry(&tree)?;
        let old_name = std::mem::replace(&mut self.sm_name, new_name.clone());
        self.store.switch_sm_tree(self.group, &new_name, &old_name).await?;
        *self.sm.write().expect("sm tree lock") = tree;
        self.time_index = TimeIndexing::after(newest_time);
        self.has_tail = false;
        self.tail_producers.clear();
        match (&mut self.kind, new_kind_state) {
            (Kind::Controller { meta: m, .. }, Some(NewState::Controller(new))) => *m = new,
            (
                Kind::Partition { state, producers, groups, queues, queues_tx, .. },
                Some(NewState::Partition(s, p, g, q)),
            ) => {
                *state = s;
                *producers = p.into_iter().collect();
                *groups = g.into_iter().collect();
                *queues = q.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
                queues_tx.send_replace(Arc::new(queues.clone()));
            }
            _ => {}
        }
        if let Some(path) = new_installed {
            let file = Arc::new(File::open(&path)?);
            let old = self.installed.write().expect("installed lock").replace((file, path.clone()));
            if let Some((_, old_path)) = old
                && old_path != path
            {
                let _ = fs::remove_file(old_path);
            }
        }
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish();
        // This replica's own snapshot of what it installed (hard links to the
        // installed data, no copy) becomes the one it sends on if it leads.
        self.build_snapshot_now()?;
        if let SnapshotData::Received(file) = data {
            let _ = fs::remove_file(file);
        }
        Ok(())
    }

    /// Watches the cluster metadata (controller group only).
    pub fn cluster_watch(&self) -> Option<watch::Receiver<Arc<ClusterMeta>>> {
        match &self.kind {
            Kind::Controller { tx, .. } => Some(tx.subscribe()),
            Kind::Partition { .. } => None,
        }
    }

    /// Read access for fetch (partition groups only).
    pub fn reader(&self) -> Option<PartitionReader> {
        match &self.kind {
            Kind::Partition { tx, groups_tx, queues_tx, .. } => Some(PartitionReader {
                log: self.log.clone(),
                sm: self.sm.clone(),
                installed: self.installed.clone(),
                offsets: tx.subscribe(),
                groups: groups_tx.subscribe(),
                queues: queues_tx.subscribe(),
            }),
            Kind::Controller { .. } => None,
        }
    }

    fn apply_request(&mut self, req: Request, index: u64, batch: &mut Writes) -> Response {
        match (&mut self.kind, req) {
            (
                Kind::Partition { state, producers, .. },
                Request::Append { batch: data, record_count, max_timestamp_ms },
            ) => {
                let producer = match replog_proto::batch::peek_header(&data) {
                    Ok(h) => h.producer,
                    Err(e) => {
                        return Response::Rejected(Rejection::CorruptBatch(e.to_string()));
                    }
                };
                let pid = producer.producer_id;
                if pid >= 0 {
                    match producers::check(producers.get(&pid), producer.epoch, producer.base_sequence, record_count) {
                        SeqCheck::Append => {}
                        SeqCheck::Duplicate { base_offset } => return Response::Appended { base_offset, record_count },
                        SeqCheck::Reject(r) => return Response::Rejected(r),
                    }
                }
                let base = state.next_offset;
                let ie = IndexEntry {
                    location: Location::Log(index),
                    record_count,
                    max_timestamp_ms,
                    bytes: data.len() as u32,
                };
                batch.index(&index_key(base), &ie.encode());
                let rose = state.max_timestamp_ms.is_none_or(|m| max_timestamp_ms > m);
                if rose {
                    state.max_timestamp_ms = Some(max_timestamp_ms);
                }
                if self.time_index.batch(rose, max_timestamp_ms) {
                    batch.index(&time_key(max_timestamp_ms), &base.to_be_bytes());
                }
                state.next_offset += record_count as u64;
                state.retained_bytes += data.len() as u64;
                self.pending_bases.push((base, data.len() as u32));
                if pid >= 0 {
                    // Only a new producer beyond the cap costs the scan.
                    let evict = (producers.len() >= producers::MAX_PRODUCERS && !producers.contains_key(&pid))
                        .then(|| producers::least_recent(producers.iter()))
                        .flatten();
                    if let Some(old) = evict {
                        producers.remove(&old);
                        batch.remove(producers::key(old));
                    }
                    let st = producers.entry(pid).or_default();
                    let seq = SeqBatch { base_sequence: producer.base_sequence, record_count, base_offset: base };
                    producers::record(st, producer.epoch, seq);
                    batch.producers.insert(pid);
                }
                Response::Appended { base_offset: base, record_count }
            }
            (Kind::Controller { meta, .. }, Request::Controller(cmd)) => Response::Controller(meta.apply(cmd)),
            (Kind::Controller { .. }, r) => {
                Response::Rejected(Rejection::InvalidRequest(format!("controller group cannot apply {r}")))
            }
            (Kind::Partition { .. }, Request::Controller(_)) => {
                Response::Controller(ControllerResult::Invalid("not the controller group".into()))
            }
            (Kind::Partition { .. }, Request::Truncate { log_start_offset }) => {
                match self.truncate(log_start_offset, batch) {
                    Ok(start) => Response::Truncated { log_start_offset: start },
                    // A read error is this replica's alone: the apply fails
                    // (openraft stops the group) rather than diverge.
                    Err(e) => {
                        self.apply_error.get_or_insert(e);
                        Response::None
                    }
                }
            }
            (Kind::Partition { state, queues, .. }, Request::Queue(cmd)) => {
                let name = cmd.group().to_string();
                let bounds = LogBounds { log_start: state.log_start_offset, high_watermark: state.next_offset };
                match queues::apply(cmd, queues.get(&name).map(|q| &**q), bounds) {
                    Err(r) => Response::Rejected(r),
                    Ok((new, result)) => {
                        if let Some(st) = new {
                            queues.insert(name.clone(), Arc::new(st));
                            self.dirty_queues.insert(name);
                        }
                        Response::Queue(result)
                    }
                }
            }
            (Kind::Partition { groups, .. }, Request::Group(cmd)) => {
                let name = cmd.group().to_string();
                let sm = &self.sm.read().expect("sm tree lock").clone();
                let pending = &self.pending_offsets;
                let read = |k: &[u8]| -> Option<Committed> {
                    match pending.get(k) {
                        Some(c) => c.clone(),
                        None => sm.get(k).ok().flatten().and_then(|v| decode(&v).ok()),
                    }
                };
                let all = |g: &str| -> Vec<Vec<u8>> {
                    let mut keys: BTreeSet<Vec<u8>> =
                        sm.scan_prefix(offsets_prefix(g)).keys().filter_map(Result::ok).map(|k| k.to_vec()).collect();
                    let prefix = offsets_prefix(g);
                    for (k, v) in pending {
                        if k.starts_with(&prefix) {
                            if v.is_some() {
                                keys.insert(k.clone())
                            } else {
                                keys.remove(k)
                            };
                        }
                    }
                    keys.into_iter().filter(|k| parse_offset_key(k).is_some_and(|(gg, _, _)| gg == g)).collect()
                };
                match groups::apply(cmd, groups.get(&name), &read, &all) {
                    Err(r) => Response::Rejected(r),
                    Ok(applied) => {
                        match applied.state {
                            Some(Some(st)) => {
                                match encode(&st) {
                                    Ok(v) => batch.insert(group_key(&name), v),
                                    Err(e) => warn!(group = self.group, "group state not persisted: {e}"),
                                }
                                groups.insert(name, st);
                            }
                            Some(None) => {
                                batch.remove(group_key(&name));
                                groups.remove(&name);
                            }
                            None => {}
                        }
                        for (k, c) in applied.offsets {
                            match &c {
                                Some(c) => match encode(c) {
                                    Ok(v) => batch.insert(k.clone(), v),
                                    Err(e) => warn!(group = self.group, "offset not persisted: {e}"),
                                },
                                None => batch.remove(k.clone()),
                            }
                            self.pending_offsets.insert(k, c);
                        }
                        Response::Group(applied.result)
                    }
                }
            }
        }
    }

    /// Releases the records below `target` (rounded down to its batch's
    /// start): drops their offset index entries and time index entries
    /// (all but the last one below, which still bounds a time lookup), and
    /// moves the log start. Returns the new log start.
    fn truncate(&mut self, target: u64, batch: &mut Writes) -> io::Result<u64> {
        let tree = self.tree();
        let Kind::Partition { state, .. } = &mut self.kind else {
            return Ok(0);
        };
        let target = target.min(state.next_offset);
        if target <= state.log_start_offset {
            return Ok(state.log_start_offset);
        }
        // The batch holding `target` starts at the last base at or below it,
        // in the tree or appended earlier in this apply.
        let in_tree = match tree.range(index_key(0)..=index_key(target)).next_back() {
            Some(kv) => Some(base_of(&kv.map_err(sled_err)?.0)?),
            None => None,
        };
        let pending = self.pending_bases.iter().map(|(b, _)| *b).filter(|b| *b <= target).max();
        let start = if target == state.next_offset {
            target
        } else {
            in_tree.max(pending).unwrap_or(target).max(state.log_start_offset)
        };
        if start <= state.log_start_offset {
            return Ok(state.log_start_offset);
        }
        let mut released = 0u64;
        // From the current start: a truncation earlier in this apply already
        // released (in `batch`) what lies below it.
        for kv in tree.range(index_key(state.log_start_offset)..index_key(start)) {
            let (k, v) = kv.map_err(sled_err)?;
            released += IndexEntry::decode(&v)?.bytes as u64;
            batch.remove(k);
        }
        let from = state.log_start_offset;
        for (b, bytes) in self.pending_bases.iter().filter(|(b, _)| (from..start).contains(b)) {
            released += *bytes as u64;
            batch.remove(index_key(*b));
        }
        let mut below = Vec::new();
        for kv in tree.range(time_key(i64::MIN)..=time_key(i64::MAX)) {
            let (k, v) = kv.map_err(sled_err)?;
            let base = u64::from_be_bytes(v.as_ref().try_into().map_err(|_| io::Error::other("bad time index entry"))?);
            if base >= start {
                break;
            }
            below.push(k);
        }
        below.pop();
        for k in below {
            batch.remove(k);
        }
        state.log_start_offset = start;
        state.retained_bytes = state.retained_bytes.saturating_sub(released);
        // Every batch of the installed data file sits below the first one
        // appended through this log, so once that is released the file is too.
        let first_kept = match tree.range(index_key(start)..=index_key(u64::MAX)).next() {
            Some(kv) => Some(IndexEntry::decode(&kv.map_err(sled_err)?.1)?.location),
            None => None,
        };
        if !matches!(first_kept, Some(Location::Snapshot(_)))
            && self.installed.read().expect("installed lock").is_some()
        {
            batch.remove(KEY_INSTALLED);
            self.release_installed = true;
        }
        Ok(start)
    }

    /// Writes what the apply changed, and the applied id with it (see the
    /// module's documentation for the two ways).
    fn persist(&mut self, mut w: Writes) -> io::Result<()> {
        let tree = self.tree();
        // The producers the tail must name: those it named before, which
        // are not under their own keys yet, and those this apply changed.
        // (A superset is harmless if the write below fails.)
        self.tail_producers.extend(w.producers.iter().copied());
        match &self.kind {
            Kind::Partition { state, producers, .. }
                if !w.atomic && self.dirty_queues.is_empty() && self.tail_producers.len() <= TAIL_PRODUCERS =>
            {
                for (k, v) in w.ops {
                    if let Some(v) = v {
                        tree.insert(k, v).map_err(sled_err)?;
                    }
                }
                // Encoded as an `ApplyTail`, from references. An evicted
                // producer goes by the atomic path, so every one named here
                // is in the map.
                let tail = (&self.last_applied, &self.membership, state, named(&self.tail_producers, producers));
                tree.insert(KEY_APPLY_TAIL, encode(&tail)?).map_err(sled_err)?;
                self.has_tail = true;
                return Ok(());
            }
            Kind::Partition { state, producers, queues, .. } => {
                for (id, st) in named(&self.tail_producers, producers) {
                    w.ops.push((producers::key(id).to_vec(), Some(encode(st)?)));
                }
                w.insert(KEY_STATE, encode(state)?);
                for name in &self.dirty_queues {
                    if let Some(st) = queues.get(name) {
                        w.insert(queue_key(name), encode(&**st)?);
                    }
                }
            }
            Kind::Controller { meta, .. } => w.insert(KEY_CLUSTER, encode(meta)?),
        }
        w.insert(KEY_APPLIED, encode(&(&self.last_applied, &self.membership))?);
        if self.has_tail {
            w.remove(KEY_APPLY_TAIL);
        }
        tree.apply_batch(w.into_batch()).map_err(sled_err)?;
        self.has_tail = false;
        self.tail_producers.clear();
        Ok(())
    }

    fn publish(&self) {
        match &self.kind {
            Kind::Controller { meta, tx } => {
                if **tx.borrow() != *meta {
                    tx.send_replace(Arc::new(meta.clone()));
                }
            }
            Kind::Partition { state, tx, groups, groups_tx, queues, queues_tx, .. } => {
                tx.send_if_modified(|o| {
                    let new = Offsets::from(*state);
                    let changed = *o != new;
                    *o = new;
                    changed
                });
                if **groups_tx.borrow() != *groups {
                    groups_tx.send_replace(Arc::new(groups.clone()));
                }
                if !self.dirty_queues.is_empty() {
                    queues_tx.send_replace(Arc::new(queues.clone()));
                }
            }
        }
    }
}

/// The states of the producers `ids` still held.
fn named<'a>(ids: &BTreeSet<i64>, producers: &'a HashMap<i64, ProducerState>) -> Vec<(i64, &'a ProducerState)> {
    ids.iter().filter_map(|id| Some((*id, producers.get(id)?))).collect()
}

/// The timestamp of `tree`'s newest time-index entry.
fn newest_time_entry(tree: &sled::Tree) -> io::Result<Option<i64>> {
    match tree.range(time_key(i64::MIN)..=time_key(i64::MAX)).next_back() {
        Some(kv) => Ok(Some(time_of(&kv.map_err(sled_err)?.0)?)),
        None => Ok(None),
    }
}

/// Hands openraft the snapshot built when it asked for a builder: building
/// runs on the state machine's task, so that the small state, the offset
/// index and `last_applied` all describe the same moment.
pub struct SnapshotBuilder {
    built: Option<io::Result<Snapshot>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        self.built.take().unwrap_or_else(|| Err(io::Error::other("snapshot already handed out")))
    }
}

impl RaftStateMachine<TypeConfig> for GroupStateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let t0 = std::time::Instant::now();
        let mut batch = Writes::default();
        let mut replies = Vec::new();
        self.pending_offsets.clear();
        self.pending_bases.clear();
        self.release_installed = false;
        self.dirty_queues.clear();
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id;
            self.last_applied = Some(log_id);
            let resp = match entry.payload {
                EntryPayload::Blank => Response::None,
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(log_id), m);
                    Response::None
                }
                EntryPayload::Normal(req) => self.apply_request(req, log_id.index, &mut batch),
            };
            if let Some(r) = responder {
                replies.push((r, resp));
            }
        }
        if let Some(e) = self.apply_error.take() {
            return Err(e);
        }
        if let Some(l) = self.last_applied {
            self.log.wait_durable(l.index).await;
        }
        self.persist(batch)?;
        if std::mem::take(&mut self.release_installed)
            && let Some((_, path)) = self.installed.write().expect("installed lock").take()
        {
            // Readers that opened it keep their handle; a snapshot that
            // still refers to it holds a hard link.
            let _ = fs::remove_file(path);
        }
        self.publish();
        for (r, resp) in replies {
            r.send(resp);
        }
        self.store.observe(|o| o.apply(t0.elapsed()));
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let t0 = std::time::Instant::now();
        let built = self.build_snapshot_now();
        if built.is_ok() {
            self.store.observe(|o| o.snapshot_built(t0.elapsed()));
        }
        SnapshotBuilder { built: Some(built) }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        let t0 = std::time::Instant::now();
        self.install(meta, &snapshot).await?;
        self.store.observe(|o| o.snapshot_installed(t0.elapsed()));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        match snapshot::current(self.log.dir())? {
            Some((_, data)) => {
                let h = snapshot::read_header(&data)?;
                let meta = SnapshotMeta { last_log_id: h.last_applied, last_membership: h.membership };
                Ok(Some(Snapshot { meta, snapshot: data }))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::storage::RaftLogStorageExt;
    use replog_proto::batch::{BatchBuilder, ProducerInfo, Record};

    use super::*;
    use crate::log_store::LogStore;
    use crate::store::StoreConfig;
    use crate::types::Entry;

    const GROUP: GroupId = 7;

    fn log_id(index: u64) -> LogId {
        LogId::new(LeaderId { term: 1, node_id: 1 }, index)
    }

    /// Entry `index`: two records from producer 42 at `seq`, or none.
    fn append(index: u64, seq: Option<i32>) -> Entry {
        let producer = match seq {
            Some(s) => ProducerInfo { producer_id: 42, epoch: 0, base_sequence: s },
            None => ProducerInfo::NONE,
        };
        let mut b = BatchBuilder::new().producer(producer);
        for i in 0..2 {
            b.push(&Record::new(None, Bytes::from(format!("e{index}-r{i}")), 1000 + index as i64));
        }
        let payload = EntryPayload::Normal(Request::Append { batch: b.build(), record_count: 2, max_timestamp_ms: 0 });
        Entry { log_id: log_id(index), payload }
    }

    async fn apply(sm: &mut GroupStateMachine, entries: &[Entry]) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for e in entries {
            tx.send(Ok((e.clone(), None))).unwrap();
        }
        drop(tx);
        sm.apply(Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))).await.unwrap();
    }

    /// Opens the store in `dir`, appends `entries` to the log and applies
    /// them; returns what a reopened state machine then holds.
    async fn round(dir: &std::path::Path, log: &[Entry], apply_now: &[Entry]) -> (GroupStateMachine, Arc<Store>) {
        let store = Store::open(dir, &StoreConfig::default()).unwrap();
        let mut ls = LogStore::open(store.clone(), GROUP).unwrap();
        if !log.is_empty() {
            ls.blocking_append(log.to_vec()).await.unwrap();
        }
        let mut sm = GroupStateMachine::open_partition(&store, GROUP).unwrap();
        apply(&mut sm, apply_now).await;
        (sm, store)
    }

    /// Opens the store in `dir` once the one before has let go of it:
    /// sled's own IO threads of a store just dropped may hold its lock a
    /// moment longer.
    fn open_store(dir: &std::path::Path) -> Arc<Store> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(dir, &StoreConfig::default()) {
                Err(e) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                    std::thread::yield_now()
                }
                r => return r.unwrap(),
            }
        }
    }

    fn reopen(dir: &std::path::Path) -> GroupStateMachine {
        let store = open_store(dir);
        GroupStateMachine::open_partition(&store, GROUP).unwrap()
    }

    fn summary(sm: &GroupStateMachine) -> (Option<LogId>, PartitionState, Option<ProducerState>, bool) {
        let Kind::Partition { state, producers, .. } = &sm.kind else { panic!("a partition") };
        (sm.last_applied, *state, producers.get(&42).cloned(), sm.tree().get(KEY_APPLY_TAIL).unwrap().is_some())
    }

    #[tokio::test]
    async fn given_appends_only_then_they_persist_as_a_tail_and_anything_else_persists_atomically_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut entries: Vec<Entry> = (1..=3).map(|i| append(i, Some((i as i32 - 1) * 2))).collect();
        let trunc =
            Entry { log_id: log_id(4), payload: EntryPayload::Normal(Request::Truncate { log_start_offset: 2 }) };
        entries.push(trunc.clone());
        let (sm, store) = round(dir.path(), &entries, &entries[..3]).await;
        let before = summary(&sm);
        assert!(before.3, "appends only: persisted as a tail");
        assert_eq!(before.0, Some(log_id(3)));
        assert_eq!(before.1.next_offset, 6);
        drop((sm, store));
        let after = summary(&reopen(dir.path()));
        assert_eq!(after, before, "the reopened state machine holds what was applied");

        // A truncation: one atomic batch, and the tail goes.
        let store = open_store(dir.path());
        let mut sm = GroupStateMachine::open_partition(&store, GROUP).unwrap();
        apply(&mut sm, &[trunc]).await;
        let atomic = summary(&sm);
        assert!(!atomic.3, "the atomic batch removes the tail");
        assert_eq!((atomic.0, atomic.1.log_start_offset), (Some(log_id(4)), 2));
        drop((sm, store));
        assert_eq!(summary(&reopen(dir.path())), atomic);
    }

    /// Entry `index`: one record from producer `pid` at `seq`.
    fn append_from(index: u64, pid: i64, seq: i32) -> Entry {
        let mut b = BatchBuilder::new().producer(ProducerInfo { producer_id: pid, epoch: 0, base_sequence: seq });
        b.push(&Record::new(None, Bytes::from(format!("e{index}")), 1000 + index as i64));
        let payload = EntryPayload::Normal(Request::Append { batch: b.build(), record_count: 1, max_timestamp_ms: 0 });
        Entry { log_id: log_id(index), payload }
    }

    fn producer(sm: &GroupStateMachine, pid: i64) -> Option<ProducerState> {
        let Kind::Partition { producers, .. } = &sm.kind else { panic!("a partition") };
        producers.get(&pid).cloned()
    }

    #[tokio::test]
    async fn given_appends_only_then_producer_states_rest_in_the_tail_and_each_tail_names_every_one_since_the_last_atomic_write()
     {
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![append_from(1, 42, 0), append_from(2, 43, 0), append_from(3, 43, 1)];
        let (sm, store) = round(dir.path(), &entries, &entries[..1]).await;
        assert!(sm.tree().get(producers::key(42)).unwrap().is_none(), "the hot path writes the tail only");
        let p42 = producer(&sm, 42);
        drop((sm, store));
        // Reopened (as after a crash), producer 42 comes from the tail. The
        // next applies change only producer 43; the tails they write must
        // still carry 42, whose key was never written.
        let store = open_store(dir.path());
        let mut sm = GroupStateMachine::open_partition(&store, GROUP).unwrap();
        assert_eq!(producer(&sm, 42), p42);
        apply(&mut sm, &entries[1..2]).await;
        drop((sm, store));
        let store = open_store(dir.path());
        let mut sm = GroupStateMachine::open_partition(&store, GROUP).unwrap();
        apply(&mut sm, &entries[2..]).await;
        let (p43, want) = (producer(&sm, 43), summary(&sm));
        drop((sm, store));
        let sm = reopen(dir.path());
        assert_eq!(producer(&sm, 42), p42, "producer 42 outlives two later tails");
        assert_eq!(producer(&sm, 43), p43);
        assert_eq!(summary(&sm), want);
        let Kind::Partition { producers, .. } = &sm.kind else { panic!("a partition") };
        assert!(matches!(producers::check(producers.get(&42), 0, 0, 1), SeqCheck::Duplicate { base_offset: 0 }));
        drop(sm);

        // An atomic write puts them under their own keys and drops the tail.
        let store = open_store(dir.path());
        let mut sm = GroupStateMachine::open_partition(&store, GROUP).unwrap();
        let trunc =
            Entry { log_id: log_id(4), payload: EntryPayload::Normal(Request::Truncate { log_start_offset: 1 }) };
        LogStore::open(store.clone(), GROUP).unwrap().blocking_append(vec![trunc.clone()]).await.unwrap();
        apply(&mut sm, &[trunc]).await;
        assert!(sm.tree().get(KEY_APPLY_TAIL).unwrap().is_none());
        for (pid, want) in [(42, &p42), (43, &p43)] {
            let key = sm.tree().get(producers::key(pid)).unwrap().expect("producer key");
            assert_eq!(Some(decode::<ProducerState>(&key).unwrap()), *want);
        }
    }

    #[tokio::test]
    async fn given_more_producers_than_a_tail_names_then_the_apply_is_written_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<Entry> = (0..=TAIL_PRODUCERS as u64).map(|i| append_from(i + 1, 100 + i as i64, 0)).collect();
        let (mut sm, store) = round(dir.path(), &entries, &entries[..TAIL_PRODUCERS]).await;
        assert!(sm.tree().get(KEY_APPLY_TAIL).unwrap().is_some());
        apply(&mut sm, &entries[TAIL_PRODUCERS..]).await;
        assert!(sm.tree().get(KEY_APPLY_TAIL).unwrap().is_none(), "one producer past the limit: atomic");
        assert!(sm.tree().get(producers::key(100)).unwrap().is_some());
        let want = summary(&sm);
        drop((sm, store));
        assert_eq!(summary(&reopen(dir.path())), want);
    }

    /// Entry `index`: two records at `ts` and `ts + 1`.
    fn append_at(index: u64, ts: i64) -> Entry {
        let mut b = BatchBuilder::new();
        b.push(&Record::new(None, Bytes::from("a"), ts));
        b.push(&Record::new(None, Bytes::from("b"), ts + 1));
        let payload =
            EntryPayload::Normal(Request::Append { batch: b.build(), record_count: 2, max_timestamp_ms: ts + 1 });
        Entry { log_id: log_id(index), payload }
    }

    #[tokio::test]
    async fn given_a_sparse_time_index_then_every_lookup_by_time_finds_the_first_record_at_or_after_it() {
        // Timestamps rise 3 ms a batch; every seventh batch is late (older
        // records), and one jumps far ahead.
        let ts = |i: u64| match i {
            _ if i.is_multiple_of(7) => 900 + i as i64,
            150 => 5_000,
            _ => 1_000 + 3 * i as i64,
        };
        let n = 300;
        let entries: Vec<Entry> = (1..=n).map(|i| append_at(i, ts(i))).collect();
        let dir = tempfile::tempdir().unwrap();
        let (sm, store) = round(dir.path(), &entries, &entries[..200]).await;
        drop((sm, store));
        // Reopened, the rest applies on top of the newest entry read back.
        let store = open_store(dir.path());
        let mut sm = GroupStateMachine::open_partition(&store, GROUP).unwrap();
        apply(&mut sm, &entries[200..]).await;
        let time_entries = sm.tree().range(time_key(i64::MIN)..=time_key(i64::MAX)).count();
        assert!((2..20).contains(&time_entries), "{time_entries} time index entries for {n} batches");
        let reader = sm.reader().unwrap();
        // Record j of batch i is at offset 2(i-1)+j with timestamp ts(i)+j.
        let records: Vec<(u64, i64)> =
            (1..=n).flat_map(|i| [(2 * (i - 1), ts(i)), (2 * (i - 1) + 1, ts(i) + 1)]).collect();
        for q in 850..5_010 {
            let want = records.iter().find(|(_, t)| *t >= q).copied();
            assert_eq!(reader.offset_for_time(q).unwrap(), want, "offset_for_time({q})");
            let first_batch = (1..=n).find(|i| ts(*i) + 1 >= q).map_or(2 * n, |i| 2 * (i - 1));
            assert_eq!(reader.start_for_time(q).unwrap(), first_batch, "start_for_time({q})");
        }
    }

    #[tokio::test]
    async fn given_a_long_run_of_late_batches_then_the_next_small_rise_is_indexed_and_found() {
        // One batch, then more than TIME_INDEX_BATCHES late ones, then a
        // rise of only 50 ms: indexed for the batches gone by, so a lookup
        // need not read the late run.
        let late = crate::partition::TIME_INDEX_BATCHES as u64 + 10;
        let ts = |i: u64| match i {
            1 => 1_000,
            _ if i <= 1 + late => 500,
            _ => 1_050,
        };
        let entries: Vec<Entry> = (1..=late + 2).map(|i| append_at(i, ts(i))).collect();
        let dir = tempfile::tempdir().unwrap();
        let (sm, _store) = round(dir.path(), &entries, &entries).await;
        assert!(sm.tree().get(time_key(1_051)).unwrap().is_some(), "the rise after the late run is an entry");
        let reader = sm.reader().unwrap();
        let last = 2 * (late + 1);
        assert_eq!(reader.offset_for_time(1_020).unwrap(), Some((last, 1_050)));
        assert_eq!(reader.start_for_time(1_020).unwrap(), last);
        assert_eq!(reader.offset_for_time(1_001).unwrap(), Some((1, 1_001)));
        assert_eq!(reader.offset_for_time(600).unwrap(), Some((0, 1_000)));
        assert_eq!(reader.offset_for_time(1_052).unwrap(), None);
        assert_eq!(reader.start_for_time(1_052).unwrap(), last + 2);
    }
}
