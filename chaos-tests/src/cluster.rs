//! How chaos runs set up their clusters. The cluster itself is the test
//! kit's [`replog_testkit::Cluster`] (real `replog-node` processes driven by
//! PID, faultfs disks, readiness asked of each node); a chaos run puts
//! every node on its own loopback address 127.0.0.(10+i), so that the
//! packet filters of [`crate::net`] can tell the nodes apart, and takes
//! its knobs from the environment:
//!
//! - `CHAOS_FAULTFS`: data directories on `replog-faultfs` mounts
//!   (`auto`, the default: when a power fault is enabled; `1`: always;
//!   `0`: never);
//! - `CHAOS_PLANT`: a bug planted in every node ([`Plant`]);
//! - `CHAOS_NODE_LOG`: the nodes' `RUST_LOG`;
//! - `REPLOG_NODE_BIN`, `REPLOG_FAULTFS_BIN`: the binaries under test
//!   (else `replog-node` under the target directory, the profile of the
//!   running executable first, and `replog-faultfs` next to it).

use std::path::Path;

use anyhow::{Result, bail};
use replog_testkit::ClusterOptions;

/// The options of a chaos cluster under `run_dir`, from the environment;
/// `power_faults`: whether the schedule cuts power (then the disks are
/// faultfs mounts unless `CHAOS_FAULTFS` says otherwise).
pub fn options_from_env(run_dir: &Path, power_faults: bool) -> Result<ClusterOptions> {
    let faultfs = match std::env::var("CHAOS_FAULTFS").unwrap_or_default().trim() {
        "" | "auto" => power_faults,
        "1" | "on" | "true" => true,
        "0" | "off" | "false" if power_faults => {
            bail!("CHAOS_FAULTFS=0, but power-fail faults need the faultfs mounts")
        }
        "0" | "off" | "false" => false,
        v => bail!("CHAOS_FAULTFS must be auto, 1 or 0, got {v:?}"),
    };
    let mut opts = chaos_options(run_dir);
    opts.faultfs = faultfs;
    if let Some(p) = Plant::from_env()? {
        let (k, v) = p.env();
        opts.env.push((k.into(), v.into()));
    }
    Ok(opts)
}

/// Per-node addresses, the nodes' log filter from `CHAOS_NODE_LOG`, and no
/// faultfs or planted bug: the cluster of a soak, and the base of
/// [`options_from_env`].
pub fn chaos_options(run_dir: &Path) -> ClusterOptions {
    let mut opts = ClusterOptions { dir: Some(run_dir.to_path_buf()), per_node_ip: true, ..ClusterOptions::default() };
    if let Ok(filter) = std::env::var("CHAOS_NODE_LOG") {
        opts.log_filter = filter;
    }
    opts
}

/// A test-only bug a node can be started with (`CHAOS_PLANT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plant {
    /// `skip-fsync`: the storage skips its fdatasync/fsync calls
    /// (`REPLOG_UNSAFE_SKIP_FSYNC=1`), so acknowledged writes are not on
    /// disk. Power failures must then lose acknowledged writes.
    SkipFsync,
}

impl Plant {
    pub const ALL: [Plant; 1] = [Plant::SkipFsync];

    pub fn name(self) -> &'static str {
        match self {
            Plant::SkipFsync => "skip-fsync",
        }
    }

    /// The environment variable and value that plant it in a node.
    pub fn env(self) -> (&'static str, &'static str) {
        match self {
            Plant::SkipFsync => ("REPLOG_UNSAFE_SKIP_FSYNC", "1"),
        }
    }

    pub fn parse(name: &str) -> Result<Plant> {
        match Plant::ALL.iter().find(|p| p.name() == name) {
            Some(p) => Ok(*p),
            None => bail!("unknown planted bug {name:?}; known: {}", Plant::ALL.map(Plant::name).join(", ")),
        }
    }

    /// `CHAOS_PLANT`, if set and not empty.
    pub fn from_env() -> Result<Option<Plant>> {
        match std::env::var("CHAOS_PLANT") {
            Ok(v) if !v.trim().is_empty() => Plant::parse(v.trim()).map(Some),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_plant_names_then_known_ones_parse_with_their_env_and_others_fail() {
        let p = Plant::parse("skip-fsync").unwrap();
        assert_eq!(p.env(), ("REPLOG_UNSAFE_SKIP_FSYNC", "1"));
        assert_eq!(p.name(), "skip-fsync");
        assert!(Plant::parse("skip-everything").is_err());
    }

    #[test]
    fn chaos_clusters_put_every_node_on_its_own_address_under_the_run_dir() {
        let opts = chaos_options(Path::new("/tmp/run-1"));
        assert!(opts.per_node_ip);
        assert_eq!(opts.dir.as_deref(), Some(Path::new("/tmp/run-1")));
        assert!(!opts.faultfs && opts.env.is_empty());
    }
}
