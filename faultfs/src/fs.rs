//! The FUSE filesystem: a passthrough over a backing directory whose file
//! data reaches the backing directory only on `fsync`, and whose namespace
//! changes become permanent only on an `fsync` of their directory.
//!
//! - File data: every write, truncate and `fallocate` goes to the file's
//!   [`Overlay`] in memory; `fsync`/`fdatasync` of the file (or a write on
//!   an `O_SYNC`/`O_DSYNC` descriptor) writes it to the backing file.
//!   `sync_file_range`, `msync` without `MS_SYNC` and closing the file do
//!   not: like a real page cache, they leave the data at risk.
//! - Namespace: applied to the backing directory at once and recorded in
//!   the [`Journal`] (in [`NamespaceMode::Lazy`]) until a directory fsync;
//!   in [`NamespaceMode::Immediate`] it is durable at once.
//! - Metadata (mode, owner, times) is applied at once and never lost.
//! - [`State::crash`] is the power failure: every overlay is dropped, every
//!   pending namespace operation undone, every inode forgotten. It expects
//!   the processes that used the mount to be dead already, as they would be
//!   after a power cut: a descriptor kept open across it fails with `ESTALE`.
//!
//! Inode numbers are this filesystem's own, allocated from a counter and
//! never reused, so the kernel never confuses a file that a crash removed
//! with a later one. Attribute and entry timeouts are zero and files are
//! opened without `FOPEN_KEEP_CACHE`: after a crash, the kernel looks every
//! name up again and drops the cached pages of every file it opens.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::journal::{Journal, Op};
use crate::overlay::Overlay;

/// Name of the trash directory at the root of the backing directory. It is
/// invisible through the mount, and names under it cannot be created.
pub const TRASH: &str = ".faultfs-trash";

/// Zero: the kernel asks again for every name and every size, so nothing it
/// cached can outlive a crash.
const TTL: Duration = Duration::ZERO;
const ROOT: u64 = 1;

/// How namespace operations become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NamespaceMode {
    /// Only after an fsync of a directory they touched; a crash undoes the
    /// rest.
    #[default]
    Lazy,
    /// At once: only file data is lost by a crash.
    Immediate,
}

impl std::str::FromStr for NamespaceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lazy" => Ok(NamespaceMode::Lazy),
            "immediate" => Ok(NamespaceMode::Immediate),
            other => Err(format!("unknown namespace mode {other:?} (lazy or immediate)")),
        }
    }
}

/// What a crash threw away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Files that had unsynced data or size changes.
    pub files: u64,
    /// Bytes of unsynced pages dropped.
    pub bytes: u64,
    /// Namespace operations undone.
    pub undone: u64,
}

/// Counters and current pending state, for the control interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Files with unsynced state now.
    pub dirty_files: u64,
    /// Bytes of unsynced pages now.
    pub pending_bytes: u64,
    /// Namespace operations not yet durable.
    pub pending_ops: u64,
    /// File fsyncs served, and bytes they wrote to the backing directory.
    pub fsyncs: u64,
    pub synced_bytes: u64,
    /// Directory fsyncs served.
    pub dir_fsyncs: u64,
    pub crashes: u64,
}

/// A regular file's open backing descriptor and unsynced state.
struct FileData {
    fd: File,
    overlay: Overlay,
    /// The backing file's length: what a crash would leave.
    durable_len: u64,
}

impl FileData {
    fn open(path: &Path) -> io::Result<FileData> {
        let fd = match OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW).open(path) {
            Ok(f) => f,
            // A read-only backing file (mode 0444 without root): reads only.
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => OpenOptions::new().read(true).open(path)?,
            Err(e) => return Err(e),
        };
        let len = fd.metadata()?.len();
        Ok(FileData { fd, overlay: Overlay::new(len), durable_len: len })
    }

    fn is_dirty(&self) -> bool {
        self.overlay.is_dirty(self.durable_len)
    }

    fn sync(&mut self) -> io::Result<u64> {
        let n = self.overlay.apply(&self.fd)?;
        self.durable_len = self.overlay.size();
        Ok(n)
    }
}

/// One inode the kernel knows, or that a pending operation refers to.
struct Node {
    kind: FileType,
    /// One name of it: the directory's inode and the entry. Paths are built
    /// from these, so renaming a directory moves everything under it.
    parent: u64,
    name: OsString,
    /// Backing (device, inode): finds the node again for another name of
    /// the same file (a hard link) or a later lookup.
    key: Option<(u64, u64)>,
    lookups: u64,
    opens: u64,
    /// References from the journal.
    pins: u64,
    data: Option<FileData>,
}

enum Handle {
    File { ino: u64, sync: bool },
    Dir { entries: Vec<(u64, FileType, OsString)> },
}

/// The filesystem's state; see the module docs.
pub struct State {
    root: PathBuf,
    mode: NamespaceMode,
    nodes: HashMap<u64, Node>,
    by_key: HashMap<(u64, u64), u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    journal: Journal,
    next_trash: u64,
    stats: Stats,
}

type Res<T> = Result<T, Errno>;

fn errno(e: io::Error) -> Errno {
    match e.raw_os_error() {
        Some(n) => Errno::from_i32(n),
        None => Errno::EIO,
    }
}

fn kind_of(ft: std::fs::FileType) -> FileType {
    FileType::from_std(ft).unwrap_or(FileType::RegularFile)
}

fn key_of(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn to_timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        Some(TimeOrNow::Now) => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos() as libc::c_long }
        }
    }
}

fn cstr(p: &Path) -> Res<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// Removes a file, symlink or directory tree; a missing entry is fine.
fn remove_any(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

impl State {
    /// State over `root` (which must be a directory). A trash left by an
    /// earlier run is emptied: whatever it held was unlinked for good when
    /// that run ended.
    pub fn new(root: &Path, mode: NamespaceMode) -> io::Result<State> {
        let root = root.canonicalize()?;
        let meta = std::fs::metadata(&root)?;
        if !meta.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a directory", root.display())));
        }
        let trash = root.join(TRASH);
        remove_any(&trash)?;
        let mut s = State {
            root,
            mode,
            nodes: HashMap::new(),
            by_key: HashMap::new(),
            next_ino: ROOT + 1,
            handles: HashMap::new(),
            next_fh: 1,
            journal: Journal::default(),
            next_trash: 0,
            stats: Stats::default(),
        };
        s.reset_nodes()?;
        Ok(s)
    }

    fn reset_nodes(&mut self) -> io::Result<()> {
        self.nodes.clear();
        self.by_key.clear();
        self.handles.clear();
        let meta = std::fs::metadata(&self.root)?;
        self.nodes.insert(
            ROOT,
            Node {
                kind: FileType::Directory,
                parent: ROOT,
                name: OsString::new(),
                key: Some(key_of(&meta)),
                lookups: 1,
                opens: 0,
                pins: 0,
                data: None,
            },
        );
        self.by_key.insert(key_of(&meta), ROOT);
        Ok(())
    }

    fn trash_dir(&self) -> PathBuf {
        self.root.join(TRASH)
    }

    fn node(&self, ino: u64) -> Res<&Node> {
        self.nodes.get(&ino).ok_or(Errno::ESTALE)
    }

    fn node_mut(&mut self, ino: u64) -> Res<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(Errno::ESTALE)
    }

    /// The backing path of `ino`, built from the recorded names.
    fn path(&self, ino: u64) -> Res<PathBuf> {
        let mut names = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let n = self.node(at)?;
            names.push(n.name.as_os_str());
            at = n.parent;
            if names.len() > 4096 {
                return Err(Errno::ELOOP);
            }
        }
        let mut p = self.root.clone();
        for name in names.iter().rev() {
            p.push(name);
        }
        Ok(p)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Res<PathBuf> {
        if name.as_bytes().contains(&b'/') || name == "." || name == ".." || name.is_empty() {
            return Err(Errno::EINVAL);
        }
        if parent == ROOT && name == TRASH {
            return Err(Errno::EPERM);
        }
        Ok(self.path(parent)?.join(name))
    }

    /// The node for the backing entry `parent/name` (found or created),
    /// with its recorded name set to this one.
    fn node_for(&mut self, parent: u64, name: &OsStr, meta: &std::fs::Metadata) -> u64 {
        let key = key_of(meta);
        let kind = kind_of(meta.file_type());
        if let Some(&ino) = self.by_key.get(&key)
            && let Some(n) = self.nodes.get_mut(&ino)
        {
            n.parent = parent;
            n.name = name.to_os_string();
            n.kind = kind;
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node { kind, parent, name: name.to_os_string(), key: Some(key), lookups: 0, opens: 0, pins: 0, data: None },
        );
        self.by_key.insert(key, ino);
        ino
    }

    /// Forgets a node nothing refers to any more.
    fn maybe_drop(&mut self, ino: u64) {
        if ino == ROOT {
            return;
        }
        let Some(n) = self.nodes.get_mut(&ino) else { return };
        if n.data.as_ref().is_some_and(|d| !d.is_dirty()) && n.opens == 0 {
            n.data = None;
        }
        if n.lookups == 0 && n.opens == 0 && n.pins == 0 && n.data.is_none() {
            let key = n.key;
            self.nodes.remove(&ino);
            if let Some(k) = key
                && self.by_key.get(&k) == Some(&ino)
            {
                self.by_key.remove(&k);
            }
        }
    }

    /// A backing entry is about to lose a name: if that was its last one and
    /// nothing holds it open, its backing inode number may be reused, so it
    /// must no longer find this node.
    fn unlinking(&mut self, meta: &std::fs::Metadata) {
        if meta.is_dir() || meta.nlink() <= 1 {
            let key = key_of(meta);
            if let Some(&ino) = self.by_key.get(&key)
                && self.nodes.get(&ino).is_none_or(|n| n.data.is_none())
            {
                self.by_key.remove(&key);
                if let Some(n) = self.nodes.get_mut(&ino) {
                    n.key = None;
                }
            }
        }
    }

    fn attr(&self, ino: u64) -> Res<FileAttr> {
        let n = self.node(ino)?;
        let meta = match &n.data {
            Some(d) => d.fd.metadata(),
            None => std::fs::symlink_metadata(self.path(ino)?),
        }
        .map_err(errno)?;
        let size = n.data.as_ref().map_or(meta.size(), |d| d.overlay.size());
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: kind_of(meta.file_type()),
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: 4096,
            flags: 0,
        })
    }

    fn record(&mut self, op: Op) {
        if self.mode == NamespaceMode::Immediate {
            return;
        }
        for ino in op.inodes() {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.pins += 1;
            }
        }
        self.journal.record(op);
    }

    /// Forgets operations that are durable or undone: unpins their inodes
    /// and deletes their trash.
    fn retire(&mut self, ops: &[Op]) {
        for op in ops {
            for ino in op.inodes() {
                if let Some(n) = self.nodes.get_mut(&ino) {
                    n.pins = n.pins.saturating_sub(1);
                }
                self.maybe_drop(ino);
            }
            if let Some(t) = op.trash() {
                let p = self.trash_dir().join(t);
                if let Err(e) = remove_any(&p) {
                    tracing::warn!("faultfs: cannot empty {}: {e}", p.display());
                }
            }
        }
    }

    /// Moves `path` into the trash (lazy mode), or deletes it (immediate).
    /// Returns the trash name.
    fn discard(&mut self, path: &Path) -> Res<Option<OsString>> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            self.unlinking(&meta);
        }
        if self.mode == NamespaceMode::Immediate {
            remove_any(path).map_err(errno)?;
            return Ok(None);
        }
        let dir = self.trash_dir();
        if !dir.exists() {
            std::fs::create_dir(&dir).map_err(errno)?;
        }
        let name = OsString::from(format!("t{}", self.next_trash));
        self.next_trash += 1;
        std::fs::rename(path, dir.join(&name)).map_err(errno)?;
        Ok(Some(name))
    }

    fn new_fh(&mut self, h: Handle) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, h);
        fh
    }

    fn file_data(&mut self, ino: u64) -> Res<&mut FileData> {
        if self.node(ino)?.data.is_none() {
            if self.node(ino)?.kind != FileType::RegularFile {
                return Err(Errno::EINVAL);
            }
            let path = self.path(ino)?;
            let d = FileData::open(&path).map_err(errno)?;
            self.node_mut(ino)?.data = Some(d);
        }
        Ok(self.node_mut(ino)?.data.as_mut().expect("set above"))
    }

    fn take_lookup(&mut self, ino: u64) -> Res<FileAttr> {
        let attr = self.attr(ino)?;
        self.node_mut(ino)?.lookups += 1;
        Ok(attr)
    }

    /// Gives a newly created entry the caller's owner (the daemon runs as
    /// root) and the exact mode asked for (not masked by our own umask).
    fn own(&self, path: &Path, req_uid: u32, req_gid: u32, mode: Option<u32>) -> Res<()> {
        if let Some(m) = mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(m & 0o7777)).map_err(errno)?;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 && (req_uid != 0 || req_gid != 0) {
            std::os::unix::fs::lchown(path, Some(req_uid), Some(req_gid)).map_err(errno)?;
        }
        Ok(())
    }

    // ---- the operations, one per request kind ----

    pub fn lookup(&mut self, parent: u64, name: &OsStr) -> Res<FileAttr> {
        let path = self.child(parent, name).map_err(|e| if e == Errno::EPERM { Errno::ENOENT } else { e })?;
        let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
        let ino = self.node_for(parent, name, &meta);
        self.take_lookup(ino)
    }

    pub fn forget(&mut self, ino: u64, nlookup: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.lookups = n.lookups.saturating_sub(nlookup);
            self.maybe_drop(ino);
        }
    }

    pub fn getattr(&mut self, ino: u64) -> Res<FileAttr> {
        self.attr(ino)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn setattr(
        &mut self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Res<FileAttr> {
        let path = self.path(ino)?;
        if let Some(size) = size {
            let d = self.file_data(ino)?;
            d.overlay.truncate(&d.fd, size).map_err(errno)?;
        }
        if let Some(m) = mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m & 0o7777)).map_err(errno)?;
        }
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&path, uid, gid).map_err(errno)?;
        }
        if atime.is_some() || mtime.is_some() {
            let times = [to_timespec(atime), to_timespec(mtime)];
            let c = cstr(&path)?;
            // SAFETY: c is a valid C string and times a two-element array,
            // as utimensat requires.
            if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } != 0 {
                return Err(errno(io::Error::last_os_error()));
            }
        }
        let attr = self.attr(ino);
        self.maybe_drop(ino);
        attr
    }

    pub fn readlink(&self, ino: u64) -> Res<Vec<u8>> {
        let target = std::fs::read_link(self.path(ino)?).map_err(errno)?;
        Ok(target.into_os_string().into_vec())
    }

    /// Registers a new entry made by `make` at `parent/name`.
    fn created(
        &mut self,
        parent: u64,
        name: &OsStr,
        req: (u32, u32),
        mode: Option<u32>,
        make: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Res<FileAttr> {
        let path = self.child(parent, name)?;
        make(&path).map_err(errno)?;
        self.record(Op::Created { dir: parent, name: name.to_os_string() });
        self.own(&path, req.0, req.1, mode)?;
        let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
        let ino = self.node_for(parent, name, &meta);
        self.take_lookup(ino)
    }

    pub fn mknod(&mut self, parent: u64, name: &OsStr, mode: u32, rdev: u32, req: (u32, u32)) -> Res<FileAttr> {
        self.created(parent, name, req, Some(mode), |p| {
            let c = std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)?;
            // SAFETY: c is a valid C string.
            if unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }

    pub fn mkdir(&mut self, parent: u64, name: &OsStr, mode: u32, req: (u32, u32)) -> Res<FileAttr> {
        self.created(parent, name, req, Some(mode), |p| std::fs::create_dir(p))
    }

    pub fn symlink(&mut self, parent: u64, name: &OsStr, target: &Path, req: (u32, u32)) -> Res<FileAttr> {
        self.created(parent, name, req, None, |p| std::os::unix::fs::symlink(target, p))
    }

    pub fn link(&mut self, ino: u64, parent: u64, name: &OsStr) -> Res<FileAttr> {
        let src = self.path(ino)?;
        let path = self.child(parent, name)?;
        std::fs::hard_link(&src, &path).map_err(errno)?;
        self.record(Op::Created { dir: parent, name: name.to_os_string() });
        // The node keeps its recorded name; the new one is found by key.
        self.take_lookup(ino)
    }

    pub fn unlink(&mut self, parent: u64, name: &OsStr) -> Res<()> {
        let path = self.child(parent, name)?;
        let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
        if meta.is_dir() {
            return Err(Errno::EISDIR);
        }
        if let Some(trash) = self.discard(&path)? {
            self.record(Op::Removed { dir: parent, name: name.to_os_string(), trash });
        }
        Ok(())
    }

    pub fn rmdir(&mut self, parent: u64, name: &OsStr) -> Res<()> {
        let path = self.child(parent, name)?;
        let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
        if !meta.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if std::fs::read_dir(&path).map_err(errno)?.next().is_some() {
            return Err(Errno::ENOTEMPTY);
        }
        if let Some(trash) = self.discard(&path)? {
            self.record(Op::Removed { dir: parent, name: name.to_os_string(), trash });
        }
        Ok(())
    }

    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Res<()> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let from = self.child(parent, name)?;
        let to = self.child(newparent, newname)?;
        let src = std::fs::symlink_metadata(&from).map_err(errno)?;
        let mut replaced = None;
        match std::fs::symlink_metadata(&to) {
            Ok(dst) => {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                if key_of(&dst) == key_of(&src) {
                    // Two names of one file: rename(2) does nothing.
                    return Ok(());
                }
                match (src.is_dir(), dst.is_dir()) {
                    (true, false) => return Err(Errno::ENOTDIR),
                    (false, true) => return Err(Errno::EISDIR),
                    (true, true) if std::fs::read_dir(&to).map_err(errno)?.next().is_some() => {
                        return Err(Errno::ENOTEMPTY);
                    }
                    _ => {}
                }
                if self.mode == NamespaceMode::Lazy {
                    replaced = self.discard(&to)?;
                } else {
                    self.unlinking(&dst);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(errno(e)),
        }
        if let Err(e) = std::fs::rename(&from, &to) {
            // Put back what was moved aside for it.
            if let Some(t) = &replaced {
                let _ = std::fs::rename(self.trash_dir().join(t), &to);
            }
            return Err(errno(e));
        }
        let node = self.by_key.get(&key_of(&src)).copied();
        if let Some(ino) = node
            && let Some(n) = self.nodes.get_mut(&ino)
        {
            n.parent = newparent;
            n.name = newname.to_os_string();
        }
        self.record(Op::Renamed {
            from_dir: parent,
            from_name: name.to_os_string(),
            to_dir: newparent,
            to_name: newname.to_os_string(),
            node,
            replaced,
        });
        Ok(())
    }

    pub fn open(&mut self, ino: u64, flags: i32) -> Res<u64> {
        let d = self.file_data(ino)?;
        if flags & libc::O_TRUNC != 0 {
            d.overlay.truncate(&d.fd, 0).map_err(errno)?;
        }
        self.node_mut(ino)?.opens += 1;
        let sync = flags & (libc::O_SYNC | libc::O_DSYNC) != 0;
        Ok(self.new_fh(Handle::File { ino, sync }))
    }

    pub fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        req: (u32, u32),
    ) -> Res<(FileAttr, u64)> {
        let path = self.child(parent, name)?;
        let new = match OpenOptions::new().write(true).create_new(true).mode(mode & 0o7777).open(&path) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && flags & libc::O_EXCL == 0 => false,
            Err(e) => return Err(errno(e)),
        };
        if new {
            self.record(Op::Created { dir: parent, name: name.to_os_string() });
            self.own(&path, req.0, req.1, Some(mode))?;
        }
        let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
        let ino = self.node_for(parent, name, &meta);
        let fh = self.open(ino, flags)?;
        let attr = self.take_lookup(ino)?;
        Ok((attr, fh))
    }

    fn file_handle(&self, fh: u64) -> Res<(u64, bool)> {
        match self.handles.get(&fh) {
            Some(Handle::File { ino, sync }) => Ok((*ino, *sync)),
            _ => Err(Errno::EBADF),
        }
    }

    pub fn read(&mut self, fh: u64, offset: u64, size: u32) -> Res<Vec<u8>> {
        let (ino, _) = self.file_handle(fh)?;
        let d = self.file_data(ino)?;
        d.overlay.read(&d.fd, offset, size as usize).map_err(errno)
    }

    pub fn write(&mut self, fh: u64, offset: u64, data: &[u8], flags: i32) -> Res<u32> {
        let (ino, sync) = self.file_handle(fh)?;
        let d = self.file_data(ino)?;
        d.overlay.write(&d.fd, offset, data).map_err(errno)?;
        if sync || flags & (libc::O_SYNC | libc::O_DSYNC) != 0 {
            let n = d.sync().map_err(errno)?;
            self.stats.fsyncs += 1;
            self.stats.synced_bytes += n;
        }
        Ok(data.len() as u32)
    }

    pub fn fallocate(&mut self, fh: u64, offset: u64, length: u64, mode: i32) -> Res<()> {
        if mode != 0 {
            return Err(Errno::from_i32(libc::EOPNOTSUPP));
        }
        let (ino, _) = self.file_handle(fh)?;
        let d = self.file_data(ino)?;
        let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
        if end > d.overlay.size() {
            d.overlay.truncate(&d.fd, end).map_err(errno)?;
        }
        Ok(())
    }

    /// fsync / fdatasync of a file: its data becomes durable.
    pub fn fsync(&mut self, fh: u64) -> Res<()> {
        let (ino, _) = self.file_handle(fh)?;
        let d = self.file_data(ino)?;
        let n = d.sync().map_err(errno)?;
        self.stats.fsyncs += 1;
        self.stats.synced_bytes += n;
        Ok(())
    }

    pub fn release(&mut self, fh: u64) {
        if let Some(Handle::File { ino, .. }) = self.handles.remove(&fh) {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.opens = n.opens.saturating_sub(1);
            }
            self.maybe_drop(ino);
        }
    }

    pub fn opendir(&mut self, ino: u64) -> Res<u64> {
        let path = self.path(ino)?;
        let parent = self.node(ino)?.parent;
        let mut entries = vec![(ino, FileType::Directory, ".".into()), (parent, FileType::Directory, "..".into())];
        for e in std::fs::read_dir(&path).map_err(errno)? {
            let e = e.map_err(errno)?;
            if ino == ROOT && e.file_name() == TRASH {
                continue;
            }
            let ft = e.file_type().map_err(errno)?;
            // The kernel does not use readdir's inode numbers to find files
            // (it looks names up), so a known node's number or the backing
            // one will do.
            let meta = e.metadata().map_err(errno)?;
            let num = self.by_key.get(&key_of(&meta)).copied().unwrap_or(meta.ino());
            entries.push((num, kind_of(ft), e.file_name()));
        }
        Ok(self.new_fh(Handle::Dir { entries }))
    }

    /// Directory entries from `offset` on, for readdir.
    pub fn dir_entries(&self, fh: u64, offset: u64) -> Res<&[(u64, FileType, OsString)]> {
        match self.handles.get(&fh) {
            Some(Handle::Dir { entries }) => Ok(entries.get(offset as usize..).unwrap_or(&[])),
            _ => Err(Errno::EBADF),
        }
    }

    pub fn releasedir(&mut self, fh: u64) {
        self.handles.remove(&fh);
    }

    /// fsync of a directory: the namespace operations in it become durable.
    pub fn fsyncdir(&mut self, ino: u64) -> Res<()> {
        let durable = self.journal.make_durable(ino);
        self.retire(&durable);
        self.stats.dir_fsyncs += 1;
        Ok(())
    }

    pub fn statfs(&self) -> Res<libc::statvfs> {
        let c = cstr(&self.root)?;
        // SAFETY: all-zero is a valid statvfs; c is a valid C string and st
        // a valid out pointer.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Err(errno(io::Error::last_os_error()));
        }
        Ok(st)
    }

    // ---- control ----

    /// Everything not yet durable, now.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.pending_ops = self.journal.len() as u64;
        for d in self.nodes.values().filter_map(|n| n.data.as_ref()) {
            if d.is_dirty() {
                s.dirty_files += 1;
                s.pending_bytes += d.overlay.pending_bytes();
            }
        }
        s
    }

    /// Makes everything durable, as a clean shutdown would.
    pub fn sync_all(&mut self) -> io::Result<()> {
        for n in self.nodes.values_mut() {
            if let Some(d) = n.data.as_mut() {
                d.sync()?;
            }
        }
        let ops = self.journal.take_all();
        self.retire(&ops);
        Ok(())
    }

    /// The power failure; see the module docs.
    pub fn crash(&mut self) -> io::Result<CrashReport> {
        let mut report = CrashReport::default();
        for d in self.nodes.values().filter_map(|n| n.data.as_ref()) {
            if d.is_dirty() {
                report.files += 1;
                report.bytes += d.overlay.pending_bytes();
            }
        }
        // Close every backing descriptor before the namespace is rolled
        // back: the overlays go with them.
        for n in self.nodes.values_mut() {
            n.data = None;
        }
        let ops = self.journal.take_all();
        report.undone = ops.len() as u64;
        for op in &ops {
            if let Err(e) = self.undo(op) {
                tracing::warn!("faultfs: crash could not undo {op:?}: {e:?}");
            }
        }
        remove_any(&self.trash_dir())?;
        self.reset_nodes()?;
        self.stats.crashes += 1;
        Ok(report)
    }

    fn undo(&mut self, op: &Op) -> Res<()> {
        match op {
            Op::Created { dir, name } => remove_any(&self.path(*dir)?.join(name)).map_err(errno),
            Op::Removed { dir, name, trash } => {
                let to = self.path(*dir)?.join(name);
                // Something durable took the name since: it stays.
                if !exists(&to) {
                    std::fs::rename(self.trash_dir().join(trash), &to).map_err(errno)?;
                }
                Ok(())
            }
            Op::Renamed { from_dir, from_name, to_dir, to_name, node, replaced } => {
                let from = self.path(*from_dir)?.join(from_name);
                let to = self.path(*to_dir)?.join(to_name);
                if exists(&to) && !exists(&from) {
                    std::fs::rename(&to, &from).map_err(errno)?;
                    if let Some(n) = node.and_then(|ino| self.nodes.get_mut(&ino)) {
                        n.parent = *from_dir;
                        n.name = from_name.clone();
                    }
                }
                if let Some(t) = replaced
                    && !exists(&to)
                {
                    std::fs::rename(self.trash_dir().join(t), &to).map_err(errno)?;
                }
                Ok(())
            }
        }
    }
}

/// The [`Filesystem`] over a shared [`State`], so that the control
/// interface can reach the same state while the kernel's requests are
/// served.
pub struct LazyFs {
    state: Arc<Mutex<State>>,
}

impl LazyFs {
    pub fn new(state: Arc<Mutex<State>>) -> LazyFs {
        LazyFs { state }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as consistent as
        // the backing directory is; keep serving rather than poisoning
        // every later request.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn reply_entry(reply: ReplyEntry, r: Res<FileAttr>) {
    match r {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, r: Res<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for LazyFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // 1 MiB writes: fewer round trips for a storage engine's appends.
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.st().lookup(parent.0, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.st().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.st().getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.st().setattr(ino.0, mode, uid, gid, size, atime, mtime) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.st().readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        reply_entry(reply, self.st().mknod(parent.0, name, mode & !umask, rdev, (req.uid(), req.gid())));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        reply_entry(reply, self.st().mkdir(parent.0, name, mode & !umask, (req.uid(), req.gid())));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.st().unlink(parent.0, name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.st().rmdir(parent.0, name));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        reply_entry(reply, self.st().symlink(parent.0, link_name, target, (req.uid(), req.gid())));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.st().rename(parent.0, name, newparent.0, newname, flags));
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.st().link(ino.0, newparent.0, newname));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.st().open(ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.st().read(fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.st().write(fh.0, offset, data, flags.0) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.st().release(fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply_empty(reply, self.st().fsync(fh.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.st().opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let st = self.st();
        match st.dir_entries(fh.0, offset) {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.iter().enumerate() {
                    if reply.add(INodeNo(*ino), offset + i as u64 + 1, *kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.st().releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply_empty(reply, self.st().fsyncdir(ino.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.st().statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.st().create(parent.0, name, mode & !umask, flags, (req.uid(), req.gid())) {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    // Extended attributes, lseek and copy_file_range are not supported:
    // ENOSYS makes the kernel stop asking and use its generic paths, which
    // go through read and write.
    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.st().fallocate(fh.0, offset, length, mode));
    }
}
