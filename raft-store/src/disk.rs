//! Free space on the data volume, and what the node does as it runs out.
//!
//! sled cannot survive a failed write: after one ENOSPC every later call
//! fails too, even once space is back. So the node must never let its own
//! log writes take the space sled needs, and must keep room for sled even
//! when something else fills the volume:
//!
//! - below `min_free`, produce is refused with DISK_FULL (the node keeps
//!   serving reads and replicating what it can);
//! - below half of it, log appends wait (a full follower falls behind and
//!   catches up later, like a slow one) — sled's small writes keep the rest;
//! - below a quarter, the *ballast* goes: a file of `min_free / 2` bytes
//!   reserved at start, deleted to give sled room when the volume is nearly
//!   full however that happened, and reserved again once there is space.
//!
//! Free space is read with `statvfs` at most every [`REFRESH`].

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How stale the free-space figure may be.
pub const REFRESH: Duration = Duration::from_millis(100);
const BALLAST_FILE: &str = "ballast";
/// The ballast never exceeds this, whatever `min_free`.
const MAX_BALLAST: u64 = 1 << 30;

fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("path holds a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized,
    // zero-initialised out parameter that statvfs fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Free space of the volume holding `path`, in bytes available to us.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = statvfs(path)?;
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Size of the volume holding `path`, in bytes.
pub fn capacity_bytes(path: &Path) -> io::Result<u64> {
    let st = statvfs(path)?;
    Ok(st.f_blocks as u64 * st.f_frsize as u64)
}

pub struct DiskGuard {
    dir: PathBuf,
    min_free: u64,
    ballast: u64,
    free: AtomicU64,
    checked: Mutex<Option<Instant>>,
    has_ballast: AtomicBool,
}

impl DiskGuard {
    /// Watches the volume of `dir` and reserves the ballast there.
    pub fn new(dir: &Path, min_free: u64) -> io::Result<DiskGuard> {
        let g = DiskGuard {
            dir: dir.to_path_buf(),
            min_free,
            ballast: (min_free / 2).min(MAX_BALLAST),
            free: AtomicU64::new(free_bytes(dir)?),
            checked: Mutex::new(None),
            has_ballast: AtomicBool::new(dir.join(BALLAST_FILE).exists()),
        };
        g.refresh();
        Ok(g)
    }

    fn ballast_path(&self) -> PathBuf {
        self.dir.join(BALLAST_FILE)
    }

    /// Re-reads free space if the last reading is older than [`REFRESH`],
    /// and takes or gives back the ballast.
    fn refresh(&self) -> u64 {
        let mut checked = self.checked.lock().expect("disk lock");
        if checked.is_some_and(|t| t.elapsed() < REFRESH) {
            return self.free.load(Ordering::Relaxed);
        }
        *checked = Some(Instant::now());
        let Ok(mut free) = free_bytes(&self.dir) else {
            return self.free.load(Ordering::Relaxed);
        };
        let has = self.has_ballast.load(Ordering::Relaxed);
        if has && free < self.min_free / 4 {
            match fs::remove_file(self.ballast_path()) {
                Ok(()) => {
                    tracing::warn!(
                        free_bytes = free,
                        "data volume nearly full: released the {} byte ballast to keep the node's state writable",
                        self.ballast
                    );
                    self.has_ballast.store(false, Ordering::Relaxed);
                    free = free_bytes(&self.dir).unwrap_or(free + self.ballast);
                }
                Err(e) => tracing::error!("releasing the ballast: {e}"),
            }
        } else if !has && self.ballast > 0 && free >= self.min_free + self.ballast {
            match reserve(&self.ballast_path(), self.ballast) {
                Ok(()) => {
                    self.has_ballast.store(true, Ordering::Relaxed);
                    free = free_bytes(&self.dir).unwrap_or(free.saturating_sub(self.ballast));
                }
                Err(e) => {
                    let _ = fs::remove_file(self.ballast_path());
                    tracing::warn!("cannot reserve the ballast: {e}");
                }
            }
        }
        self.free.store(free, Ordering::Relaxed);
        free
    }

    /// Free bytes on the data volume (at most [`REFRESH`] old).
    pub fn free(&self) -> u64 {
        self.refresh()
    }

    /// Size of the data volume (0 if it cannot be read), for metrics.
    pub fn capacity(&self) -> u64 {
        capacity_bytes(&self.dir).unwrap_or(0)
    }

    pub fn min_free(&self) -> u64 {
        self.min_free
    }

    /// Whether new data may be accepted from producers.
    pub fn accepts_produce(&self) -> bool {
        self.refresh() >= self.min_free
    }

    /// Whether log appends may proceed (replication included).
    pub fn accepts_appends(&self) -> bool {
        self.refresh() >= self.min_free / 2
    }

    pub fn has_ballast(&self) -> bool {
        self.has_ballast.load(Ordering::Relaxed)
    }
}

/// Creates `path` holding `len` bytes of real (allocated) space.
fn reserve(path: &Path, len: u64) -> io::Result<()> {
    let f = OpenOptions::new().create(true).truncate(true).write(true).open(path)?;
    let len_i = i64::try_from(len).map_err(|_| io::Error::other("ballast too large"))?;
    // SAFETY: fallocate on a file descriptor we own.
    let rc = unsafe { libc::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), 0, len_i) };
    if rc != 0 {
        // Filesystems without fallocate: write the bytes out.
        write_zeros(&f, 0, len)?;
    }
    f.sync_all()?;
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// Writes zeros over `[from, to)` of `f`, a megabyte at most at a time.
pub(crate) fn write_zeros(f: &File, from: u64, to: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let chunk = vec![0u8; (to.saturating_sub(from)).min(1 << 20) as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(chunk.len() as u64) as usize;
        f.write_all_at(&chunk[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_and_a_ballast_reserved_when_there_is_room() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        let g = DiskGuard::new(dir.path(), 8 << 20).unwrap();
        assert!(g.has_ballast(), "a ballast must be reserved with {free} bytes free");
        assert_eq!(fs::metadata(dir.path().join(BALLAST_FILE)).unwrap().len(), 4 << 20);
        assert!(g.accepts_produce() && g.accepts_appends());
        // Asking for more than the volume has refuses produce at once.
        let g = DiskGuard::new(dir.path(), u64::MAX / 4).unwrap();
        assert!(!g.accepts_produce());
    }
}
