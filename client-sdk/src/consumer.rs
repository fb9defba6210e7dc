//! Reading a partition from an offset.

use std::sync::Arc;

use bytes::Bytes;
use replog_proto::batch;
use replog_proto::pb;

use crate::client::Client;
use crate::error::{Error, Result};

/// A record read back, with the offset the partition gave it.
///
/// ```no_run
/// # async fn f(client: replog_client::Client) -> replog_client::Result<()> {
/// let mut reader = replog_client::PartitionReader::new(client, "orders", 0, 0);
/// for r in reader.poll().await? {
///     println!("{}/{} @{}: {:?}", r.topic, r.partition, r.offset, r.value);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Shared by every record of a response, so naming it costs no
    /// allocation per record.
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
}

/// Limits and long-poll settings of each fetch of a [`PartitionReader`]
/// (and of the fetchers of a [`GroupConsumer`](crate::GroupConsumer)).
///
/// ```
/// use replog_client::FetchOptions;
/// // Wait up to a second for 64 KiB to gather instead of answering at the first record.
/// let opts = FetchOptions { min_bytes: 64 << 10, max_wait_ms: 1_000, ..FetchOptions::default() };
/// assert_eq!(opts.max_records, 10_000);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    pub max_bytes: u32,
    pub max_records: u32,
    /// Long-poll wait when no record (or fewer than `min_bytes`) is
    /// available yet.
    pub max_wait_ms: u32,
    /// Long-poll: the broker answers once this many bytes are there, or the
    /// wait ends (0: as soon as any record is).
    pub min_bytes: u32,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions { max_bytes: 4 << 20, max_records: 10_000, max_wait_ms: 500, min_bytes: 0 }
    }
}

/// Reads one partition in offset order, from a starting offset. No group,
/// no committed offset: the reader keeps its position itself.
///
/// ```no_run
/// use replog_client::{Client, FetchOptions, OffsetSpec, PartitionReader};
///
/// # async fn run() -> replog_client::Result<()> {
/// let client = Client::connect(["127.0.0.1:7001"]).await?;
/// let start = client.list_offsets("orders", 0, OffsetSpec::Earliest).await?.offset;
/// let mut reader = PartitionReader::new(client, "orders", 0, start)
///     .with_options(FetchOptions { max_wait_ms: 1_000, ..FetchOptions::default() });
/// loop {
///     for r in reader.poll().await? {
///         println!("orders/0 @{}: {:?}", r.offset, r.value);
///     }
///     println!("at {} of {}", reader.position(), reader.high_watermark());
/// #   break;
/// }
/// // Everything up to the end as it is now, in one call.
/// reader.seek(start);
/// let all = reader.read_to_end().await?;
/// # let _ = all;
/// # Ok(()) }
/// ```
pub struct PartitionReader {
    client: Client,
    topic: Arc<str>,
    partition: u32,
    next_offset: u64,
    opts: FetchOptions,
    high_watermark: u64,
    log_start_offset: u64,
    replica_addr: Option<String>,
}

impl PartitionReader {
    pub fn new(client: Client, topic: &str, partition: u32, offset: u64) -> PartitionReader {
        PartitionReader {
            client,
            topic: topic.into(),
            partition,
            next_offset: offset,
            opts: FetchOptions::default(),
            high_watermark: 0,
            log_start_offset: 0,
            replica_addr: None,
        }
    }

    pub fn with_options(mut self, opts: FetchOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Reads from the replica on node address `addr` instead of the leader
    /// (committed records only). For comparing replicas.
    pub fn from_replica(mut self, addr: &str) -> Self {
        self.replica_addr = Some(addr.to_string());
        self
    }

    pub fn position(&self) -> u64 {
        self.next_offset
    }

    pub fn seek(&mut self, offset: u64) {
        self.next_offset = offset;
    }

    /// High watermark seen on the last fetch.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    pub fn log_start_offset(&self) -> u64 {
        self.log_start_offset
    }

    /// The next records at or after the position (empty if none arrived
    /// within the long-poll wait), advancing the position past them.
    ///
    /// A response is taken whole or not at all: if any of its batches
    /// cannot be decoded, the error is returned and the position stays
    /// where it was, so the records of the batches before the bad one are
    /// read again by the next poll instead of being skipped.
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>> {
        let req = pb::FetchRequest {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: self.next_offset,
            max_bytes: self.opts.max_bytes,
            max_records: self.opts.max_records,
            max_wait_ms: self.opts.max_wait_ms,
            replica_read: false,
            min_bytes: self.opts.min_bytes,
        };
        let resp = self.client.fetch_raw(req, self.replica_addr.as_deref()).await?;
        self.take(&resp)
    }

    /// Takes a whole fetch response (of a poll or a subscription), moving
    /// the position past its records; on error nothing moves.
    pub(crate) fn take(&mut self, resp: &pb::FetchResponse) -> Result<Vec<ConsumedRecord>> {
        let (out, next_offset) = self.accept(resp)?;
        self.next_offset = next_offset;
        self.high_watermark = resp.high_watermark;
        self.log_start_offset = resp.log_start_offset;
        Ok(out)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Decodes a whole fetch response: its records from the position on, and
    /// the position after them. Changes nothing.
    fn accept(&self, resp: &pb::FetchResponse) -> Result<(Vec<ConsumedRecord>, u64)> {
        let mut next = self.next_offset;
        let mut out = Vec::new();
        for b in &resp.batches {
            let (_, records) = batch::decode(&b.batch).map_err(|e| {
                Error::Corrupt(format!("{}/{}: batch at offset {}: {e}", self.topic, self.partition, b.base_offset))
            })?;
            for (i, r) in records.into_iter().enumerate() {
                let offset = b.base_offset + i as u64;
                // A fetch returns whole batches; skip what lies before the position.
                if offset < next {
                    continue;
                }
                if offset != next {
                    return Err(Error::Corrupt(format!(
                        "{}/{}: expected offset {next}, broker returned {offset}",
                        self.topic, self.partition
                    )));
                }
                next = offset + 1;
                out.push(ConsumedRecord {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    offset,
                    timestamp_ms: r.timestamp_ms,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                });
            }
        }
        Ok((out, next))
    }

    /// Reads everything from the position up to the high watermark observed
    /// at the first fetch.
    pub async fn read_to_end(&mut self) -> Result<Vec<ConsumedRecord>> {
        let mut opts = self.opts;
        opts.max_wait_ms = 0;
        let saved = std::mem::replace(&mut self.opts, opts);
        let mut out = Vec::new();
        let mut end: Option<u64> = None;
        let res = loop {
            let recs = match self.poll().await {
                Ok(r) => r,
                Err(e) => break Err(e),
            };
            let end = *end.get_or_insert(self.high_watermark);
            if recs.is_empty() && self.next_offset < end {
                break Err(Error::Corrupt(format!(
                    "{}/{}: no records at {} below the high watermark {end}",
                    self.topic, self.partition, self.next_offset
                )));
            }
            out.extend(recs);
            if self.next_offset >= end {
                break Ok(());
            }
        };
        self.opts = saved;
        res.map(|_| out)
    }
}
