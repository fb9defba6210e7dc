//! Where the binaries under test are, and clearing a run directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

/// The cargo target directory above the running executable (a test binary
/// sits in `target/<profile>/deps/`, a tool in `target/<profile>/`).
pub fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    exe.ancestors()
        .find(|a| a.join("CACHEDIR.TAG").is_file() || a.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("cannot find the target directory above {}", exe.display()))
}

/// A binary named by `var`, which must then be a file.
fn from_env(var: &str) -> Result<Option<PathBuf>> {
    match std::env::var_os(var) {
        Some(p) if PathBuf::from(&p).is_file() => Ok(Some(p.into())),
        Some(p) => bail!("{var}={} is not a file", PathBuf::from(p).display()),
        None => Ok(None),
    }
}

/// Finds the `replog-node` binary: `$REPLOG_NODE_BIN`, else under the
/// target directory, preferring the profile the running executable was
/// built with. Node integration tests pass `CARGO_BIN_EXE_replog-node`
/// instead, which cargo keeps up to date.
pub fn find_node_bin() -> Result<PathBuf> {
    if let Some(p) = from_env("REPLOG_NODE_BIN")? {
        return Ok(p);
    }
    let target = target_dir()?;
    let release_first = std::env::current_exe()?.components().any(|c| c.as_os_str() == "release");
    let mut profiles = ["release", "debug"];
    if !release_first {
        profiles.reverse();
    }
    profiles.iter().map(|profile| target.join(profile).join("replog-node")).find(|p| p.is_file()).ok_or_else(|| {
        anyhow!(
            "replog-node not found under {} (build it with `cargo build --release -p replog-node`, or set REPLOG_NODE_BIN)",
            target.display()
        )
    })
}

/// Finds the `replog-faultfs` binary: `$REPLOG_FAULTFS_BIN`, else next to
/// `node_bin`.
pub fn find_faultfs_bin(node_bin: &Path) -> Result<PathBuf> {
    if let Some(p) = from_env("REPLOG_FAULTFS_BIN")? {
        return Ok(p);
    }
    let p = node_bin.with_file_name("replog-faultfs");
    if p.is_file() {
        return Ok(p);
    }
    bail!(
        "replog-faultfs not found next to {} (build it with `cargo build --release -p replog-faultfs`, or set REPLOG_FAULTFS_BIN)",
        node_bin.display()
    )
}

/// Empties `run_dir` for a new run: detaches `replog-faultfs` mounts a
/// killed harness left under it (their daemons are gone), then removes it.
pub fn clear_run_dir(run_dir: &Path) -> Result<()> {
    if !run_dir.exists() {
        return Ok(());
    }
    for m in replog_faultfs::mount::mounts_under(run_dir) {
        replog_faultfs::mount::detach(&m).with_context(|| format!("detach stale mount {}", m.display()))?;
    }
    std::fs::remove_dir_all(run_dir).with_context(|| format!("remove {}", run_dir.display()))
}
