//! Subscribe: a server stream of one partition's committed batches, from an
//! offset on, as they are committed.
//!
//! Flow control is the point of it. A task per subscription reads the
//! partition only once the previous response has left its one-slot queue,
//! and tonic takes a response from that queue only when HTTP/2 has window
//! to send it. A subscriber that stops reading therefore stops the reads:
//! the node holds at most the response being sent and the one queued,
//! however far behind the subscriber falls, instead of buffering the log.

use std::sync::Arc;
use std::time::Duration;

use replog_proto::pb::{FetchResponse, FetchedBatch, SubscribeRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{debug, instrument};

use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::partition::{Partition, ReadLimits};

/// Responses queued between the reading task and HTTP/2, besides the one
/// being sent.
const QUEUED_RESPONSES: usize = 1;
/// How long one read waits for records unless the request says; also how
/// soon an idle stream notices that the node is stopping.
const ROUND_WAIT: Duration = Duration::from_secs(1);
/// The longest a read waits for `min_bytes`, whatever the request asks.
const MAX_ROUND_WAIT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_BYTES: usize = 1 << 20;
const DEFAULT_MAX_RECORDS: usize = 10_000;
/// Upper bounds whatever the request asks: they bound what one stalled
/// subscriber can hold (two responses).
const MAX_RESPONSE_BYTES: usize = 4 << 20;
const MAX_RESPONSE_RECORDS: usize = 100_000;

pub type SubscribeStream = ReceiverStream<std::result::Result<FetchResponse, Status>>;

/// Checks the request and starts the stream; errors known up front
/// (unknown topic, not the leader) are the call's status rather than the
/// stream's first item.
#[instrument(skip_all, fields(topic = %req.topic, partition = req.partition, offset = req.offset))]
pub fn handle(node: Arc<Node>, req: SubscribeRequest) -> Result<SubscribeStream> {
    let partition = node.local_partition(&req.topic, req.partition)?;
    if !partition.is_leader() {
        return Err(node.members.not_leader(partition.name().to_string(), partition.leader()));
    }
    let bounded = |v: u32, default: usize, max: usize| if v == 0 { default } else { (v as usize).min(max) };
    let limits = ReadLimits {
        max_bytes: bounded(req.max_bytes, DEFAULT_MAX_BYTES, MAX_RESPONSE_BYTES),
        max_records: bounded(req.max_records, DEFAULT_MAX_RECORDS, MAX_RESPONSE_RECORDS),
        max_wait: match req.max_wait_ms {
            0 => ROUND_WAIT,
            ms => Duration::from_millis(ms as u64).min(MAX_ROUND_WAIT),
        },
        min_bytes: (req.min_bytes as usize).min(MAX_RESPONSE_BYTES),
        any_replica: false,
    };
    let (tx, rx) = mpsc::channel(QUEUED_RESPONSES);
    tokio::spawn(pump(node, partition, req.offset, limits, tx));
    Ok(ReceiverStream::new(rx))
}

/// Reads and sends until the subscriber goes away, the node stops, or a
/// read fails (the error is the stream's last item).
async fn pump(
    node: Arc<Node>,
    partition: Arc<Partition>,
    mut offset: u64,
    limits: ReadLimits,
    tx: mpsc::Sender<std::result::Result<FetchResponse, Status>>,
) {
    node.metrics.subscriptions.inc();
    let _open = OpenStream(node.clone());
    loop {
        if node.store.closing() {
            let _ = tx.try_send(Err(NodeError::Unavailable("the node is stopping; subscribe again".into()).into()));
            return;
        }
        // Room first, then the read: nothing is read that has nowhere to go.
        let permit = tokio::select! {
            p = tx.reserve() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = tokio::time::sleep(ROUND_WAIT) => continue,
        };
        let read = tokio::select! {
            r = partition.read(offset, limits) => r,
            _ = tx.closed() => return,
        };
        match read {
            Ok(r) => {
                let Some(last) = r.batches.last() else { continue };
                offset = last.base_offset + last.record_count as u64;
                node.metrics.subscribe_bytes.inc_by(r.batches.iter().map(|b| b.batch.len() as u64).sum());
                permit.send(Ok(FetchResponse {
                    batches: r
                        .batches
                        .into_iter()
                        .map(|b| FetchedBatch { base_offset: b.base_offset, batch: b.batch })
                        .collect(),
                    high_watermark: r.offsets.high_watermark,
                    log_start_offset: r.offsets.log_start_offset,
                }));
            }
            Err(e) => {
                debug!(partition = partition.name(), offset, "subscription ends: {e}");
                permit.send(Err(e.into()));
                return;
            }
        }
    }
}

/// Counts a subscription as open for as long as its task runs.
struct OpenStream(Arc<Node>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.metrics.subscriptions.dec();
    }
}
