//! The replog Rust SDK.
//!
//! - [`Client`] ([`client`]): bootstrap addresses, a metadata cache
//!   (topic → partitions → leader), and leader-routed requests that refresh
//!   the cache and retry with backoff on NOT_LEADER / UNAVAILABLE within a
//!   deadline.
//! - [`Producer`] ([`producer`]): partitions by key, holds records in a
//!   bounded buffer, batches and compresses them per partition, keeps up to
//!   `max_in_flight` batches in flight per partition without reordering,
//!   and resolves each record to an [`Ack`]: its partition and, with
//!   acks=all, its offset.
//! - [`PartitionReader`] ([`consumer`]): reads one partition from an offset.
//! - [`Error`] ([`error`]): the SDK's errors, carrying the broker's stable code.
//! - `cli`: the `replog` command-line tool, one file per subcommand.

pub mod client;
pub mod consumer;
pub mod error;
pub mod producer;

#[doc(hidden)]
pub mod cli;

pub use client::{Client, ClientConfig, PartitionInfo, TopicInfo};
pub use consumer::{ConsumedRecord, FetchOptions, PartitionReader};
pub use error::{Error, Result};
pub use producer::{Ack, OnFull, Producer, ProducerConfig, ProducerStats, SendHandle};
pub use replog_proto::batch::{Compression, Record};
pub use replog_proto::codes::ErrorCode;
pub use replog_proto::pb::Acks;
