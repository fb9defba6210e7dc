//! The replog broker node.
//!
//! - [`config`]: `NodeConfig` — every key a TOML key, a flag and a `REPLOG_*`
//!   variable — and validation.
//! - [`node`]: the node — storage, controller handle, hosted partitions,
//!   what it knows of its peers — and graceful shutdown.
//! - [`partition`]: [`partition::Partition`], a partition in log terms
//!   (append, read, offsets, leader); the client handlers' only door to Raft.
//! - [`controller`]: the controller group's handle (propose, watch, register
//!   members).
//! - [`coordinator`]: the consumer-group coordinator's in-memory side —
//!   member liveness, what a member may take now, expiry of silent members.
//! - [`members`]: every node and its address.
//! - [`schema`]: compiled schemas by id, registry checks, and the
//!   validation of records produced to schema-bound topics.
//! - [`reconciler`], [`prober`], [`balancer`]: the background tasks —
//!   which partitions are hosted, who is alive and leads, leadership back to
//!   preferred replicas.
//! - [`mover`], [`throttle`]: partition moves carried out at their
//!   leaders, and the byte-rate limit on what moves copy.
//! - [`raft_net`]: the peer connections (one per peer, shared by Raft, the
//!   prober and forwarding) and the Raft transport client.
//! - [`service`]: gRPC handlers — the client API, one file per RPC, and the
//!   peer-only Raft service.
//! - [`metrics`]: Prometheus metrics (per topic, or per partition), `/metrics`,
//!   `/health` (liveness) and `/ready` (caught up).
//! - [`security`]: TLS on both listeners (reloadable), the accept loops,
//!   principals from certificates.
//! - [`kafka`]: the Kafka wire protocol listener (ApiVersions, Metadata,
//!   Produce, Fetch, ListOffsets) over the same partitions.
//! - [`error`]: `NodeError`, stable codes, the mapping to `tonic::Status`.
//! - [`server`]: [`server::run`], which wires it all together.

pub mod balancer;
pub mod capacity;
pub mod census;
pub mod config;
pub mod controller;
pub mod coordinator;
pub mod error;
pub mod failover;
pub mod join;
pub mod kafka;
pub mod members;
pub mod metrics;
pub mod mover;
pub mod node;
pub mod partition;
pub mod prober;
pub mod proposal_order;
pub mod quiesce;
pub mod raft_net;
pub mod reconciler;
pub mod retention;
pub mod schema;
pub mod security;
pub mod server;
pub mod service;
pub mod settings;
pub mod start_pacer;
pub mod throttle;
pub mod topic_config;
