//! Spawning the processes a cluster owns (nodes, faultfs daemons): output
//! appended to a log file, and tied to the harness so that they do not
//! outlive it.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

/// Spawns `cmd` with stdin closed, stdout and stderr appended to `log`,
/// and `on_harness_death` delivered to it should the harness die without
/// cleaning up (`PR_SET_PDEATHSIG`). The signal follows the *thread* that
/// spawns: spawn from a runtime's worker threads or the main thread, never
/// from a short-lived one such as `spawn_blocking`'s.
pub fn spawn_logged(mut cmd: Command, log: &Path, on_harness_death: libc::c_int) -> Result<Child> {
    let file =
        OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("open {}", log.display()))?;
    cmd.env("NO_COLOR", "1").stdin(Stdio::null()).stdout(Stdio::from(file.try_clone()?)).stderr(Stdio::from(file));
    // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, on_harness_death);
            Ok(())
        });
    }
    cmd.spawn().with_context(|| format!("spawn {}", cmd.get_program().to_string_lossy()))
}
