//! Mounting the filesystem in this process: [`MountedFs`] serves the mount
//! on a background thread and unmounts it when dropped. The daemon
//! (`replog-faultfs`) and the tests both use it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use fuser::{BackgroundSession, Config, MountOption};

use crate::error::{Error, Result};
use crate::fs::{CrashReport, LazyFs, NamespaceMode, State, Stats};

/// How to mount.
#[derive(Debug, Clone)]
pub struct Options {
    pub namespace: NamespaceMode,
    /// Threads serving the kernel's requests. The state sits behind one
    /// lock, so more threads only overlap the backing directory's I/O.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { namespace: NamespaceMode::Lazy, threads: 2 }
    }
}

/// A mounted filesystem; unmounted on drop.
pub struct MountedFs {
    session: Option<BackgroundSession>,
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
}

impl MountedFs {
    /// Mounts `backing` at `mountpoint` (an existing directory; whatever it
    /// holds is hidden while mounted). Needs root, or a user allowed to
    /// mount FUSE filesystems, and `/dev/fuse`.
    pub fn mount(backing: &Path, mountpoint: &Path, opts: &Options) -> Result<MountedFs> {
        let state = State::new(backing, opts.namespace)
            .map_err(|e| Error::io(format!("backing directory {}", backing.display()), e))?;
        let state = Arc::new(Mutex::new(state));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName(format!("replog-faultfs:{}", backing.display())),
            MountOption::Subtype("replog-faultfs".into()),
            MountOption::DefaultPermissions,
        ];
        config.n_threads = Some(opts.threads.max(1));
        let session = fuser::spawn_mount(LazyFs::new(state.clone()), mountpoint, &config)
            .map_err(|e| Error::io(format!("mount FUSE at {}", mountpoint.display()), e))?;
        Ok(MountedFs { session: Some(session), state, mountpoint: mountpoint.to_path_buf() })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The state, shared with the control interface.
    pub fn state(&self) -> Arc<Mutex<State>> {
        self.state.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Power loss: drops everything not fsync'd (see [`State::crash`]).
    pub fn crash(&self) -> Result<CrashReport> {
        self.lock().crash().map_err(|e| Error::io("crash", e))
    }

    /// Makes everything durable.
    pub fn sync(&self) -> Result<()> {
        self.lock().sync_all().map_err(|e| Error::io("sync", e))
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats()
    }

    /// Unmounts. If the mount is busy (a process still has a file open in
    /// it), it is detached lazily: gone from the namespace at once, released
    /// by the kernel when the last file closes.
    pub fn unmount(mut self) -> Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<()> {
        let Some(session) = self.session.take() else { return Ok(()) };
        match session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!("faultfs: unmount {}: {e}; detaching lazily", self.mountpoint.display());
                detach(&self.mountpoint)
            }
        }
    }
}

impl Drop for MountedFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::warn!("faultfs: {e}");
        }
    }
}

/// `umount2(path, MNT_DETACH)`: removes a mount even if it is busy or its
/// daemon is gone ("transport endpoint is not connected").
pub fn detach(path: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| Error::io(format!("path {}", path.display()), std::io::Error::other(e)))?;
    // SAFETY: c is a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(Error::io(format!("umount2 {}", path.display()), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The FUSE mounts of this filesystem at or below `dir`, from
/// `/proc/self/mountinfo`, deepest first (the order to unmount them in).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| {
            // Fields: id parent major:minor root mountpoint options ... - fstype source
            let mut parts = l.split(" - ");
            let (pre, post) = (parts.next()?, parts.next()?);
            let mp = unescape(pre.split(' ').nth(4)?);
            let mut post = post.split(' ');
            let (fstype, source) = (post.next()?, post.next()?);
            let ours = fstype.starts_with("fuse") && source.starts_with("replog-faultfs:");
            (ours && Path::new(&mp).starts_with(&dir)).then(|| PathBuf::from(mp))
        })
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_escaped_mountinfo_path_then_it_is_unescaped() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
