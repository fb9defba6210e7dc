//! Cluster metadata replicated by the controller group (group 0): nodes,
//! topics, and each partition's Raft group and replica set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::registry::{RegisterSchema, SchemaCompatibility, SchemaRegistry, SchemaResult};
use crate::types::{GroupId, NodeId};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    pub nodes: BTreeMap<NodeId, NodeMeta>,
    pub topics: BTreeMap<String, TopicMeta>,
    pub next_topic_id: u64,
    pub next_group_id: GroupId,
    /// Next idempotent-producer id to hand out.
    pub next_producer_id: i64,
    /// Subjects and schemas (docs/schemas.md).
    #[serde(default)]
    pub schemas: SchemaRegistry,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    pub id: NodeId,
    /// Client and peer gRPC address (`host:port`).
    pub addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: u64,
    pub partitions: Vec<PartitionMeta>,
    pub created_ms: i64,
    pub config: TopicConfig,
}

/// Per-topic settings, set at create and changed later.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Release batches whose newest record is older than this.
    pub retention_ms: Option<i64>,
    /// Keep at most this many bytes of batches per partition.
    pub retention_bytes: Option<u64>,
    /// Release what every consumer group has committed past (and, for
    /// queue groups, settled past). With no group at all, nothing goes.
    pub retention_consumed: bool,
    /// Every record produced must carry the id of a live version of this
    /// subject and validate against it (`schema.subject`).
    #[serde(default)]
    pub schema_subject: Option<String>,
}

impl TopicConfig {
    /// Whether any retention rule is set.
    pub fn has_retention(&self) -> bool {
        self.retention_ms.is_some() || self.retention_bytes.is_some() || self.retention_consumed
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// The Raft group replicating this partition.
    pub group: GroupId,
    /// Replica nodes; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerCmd {
    RegisterNode {
        id: NodeId,
        addr: String,
    },
    /// Replica sets are chosen by the controller leader before proposing,
    /// so that every replica applies the same placement.
    CreateTopic {
        name: String,
        replicas: Vec<Vec<NodeId>>,
        created_ms: i64,
        config: TopicConfig,
    },
    /// Replaces a topic's settings (validated by the node first).
    AlterTopicConfig {
        name: String,
        config: TopicConfig,
    },
    DeleteTopic {
        name: String,
    },
    /// Hands out one fresh producer id.
    AllocateProducerId,
    /// Adds a schema version (parsed and checked by the node first).
    RegisterSchema(RegisterSchema),
    SetSchemaCompatibility {
        subject: String,
        compatibility: Option<SchemaCompatibility>,
    },
    /// Deletes one version of a subject, or with `None` the subject.
    DeleteSchema {
        subject: String,
        version: Option<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerResult {
    Done,
    TopicCreated(TopicMeta),
    TopicExists(String),
    UnknownTopic(String),
    Invalid(String),
    ProducerId(i64),
    Schema(SchemaResult),
}

impl ClusterMeta {
    pub fn apply(&mut self, cmd: ControllerCmd) -> ControllerResult {
        match cmd {
            ControllerCmd::RegisterNode { id, addr } => {
                self.nodes.insert(id, NodeMeta { id, addr });
                ControllerResult::Done
            }
            ControllerCmd::CreateTopic { name, replicas, created_ms, config } => {
                if self.topics.contains_key(&name) {
                    return ControllerResult::TopicExists(name);
                }
                if replicas.is_empty() || replicas.iter().any(|r| r.is_empty()) {
                    return ControllerResult::Invalid("every partition needs at least one replica".into());
                }
                if let Some(n) = replicas.iter().flatten().find(|n| !self.nodes.contains_key(n)) {
                    return ControllerResult::Invalid(format!("unknown node {n} in replica set"));
                }
                self.next_topic_id += 1;
                let partitions = replicas
                    .into_iter()
                    .map(|replicas| {
                        self.next_group_id += 1;
                        PartitionMeta { group: self.next_group_id, replicas }
                    })
                    .collect();
                let t = TopicMeta { name: name.clone(), id: self.next_topic_id, partitions, created_ms, config };
                self.topics.insert(name, t.clone());
                ControllerResult::TopicCreated(t)
            }
            ControllerCmd::AlterTopicConfig { name, config } => match self.topics.get_mut(&name) {
                Some(t) => {
                    t.config = config;
                    ControllerResult::Done
                }
                None => ControllerResult::UnknownTopic(name),
            },
            ControllerCmd::DeleteTopic { name } => match self.topics.remove(&name) {
                Some(_) => ControllerResult::Done,
                None => ControllerResult::UnknownTopic(name),
            },
            ControllerCmd::AllocateProducerId => {
                let id = self.next_producer_id;
                self.next_producer_id += 1;
                ControllerResult::ProducerId(id)
            }
            ControllerCmd::RegisterSchema(cmd) => ControllerResult::Schema(self.schemas.register(cmd)),
            ControllerCmd::SetSchemaCompatibility { subject, compatibility } => {
                ControllerResult::Schema(self.schemas.set_compatibility(subject, compatibility))
            }
            ControllerCmd::DeleteSchema { subject, version } => {
                let bound = self.topics.values().find(|t| t.config.schema_subject.as_deref() == Some(&subject));
                let last = self.schemas.subjects.get(&subject).is_some_and(|s| s.versions.len() <= 1);
                match bound {
                    Some(t) if version.is_none() || last => ControllerResult::Invalid(format!(
                        "subject {subject:?} is bound to topic {:?}; remove its schema.subject first",
                        t.name
                    )),
                    _ => ControllerResult::Schema(self.schemas.delete(subject, version)),
                }
            }
        }
    }

    /// Every partition group `node` is a replica of, with its replica set.
    pub fn groups_of(&self, node: NodeId) -> BTreeMap<GroupId, Vec<NodeId>> {
        self.topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.replicas.contains(&node))
            .map(|p| (p.group, p.replicas.clone()))
            .collect()
    }

    /// Finds the topic and partition number of a group.
    pub fn locate(&self, group: GroupId) -> Option<(&TopicMeta, u32)> {
        self.topics.values().find_map(|t| t.partitions.iter().position(|p| p.group == group).map(|i| (t, i as u32)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta3() -> ClusterMeta {
        let mut m = ClusterMeta::default();
        for id in 1..=3 {
            m.apply(ControllerCmd::RegisterNode { id, addr: format!("127.0.0.1:700{id}") });
        }
        m
    }

    #[test]
    fn create_assigns_fresh_groups_and_refuses_duplicates() {
        let mut m = meta3();
        let r = m.apply(ControllerCmd::CreateTopic {
            name: "a".into(),
            replicas: vec![vec![1, 2], vec![2, 3]],
            created_ms: 0,
            config: TopicConfig::default(),
        });
        let ControllerResult::TopicCreated(t) = r else { panic!("{r:?}") };
        assert_eq!(t.partitions.iter().map(|p| p.group).collect::<Vec<_>>(), vec![1, 2]);
        let again = m.apply(ControllerCmd::CreateTopic {
            name: "a".into(),
            replicas: vec![vec![1]],
            created_ms: 0,
            config: TopicConfig::default(),
        });
        assert_eq!(again, ControllerResult::TopicExists("a".into()));
        // Groups are never reused, even after a delete.
        m.apply(ControllerCmd::DeleteTopic { name: "a".into() });
        let ControllerResult::TopicCreated(t) = m.apply(ControllerCmd::CreateTopic {
            name: "a".into(),
            replicas: vec![vec![3]],
            created_ms: 0,
            config: TopicConfig::default(),
        }) else {
            panic!()
        };
        assert_eq!(t.partitions[0].group, 3);
        assert_eq!(m.groups_of(3).keys().copied().collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn unknown_nodes_are_refused() {
        let mut m = meta3();
        let r = m.apply(ControllerCmd::CreateTopic {
            name: "a".into(),
            replicas: vec![vec![9]],
            created_ms: 0,
            config: TopicConfig::default(),
        });
        assert!(matches!(r, ControllerResult::Invalid(_)));
        assert!(m.topics.is_empty());
    }
}
