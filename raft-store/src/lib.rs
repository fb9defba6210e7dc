//! openraft storage for replog on sled.
//!
//! - [`error`]: [`StoreError`] for the read path and [`Rejection`], what a
//!   state machine refuses.
//! - [`types`]: the Raft type configuration shared by every group, and the
//!   commands (`Request`) and results (`Response`) entries carry.
//! - [`store`]: the node's storage — segment logs per group, one sled
//!   database for small state — and the group-commit flusher that makes
//!   appends durable (fdatasync).
//! - [`segment`]: a group's Raft log as append-only segment files.
//! - [`disk`]: free space on the data volume: refusing produce, holding back
//!   appends and the ballast that keeps sled writable on a full disk.
//! - [`observe`]: the [`observe::Observer`] storage reports its work to
//!   (flush rounds, appends, applies), for the node's metrics.
//! - [`log_store`]: `RaftLogStorage` for one group.
//! - [`partition`]: a partition's state — the offset index over the Raft
//!   log, the high watermark — and the read path for fetch.
//! - [`controller`]: the cluster metadata the controller group replicates.
//! - [`registry`]: the schema registry inside it (subjects, versions, ids).
//! - [`producers`]: idempotent-producer sequence state and the dedup check.
//! - [`groups`]: consumer groups — members, assignors, committed offsets —
//!   kept by partitions of the internal `__consumer_offsets` topic.
//! - [`queues`]: queue groups — locks, acks, redelivery and dead letters —
//!   kept by the state machine of the partition they consume.
//! - [`state_machine`]: `RaftStateMachine` for both kinds of group.
//! - [`snapshot`]: snapshots carrying every retained record — built with
//!   hard links, streamed and installed with bounded memory.
//!
//! Storage shape: the Raft log *is* the partition log. A producer batch is
//! one Raft entry, written once to a segment file; applying it only records
//! `base offset → log index` in the offset index. Logs are not purged by
//! openraft (snapshot policy `Never`); only retention may release a prefix.

pub mod controller;
pub mod disk;
pub mod error;
pub mod groups;
pub mod log_store;
pub mod observe;
pub mod partition;
pub mod producers;
pub mod queues;
pub mod registry;
pub mod security;
pub mod segment;
pub mod snapshot;
pub mod state_machine;
pub mod store;
pub mod types;

pub use error::{Rejection, StoreError};
pub use log_store::LogStore;
pub use state_machine::GroupStateMachine;
pub use store::{FlushStats, Store, StoreConfig};
pub use types::*;
