//! What a test needs of the machine, and when it may skip.
//!
//! Tests that need root, FUSE or the release binaries pass vacuously (and
//! say why) where they are missing, so that `cargo test` works for a
//! developer without root — except under CI (`CI` set), where every test
//! must run and a missing need is a failure.

use std::path::Path;

use crate::paths::{find_faultfs_bin, find_node_bin};

/// One requirement of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Root: iptables, tc, mount(2).
    Root,
    /// `/dev/fuse`, for `replog-faultfs` mounts.
    Fuse,
    /// A built `replog-node` ([`find_node_bin`]).
    NodeBin,
    /// A built `replog-faultfs` next to it ([`find_faultfs_bin`]).
    FaultfsBin,
}

impl Need {
    /// Why the machine does not meet it, or `None` if it does.
    pub fn missing(self) -> Option<String> {
        match self {
            // SAFETY: geteuid has no preconditions.
            Need::Root => (unsafe { libc::geteuid() } != 0).then(|| "needs root".to_string()),
            Need::Fuse => (!Path::new("/dev/fuse").exists()).then(|| "needs /dev/fuse".to_string()),
            Need::NodeBin => find_node_bin().err().map(|e| e.to_string()),
            Need::FaultfsBin => match find_node_bin() {
                Ok(node) => find_faultfs_bin(&node).err().map(|e| e.to_string()),
                Err(e) => Some(e.to_string()),
            },
        }
    }
}

/// Whether `test` can run here. If not, it says why on stderr and returns
/// false (the test then returns, passing vacuously) — but under CI it
/// panics: there, a test that cannot run is a failure.
pub fn runnable(test: &str, needs: &[Need]) -> bool {
    let Some(why) = needs.iter().find_map(|n| n.missing()) else {
        return true;
    };
    assert!(std::env::var_os("CI").is_none(), "{test} cannot run in CI: {why}");
    eprintln!("skipped {test}: {why}");
    false
}
