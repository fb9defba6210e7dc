//! CreateTopics (v2–5), DeleteTopics (v1–4) and topic auto-creation, over
//! replog's own create and delete paths (`service/create_topic.rs`,
//! `service/delete_topic.rs`, run at the controller leader wherever the
//! request arrived), so a topic made by a Kafka client is placed, checked
//! and configured exactly as one made with `replog topic create`.
//!
//! - **Answers wait on this node's metadata**: a create is answered once
//!   every partition has a leader this node knows (a Metadata request
//!   sent here next finds the topic usable), a delete once the topic is
//!   gone from this node's metadata and its partitions are no longer hosted
//!   here — each within the request's timeout (15 s when it gives none);
//!   past it the answer is REQUEST_TIMED_OUT and the change goes on.
//! - **validate_only** runs the checks a create would (name, partitions,
//!   replication factor against the live nodes, configs, an existing
//!   topic) and creates nothing.
//! - **Configs** are replog's topic settings (`retention.ms`,
//!   `retention.bytes`, `retention.consumed`, `schema.subject`;
//!   docs/retention.md); any other name gets INVALID_CONFIG. Manual
//!   replica assignments get INVALID_REPLICA_ASSIGNMENT: replog places
//!   replicas itself.
//! - **Auto-creation** (`--kafka-auto-create-topics`, off by default): a
//!   Metadata request that allows it, or a Produce, naming a topic that
//!   does not exist creates it with `--kafka-default-partitions`
//!   partitions and `--default-replication-factor` replicas, then goes on
//!   once it has leaders. Off, such a client gets
//!   UNKNOWN_TOPIC_OR_PARTITION.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::delete_topics_response::{DeletableTopicResult, DeleteTopicsResponse};
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::protocol::StrBytes;
use replog_proto::pb;
use replog_raft_store::GroupId;
use tokio::time::Instant;
use tonic::Request;
use tracing::{debug, info};

use super::{describe_configs, errors, metadata};
use crate::error::NodeError;
use crate::node::Node;
use crate::service::{create_topic, delete_topic, on_controller};

/// How long a create or delete waits for its outcome when the request
/// gives no timeout; also the longest it waits whatever the request says.
const OUTCOME_WAIT: Duration = Duration::from_secs(15);
/// How long an auto-creation waits for the new topic's leaders.
const AUTO_CREATE_WAIT: Duration = Duration::from_secs(15);
/// How often a wait looks at leadership, which has no single watch.
const LOOK_EVERY: Duration = Duration::from_millis(25);

fn deadline(timeout_ms: i32) -> Instant {
    let wait = match timeout_ms {
        t if t > 0 => Duration::from_millis(t as u64).min(OUTCOME_WAIT),
        _ => OUTCOME_WAIT,
    };
    Instant::now() + wait
}

/// Waits until `done` holds or `deadline` passes, looking again at every
/// change of the cluster metadata and every [`LOOK_EVERY`]; whether it holds.
async fn wait_until(node: &Node, deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    let mut meta = node.controller.watch();
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let _ = tokio::time::timeout((deadline - now).min(LOOK_EVERY), meta.changed()).await;
    }
}

/// Whether `name` exists here with a leader, reachable by Kafka clients,
/// for every partition.
fn led_here(node: &Node, name: &str) -> bool {
    let meta = node.meta();
    let Some(t) = meta.topics.get(name) else { return false };
    let brokers = metadata::brokers(node);
    t.partitions.iter().all(|p| node.leader_of(p.group, &p.replicas).is_some_and(|l| brokers.contains_key(&l)))
}

async fn create(node: &Arc<Node>, req: pb::CreateTopicRequest) -> Result<(), NodeError> {
    on_controller(node, Request::new(req), create_topic::handle, |mut c, r| async move { c.create_topic(r).await })
        .await
        .map(|_| ())
}

pub async fn create_topics(node: &Arc<Node>, req: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let until = deadline(req.timeout_ms);
    let mut seen = HashMap::new();
    for t in &req.topics {
        *seen.entry(t.name.clone()).or_insert(0) += 1;
    }
    let validate_only = req.validate_only;
    let topics = req.topics.into_iter().map(|t| {
        let duplicate = seen[&t.name] > 1;
        async move {
            if duplicate {
                return result(&t.name, ResponseError::InvalidRequest.code(), Some("named more than once".into()));
            }
            create_one(node, t, validate_only, until, version).await
        }
    });
    CreateTopicsResponse::default().with_topics(futures::future::join_all(topics).await)
}

fn result(name: &TopicName, code: i16, message: Option<String>) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(name.clone())
        .with_error_code(code)
        .with_error_message(message.map(StrBytes::from_string))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
}

fn refused(name: &TopicName, e: &NodeError) -> CreatableTopicResult {
    result(name, errors::code(e), Some(e.to_string()))
}

async fn create_one(
    node: &Arc<Node>,
    t: CreatableTopic,
    validate_only: bool,
    until: Instant,
    version: i16,
) -> CreatableTopicResult {
    let name = t.name.clone();
    if !t.assignments.is_empty() {
        return result(
            &name,
            ResponseError::InvalidReplicaAssignment.code(),
            Some("replica assignments are not taken: replog places replicas itself".into()),
        );
    }
    let mut configs = HashMap::new();
    for c in t.configs {
        match c.value {
            Some(v) => configs.insert(c.name.to_string(), v.to_string()),
            None => {
                let e = NodeError::InvalidConfig { key: c.name.to_string(), reason: "no value given".into() };
                return refused(&name, &e);
            }
        };
    }
    let partitions = match t.num_partitions {
        -1 => node.config.kafka_default_partitions,
        n if n > 0 => n as u32,
        n => return refused(&name, &NodeError::InvalidPartitions(format!("{n} (must be at least 1, or -1)"))),
    };
    let replication_factor = match t.replication_factor {
        -1 => 0,
        n if n > 0 => n as u32,
        n => {
            let e = NodeError::InvalidReplicationFactor { requested: 0, reason: format!("{n} (at least 1, or -1)") };
            return refused(&name, &e);
        }
    };
    let mut req = pb::CreateTopicRequest { name: name.0.to_string(), partitions, replication_factor, configs };
    if let Err(e) = create_topic::prepare(node, &mut req) {
        return refused(&name, &e);
    }
    let config = match crate::topic_config::apply(&Default::default(), &req.configs, &[]) {
        Ok(c) => c,
        Err(e) => return refused(&name, &e),
    };
    let (partitions, rf) = (req.partitions, req.replication_factor);
    if validate_only {
        if node.meta().topics.contains_key(&req.name) {
            return refused(&name, &NodeError::TopicAlreadyExists(req.name));
        }
        if let Err(e) = crate::topic_config::check_subject(&node.meta(), &config) {
            return refused(&name, &e);
        }
        let live = node.live_nodes().len();
        if rf as usize > live {
            let e =
                NodeError::InvalidReplicationFactor { requested: rf, reason: format!("only {live} nodes are alive") };
            return refused(&name, &e);
        }
    } else {
        let topic = req.name.clone();
        if let Err(e) = create(node, req).await {
            debug!(%topic, error = %e, "kafka CreateTopics refused");
            return refused(&name, &e);
        }
        info!(%topic, partitions, rf, "kafka CreateTopics: topic created");
        if !wait_until(node, until, || led_here(node, &topic)).await {
            return result(
                &name,
                ResponseError::RequestTimedOut.code(),
                Some("created, but not every partition has a leader yet".into()),
            );
        }
    }
    let mut ok = result(&name, 0, None).with_num_partitions(partitions as i32).with_replication_factor(rf as i16);
    if version >= 5 {
        let configs = describe_configs::topic_entries(&config)
            .into_iter()
            .map(|e| {
                CreatableTopicConfigs::default()
                    .with_name(StrBytes::from_string(e.name))
                    .with_value(e.value.map(StrBytes::from_string))
                    .with_read_only(e.read_only)
                    .with_config_source(e.source)
            })
            .collect();
        ok = ok.with_configs(Some(configs));
    }
    ok
}

pub async fn delete_topics(node: &Arc<Node>, req: DeleteTopicsRequest, _version: i16) -> DeleteTopicsResponse {
    let until = deadline(req.timeout_ms);
    // Each name once, in the order asked.
    let mut seen = HashSet::new();
    let names = req.topic_names.into_iter().filter(|n| seen.insert(n.clone()));
    let responses = names.map(|name| delete_one(node, name, until));
    DeleteTopicsResponse::default().with_responses(futures::future::join_all(responses).await)
}

async fn delete_one(node: &Arc<Node>, name: TopicName, until: Instant) -> DeletableTopicResult {
    let answer = |code: i16, message: Option<String>| {
        DeletableTopicResult::default()
            .with_name(Some(name.clone()))
            .with_error_code(code)
            .with_error_message(message.map(StrBytes::from_string))
    };
    let topic = name.0.to_string();
    if topic.starts_with("__") {
        return answer(
            ResponseError::InvalidTopicException.code(),
            Some(format!("{topic} is an internal topic: it is not deleted")),
        );
    }
    let groups: Vec<GroupId> =
        node.meta().topics.get(&topic).map(|t| t.partitions.iter().map(|p| p.group).collect()).unwrap_or_default();
    let req = pb::DeleteTopicRequest { name: topic.clone() };
    let r =
        on_controller(node, Request::new(req), delete_topic::handle, |mut c, r| async move { c.delete_topic(r).await })
            .await;
    if let Err(e) = r {
        debug!(%topic, error = %e, "kafka DeleteTopics refused");
        return answer(errors::code(&e), Some(e.to_string()));
    }
    info!(%topic, "kafka DeleteTopics: topic deleted");
    let gone = || !node.meta().topics.contains_key(&topic) && groups.iter().all(|g| node.partition(*g).is_none());
    if !wait_until(node, until, gone).await {
        return answer(
            ResponseError::RequestTimedOut.code(),
            Some("deleted, but this node still hosts some of its partitions".into()),
        );
    }
    answer(0, None)
}

/// Creates `name` if auto-creation is on and it does not exist, and waits
/// for its leaders; whether it now exists with leaders known here.
pub async fn auto_create(node: &Arc<Node>, name: &str) -> bool {
    if !node.config.kafka_auto_create_topics {
        return false;
    }
    if led_here(node, name) {
        return true;
    }
    if !node.meta().topics.contains_key(name) {
        let mut req = pb::CreateTopicRequest {
            name: name.to_string(),
            partitions: node.config.kafka_default_partitions,
            replication_factor: 0,
            configs: HashMap::new(),
        };
        if let Err(e) = create_topic::prepare(node, &mut req) {
            debug!(topic = name, error = %e, "kafka auto-creation refused");
            return false;
        }
        match create(node, req).await {
            Ok(()) => info!(topic = name, "kafka: topic auto-created"),
            // Another request created it meanwhile.
            Err(NodeError::TopicAlreadyExists(_)) => {}
            Err(e) => {
                debug!(topic = name, error = %e, "kafka auto-creation failed");
                return false;
            }
        }
    }
    wait_until(node, Instant::now() + AUTO_CREATE_WAIT, || led_here(node, name)).await
}

/// Auto-creates the topics a Metadata request names that do not exist,
/// when the switch is on and the request allows it (v4+; always before).
pub async fn auto_create_for_metadata(node: &Arc<Node>, req: &MetadataRequest, version: i16) {
    if !node.config.kafka_auto_create_topics || (version >= 4 && !req.allow_auto_topic_creation) {
        return;
    }
    let Some(topics) = &req.topics else { return };
    let meta = node.meta();
    let missing: Vec<String> = topics
        .iter()
        .filter_map(|t| t.name.as_ref())
        .map(|n| n.0.to_string())
        .filter(|n| !meta.topics.contains_key(n))
        .collect();
    futures::future::join_all(missing.iter().map(|n| auto_create(node, n))).await;
}
