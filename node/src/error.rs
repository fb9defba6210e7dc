//! Node errors, their stable wire codes, and the one mapping to
//! `tonic::Status`.

use replog_proto::codes::{CODE_KEY, ErrorCode, LEADER_ADDR_KEY, LEADER_ID_KEY, RECORD_INDEX_KEY};
use replog_raft_store::{Rejection, StoreError};

pub type Result<T, E = NodeError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("{0}")]
    UnknownGroup(String),
    #[error("topic {topic:?} has {count} partitions; partition {partition} does not exist")]
    UnknownPartition { topic: String, partition: u32, count: u32 },
    #[error("this node does not lead {what}")]
    NotLeader { what: String, leader: Option<(u64, String)> },
    #[error("offset {offset} is outside the log [{log_start}, {high_watermark}]")]
    OffsetOutOfRange { offset: u64, log_start: u64, high_watermark: u64 },
    #[error("{0}")]
    RecordTooLarge(String),
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge { size: usize, limit: usize },
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    #[error("topic {0:?} already exists")]
    TopicAlreadyExists(String),
    #[error("replication factor {requested} is invalid: {reason}")]
    InvalidReplicationFactor { requested: u32, reason: String },
    #[error("invalid partition count {0}")]
    InvalidPartitions(String),
    #[error("corrupt batch: {0}")]
    CorruptBatch(String),
    #[error("topic setting {key:?}: {reason}")]
    InvalidConfig { key: String, reason: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("storage error: {0}")]
    Storage(#[from] std::io::Error),
    #[error(
        "the node's data volume has {free_mb} MiB free, below its floor of {min_free_mb} MiB; free space or move leadership"
    )]
    DiskFull { free_mb: u64, min_free_mb: u64 },
    #[error(
        "node {node} would hold {would_hold} partition replicas; it holds at most {limit} (its max_replicas, by default what its open-file limit allows): add nodes, or raise the limit on that node"
    )]
    ReplicaLimit { node: u64, would_hold: usize, limit: usize },
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    #[error("{principal} may not {operation} {resource}")]
    PermissionDenied { principal: String, operation: &'static str, resource: String },
    #[error("user {0:?} does not exist")]
    UnknownUser(String),
    #[error("invalid ACL: {0}")]
    InvalidAcl(String),
    #[error("{0}")]
    InvalidSchema(String),
    #[error("schema text of {size} bytes exceeds the limit of {limit} bytes")]
    SchemaTooLarge { size: usize, limit: usize },
    #[error("incompatible with subject {subject:?}: {reason}")]
    IncompatibleSchema { subject: String, reason: String },
    #[error("{0}")]
    UnknownSubject(String),
    #[error("{}schema id {id} does not exist", record_prefix(*index))]
    UnknownSchemaId { id: u32, index: Option<usize> },
    #[error("record {index}: schema id {id} is not a version of subject {subject:?}")]
    SchemaNotInSubject { index: usize, id: u32, subject: String },
    #[error("record {index}: {reason}")]
    InvalidRecord { index: usize, reason: String },
    /// What another node answered to a request this node forwarded (admin
    /// requests go to the controller leader), passed on with its code.
    #[error("{message}")]
    Remote { code: ErrorCode, message: String },
    /// Refused by a state machine when the entry was applied.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// A membership request refused (codes 29–35: unknown node, bad replica
    /// set, a move under way, the controller's quorum, ...).
    #[error("{1}")]
    Membership(ErrorCode, String),
}

impl NodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            NodeError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            NodeError::UnknownGroup(_) => ErrorCode::UnknownGroup,
            NodeError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
            NodeError::NotLeader { .. } => ErrorCode::NotLeader,
            NodeError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            NodeError::RecordTooLarge(_) => ErrorCode::RecordTooLarge,
            NodeError::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
            NodeError::InvalidTopicName { .. } => ErrorCode::InvalidTopicName,
            NodeError::TopicAlreadyExists(_) => ErrorCode::TopicAlreadyExists,
            NodeError::InvalidReplicationFactor { .. } => ErrorCode::InvalidReplicationFactor,
            NodeError::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
            NodeError::CorruptBatch(_) => ErrorCode::CorruptBatch,
            NodeError::InvalidConfig { .. } => ErrorCode::InvalidConfig,
            NodeError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            NodeError::Unavailable(_) => ErrorCode::Unavailable,
            NodeError::Timeout(_) => ErrorCode::Timeout,
            NodeError::Internal(_) => ErrorCode::Internal,
            NodeError::Storage(_) => ErrorCode::Storage,
            NodeError::DiskFull { .. } => ErrorCode::DiskFull,
            NodeError::ReplicaLimit { .. } => ErrorCode::ReplicaLimit,
            NodeError::AuthenticationFailed(_) => ErrorCode::AuthenticationFailed,
            NodeError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            NodeError::UnknownUser(_) => ErrorCode::UnknownUser,
            NodeError::InvalidAcl(_) => ErrorCode::InvalidAcl,
            NodeError::InvalidSchema(_) => ErrorCode::InvalidSchema,
            NodeError::SchemaTooLarge { .. } => ErrorCode::SchemaTooLarge,
            NodeError::IncompatibleSchema { .. } => ErrorCode::IncompatibleSchema,
            NodeError::UnknownSubject(_) => ErrorCode::UnknownSubject,
            NodeError::UnknownSchemaId { .. } => ErrorCode::UnknownSchemaId,
            NodeError::SchemaNotInSubject { .. } => ErrorCode::SchemaNotInSubject,
            NodeError::InvalidRecord { .. } => ErrorCode::InvalidRecord,
            NodeError::Remote { code, .. } => *code,
            NodeError::Membership(code, _) => *code,
            NodeError::Rejected(r) => match r {
                Rejection::CorruptBatch(_) => ErrorCode::CorruptBatch,
                Rejection::OutOfOrderSequence(_) => ErrorCode::OutOfOrderSequence,
                Rejection::ProducerFenced(_) => ErrorCode::ProducerFenced,
                Rejection::InvalidRequest(_) => ErrorCode::InvalidRequest,
                Rejection::UnknownGroup(_) => ErrorCode::UnknownGroup,
                Rejection::UnknownMember(_) => ErrorCode::UnknownMember,
                Rejection::StaleGeneration(_) => ErrorCode::StaleGeneration,
                Rejection::NotAssigned(_) => ErrorCode::PartitionNotAssigned,
                Rejection::GroupNotEmpty(_) => ErrorCode::GroupNotEmpty,
                Rejection::UnknownQueueGroup(_) => ErrorCode::UnknownQueueGroup,
                Rejection::NotHeld(_) => ErrorCode::QueueEventNotHeld,
                Rejection::LockExpired(_) => ErrorCode::QueueLockExpired,
            },
        }
    }
}

fn record_prefix(index: Option<usize>) -> String {
    index.map(|i| format!("record {i}: ")).unwrap_or_default()
}

impl NodeError {
    /// The index of the record in its batch a produce was refused for.
    pub fn record_index(&self) -> Option<usize> {
        match self {
            NodeError::UnknownSchemaId { index, .. } => *index,
            NodeError::SchemaNotInSubject { index, .. } | NodeError::InvalidRecord { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// The error a forwarded request got at `addr`: the remote node's own
    /// code and message when it answered with one, else UNAVAILABLE.
    pub fn from_remote(addr: &str, status: tonic::Status) -> NodeError {
        match replog_proto::codes::code_of(&status) {
            Some(code) => {
                let msg = status.message();
                let msg = msg.strip_prefix(code.name()).and_then(|m| m.strip_prefix(": ")).unwrap_or(msg);
                NodeError::Remote { code, message: msg.to_string() }
            }
            None => NodeError::Unavailable(format!("forwarding to {addr}: {}", status.message())),
        }
    }
}

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> NodeError {
        match e {
            // Released between the offset check and the read: to the reader
            // the offset is now before the log start.
            StoreError::Evicted { offset, log_start, high_watermark } => {
                NodeError::OffsetOutOfRange { offset, log_start, high_watermark }
            }
            StoreError::Io(e) => NodeError::Storage(e),
        }
    }
}

/// Longest error message sent: messages echo request fields (a topic name
/// may be megabytes), the message travels as an HTTP/2 header, and a header
/// block above the client's limit (16 KiB by default) makes it reset the
/// stream — the caller would get a protocol error instead of the code.
const MAX_MESSAGE_BYTES: usize = 1024;

fn bounded(mut msg: String) -> String {
    if msg.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
        msg.push('…');
    }
    msg
}

impl From<NodeError> for tonic::Status {
    fn from(e: NodeError) -> tonic::Status {
        let code = e.code();
        let grpc = match code {
            ErrorCode::UnknownTopic
            | ErrorCode::UnknownPartition
            | ErrorCode::UnknownGroup
            | ErrorCode::UnknownQueueGroup
            | ErrorCode::UnknownNode
            | ErrorCode::UnknownUser => tonic::Code::NotFound,
            ErrorCode::AuthenticationFailed => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::UnknownSubject | ErrorCode::UnknownSchemaId => tonic::Code::NotFound,
            ErrorCode::NotLeader | ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Timeout => tonic::Code::DeadlineExceeded,
            ErrorCode::OffsetOutOfRange => tonic::Code::OutOfRange,
            ErrorCode::TopicAlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::Internal | ErrorCode::Storage => tonic::Code::Internal,
            ErrorCode::OutOfOrderSequence
            | ErrorCode::ProducerFenced
            | ErrorCode::UnknownMember
            | ErrorCode::StaleGeneration
            | ErrorCode::PartitionNotAssigned
            | ErrorCode::GroupNotEmpty
            | ErrorCode::QueueEventNotHeld
            | ErrorCode::QueueLockExpired
            | ErrorCode::MoveInProgress
            | ErrorCode::ControllerQuorum
            | ErrorCode::NotEnoughNodes => tonic::Code::FailedPrecondition,
            ErrorCode::NodeIdInUse => tonic::Code::AlreadyExists,
            ErrorCode::IncompatibleSchema => tonic::Code::FailedPrecondition,
            ErrorCode::DiskFull | ErrorCode::ReplicaLimit => tonic::Code::ResourceExhausted,
            _ => tonic::Code::InvalidArgument,
        };
        let mut status = tonic::Status::new(grpc, bounded(format!("{}: {e}", code.name())));
        let md = status.metadata_mut();
        md.insert(CODE_KEY, code.as_u16().to_string().parse().expect("digits are valid metadata"));
        if let Some(i) = e.record_index() {
            md.insert(RECORD_INDEX_KEY, i.to_string().parse().expect("digits are valid metadata"));
        }
        if let NodeError::NotLeader { leader: Some((id, addr)), .. } = &e {
            md.insert(LEADER_ID_KEY, id.to_string().parse().expect("digits are valid metadata"));
            if let Ok(v) = addr.parse() {
                md.insert(LEADER_ADDR_KEY, v);
            }
        }
        status
    }
}
