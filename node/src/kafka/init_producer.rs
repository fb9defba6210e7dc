//! InitProducerId (v0–4): an idempotent Kafka producer's id, handed out by
//! the controller group through Raft exactly as the SDK's (the gRPC
//! `InitProducer` handler, run at the controller leader), so producer ids
//! of both protocols come from one counter and never collide. Each call
//! gets a fresh id at epoch 0 — also when a client asks to bump the epoch
//! of the id it holds (v3+), as Kafka does for a producer without a
//! transactional id.
//!
//! The id then travels in the producer's record batches, and the
//! partition's state machine checks their sequences against the same
//! per-producer state the SDK's batches use (`raft-store/src/producers.rs`).
//!
//! A transactional id is refused with TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
//! transactions are not served, and clients treat that code as final (the
//! same code a transactional Produce gets).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ProducerId;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use replog_proto::pb;
use tonic::Request;
use tracing::{debug, info};

use crate::node::Node;
use crate::service::{init_producer, on_controller};

pub async fn handle(node: &Arc<Node>, req: InitProducerIdRequest, _version: i16) -> InitProducerIdResponse {
    let refused = |code: i16| {
        InitProducerIdResponse::default().with_error_code(code).with_producer_id(ProducerId(-1)).with_producer_epoch(-1)
    };
    if let Some(tid) = &req.transactional_id {
        info!(transactional_id = %tid.0, "kafka InitProducerId with a transactional id refused: transactions are not served");
        return refused(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    let r =
        on_controller(node, Request::new(pb::InitProducerRequest {}), init_producer::handle, |mut c, r| async move {
            c.init_producer(r).await
        })
        .await;
    match r {
        Ok(r) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(r.producer_id))
            .with_producer_epoch(r.epoch as i16),
        Err(e) => {
            // The controller group has no leader for the moment (or it
            // moved while answering): a code clients retry after a backoff.
            debug!(error = %e, "kafka InitProducerId failed");
            refused(ResponseError::CoordinatorNotAvailable.code())
        }
    }
}
