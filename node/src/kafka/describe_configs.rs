//! DescribeConfigs (v1–4): real entries, not placeholders.
//!
//! - A **topic** has replog's topic settings (`node/src/topic_config.rs`,
//!   docs/retention.md): `retention.ms`, `retention.bytes`,
//!   `retention.consumed`, `schema.subject`. One that is set is reported
//!   with source TOPIC_CONFIG; one that is not with its default value
//!   (`-1`, `false`, null: no rule) and source DEFAULT_CONFIG. These are
//!   the same names and values `replog topic describe` shows and that
//!   CreateTopics takes.
//! - A **broker** (resource name: this node's id, or empty) has this
//!   node's configuration, every key under its replog name
//!   (`ops/replog-node.example.toml`), read-only, DEFAULT_CONFIG where it
//!   holds the default and STATIC_BROKER_CONFIG where the file, a flag or
//!   the environment set it; and the few Kafka broker names whose meaning
//!   replog has (`broker.id`, `auto.create.topics.enable`,
//!   `num.partitions`, `default.replication.factor`, `message.max.bytes`,
//!   `socket.request.max.bytes`). Another broker's id gets INVALID_REQUEST:
//!   clients send that request to the broker itself, as with Kafka.
//!
//! Other resource types get INVALID_REQUEST. No synonyms are listed.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_request::{DescribeConfigsRequest, DescribeConfigsResource};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use kafka_protocol::protocol::StrBytes;
use replog_raft_store::controller::TopicConfig;

use crate::config::NodeConfig;
use crate::node::Node;
use crate::topic_config::{KEYS, RETENTION_BYTES, RETENTION_CONSUMED, RETENTION_MS, SCHEMA_SUBJECT};

/// Kafka's resource types.
pub const TOPIC: i8 = 2;
pub const BROKER: i8 = 4;

/// Kafka's config sources.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

/// Kafka's config types.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_LONG: i8 = 5;

/// One configuration entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
    pub read_only: bool,
    pub config_type: i8,
    pub doc: Option<String>,
}

impl Entry {
    pub fn is_default(&self) -> bool {
        self.source == SOURCE_DEFAULT
    }
}

/// A topic's settings, each with its value or its default.
pub fn topic_entries(c: &TopicConfig) -> Vec<Entry> {
    let doc = |key: &str| KEYS.iter().find(|(k, _)| *k == key).map(|(_, d)| d.to_string());
    let entry = |name: &str, set: Option<String>, default: Option<String>, config_type: i8| Entry {
        name: name.to_string(),
        source: if set.is_some() { SOURCE_TOPIC } else { SOURCE_DEFAULT },
        value: set.or(default),
        read_only: false,
        config_type,
        doc: doc(name),
    };
    vec![
        entry(RETENTION_MS, c.retention_ms.map(|v| v.to_string()), Some("-1".into()), TYPE_LONG),
        entry(RETENTION_BYTES, c.retention_bytes.map(|v| v.to_string()), Some("-1".into()), TYPE_LONG),
        entry(RETENTION_CONSUMED, c.retention_consumed.then(|| "true".into()), Some("false".into()), TYPE_BOOLEAN),
        entry(SCHEMA_SUBJECT, c.schema_subject.clone(), None, TYPE_STRING),
    ]
}

/// This node's configuration: every key by its replog name, then the
/// Kafka broker names replog has a value for.
pub fn broker_entries(config: &NodeConfig) -> Vec<Entry> {
    let as_map = |c: &NodeConfig| match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => Default::default(),
    };
    let defaults = as_map(&NodeConfig::default());
    let mut out: Vec<Entry> = as_map(config)
        .into_iter()
        .map(|(name, v)| {
            let source = if defaults.get(&name) == Some(&v) { SOURCE_DEFAULT } else { SOURCE_STATIC_BROKER };
            let (value, config_type) = match v {
                serde_json::Value::Null => (None, TYPE_STRING),
                serde_json::Value::Bool(b) => (Some(b.to_string()), TYPE_BOOLEAN),
                serde_json::Value::Number(n) => (Some(n.to_string()), TYPE_LONG),
                serde_json::Value::String(s) => (Some(s), TYPE_STRING),
                other => (Some(other.to_string()), TYPE_STRING),
            };
            Entry { name, value, source, read_only: true, config_type, doc: None }
        })
        .collect();
    let d = NodeConfig::default();
    let kafka = |name: &str, replog: &str, value: String, default: String, config_type: i8| Entry {
        name: name.to_string(),
        source: if value == default { SOURCE_DEFAULT } else { SOURCE_STATIC_BROKER },
        value: Some(value),
        read_only: true,
        config_type,
        doc: Some(format!("replog's {replog}")),
    };
    out.extend([
        kafka("broker.id", "id", config.id.to_string(), d.id.to_string(), TYPE_LONG),
        kafka(
            "auto.create.topics.enable",
            "kafka_auto_create_topics",
            config.kafka_auto_create_topics.to_string(),
            d.kafka_auto_create_topics.to_string(),
            TYPE_BOOLEAN,
        ),
        kafka(
            "num.partitions",
            "kafka_default_partitions",
            config.kafka_default_partitions.to_string(),
            d.kafka_default_partitions.to_string(),
            TYPE_LONG,
        ),
        kafka(
            "default.replication.factor",
            "default_replication_factor",
            config.default_replication_factor.to_string(),
            d.default_replication_factor.to_string(),
            TYPE_LONG,
        ),
        kafka(
            "message.max.bytes",
            "max_batch_bytes",
            config.max_batch_bytes.to_string(),
            d.max_batch_bytes.to_string(),
            TYPE_LONG,
        ),
        kafka(
            "socket.request.max.bytes",
            "kafka_max_frame_bytes",
            config.kafka_max_frame_bytes.to_string(),
            d.kafka_max_frame_bytes.to_string(),
            TYPE_LONG,
        ),
    ]);
    out
}

pub fn handle(node: &Node, req: DescribeConfigsRequest, _version: i16) -> DescribeConfigsResponse {
    let docs = req.include_documentation;
    let results = req.resources.into_iter().map(|r| resource(node, r, docs)).collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn resource(node: &Node, r: DescribeConfigsResource, docs: bool) -> DescribeConfigsResult {
    let base = DescribeConfigsResult::default()
        .with_resource_type(r.resource_type)
        .with_resource_name(r.resource_name.clone());
    let failed = |e: ResponseError, message: String| {
        base.clone().with_error_code(e.code()).with_error_message(Some(StrBytes::from_string(message)))
    };
    let name = r.resource_name.as_str();
    let entries = match r.resource_type {
        TOPIC => match node.meta().topics.get(name) {
            Some(t) => topic_entries(&t.config),
            None => return failed(ResponseError::UnknownTopicOrPartition, format!("no topic {name:?}")),
        },
        BROKER if name.is_empty() || name == node.id.to_string() => broker_entries(&node.config),
        BROKER => {
            return failed(
                ResponseError::InvalidRequest,
                format!("this is broker {}; ask broker {name} for its own configuration", node.id),
            );
        }
        other => {
            return failed(
                ResponseError::InvalidRequest,
                format!("resource type {other} is not served (topics: 2, brokers: 4)"),
            );
        }
    };
    let wanted = |e: &Entry| r.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == e.name));
    let configs = entries
        .into_iter()
        .filter(wanted)
        .map(|e| {
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_string(e.name))
                .with_value(e.value.map(StrBytes::from_string))
                .with_read_only(e.read_only)
                .with_config_source(e.source)
                .with_config_type(e.config_type)
                .with_documentation(if docs { e.doc.map(StrBytes::from_string) } else { None })
        })
        .collect();
    base.with_configs(configs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_topic_config_then_set_entries_are_topic_config_and_the_rest_defaults() {
        let c = TopicConfig { retention_ms: Some(60_000), ..TopicConfig::default() };
        let e = topic_entries(&c);
        assert_eq!(e.len(), KEYS.len(), "every topic setting is listed");
        let ms = e.iter().find(|e| e.name == RETENTION_MS).unwrap();
        assert_eq!((ms.value.as_deref(), ms.source), (Some("60000"), SOURCE_TOPIC));
        let bytes = e.iter().find(|e| e.name == RETENTION_BYTES).unwrap();
        assert_eq!((bytes.value.as_deref(), bytes.is_default()), (Some("-1"), true));
        let subject = e.iter().find(|e| e.name == SCHEMA_SUBJECT).unwrap();
        assert_eq!((subject.value.as_deref(), subject.is_default()), (None, true));
    }

    #[test]
    fn given_a_node_config_then_broker_entries_mark_what_differs_from_the_defaults() {
        let config = NodeConfig { id: 2, kafka_auto_create_topics: true, ..NodeConfig::default() };
        let e = broker_entries(&config);
        let get = |n: &str| e.iter().find(|e| e.name == n).unwrap_or_else(|| panic!("{n} listed"));
        assert_eq!(get("kafka_auto_create_topics").value.as_deref(), Some("true"));
        assert_eq!(get("kafka_auto_create_topics").source, SOURCE_STATIC_BROKER);
        assert_eq!(get("segment_mb").source, SOURCE_DEFAULT);
        assert_eq!(get("broker.id").value.as_deref(), Some("2"));
        assert_eq!(get("auto.create.topics.enable").value.as_deref(), Some("true"));
        assert!(e.iter().all(|e| e.read_only));
    }
}
