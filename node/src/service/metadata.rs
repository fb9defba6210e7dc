//! Metadata: topics with partitions, replicas, current leaders and offsets.

use replog_proto::pb::{BrokerInfo, MetadataRequest, MetadataResponse, PartitionMetadata, TopicMetadata};
use replog_raft_store::controller::TopicMeta;

use crate::node::Node;

pub fn handle(node: &Node, req: MetadataRequest) -> MetadataResponse {
    let meta = node.meta();
    let topics = meta
        .topics
        .values()
        // Internal topics only when asked for by name.
        .filter(|t| if req.topics.is_empty() { !t.name.starts_with("__") } else { req.topics.contains(&t.name) })
        .map(|t| topic_metadata(node, t))
        .collect();
    let nodes = node.members.all().into_iter().map(|(id, addr)| BrokerInfo { id, addr }).collect();
    MetadataResponse { nodes, topics }
}

pub fn topic_metadata(node: &Node, t: &TopicMeta) -> TopicMetadata {
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let leader = node.leader_of(p.group, &p.replicas);
            let (log_start_offset, high_watermark) = node.offsets_of(p.group, leader);
            PartitionMetadata {
                partition: i as u32,
                group_id: p.group,
                leader: leader.unwrap_or(0),
                replicas: p.replicas.clone(),
                log_start_offset,
                high_watermark,
            }
        })
        .collect();
    TopicMetadata { name: t.name.clone(), topic_id: t.id, partitions, configs: crate::topic_config::render(&t.config) }
}
