//! A node's disk that can lose power: a `replog-faultfs` mount over the
//! node's data directory. It holds only what the node fsync'd; a crash
//! drops every unsynced write. The daemon runs for the whole life of the
//! cluster, across node restarts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use replog_faultfs::CrashReport;
use replog_faultfs::control::Client as FaultFsClient;

use crate::child::spawn_logged;

/// How long a daemon may take to mount and answer, or to unmount on exit.
const DISK_START: Duration = Duration::from_secs(10);
const DISK_STOP: Duration = Duration::from_secs(5);
/// How often a starting or stopping daemon is checked on. The calls are
/// synchronous (node restarts are), so this blocks the caller briefly.
const DISK_POLL: Duration = Duration::from_millis(20);

/// A running `replog-faultfs` daemon: `backing` (the disk) mounted at
/// `mountpoint` (the node's data directory).
pub struct Disk {
    child: Child,
    control: PathBuf,
    mountpoint: PathBuf,
}

impl Disk {
    /// Starts the daemon and waits until its control socket answers. A
    /// harness that dies without unwinding takes the daemon with it
    /// (`PR_SET_PDEATHSIG = SIGTERM`, on which it unmounts).
    pub fn start(bin: &Path, backing: &Path, mountpoint: &Path, control: &Path, log: &Path) -> Result<Disk> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let mut cmd = Command::new(bin);
        cmd.arg("mount")
            .arg("--backing")
            .arg(backing)
            .arg("--mountpoint")
            .arg(mountpoint)
            .arg("--control")
            .arg(control);
        // SIGTERM, not SIGKILL: the daemon unmounts on it.
        let child = spawn_logged(cmd, log, libc::SIGTERM)?;
        let mut disk = Disk { child, control: control.to_path_buf(), mountpoint: mountpoint.to_path_buf() };
        let deadline = Instant::now() + DISK_START;
        loop {
            if let Some(status) = disk.child.try_wait()? {
                bail!("replog-faultfs for {} exited ({status}) before it was ready", mountpoint.display());
            }
            if FaultFsClient::connect(control).and_then(|mut c| c.ping()).is_ok() {
                return Ok(disk);
            }
            if Instant::now() >= deadline {
                disk.stop();
                bail!("replog-faultfs did not mount {} within {DISK_START:?}", mountpoint.display());
            }
            std::thread::sleep(DISK_POLL);
        }
    }

    /// An error if the daemon has exited: the node's data directory is
    /// then gone.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("replog-faultfs for {} exited ({status})", self.mountpoint.display()),
            None => Ok(()),
        }
    }

    fn client(&self) -> Result<FaultFsClient> {
        Ok(FaultFsClient::connect(&self.control)?)
    }

    /// Power loss: the daemon drops every write that was not fsync'd and
    /// says what it dropped. The node must be dead and reaped first, so
    /// that none of its requests is still inside the filesystem.
    pub fn crash(&mut self) -> Result<CrashReport> {
        self.check_alive()?;
        Ok(self.client()?.crash()?)
    }

    /// Asks the daemon to unmount and exit; kills it and detaches the mount
    /// if it does not within [`DISK_STOP`].
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.client().and_then(|mut c| Ok(c.exit()?));
            let deadline = Instant::now() + DISK_STOP;
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(DISK_POLL);
            }
            if self.child.try_wait().ok().flatten().is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        for m in replog_faultfs::mount::mounts_under(&self.mountpoint) {
            let _ = replog_faultfs::mount::detach(&m);
        }
    }
}
