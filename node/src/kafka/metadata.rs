//! Metadata: brokers are the nodes with a Kafka listener, each at its
//! advertised Kafka address (this node's from its config, the others' from
//! what they report to the prober); a Kafka partition is a replog
//! partition, its leader the Raft leader, its replicas and ISR the
//! partition's replicas, its leader epoch -1 (unknown). Topics are not
//! created by a Metadata request.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use replog_raft_store::NodeId;
use replog_raft_store::controller::TopicMeta;

use crate::node::Node;

/// What Kafka clients are told the cluster is called.
pub const CLUSTER_ID: &str = "replog";

/// Every node with a known Kafka address: `id → (host, port)`.
pub fn brokers(node: &Node) -> BTreeMap<NodeId, (String, u16)> {
    let members = node.members.all();
    let views = node.peer_views();
    members
        .keys()
        .filter_map(|id| {
            let addr = if *id == node.id {
                node.config.kafka_advertised_addr()?
            } else {
                views.get(id)?.info.as_ref()?.kafka_addr.clone()
            };
            let (host, port) = addr.rsplit_once(':')?;
            Some((*id, (host.to_string(), port.parse().ok()?)))
        })
        .collect()
}

pub fn handle(node: &Node, req: MetadataRequest, version: i16) -> MetadataResponse {
    let meta = node.meta();
    let brokers = brokers(node);
    // v0: an empty list asks for every topic; v1 on: a null one does.
    let wanted: Option<Vec<Option<TopicName>>> = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t.into_iter().map(|t| t.name).collect()),
    };
    let topics = match wanted {
        None => meta.topics.values().filter(|t| !t.name.starts_with("__")).map(|t| topic(node, t, &brokers)).collect(),
        Some(names) => names
            .into_iter()
            .map(|name| match name.as_ref().and_then(|n| meta.topics.get(n.0.as_str())) {
                Some(t) => topic(node, t, &brokers),
                // Unknown, or asked for by id only (ids are not served).
                None => MetadataResponseTopic::default()
                    .with_name(name)
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
            })
            .collect(),
    };
    let controller = node.controller.leader().filter(|l| brokers.contains_key(l)).map_or(-1, |l| l as i32);
    MetadataResponse::default()
        .with_brokers(
            brokers
                .iter()
                .map(|(id, (host, port))| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(*id as i32))
                        .with_host(StrBytes::from_string(host.clone()))
                        .with_port(*port as i32)
                })
                .collect(),
        )
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(BrokerId(controller))
        .with_topics(topics)
}

fn topic(node: &Node, t: &TopicMeta, brokers: &BTreeMap<NodeId, (String, u16)>) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let replicas: Vec<BrokerId> = p.replicas.iter().map(|r| BrokerId(*r as i32)).collect();
            let base = MetadataResponsePartition::default()
                .with_partition_index(i as i32)
                .with_leader_epoch(-1)
                .with_replica_nodes(replicas.clone())
                .with_isr_nodes(replicas);
            // A leader a client could not reach (none known, or no Kafka
            // listener) is no leader to it: it asks again later.
            match node.leader_of(p.group, &p.replicas).filter(|l| brokers.contains_key(l)) {
                Some(l) => base.with_leader_id(BrokerId(l as i32)),
                None => base.with_leader_id(BrokerId(-1)).with_error_code(ResponseError::LeaderNotAvailable.code()),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(topic_uuid(t.id))
        .with_is_internal(t.name.starts_with("__"))
        .with_partitions(partitions)
}

/// A stable Kafka topic id from the replog topic id ("replog" in the high
/// bytes, so it is never the all-zero id Kafka reads as none).
fn topic_uuid(id: u64) -> uuid::Uuid {
    uuid::Uuid::from_u64_pair(0x7265_706c_6f67_0000, id)
}
