//! A partition as a server stream: the `Subscribe` RPC.
//!
//! Where [`PartitionReader`] asks for each batch of records, a
//! [`Subscription`] asks once and the leader sends batches as they are
//! committed. It is flow-controlled end to end: the node reads the next
//! response only when HTTP/2 has taken the previous one, and HTTP/2 takes
//! it only as this side reads. A subscriber that stops calling
//! [`Subscription::next`] therefore stops the node's reads instead of
//! growing its memory. Each subscription has a connection of its own, so a
//! stalled one cannot take the window other calls need.

use std::time::Duration;

use futures::Stream;
use replog_proto::pb;
use tracing::debug;

use crate::client::Client;
use crate::consumer::{ConsumedRecord, PartitionReader};
use crate::error::{Error, Result};
use crate::group::transient;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Limits of each response of a [`Subscription`].
///
/// ```
/// let opts = replog_client::SubscribeOptions { max_bytes: 256 << 10, ..Default::default() };
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SubscribeOptions {
    /// Bytes of batches per response (at least one batch); 0: the node's
    /// default (1 MiB).
    pub max_bytes: u32,
    pub max_records: u32,
    /// A response waits for this many bytes, up to `max_wait_ms`.
    pub min_bytes: u32,
    pub max_wait_ms: u32,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions { max_bytes: 1 << 20, max_records: 10_000, min_bytes: 0, max_wait_ms: 0 }
    }
}

/// One partition streamed from an offset on, across leader failovers.
///
/// ```no_run
/// # async fn f(client: replog_client::Client) -> replog_client::Result<()> {
/// let mut sub = client.subscribe("orders", 0, 0);
/// loop {
///     for r in sub.next().await? {
///         println!("{} @{}", r.partition, r.offset);
///     }
/// #   break;
/// }
/// # Ok(()) }
/// ```
pub struct Subscription {
    client: Client,
    reader: PartitionReader,
    opts: SubscribeOptions,
    stream: Option<(String, tonic::Streaming<pb::FetchResponse>)>,
    attempt: u32,
}

impl Client {
    /// Streams `topic`/`partition` from `offset` on; nothing is sent until
    /// the first [`Subscription::next`].
    pub fn subscribe(&self, topic: &str, partition: u32, offset: u64) -> Subscription {
        Subscription {
            client: self.clone(),
            reader: PartitionReader::new(self.clone(), topic, partition, offset),
            opts: SubscribeOptions::default(),
            stream: None,
            attempt: 0,
        }
    }
}

impl Subscription {
    pub fn with_options(mut self, opts: SubscribeOptions) -> Subscription {
        self.opts = opts;
        self
    }

    /// The offset of the next record.
    pub fn position(&self) -> u64 {
        self.reader.position()
    }

    /// The high watermark of the last response.
    pub fn high_watermark(&self) -> u64 {
        self.reader.high_watermark()
    }

    /// The next committed records, waiting until there are some. A leader
    /// failover or a lost connection is followed by a new subscription at
    /// the leader from the next offset, never returned; errors are the
    /// broker's refusals (unknown topic, offset out of range) and batches
    /// that cannot be decoded (the position then stays before them).
    pub async fn next(&mut self) -> Result<Vec<ConsumedRecord>> {
        let mut backoff = BACKOFF_MIN;
        loop {
            let (addr, stream) = match &mut self.stream {
                Some(s) => s,
                None => match self.open().await {
                    Ok(s) => self.stream.insert(s),
                    Err(e) if transient(&e) => {
                        debug!("subscribe failed, retrying in {backoff:?}: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let e = match stream.message().await {
                Ok(Some(resp)) => {
                    self.attempt = 0;
                    return self.reader.take(&resp).inspect_err(|_| self.stream = None);
                }
                // The node ended the stream without a word: subscribe again.
                Ok(None) => Error::Transport { addr: addr.clone(), message: "the subscription ended".into() },
                Err(s) => Error::from_status(addr, s),
            };
            self.stream = None;
            self.client.learn(self.reader.topic(), self.reader.partition(), &e);
            if !transient(&e) {
                return Err(e);
            }
            self.attempt += 1;
            debug!("subscription broke, subscribing again: {e}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn open(&mut self) -> Result<(String, tonic::Streaming<pb::FetchResponse>)> {
        let (topic, partition) = (self.reader.topic().to_string(), self.reader.partition());
        let addr = self.client.partition_addr(&topic, partition, self.attempt).await?;
        let mut conn = self.client.new_conn(&addr)?;
        let req = pb::SubscribeRequest {
            topic: topic.clone(),
            partition,
            offset: self.reader.position(),
            max_bytes: self.opts.max_bytes,
            max_records: self.opts.max_records,
            min_bytes: self.opts.min_bytes,
            max_wait_ms: self.opts.max_wait_ms,
        };
        match conn.subscribe(req).await {
            Ok(r) => Ok((addr, r.into_inner())),
            Err(s) => {
                let e = Error::from_status(&addr, s);
                self.client.learn(&topic, partition, &e);
                self.attempt += 1;
                Err(e)
            }
        }
    }

    /// The subscription as a stream of record batches.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// # async fn f(client: replog_client::Client) {
    /// let mut batches = std::pin::pin!(client.subscribe("orders", 0, 0).into_stream());
    /// while let Some(Ok(batch)) = batches.next().await {
    ///     println!("{} records", batch.len());
    /// #   break;
    /// }
    /// # }
    /// ```
    pub fn into_stream(self) -> impl Stream<Item = Result<Vec<ConsumedRecord>>> {
        futures::stream::unfold(self, |mut s| async move {
            let r = s.next().await;
            Some((r, s))
        })
    }
}
