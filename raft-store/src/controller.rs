//! Cluster metadata replicated by the controller group (group 0): nodes,
//! topics, and each partition's Raft group and replica set.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::registry::{RegisterSchema, SchemaCompatibility, SchemaRegistry, SchemaResult};
use crate::security::{SecurityCmd, SecurityMeta, SecurityResult};
use crate::types::{GroupId, NodeId};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    pub nodes: BTreeMap<NodeId, NodeMeta>,
    pub topics: BTreeMap<String, TopicMeta>,
    pub next_topic_id: u64,
    pub next_group_id: GroupId,
    /// Next idempotent-producer id to hand out.
    pub next_producer_id: i64,
    /// Partition moves under way: group → the replica set it moves to. The
    /// group's leader carries each out (learners, joint consensus) and
    /// reports it done with `FinishMove`.
    pub moves: BTreeMap<GroupId, Vec<NodeId>>,
    /// Nodes being decommissioned: placement gives them nothing; the
    /// controller removes each once no replica is left on it.
    pub decommissioning: BTreeSet<NodeId>,
    /// Users and ACLs (docs/security.md).
    pub security: SecurityMeta,
    /// Subjects and schemas (docs/schemas.md).
    #[serde(default)]
    pub schemas: SchemaRegistry,
    /// Cluster-wide settings (`replog cluster config set`), by key: each
    /// overrides the node setting of the same purpose on every node
    /// (checked by the node before proposing; docs/membership.md).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Each node's rack label (`--rack`), as the node reports it; nodes
    /// without one are absent. Placement and balancing spread a
    /// partition's replicas over as many racks as they can.
    #[serde(default)]
    pub racks: BTreeMap<NodeId, String>,
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
    /// Starts moving a partition group to `replicas` (checked by the
    /// controller leader first). The same nodes in another order only
    /// change the preferred leader, at once.
    StartMove {
        group: GroupId,
        replicas: Vec<NodeId>,
    },
    /// The group's voters are the move's target: its replica set becomes it.
    FinishMove {
        group: GroupId,
        replicas: Vec<NodeId>,
    },
    /// Marks `id` as being decommissioned and starts the moves that take
    /// its replicas elsewhere.
    Decommission {
        id: NodeId,
        moves: Vec<(GroupId, Vec<NodeId>)>,
    },
    /// Forgets a node (decommissioned, holding nothing).
    RemoveNode {
        id: NodeId,
    },
    /// Users and ACLs.
    Security(SecurityCmd),
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
    /// Sets (`Some`) or clears (`None`) cluster settings.
    SetClusterConfig {
        entries: Vec<(String, Option<String>)>,
    },
    /// Records the rack a node reports (`None`: it has none).
    SetNodeRack {
        id: NodeId,
        rack: Option<String>,
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
    Security(SecurityResult),
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
            ControllerCmd::StartMove { group, replicas } => match self.check_replicas(group, &replicas) {
                Err(e) => *e,
                Ok(()) => {
                    self.start_move(group, replicas);
                    ControllerResult::Done
                }
            },
            ControllerCmd::FinishMove { group, replicas } => {
                if self.moves.get(&group) != Some(&replicas) {
                    return ControllerResult::Invalid(format!("group {group} is not moving to {replicas:?}"));
                }
                self.moves.remove(&group);
                if let Some(p) = self.partition_mut(group) {
                    p.replicas = replicas;
                }
                ControllerResult::Done
            }
            ControllerCmd::Decommission { id, moves } => {
                if !self.nodes.contains_key(&id) {
                    return ControllerResult::Invalid(format!("unknown node {id}"));
                }
                for (group, replicas) in &moves {
                    if let Err(e) = self.check_replicas(*group, replicas) {
                        return *e;
                    }
                }
                self.decommissioning.insert(id);
                for (group, replicas) in moves {
                    self.start_move(group, replicas);
                }
                ControllerResult::Done
            }
            ControllerCmd::RemoveNode { id } => {
                if self.groups_of(id).keys().next().is_some() {
                    return ControllerResult::Invalid(format!("node {id} still holds replicas"));
                }
                self.nodes.remove(&id);
                self.decommissioning.remove(&id);
                self.racks.remove(&id);
                ControllerResult::Done
            }
            ControllerCmd::SetClusterConfig { entries } => {
                for (key, value) in entries {
                    match value {
                        Some(v) => self.settings.insert(key, v),
                        None => self.settings.remove(&key),
                    };
                }
                ControllerResult::Done
            }
            ControllerCmd::SetNodeRack { id, rack } => {
                match rack {
                    Some(r) if self.nodes.contains_key(&id) => self.racks.insert(id, r),
                    _ => self.racks.remove(&id),
                };
                ControllerResult::Done
            }
            ControllerCmd::Security(cmd) => ControllerResult::Security(self.security.apply(cmd)),
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

    /// A move of `group` to `replicas` may be applied: the group exists and
    /// every node is known and distinct.
    /// Why not, as the answer to give.
    fn check_replicas(&self, group: GroupId, replicas: &[NodeId]) -> Result<(), Box<ControllerResult>> {
        let invalid = |why: String| Err(Box::new(ControllerResult::Invalid(why)));
        if self.locate(group).is_none() {
            return invalid(format!("unknown partition group {group}"));
        }
        if replicas.is_empty() {
            return invalid("a partition needs at least one replica".into());
        }
        if let Some(n) = replicas.iter().find(|n| !self.nodes.contains_key(n)) {
            return invalid(format!("unknown node {n} in replica set"));
        }
        if replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() {
            return invalid(format!("replica set {replicas:?} names a node twice"));
        }
        Ok(())
    }

    /// Records a move, or applies a reorder (same nodes) at once.
    fn start_move(&mut self, group: GroupId, replicas: Vec<NodeId>) {
        let Some(p) = self.partition_mut(group) else { return };
        let same: BTreeSet<_> = p.replicas.iter().collect();
        if same == replicas.iter().collect() {
            p.replicas = replicas;
            self.moves.remove(&group);
        } else {
            self.moves.insert(group, replicas);
        }
    }

    fn partition_mut(&mut self, group: GroupId) -> Option<&mut PartitionMeta> {
        self.topics.values_mut().flat_map(|t| t.partitions.iter_mut()).find(|p| p.group == group)
    }

    /// The replica set of `group` (its current voters, as last finished).
    pub fn replicas_of(&self, group: GroupId) -> Option<&[NodeId]> {
        self.locate(group).map(|(t, i)| t.partitions[i as usize].replicas.as_slice())
    }

    /// The racks `nodes` span: a node without a rack label counts as a
    /// rack of its own, so that without labels nothing is constrained.
    pub fn rack_count(&self, nodes: &[NodeId]) -> usize {
        let racks: BTreeSet<Result<&str, NodeId>> =
            nodes.iter().map(|n| self.racks.get(n).map(String::as_str).ok_or(*n)).collect();
        racks.len()
    }

    /// Every partition group `node` is a replica of, with its replica set;
    /// also the groups moving onto it (it hosts them from the move's start).
    pub fn groups_of(&self, node: NodeId) -> BTreeMap<GroupId, Vec<NodeId>> {
        self.topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.replicas.contains(&node) || self.moves.get(&p.group).is_some_and(|to| to.contains(&node)))
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
    fn given_a_move_when_finished_then_the_replica_set_is_the_target_and_new_nodes_host_the_group_from_the_start() {
        let mut m = meta3();
        m.apply(ControllerCmd::RegisterNode { id: 4, addr: "127.0.0.1:7004".into() });
        let ControllerResult::TopicCreated(t) = m.apply(ControllerCmd::CreateTopic {
            name: "a".into(),
            replicas: vec![vec![1, 2, 3]],
            created_ms: 0,
            config: TopicConfig::default(),
        }) else {
            panic!()
        };
        let g = t.partitions[0].group;
        assert_eq!(m.apply(ControllerCmd::StartMove { group: g, replicas: vec![1, 2, 4] }), ControllerResult::Done);
        assert!(m.groups_of(4).contains_key(&g), "the new replica opens the group at the move's start");
        assert!(m.groups_of(3).contains_key(&g), "the old one keeps it until the move is done");
        // A finish naming another target is refused.
        assert!(matches!(
            m.apply(ControllerCmd::FinishMove { group: g, replicas: vec![1, 2] }),
            ControllerResult::Invalid(_)
        ));
        assert_eq!(m.apply(ControllerCmd::FinishMove { group: g, replicas: vec![1, 2, 4] }), ControllerResult::Done);
        assert_eq!(m.replicas_of(g), Some(&[1, 2, 4][..]));
        assert!(m.moves.is_empty());
        assert!(!m.groups_of(3).contains_key(&g));
        // The same nodes reordered: only the preferred leader changes, at once.
        m.apply(ControllerCmd::StartMove { group: g, replicas: vec![4, 1, 2] });
        assert_eq!(m.replicas_of(g), Some(&[4, 1, 2][..]));
        assert!(m.moves.is_empty());
        // Duplicates and unknown nodes never get in.
        assert!(matches!(
            m.apply(ControllerCmd::StartMove { group: g, replicas: vec![1, 1] }),
            ControllerResult::Invalid(_)
        ));
        assert!(matches!(
            m.apply(ControllerCmd::StartMove { group: g, replicas: vec![9] }),
            ControllerResult::Invalid(_)
        ));
    }

    #[test]
    fn given_a_decommission_then_the_node_is_removed_only_once_it_holds_nothing() {
        let mut m = meta3();
        m.apply(ControllerCmd::RegisterNode { id: 4, addr: "127.0.0.1:7004".into() });
        m.apply(ControllerCmd::CreateTopic {
            name: "a".into(),
            replicas: vec![vec![3, 1]],
            created_ms: 0,
            config: TopicConfig::default(),
        });
        assert_eq!(
            m.apply(ControllerCmd::Decommission { id: 3, moves: vec![(1, vec![4, 1])] }),
            ControllerResult::Done
        );
        assert!(m.decommissioning.contains(&3));
        assert!(matches!(m.apply(ControllerCmd::RemoveNode { id: 3 }), ControllerResult::Invalid(_)));
        m.apply(ControllerCmd::FinishMove { group: 1, replicas: vec![4, 1] });
        assert_eq!(m.apply(ControllerCmd::RemoveNode { id: 3 }), ControllerResult::Done);
        assert!(!m.nodes.contains_key(&3) && m.decommissioning.is_empty());
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
