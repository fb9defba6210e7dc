//! The replog broker node.
//!
//! - [`config`]: `NodeConfig` (file, flags, `REPLOG_*` env) and validation.
//! - [`node`]: the node's Raft groups (controller + partitions), the
//!   reconciler, the peer prober, graceful shutdown.
//! - [`raft_net`]: Raft transport client (one channel per peer, all groups).
//! - [`service`]: gRPC handlers — the client API, one file per RPC, and the
//!   peer-only Raft service.
//! - [`metrics`]: Prometheus metrics, `/metrics` and `/health`.
//! - [`error`]: `NodeError`, stable codes, the mapping to `tonic::Status`.
//! - [`server`]: [`server::run`], which wires it all together.

pub mod config;
pub mod error;
pub mod metrics;
pub mod node;
pub mod raft_net;
pub mod server;
pub mod service;
