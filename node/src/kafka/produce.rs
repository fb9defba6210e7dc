//! Produce (v3–9): each partition's Kafka batches become one replog batch
//! ([`records::to_replog`]: CRC32C checked, RecordBatch v2 only) and go
//! through the same produce handler as a gRPC produce — leader check,
//! limits, schema validation, disk space, metrics — so the answer comes
//! after the commit, with the base offset the state machine assigned.
//! acks=1 is served as acks=all (a Raft majority on disk); acks=0 gets no
//! response at all.
//!
//! **Idempotent producers**: the batch's producer id, epoch and base
//! sequence go into the replog batch (see [`records`]), and the
//! partition's state machine checks them against the same per-producer
//! state as the SDK's batches: a batch it already holds (one of the
//! producer's last five) is answered with its original base offset and not
//! appended again, a gap gets OUT_OF_ORDER_SEQUENCE_NUMBER, an epoch older
//! than the partition's INVALID_PRODUCER_EPOCH. A producer id the
//! controller never handed out gets UNKNOWN_PRODUCER_ID.
//!
//! **Order**: a connection's requests are handled concurrently, but the
//! appends of one Produce request reach Raft before those of the next
//! ([`Order`]), as a Kafka broker appends a connection's requests in turn;
//! otherwise an idempotent producer's pipelined batches could reach the log
//! out of sequence and be refused.

use std::sync::Arc;
use std::time::Duration;

use futures::future::maybe_done;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, ProduceResponse, TopicProduceResponse};
use kafka_protocol::protocol::StrBytes;
use replog_proto::batch::{self, HEADER_LEN};
use replog_proto::pb;
use tokio::sync::oneshot;
use tracing::debug;

use super::{errors, records};
use crate::node::Node;

/// How long a produce naming a producer id this node's controller replica
/// has not seen handed out waits for that replica to catch up.
const PRODUCER_ID_WAIT: Duration = Duration::from_secs(2);

/// A Produce request's place among its connection's: it starts its appends
/// once the request before it has started its own (`after` resolves), and
/// lets the next one start (drops `started`) once its appends are in
/// Raft's queue — or it refused them.
pub struct Order {
    pub after: Option<oneshot::Receiver<()>>,
    pub started: oneshot::Sender<()>,
}

impl Order {
    /// The first request's place, and the receiver the next one waits on.
    pub fn first() -> (Order, oneshot::Receiver<()>) {
        Order::after(None)
    }

    /// The place after the request `after` belongs to.
    pub fn after(after: Option<oneshot::Receiver<()>>) -> (Order, oneshot::Receiver<()>) {
        let (started, next) = oneshot::channel();
        (Order { after, started }, next)
    }
}

/// The response, or none for acks=0.
pub async fn handle(node: &Arc<Node>, req: ProduceRequest, _version: i16, order: Order) -> Option<ProduceResponse> {
    let acks = match req.acks {
        0 => Some(pb::Acks::None),
        1 | -1 => Some(pb::Acks::All),
        _ => None,
    };
    let refuse_all = |code: i16| -> Vec<TopicProduceResponse> {
        req.topic_data
            .iter()
            .map(|t| {
                TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_partition_responses(t.partition_data.iter().map(|p| failed(p.index, code, None)).collect())
            })
            .collect()
    };
    let responses = match acks {
        None => refuse_all(ResponseError::InvalidRequiredAcks.code()),
        // Transactions need InitProducerId and the transaction APIs, which
        // are not served.
        Some(_) if req.transactional_id.is_some() => {
            refuse_all(ResponseError::TransactionalIdAuthorizationFailed.code())
        }
        Some(acks) => {
            if let Some(before) = order.after {
                // Resolves (with an error) once the request before has
                // started its appends or given up.
                let _ = before.await;
            }
            let timeout_ms = req.timeout_ms.max(0) as u32;
            for t in &req.topic_data {
                if !node.meta().topics.contains_key(t.name.0.as_str()) {
                    super::admin::auto_create(node, t.name.0.as_str()).await;
                }
            }
            let mut names = Vec::with_capacity(req.topic_data.len());
            let mut parts = Vec::new();
            for t in req.topic_data {
                let name = t.name.0.to_string();
                let count = t.partition_data.len();
                for p in t.partition_data {
                    let name = name.clone();
                    // Unconstrained: a first poll cut short by the task's
                    // cooperative budget would leave the append unqueued.
                    parts.push(Box::pin(maybe_done(tokio::task::unconstrained(async move {
                        partition(node, name, p.index, p.records, acks, timeout_ms).await
                    }))));
                }
                names.push((t.name, count));
            }
            // Polled once each, every append is in Raft's queue (or
            // refused): the next request may start its own.
            for p in parts.iter_mut() {
                let _ = futures::poll!(p.as_mut());
            }
            drop(order.started);
            futures::future::join_all(parts.iter_mut().map(|p| p.as_mut())).await;
            let mut results = parts.into_iter().map(|mut p| p.as_mut().take_output().expect("joined above"));
            names
                .into_iter()
                .map(|(name, count)| {
                    TopicProduceResponse::default()
                        .with_name(name)
                        .with_partition_responses(results.by_ref().take(count).collect())
                })
                .collect()
        }
    };
    if acks == Some(pb::Acks::None) {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}

fn failed(index: i32, code: i16, message: Option<String>) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code)
        .with_base_offset(-1)
        .with_log_start_offset(-1)
        .with_error_message(message.map(StrBytes::from_string))
}

async fn partition(
    node: &Node,
    topic: String,
    index: i32,
    data: Option<bytes::Bytes>,
    acks: pb::Acks,
    timeout_ms: u32,
) -> PartitionProduceResponse {
    let Ok(p) = u32::try_from(index) else {
        return failed(index, ResponseError::UnknownTopicOrPartition.code(), None);
    };
    let data = data.unwrap_or_default();
    let max_uncompressed = node.config.max_batch_bytes.saturating_sub(HEADER_LEN);
    let batch = match records::to_replog(&data, max_uncompressed) {
        Ok(b) => b,
        Err(r) => {
            debug!(%topic, partition = index, code = r.code, reason = %r.message, "kafka produce refused");
            return failed(index, r.code, Some(r.message));
        }
    };
    if let Some(pid) = batch::peek_header(&batch).ok().map(|h| h.producer.producer_id).filter(|id| *id >= 0)
        && !handed_out(node, pid).await
    {
        let e = ResponseError::UnknownProducerId;
        return failed(index, e.code(), Some(format!("producer id {pid} was never handed out by InitProducerId")));
    }
    let req = pb::ProduceRequest { topic: topic.clone(), partition: p, batch, acks: acks as i32, timeout_ms };
    match crate::service::produce::handle(node, req).await {
        Ok(r) => {
            let log_start =
                node.local_partition(&topic, p).map(|part| part.offsets().log_start_offset as i64).unwrap_or(-1);
            PartitionProduceResponse::default()
                .with_index(index)
                .with_base_offset(r.base_offset.map_or(-1, |o| o as i64))
                .with_log_append_time_ms(-1)
                .with_log_start_offset(log_start)
        }
        Err(e) => {
            debug!(%topic, partition = index, error = %e, "kafka produce failed");
            failed(index, errors::code(&e), Some(e.to_string()))
        }
    }
}

/// Whether the controller handed out `pid` (its counter is past it),
/// waiting a little for this node's controller replica when it is not yet:
/// the id may have been handed out through another node a moment ago.
async fn handed_out(node: &Node, pid: i64) -> bool {
    let mut meta = node.controller.watch();
    tokio::time::timeout(PRODUCER_ID_WAIT, meta.wait_for(|m| m.next_producer_id > pid)).await.is_ok_and(|r| r.is_ok())
}
