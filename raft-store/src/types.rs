//! The Raft type configuration and the entry payloads.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::controller::{ControllerCmd, ControllerResult};
use crate::error::Rejection;
use crate::groups::{GroupCmd, GroupResult};
use crate::queues::{QueueCmd, QueueResult};

pub type NodeId = u64;
/// Identifies one Raft group on every node. Group 0 is the controller.
pub type GroupId = u64;
pub const CONTROLLER_GROUP: GroupId = 0;

openraft::declare_raft_types!(
    /// Raft types for every replog group.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type SnapshotData = crate::snapshot::SnapshotData;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type Raft = openraft::Raft<TypeConfig, crate::GroupStateMachine>;

/// What a Raft entry asks the state machine to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Append one producer batch (already validated) to a partition.
    Append { batch: Bytes, record_count: u32, max_timestamp_ms: i64 },
    /// Change cluster metadata (controller group only).
    Controller(ControllerCmd),
    /// Change a consumer group (partitions of `__consumer_offsets`).
    Group(GroupCmd),
    /// Release every record below `log_start_offset` (retention). Every
    /// replica drops the same prefix: the target is rounded down to the
    /// start of the batch holding it, and a target below the current log
    /// start changes nothing.
    Truncate { log_start_offset: u64 },
    /// Change a queue group's state on this partition.
    Queue(QueueCmd),
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Append { batch, record_count, .. } => {
                write!(f, "Append({record_count} records, {} bytes)", batch.len())
            }
            Request::Controller(c) => write!(f, "Controller({c:?})"),
            Request::Group(c) => write!(f, "Group({})", c.group()),
            Request::Truncate { log_start_offset } => write!(f, "Truncate(below {log_start_offset})"),
            Request::Queue(c) => write!(f, "Queue({})", c.group()),
        }
    }
}

/// What applying an entry produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Blank and membership entries.
    #[default]
    None,
    Appended {
        base_offset: u64,
        record_count: u32,
    },
    Controller(ControllerResult),
    Group(GroupResult),
    /// The log start offset after a [`Request::Truncate`].
    Truncated {
        log_start_offset: u64,
    },
    Queue(QueueResult),
    /// The entry was committed but the state machine refused it.
    Rejected(Rejection),
}
