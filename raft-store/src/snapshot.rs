//! Snapshots of a group that carry every retained record, built, sent and
//! installed with bounded memory.
//!
//! **Built** snapshots are directories under the group's log directory,
//! `snapshots/<last index>/`:
//! - `header`: the small state (partition offsets, producer, group and
//!   queue-group state, committed offsets — or the cluster metadata for the controller);
//! - `batches`: one fixed-size record per retained batch: its base offset,
//!   count, newest timestamp and where its bytes are;
//! - hard links to the segment files (and the installed-snapshot data file)
//!   those bytes are in, so building copies no record and a later purge of
//!   the log cannot take them away while the snapshot exists;
//! - `done`, written last: a directory without it is an unfinished build.
//!
//! **On the wire** (and as received, in one file `received-<index>.snap`)
//! a snapshot is a byte stream:
//!
//! ```text
//! "RLSNAP01" | u32 header length | header (bincode)
//! then per batch: 0x01 | u64 base | u32 count | i64 max ts | u32 length | batch
//! then 0x00 | u32 crc32c of everything before it
//! ```
//!
//! Building reads the offset index once; streaming reads one batch at a
//! time; installing writes batches to a data file as they arrive. None of
//! them holds more than a batch and a buffer in memory, however large the
//! partition.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::controller::ClusterMeta;
use crate::groups::GroupState;
use crate::partition::{IndexEntry, Location, PartitionState};
use crate::producers::ProducerState;
use crate::queues::QueueState;
use crate::segment::{SegmentLog, decode_body};
use crate::store::{decode, encode};
use crate::types::{LogId, Request, StoredMembership};

const MAGIC: &[u8; 8] = b"RLSNAP01";
const TAG_BATCH: u8 = 1;
const TAG_END: u8 = 0;
/// Largest header accepted from a peer (the small state; offsets of many
/// groups can make it a few megabytes).
const MAX_HEADER: usize = 256 << 20;
/// Largest batch accepted from a peer.
const MAX_BATCH: usize = 64 << 20;
const BATCH_REF_LEN: usize = 8 + 4 + 8 + 1 + 8 + 8 + 4;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A snapshot as openraft hands it around.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotData {
    /// Built here: a snapshot directory.
    Built(PathBuf),
    /// Received from a leader: the byte stream in one file.
    Received(PathBuf),
}

/// Built snapshots being sent right now, with how many sends use each:
/// [`current`] leaves them in place even when a newer one exists, so a
/// long transfer is not cut off by a snapshot built meanwhile.
static PINNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Keeps a built snapshot's directory while it is held.
pub struct Pin(Option<PathBuf>);

impl Drop for Pin {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let mut pinned = PINNED.lock().expect("pinned lock");
            if let Some(i) = pinned.iter().position(|d| *d == dir) {
                pinned.swap_remove(i);
            }
        }
    }
}

fn is_pinned(dir: &Path) -> bool {
    PINNED.lock().expect("pinned lock").iter().any(|d| d == dir)
}

impl SnapshotData {
    /// Keeps this snapshot's files until the pin is dropped (a received
    /// stream is its own file and needs none).
    pub fn pin(&self) -> Pin {
        match self {
            SnapshotData::Built(dir) => {
                PINNED.lock().expect("pinned lock").push(dir.clone());
                Pin(Some(dir.clone()))
            }
            SnapshotData::Received(_) => Pin(None),
        }
    }

    /// The snapshot's byte stream.
    pub fn stream(&self) -> io::Result<Box<dyn Read + Send>> {
        match self {
            SnapshotData::Built(dir) => Ok(Box::new(BuiltStream::open(dir)?)),
            SnapshotData::Received(file) => Ok(Box::new(BufReader::with_capacity(1 << 20, File::open(file)?))),
        }
    }
}

/// The small state a snapshot carries before its batches.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub body: HeaderBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HeaderBody {
    Controller(ClusterMeta),
    Partition {
        state: PartitionState,
        producers: Vec<(i64, ProducerState)>,
        groups: Vec<(String, GroupState)>,
        /// Committed offsets as stored (key, encoded value).
        offsets: Vec<(Vec<u8>, Vec<u8>)>,
        /// Queue groups consuming the partition.
        queues: Vec<(String, QueueState)>,
    },
}

/// Where a batch's bytes are, in a built snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A frame of the segment starting at log index `first`.
    Segment { first: u64 },
    /// Raw batch bytes in the installed-snapshot data file.
    Installed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchRef {
    base: u64,
    count: u32,
    max_ts: i64,
    source: Source,
    pos: u64,
    len: u32,
}

impl BatchRef {
    fn encode(&self) -> [u8; BATCH_REF_LEN] {
        let mut b = [0u8; BATCH_REF_LEN];
        b[0..8].copy_from_slice(&self.base.to_le_bytes());
        b[8..12].copy_from_slice(&self.count.to_le_bytes());
        b[12..20].copy_from_slice(&self.max_ts.to_le_bytes());
        let (kind, first) = match self.source {
            Source::Segment { first } => (0u8, first),
            Source::Installed => (1u8, 0),
        };
        b[20] = kind;
        b[21..29].copy_from_slice(&first.to_le_bytes());
        b[29..37].copy_from_slice(&self.pos.to_le_bytes());
        b[37..41].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    fn decode(b: &[u8; BATCH_REF_LEN]) -> io::Result<BatchRef> {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let source = match b[20] {
            0 => Source::Segment { first: u64_at(21) },
            1 => Source::Installed,
            k => return Err(invalid(format!("bad batch source {k} in a snapshot"))),
        };
        Ok(BatchRef {
            base: u64_at(0),
            count: u32::from_le_bytes(b[8..12].try_into().unwrap_or_default()),
            max_ts: i64::from_le_bytes(b[12..20].try_into().unwrap_or_default()),
            source,
            pos: u64_at(29),
            len: u32::from_le_bytes(b[37..41].try_into().unwrap_or_default()),
        })
    }
}

fn seg_link_name(first: u64) -> String {
    format!("{first:020}.log")
}

const INSTALLED_LINK: &str = "installed.data";

/// The directory of built snapshots of a group.
pub(crate) fn snapshots_dir(log_dir: &Path) -> PathBuf {
    log_dir.join("snapshots")
}

/// Builds a snapshot of the state in `header` into `<log dir>/snapshots/`.
/// `batches` yields the retained batches in offset order (from the offset
/// index as of `header`); `installed` is the data file of an installed
/// snapshot they may point into.
pub(crate) fn build(
    log: &SegmentLog,
    installed: Option<&Path>,
    header: &Header,
    batches: impl Iterator<Item = io::Result<(u64, IndexEntry)>>,
) -> io::Result<PathBuf> {
    let root = snapshots_dir(log.dir());
    fs::create_dir_all(&root)?;
    let index = header.last_applied.map_or(0, |l| l.index);
    let tmp = root.join(format!("{index:020}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp)?;
    fs::write(tmp.join("header"), encode(header)?)?;
    let mut refs = BufWriter::with_capacity(1 << 20, File::create(tmp.join("batches"))?);
    let mut locator = log.locator();
    let mut linked: HashMap<u64, ()> = HashMap::new();
    let mut installed_linked = false;
    for item in batches {
        let (base, ie) = item?;
        let (source, pos, len) = match ie.location {
            Location::Log(i) => {
                let (first, pos, len) = locator.frame(i)?;
                if linked.insert(first, ()).is_none() {
                    fs::hard_link(log.dir().join(seg_link_name(first)), tmp.join(seg_link_name(first)))?;
                }
                (Source::Segment { first }, pos, len)
            }
            Location::Snapshot(pos) => {
                if !installed_linked {
                    let file = installed.ok_or_else(|| invalid("a batch points into installed data that is gone"))?;
                    fs::hard_link(file, tmp.join(INSTALLED_LINK))?;
                    installed_linked = true;
                }
                (Source::Installed, pos, ie.bytes)
            }
        };
        let r = BatchRef { base, count: ie.record_count, max_ts: ie.max_timestamp_ms, source, pos, len };
        refs.write_all(&r.encode())?;
    }
    let refs = refs.into_inner().map_err(|e| e.into_error())?;
    refs.sync_all()?;
    File::open(tmp.join("header"))?.sync_all()?;
    File::create(tmp.join("done"))?.sync_all()?;
    File::open(&tmp)?.sync_all()?;
    let dir = root.join(format!("{index:020}"));
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tmp, &dir)?;
    File::open(&root)?.sync_all()?;
    Ok(dir)
}

/// The newest complete snapshot of a group (built or received), removing
/// unfinished ones and those older than the newest.
pub(crate) fn current(log_dir: &Path) -> io::Result<Option<(u64, SnapshotData)>> {
    let mut found: Vec<(u64, SnapshotData)> = Vec::new();
    let root = snapshots_dir(log_dir);
    if let Ok(entries) = fs::read_dir(&root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            match name.parse::<u64>() {
                Ok(i) if e.path().join("done").exists() => found.push((i, SnapshotData::Built(e.path()))),
                _ => {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }
    for e in fs::read_dir(log_dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(i) =
            name.strip_prefix("received-").and_then(|n| n.strip_suffix(".snap")).and_then(|n| n.parse().ok())
        {
            found.push((i, SnapshotData::Received(e.path())));
        }
    }
    found.sort_by_key(|(i, _)| *i);
    let newest = found.pop();
    for (_, old) in found {
        match old {
            SnapshotData::Built(d) if is_pinned(&d) => {}
            SnapshotData::Built(d) => {
                let _ = fs::remove_dir_all(d);
            }
            SnapshotData::Received(f) => {
                let _ = fs::remove_file(f);
            }
        }
    }
    Ok(newest)
}

/// The byte stream of a built snapshot, generated batch by batch.
struct BuiltStream {
    dir: PathBuf,
    refs: BufReader<File>,
    files: HashMap<u64, File>,
    installed: Option<File>,
    /// Bytes produced and not yet read.
    buf: Vec<u8>,
    at: usize,
    crc: u32,
    done: bool,
}

impl BuiltStream {
    fn open(dir: &Path) -> io::Result<BuiltStream> {
        let header = fs::read(dir.join("header"))?;
        let mut buf = Vec::with_capacity(16 + header.len());
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&(header.len() as u32).to_le_bytes());
        buf.extend_from_slice(&header);
        Ok(BuiltStream {
            dir: dir.to_path_buf(),
            refs: BufReader::with_capacity(1 << 16, File::open(dir.join("batches"))?),
            files: HashMap::new(),
            installed: None,
            buf,
            at: 0,
            crc: 0,
            done: false,
        })
    }

    /// The bytes of the batch `r` points at.
    fn batch(&mut self, r: &BatchRef) -> io::Result<Bytes> {
        let mut raw = vec![0u8; r.len as usize];
        match r.source {
            Source::Installed => {
                if self.installed.is_none() {
                    self.installed = Some(File::open(self.dir.join(INSTALLED_LINK))?);
                }
                self.installed.as_ref().expect("opened").read_exact_at(&mut raw, r.pos)?;
                Ok(Bytes::from(raw))
            }
            Source::Segment { first } => {
                let f = match self.files.entry(first) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(File::open(self.dir.join(seg_link_name(first)))?)
                    }
                };
                f.read_exact_at(&mut raw, r.pos)?;
                // A whole frame: check it before its batch leaves the node.
                let len = u32::from_le_bytes(raw[..4].try_into().unwrap_or_default()) as usize;
                let crc = u32::from_le_bytes(raw[4..8].try_into().unwrap_or_default());
                if len + 8 != raw.len() || crc32c::crc32c(&raw[8..]) != crc {
                    return Err(invalid(format!("the log frame of offset {} fails its checksum", r.base)));
                }
                let body = Bytes::from(raw).slice(8..);
                match decode_body(&body)?.payload {
                    openraft::EntryPayload::Normal(Request::Append { batch, .. }) => Ok(batch),
                    _ => Err(invalid(format!("the log frame of offset {} is not an append", r.base))),
                }
            }
        }
    }

    /// Fills `buf` with the next batch (or the end), false when all is out.
    fn refill(&mut self) -> io::Result<bool> {
        if self.done {
            return Ok(false);
        }
        self.crc = crc32c::crc32c_append(self.crc, &self.buf);
        self.buf.clear();
        self.at = 0;
        let mut rec = [0u8; BATCH_REF_LEN];
        match read_exact_or_eof(&mut self.refs, &mut rec)? {
            true => {
                let r = BatchRef::decode(&rec)?;
                let batch = self.batch(&r)?;
                self.buf.push(TAG_BATCH);
                self.buf.extend_from_slice(&r.base.to_le_bytes());
                self.buf.extend_from_slice(&r.count.to_le_bytes());
                self.buf.extend_from_slice(&r.max_ts.to_le_bytes());
                self.buf.extend_from_slice(&(batch.len() as u32).to_le_bytes());
                self.buf.extend_from_slice(&batch);
            }
            false => {
                self.buf.push(TAG_END);
                self.crc = crc32c::crc32c_append(self.crc, &self.buf);
                let crc = self.crc;
                self.buf.extend_from_slice(&crc.to_le_bytes());
                self.done = true;
            }
        }
        Ok(true)
    }
}

impl Read for BuiltStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buf.len() {
            if !self.refill()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Fills `buf`; false if the input ended before its first byte.
fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "snapshot ends inside a record")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// One batch read from a snapshot stream.
pub(crate) struct StreamBatch {
    pub base: u64,
    pub count: u32,
    pub max_ts: i64,
    pub batch: Vec<u8>,
}

/// Reads a snapshot stream, checking its checksum at the end.
pub(crate) struct StreamReader<R: Read> {
    r: R,
    crc: u32,
    ended: bool,
}

impl<R: Read> StreamReader<R> {
    /// Reads the magic and the header.
    pub fn open(mut r: R) -> io::Result<(StreamReader<R>, Header)> {
        let mut head = [0u8; 12];
        r.read_exact(&mut head)?;
        if &head[..8] != MAGIC {
            return Err(invalid("not a replog snapshot"));
        }
        let len = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default()) as usize;
        if len > MAX_HEADER {
            return Err(invalid(format!("snapshot header of {len} bytes is too large")));
        }
        let mut header = vec![0u8; len];
        r.read_exact(&mut header)?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head), &header);
        let h: Header = decode(&header)?;
        Ok((StreamReader { r, crc, ended: false }, h))
    }

    /// The next batch, or None at the (verified) end.
    pub fn next_batch(&mut self) -> io::Result<Option<StreamBatch>> {
        if self.ended {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.r.read_exact(&mut tag)?;
        self.crc = crc32c::crc32c_append(self.crc, &tag);
        match tag[0] {
            TAG_END => {
                let mut crc = [0u8; 4];
                self.r.read_exact(&mut crc)?;
                if u32::from_le_bytes(crc) != self.crc {
                    return Err(invalid("snapshot fails its checksum"));
                }
                self.ended = true;
                Ok(None)
            }
            TAG_BATCH => {
                let mut fixed = [0u8; 24];
                self.r.read_exact(&mut fixed)?;
                self.crc = crc32c::crc32c_append(self.crc, &fixed);
                let len = u32::from_le_bytes(fixed[20..24].try_into().unwrap_or_default()) as usize;
                if len > MAX_BATCH {
                    return Err(invalid(format!("snapshot batch of {len} bytes is too large")));
                }
                let mut batch = vec![0u8; len];
                self.r.read_exact(&mut batch)?;
                self.crc = crc32c::crc32c_append(self.crc, &batch);
                Ok(Some(StreamBatch {
                    base: u64::from_le_bytes(fixed[0..8].try_into().unwrap_or_default()),
                    count: u32::from_le_bytes(fixed[8..12].try_into().unwrap_or_default()),
                    max_ts: i64::from_le_bytes(fixed[12..20].try_into().unwrap_or_default()),
                    batch,
                }))
            }
            t => Err(invalid(format!("bad record tag {t} in a snapshot"))),
        }
    }
}

/// Reads only the header of a snapshot (its metadata).
pub(crate) fn read_header(data: &SnapshotData) -> io::Result<Header> {
    match data {
        SnapshotData::Built(dir) => decode(&fs::read(dir.join("header"))?),
        SnapshotData::Received(_) => Ok(StreamReader::open(data.stream()?)?.1),
    }
}
