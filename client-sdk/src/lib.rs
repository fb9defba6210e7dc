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
//! - [`GroupConsumer`] ([`group`]): a member of a consumer group — the
//!   coordinator assigns it partitions, it long-polls them and commits how
//!   far it got (at least once; see the module docs).
//! - [`Subscription`] ([`subscription`]): a partition as a flow-controlled
//!   server stream.
//! - [`admin`]: group administration (describe, list, reset, delete) and
//!   offsets by position or time ([`Client::list_offsets`]).
//! - [`QueueConsumer`] ([`queue`]): a member of a queue group — receives
//!   events locked to it, acks, releases or rejects them, renews locks.
//! - [`security`]: users (SCRAM-SHA-256 credentials computed here) and
//!   ACLs; TLS and credentials are [`ClientConfig`] settings.
//! - [`schema`]: the schema registry's calls, a caching
//!   [`schema::SchemaRegistry`], codecs (serde + JSON Schema, serde + Avro,
//!   prost + Protobuf) and typed producers and consumers.
//! - [`Error`] ([`error`]): the SDK's errors, carrying the broker's stable code.
//! - `cli`: the `replog` command-line tool, one file per subcommand.
//!
//! ```no_run
//! use replog_client::{Client, GroupConsumer, GroupConsumerConfig, Producer, ProducerConfig};
//!
//! # async fn run() -> replog_client::Result<()> {
//! let client = Client::connect(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]).await?;
//! let producer = Producer::new(client.clone(), ProducerConfig::default());
//! let (partition, offset) = producer.send("orders", Some("k".into()), "hello".into()).await?;
//! println!("written to orders/{partition} at {offset}");
//!
//! let mut consumer = GroupConsumer::new(client, "billing", GroupConsumerConfig::default());
//! consumer.subscribe(&["orders"]).await?;
//! let records = consumer.poll().await?;
//! # let _ = records;
//! consumer.close().await
//! # }
//! ```

pub mod admin;
pub mod certs;
pub mod client;
mod clock;
pub mod consumer;
pub mod error;
pub mod group;
pub mod membership;
pub mod producer;
pub mod queue;
pub mod schema;
pub mod security;
pub mod subscription;

// The CLI's doc comments are clap's help text, where `<NAME>` placeholders
// are the convention, not HTML.
#[doc(hidden)]
#[allow(rustdoc::invalid_html_tags)]
pub mod cli;

pub use admin::{
    CommittedOffset, Coordinator, GROUPS_TOPIC, GroupDescription, GroupListing, GroupMemberInfo, ListedOffset,
    OffsetCommit, OffsetSpec, TopicPartition,
};
pub use client::{Client, ClientConfig, PartitionInfo, TopicInfo, bootstrap_from_env};
pub use consumer::{ConsumedRecord, FetchOptions, PartitionReader};
pub use error::{Error, Result};
pub use group::{Assignor, AutoOffsetReset, GroupConsumer, GroupConsumerConfig, RebalanceEvent};
pub use producer::{Ack, OnFull, Producer, ProducerConfig, ProducerStats, SendHandle};
pub use queue::{QueueConfig, QueueConsumer, QueueMessage, QueuePartitionStats};
pub use replog_proto::batch::{Compression, Record};
pub use replog_proto::codes::ErrorCode;
pub use replog_proto::now_ms;
pub use replog_proto::pb::Acks;
pub use subscription::{SubscribeOptions, Subscription};
