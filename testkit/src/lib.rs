//! The one way tests start replog clusters: real `replog-node` processes,
//! each with its own data directory, driven by PID. The node integration
//! tests (`node/tests/`) and the chaos harness (`chaos-tests/`) both use it.
//!
//! Module map:
//!
//! - [`cluster`]: [`Cluster`], N node processes under one directory: start,
//!   SIGKILL, SIGTERM, SIGSTOP/SIGCONT and restart on their data, power
//!   failure of faultfs disks; waits for an agreed controller leader and for
//!   partition leaders by asking each node itself; node log tails.
//! - [`child`]: spawning a node or daemon with its output in a log file,
//!   tied to the harness so that it dies with it.
//! - [`disk`]: a node's `replog-faultfs` mount, the disk that forgets what
//!   was not fsync'd when the power goes.
//! - [`probe`]: one-node questions over a direct gRPC connection to that
//!   node (the SDK's client would rotate over every node it knows).
//! - [`paths`]: where the binaries are (`REPLOG_NODE_BIN`,
//!   `REPLOG_FAULTFS_BIN`, the target directory) and clearing a run
//!   directory that may hold stale mounts.
//! - [`wait`]: condition waits with named limits, never bare sleeps.
//! - [`needs`]: what a test needs of the machine (root, FUSE, binaries) and
//!   the rule for skipping: never under CI.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use replog_testkit::{Cluster, ClusterOptions};
//! use std::time::Duration;
//!
//! let mut cluster = Cluster::start(3, ClusterOptions::default()).await?;
//! let leader = cluster.wait_ready(Duration::from_secs(30)).await?;
//! cluster.kill(leader)?;
//! cluster.restart(leader)?;
//! cluster.wait_ready(Duration::from_secs(30)).await?;
//! # Ok(()) }
//! ```

pub mod child;
pub mod cluster;
pub mod disk;
pub mod needs;
pub mod paths;
pub mod ports;
pub mod probe;
pub mod wait;

pub use cluster::{Cluster, ClusterOptions, Node, log_tail, node_ip};
pub use needs::{Need, runnable};
pub use paths::{clear_run_dir, find_faultfs_bin, find_node_bin, target_dir};
pub use probe::probe_config;
pub use wait::{poll_until, wait_for};
