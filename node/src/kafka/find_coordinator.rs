//! FindCoordinator (v0–4; v4 asks for several keys at once): a group's
//! coordinator is the leader of the `__consumer_offsets` partition the
//! group hashes to, the same node the SDK's FindCoordinator names, given
//! by its Kafka address. The first call in a cluster creates the topic, as
//! the SDK's does. Only group keys are served (no transactions).

use std::sync::Arc;

use kafka_protocol::ResponseError as K;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use replog_proto::pb;
use tonic::Request;

use super::metadata::brokers;
use crate::error::NodeError;
use crate::node::Node;
use crate::service::{create_topic, group, on_controller};

/// Key type of a consumer group.
const GROUP_KEY: i8 = 0;

/// `(node id, host, port)` of `key`'s coordinator, or a Kafka error code
/// with a message.
async fn locate(node: &Arc<Node>, key: &str, key_type: i8) -> Result<(i32, String, i32), (i16, String)> {
    if key_type != GROUP_KEY {
        return Err((K::InvalidRequest.code(), format!("key type {key_type} is not served: only groups (0)")));
    }
    let create = || async {
        let live = node.live_nodes().len() as u32;
        let req = Request::new(pb::CreateTopicRequest {
            name: crate::coordinator::GROUPS_TOPIC.into(),
            partitions: node.config.group_partitions,
            replication_factor: live.clamp(1, 3),
            configs: Default::default(),
        });
        on_controller(node, req, create_topic::handle, |mut c, r| async move { c.create_topic(r).await })
            .await
            .map(|_| ())
    };
    let req = pb::FindCoordinatorRequest { group: key.to_string() };
    let found = group::find_coordinator::handle(node.clone(), req, create).await.map_err(|e| {
        let code = match &e {
            NodeError::InvalidRequest(_) => K::InvalidGroupId.code(),
            _ => K::CoordinatorNotAvailable.code(),
        };
        (code, e.to_string())
    })?;
    let not_available =
        || (K::CoordinatorNotAvailable.code(), "the group's coordinator has no leader right now".to_string());
    if found.node_id == 0 {
        return Err(not_available());
    }
    // A leader without a Kafka listener is no coordinator to a Kafka client.
    let (host, port) = brokers(node).remove(&found.node_id).ok_or_else(not_available)?;
    Ok((found.node_id as i32, host, port as i32))
}

pub async fn handle(node: &Arc<Node>, req: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    if version >= 4 {
        let mut coordinators = Vec::with_capacity(req.coordinator_keys.len());
        for key in req.coordinator_keys {
            let c = match locate(node, key.as_str(), req.key_type).await {
                Ok((id, host, port)) => Coordinator::default()
                    .with_node_id(BrokerId(id))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port),
                Err((code, msg)) => Coordinator::default()
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(msg))),
            };
            coordinators.push(c.with_key(key));
        }
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match locate(node, req.key.as_str(), if version == 0 { GROUP_KEY } else { req.key_type }).await {
        Ok((id, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(id))
            .with_host(StrBytes::from_string(host))
            .with_port(port),
        Err((code, msg)) => {
            let r = FindCoordinatorResponse::default().with_node_id(BrokerId(-1)).with_port(-1).with_error_code(code);
            if version >= 1 { r.with_error_message(Some(StrBytes::from_string(msg))) } else { r }
        }
    }
}
