//! The Kafka wire protocol beside the gRPC API (docs/kafka.md): one more
//! door to the same partitions. A Kafka partition is a replog partition, a
//! Kafka broker a replog node; requests go through the same [`Partition`]
//! calls (and the produce path through the same handler) as gRPC ones, so
//! a record produced on either side is read on the other.
//!
//! - [`conn`]: the listener, frames (length-prefixed, bounded), the
//!   request header, responses in request order per connection.
//! - [`versions`]: the APIs and versions served, and ApiVersions.
//! - [`metadata`]: brokers and partitions (leader = Raft leader).
//! - [`produce`], [`fetch`], [`list_offsets`]: one file per request.
//! - [`find_coordinator`], [`groups`] (JoinGroup, SyncGroup, Heartbeat,
//!   LeaveGroup), [`offsets`] (OffsetCommit, OffsetFetch): Kafka's classic
//!   group protocol on replog's consumer groups, assignment by the server.
//! - [`records`]: Kafka RecordBatch v2 ↔ replog batches, converted at the
//!   edge, with decompression bounded.
//! - [`errors`]: replog errors as Kafka error codes.
//! - [`init_producer`]: InitProducerId, producer ids through the controller
//!   as the SDK's; the sequences are checked by the partitions' state.
//! - [`admin`]: CreateTopics, DeleteTopics and topic auto-creation over
//!   replog's own create and delete; [`describe_configs`]: topic settings
//!   and node configuration.
//!
//! The messages themselves are the `kafka-protocol` crate's (generated from
//! Kafka's own message specs); nothing here encodes a field by hand.
//!
//! [`Partition`]: crate::partition::Partition

pub mod admin;
pub mod conn;
pub mod describe_configs;
pub mod errors;
pub mod fetch;
pub mod find_coordinator;
pub mod groups;
pub mod init_producer;
pub mod list_offsets;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod records;
pub mod versions;

pub use conn::serve;
