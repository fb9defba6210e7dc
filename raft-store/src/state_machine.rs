//! `RaftStateMachine` for replog groups.
//!
//! A group is either the controller (cluster metadata) or a partition
//! (offset index over the Raft log). Applying a batch of entries ends with
//! one atomic sled batch holding the new applied log id, membership and
//! state, so the persisted state machine is always consistent with its own
//! applied index; it is not fsync'd, because openraft re-applies committed
//! entries from that index on restart.
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
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::TryStreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::warn;

use crate::controller::{ClusterMeta, ControllerResult};
use crate::error::Rejection;
use crate::groups::{
    self, Committed, GROUP_PREFIX, GroupState, OFFSET_PREFIX, group_key, offsets_prefix, parse_offset_key,
};
use crate::partition::{
    Groups, IndexEntry, InstalledData, KEY_STATE, Location, Offsets, PartitionReader, PartitionState, index_key,
    time_key,
};
use crate::producers::{self, ProducerState, SeqBatch, SeqCheck};
use crate::segment::SegmentLog;
use crate::store::{Store, decode, encode, sled_err};
use crate::types::{
    GroupId, LogId, Request, Response, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};

const KEY_APPLIED: &[u8] = b"applied";
const KEY_CLUSTER: &[u8] = b"cluster";
/// Name of the installed snapshot's data file, if one was installed.
const KEY_INSTALLED: &[u8] = b"installed";
const SNAPSHOT_FILE: &str = "snapshot";

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
    },
}

pub struct GroupStateMachine {
    group: GroupId,
    sm: sled::Tree,
    log: Arc<SegmentLog>,
    installed: InstalledData,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    kind: Kind,
    /// Offsets committed by entries of the apply in progress, not yet in
    /// the tree: later entries of the same apply must see them.
    pending_offsets: HashMap<Vec<u8>, Option<Committed>>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    data: SnapshotKind,
}

#[derive(Serialize, Deserialize)]
enum SnapshotKind {
    Controller(ClusterMeta),
    Partition {
        state: PartitionState,
        batches: Vec<(u64, u32, i64, Bytes)>,
        producers: Vec<(i64, ProducerState)>,
        groups: Vec<(String, GroupState)>,
        /// Committed offsets as stored (offset key, encoded [`Committed`]).
        offsets: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

impl GroupStateMachine {
    /// Opens (or creates) the controller group's state machine.
    pub fn open_controller(store: &Arc<Store>, group: GroupId) -> io::Result<GroupStateMachine> {
        let sm = store.sm_tree(group)?;
        let meta: ClusterMeta = match sm.get(KEY_CLUSTER).map_err(sled_err)? {
            Some(v) => decode(&v)?,
            None => ClusterMeta::default(),
        };
        let (tx, _) = watch::channel(Arc::new(meta.clone()));
        Self::open(store, group, sm, Kind::Controller { meta, tx })
    }

    /// Opens (or creates) a partition group's state machine.
    pub fn open_partition(store: &Arc<Store>, group: GroupId) -> io::Result<GroupStateMachine> {
        let sm = store.sm_tree(group)?;
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
        let (tx, _) = watch::channel(Offsets::from(state));
        let (groups_tx, _) = watch::channel(Arc::new(groups.clone()));
        Self::open(store, group, sm, Kind::Partition { state, producers, tx, groups, groups_tx })
    }

    fn open(store: &Arc<Store>, group: GroupId, sm: sled::Tree, kind: Kind) -> io::Result<GroupStateMachine> {
        let (last_applied, membership) = match sm.get(KEY_APPLIED).map_err(sled_err)? {
            Some(v) => decode(&v)?,
            None => (None, StoredMembership::default()),
        };
        let log = store.log(group)?;
        let installed = match sm.get(KEY_INSTALLED).map_err(sled_err)? {
            Some(name) => {
                let name = String::from_utf8_lossy(&name).into_owned();
                Some(Arc::new(File::open(log.dir().join(name))?))
            }
            None => None,
        };
        Ok(GroupStateMachine {
            group,
            sm,
            log,
            installed: Arc::new(RwLock::new(installed)),
            last_applied,
            membership,
            kind,
            pending_offsets: HashMap::new(),
        })
    }

    pub fn group(&self) -> GroupId {
        self.group
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
            Kind::Partition { tx, groups_tx, .. } => Some(PartitionReader {
                log: self.log.clone(),
                sm: self.sm.clone(),
                installed: self.installed.clone(),
                offsets: tx.subscribe(),
                groups: groups_tx.subscribe(),
            }),
            Kind::Controller { .. } => None,
        }
    }

    fn apply_request(&mut self, req: Request, index: u64, batch: &mut sled::Batch) -> Response {
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
                batch.insert(&index_key(base)[..], &ie.encode()[..]);
                if state.max_timestamp_ms.is_none_or(|m| max_timestamp_ms > m) {
                    batch.insert(&time_key(max_timestamp_ms)[..], &base.to_be_bytes()[..]);
                    state.max_timestamp_ms = Some(max_timestamp_ms);
                }
                state.next_offset += record_count as u64;
                if pid >= 0 {
                    // Only a new producer beyond the cap costs the scan.
                    let evict = (producers.len() >= producers::MAX_PRODUCERS && !producers.contains_key(&pid))
                        .then(|| producers::least_recent(producers.iter()))
                        .flatten();
                    if let Some(old) = evict {
                        producers.remove(&old);
                        batch.remove(&producers::key(old)[..]);
                    }
                    let st = producers.entry(pid).or_default();
                    let seq = SeqBatch { base_sequence: producer.base_sequence, record_count, base_offset: base };
                    producers::record(st, producer.epoch, seq);
                    match encode(st) {
                        Ok(v) => batch.insert(&producers::key(pid)[..], v),
                        Err(e) => warn!(group = self.group, "producer state not persisted: {e}"),
                    }
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
            (Kind::Partition { groups, .. }, Request::Group(cmd)) => {
                let name = cmd.group().to_string();
                let sm = &self.sm;
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

    fn persist_state(&self, batch: &mut sled::Batch) -> io::Result<()> {
        batch.insert(KEY_APPLIED, encode(&(&self.last_applied, &self.membership))?);
        match &self.kind {
            Kind::Controller { meta, .. } => batch.insert(KEY_CLUSTER, encode(meta)?),
            Kind::Partition { state, .. } => batch.insert(KEY_STATE, encode(state)?),
        }
        Ok(())
    }

    fn publish(&self) {
        match &self.kind {
            Kind::Controller { meta, tx } => {
                if **tx.borrow() != *meta {
                    tx.send_replace(Arc::new(meta.clone()));
                }
            }
            Kind::Partition { state, tx, groups, groups_tx, .. } => {
                tx.send_if_modified(|o| {
                    let new = Offsets::from(*state);
                    let changed = *o != new;
                    *o = new;
                    changed
                });
                if **groups_tx.borrow() != *groups {
                    groups_tx.send_replace(Arc::new(groups.clone()));
                }
            }
        }
    }
}

/// Builds a snapshot from the state captured when the builder was made.
pub struct SnapshotBuilder {
    /// Read access bounded by the captured state (partitions only).
    reader: Option<PartitionReader>,
    dir: std::path::PathBuf,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    data: BuilderData,
}

enum BuilderData {
    Controller(ClusterMeta),
    Partition {
        state: PartitionState,
        producers: Vec<(i64, ProducerState)>,
        groups: Vec<(String, GroupState)>,
        offsets: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let data = match &self.data {
            BuilderData::Controller(m) => SnapshotKind::Controller(m.clone()),
            BuilderData::Partition { state, producers, groups, offsets } => {
                // Batches below the captured next offset are immutable, so
                // reading them while apply goes on is consistent.
                let reader =
                    self.reader.as_ref().ok_or_else(|| io::Error::other("partition snapshot without a reader"))?;
                let batches = reader
                    .read_below(state.log_start_offset, state.next_offset, usize::MAX, usize::MAX)?
                    .into_iter()
                    .map(|b| {
                        let ts = replog_proto::batch::peek_header(&b.batch).map(|h| h.max_timestamp_ms).unwrap_or(0);
                        (b.base_offset, b.record_count, ts, b.batch)
                    })
                    .collect();
                SnapshotKind::Partition {
                    state: *state,
                    batches,
                    producers: producers.clone(),
                    groups: groups.clone(),
                    offsets: offsets.clone(),
                }
            }
        };
        let body = SnapshotBody { last_applied: self.last_applied, membership: self.membership.clone(), data };
        let bytes = encode(&body)?;
        let meta = SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone() };
        write_durably(&self.dir, SNAPSHOT_FILE, &encode(&(&meta, &bytes))?)?;
        Ok(Snapshot { meta, snapshot: std::io::Cursor::new(bytes) })
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
        let mut batch = sled::Batch::default();
        let mut replies = Vec::new();
        self.pending_offsets.clear();
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
        if let Some(l) = self.last_applied {
            self.log.wait_durable(l.index).await;
        }
        self.persist_state(&mut batch)?;
        self.sm.apply_batch(batch).map_err(sled_err)?;
        self.publish();
        for (r, resp) in replies {
            r.send(resp);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let data = match &self.kind {
            Kind::Controller { meta, .. } => BuilderData::Controller(meta.clone()),
            // Captured here, on the state machine's own task, so that they
            // match `last_applied` exactly.
            Kind::Partition { state, producers, groups, .. } => BuilderData::Partition {
                state: *state,
                producers: producers.iter().map(|(k, v)| (*k, v.clone())).collect(),
                groups: groups.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                offsets: self
                    .sm
                    .scan_prefix([OFFSET_PREFIX])
                    .filter_map(Result::ok)
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect(),
            },
        };
        SnapshotBuilder {
            reader: self.reader(),
            dir: self.log.dir().to_path_buf(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            data,
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let body: SnapshotBody = decode(&bytes)?;
        let mut batch = sled::Batch::default();
        let mut new_installed = None;
        // Replace everything: the snapshot is the whole state.
        for kv in self.sm.iter() {
            batch.remove(kv.map_err(sled_err)?.0);
        }
        match (&mut self.kind, body.data) {
            (Kind::Controller { meta: m, .. }, SnapshotKind::Controller(new)) => *m = new,
            (
                Kind::Partition { state, producers, groups, .. },
                SnapshotKind::Partition { state: new, batches, producers: p, groups: g, offsets },
            ) => {
                *state = new;
                groups.clear();
                for (name, st) in g {
                    batch.insert(group_key(&name), encode(&st)?);
                    groups.insert(name, st);
                }
                for (k, v) in offsets {
                    batch.insert(k, v);
                }
                producers.clear();
                for (id, st) in p {
                    batch.insert(&producers::key(id)[..], encode(&st)?);
                    producers.insert(id, st);
                }
                // The batches go to a data file of their own, durable before
                // the index that points into it.
                let name = format!("installed-{}.data", meta.last_log_id.map_or(0, |l| l.index));
                let mut data_buf = Vec::new();
                let mut newest: Option<i64> = None;
                for (base, count, ts, data) in &batches {
                    // The time index, rebuilt as apply would have built it.
                    if newest.is_none_or(|m| *ts > m) {
                        batch.insert(&time_key(*ts)[..], &base.to_be_bytes()[..]);
                        newest = Some(*ts);
                    }
                    let ie = IndexEntry {
                        location: Location::Snapshot(data_buf.len() as u64),
                        record_count: *count,
                        max_timestamp_ms: *ts,
                        bytes: data.len() as u32,
                    };
                    batch.insert(&index_key(*base)[..], &ie.encode()[..]);
                    data_buf.extend_from_slice(data);
                }
                let dir = self.log.dir().to_path_buf();
                write_durably(&dir, &name, &data_buf)?;
                batch.insert(KEY_INSTALLED, name.as_bytes());
                let file = Arc::new(File::open(dir.join(&name))?);
                new_installed = Some((name, file));
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("snapshot for group {} is of the wrong kind", self.group),
                ));
            }
        }
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.persist_state(&mut batch)?;
        write_durably(self.log.dir(), SNAPSHOT_FILE, &encode(&(meta, &bytes))?)?;
        self.sm.apply_batch(batch).map_err(sled_err)?;
        if let Some((name, file)) = new_installed {
            let old = self.installed.write().expect("installed lock").replace(file);
            drop(old);
            remove_other_installed(self.log.dir(), &name);
        }
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        match fs::read(self.log.dir().join(SNAPSHOT_FILE)) {
            Ok(v) => {
                let (meta, bytes): (SnapshotMeta, Vec<u8>) = decode(&v)?;
                Ok(Some(Snapshot { meta, snapshot: std::io::Cursor::new(bytes) }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Writes `name` in `dir` so that after a crash it holds either its old
/// content or all of `data`.
fn write_durably(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let f = File::create(&tmp)?;
    f.write_all_at(data, 0)?;
    f.sync_data()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// Deletes data files of snapshots installed before `keep`.
fn remove_other_installed(dir: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("installed-") && name != keep {
            let _ = fs::remove_file(e.path());
        }
    }
}
