//! Stable error codes on the wire.
//!
//! A code is never reused once retired. Each failing RPC returns a gRPC
//! status whose metadata holds [`CODE_KEY`] with one of these numbers, so a
//! client can act on it without parsing the message text.

/// Metadata key holding the numeric error code.
pub const CODE_KEY: &str = "replog-code";
/// Metadata key holding the id of the node believed to lead the group.
pub const LEADER_ID_KEY: &str = "replog-leader-id";
/// Metadata key holding the user name a client authenticates as.
pub const USER_KEY: &str = "replog-user";
/// Metadata key holding that user's password (sent over TLS only).
pub const PASSWORD_KEY: &str = "replog-password";
/// Metadata key holding the client address of that node.
pub const LEADER_ADDR_KEY: &str = "replog-leader-addr";
/// Metadata key holding the index (within its batch) of the record a
/// produce was refused for (schema validation).
pub const RECORD_INDEX_KEY: &str = "replog-record-index";

/// The code a status carries in its metadata, if it carries one.
pub fn code_of(status: &tonic::Status) -> Option<ErrorCode> {
    status
        .metadata()
        .get(CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(ErrorCode::from_u16)
}

/// A stable error code. The numeric values are part of the wire contract.
///
/// ```
/// use replog_proto::codes::ErrorCode;
/// let code = ErrorCode::from_u16(1).expect("a known code");
/// assert_eq!(code, ErrorCode::UnknownTopic);
/// assert_eq!(code.to_string(), "UNKNOWN_TOPIC(1)");
/// assert!(!code.is_retryable(), "the caller must create the topic");
/// assert!(ErrorCode::NotLeader.is_retryable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    UnknownTopic = 1,
    UnknownPartition = 2,
    NotLeader = 3,
    OffsetOutOfRange = 4,
    RecordTooLarge = 5,
    BatchTooLarge = 6,
    InvalidTopicName = 7,
    TopicAlreadyExists = 8,
    InvalidReplicationFactor = 9,
    InvalidPartitions = 10,
    CorruptBatch = 11,
    InvalidRequest = 12,
    Unavailable = 13,
    Timeout = 14,
    Internal = 15,
    Storage = 16,
    OutOfOrderSequence = 17,
    ProducerFenced = 18,
    /// The node's data volume is below its free-space floor.
    DiskFull = 19,
    /// A consumer group that does not exist.
    UnknownGroup = 20,
    /// A member id its group does not know (expired, left, never joined).
    UnknownMember = 21,
    /// A member acting on an assignment older than its current one.
    StaleGeneration = 22,
    /// A commit for a partition not assigned to the member.
    PartitionNotAssigned = 23,
    /// A reset or delete of a group that still has members.
    GroupNotEmpty = 24,
    /// A queue group the partition does not know (created by its first receive).
    UnknownQueueGroup = 25,
    /// An ack, release, reject or renew of an event the consumer does not hold.
    QueueEventNotHeld = 26,
    /// An ack, reject or renew of an event whose lock has expired.
    QueueLockExpired = 27,
    /// A topic or cluster setting that is unknown or out of range.
    InvalidConfig = 28,
    /// A node id the cluster does not know.
    UnknownNode = 29,
    /// A replica set that is empty, names a node twice, or names a node
    /// being decommissioned.
    InvalidReplicaSet = 30,
    /// A replica set smaller than the partition's current one, without force.
    BelowReplicationFactor = 31,
    /// The partition is already moving to another replica set.
    MoveInProgress = 32,
    /// Removing the node would leave the controller group without a live
    /// majority.
    ControllerQuorum = 33,
    /// No node is left to take a replica (decommission, balance).
    NotEnoughNodes = 34,
    /// A join whose node id a live node at another address already has.
    NodeIdInUse = 35,
    // 36–47: security (docs/security.md).
    /// Credentials that do not match a user (unknown user or wrong
    /// password).
    AuthenticationFailed = 36,
    /// The principal has no ACL allowing the operation on the resource.
    PermissionDenied = 37,
    /// A user the cluster does not know.
    UnknownUser = 38,
    /// An ACL with an unknown resource type or operation, or a bad name.
    InvalidAcl = 39,
    // 48–55: schemas (docs/schemas.md).
    /// A schema text that does not parse or compile (or an unknown schema type).
    InvalidSchema = 48,
    /// A schema version that breaks its subject's compatibility rule.
    IncompatibleSchema = 49,
    /// A schema subject, or a version of it, that does not exist.
    UnknownSubject = 50,
    /// A schema id the registry never handed out.
    UnknownSchemaId = 51,
    /// A record whose schema id is not a live version of its topic's subject.
    SchemaNotInSubject = 52,
    /// A record on a schema-bound topic without the schema prefix, or whose
    /// payload does not decode or validate against its schema.
    InvalidRecord = 53,
    /// A schema text over the registry's size limit.
    SchemaTooLarge = 54,
    // 56–61: capacity.
    /// Creating the topic or moving the partition would put more partition
    /// replicas on a node than it can hold (its `max_replicas`, by default
    /// what its open-file limit allows).
    ReplicaLimit = 56,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 47] = [
        ErrorCode::UnknownTopic,
        ErrorCode::UnknownPartition,
        ErrorCode::NotLeader,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::RecordTooLarge,
        ErrorCode::BatchTooLarge,
        ErrorCode::InvalidTopicName,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidReplicationFactor,
        ErrorCode::InvalidPartitions,
        ErrorCode::CorruptBatch,
        ErrorCode::InvalidRequest,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::Internal,
        ErrorCode::Storage,
        ErrorCode::OutOfOrderSequence,
        ErrorCode::ProducerFenced,
        ErrorCode::DiskFull,
        ErrorCode::UnknownGroup,
        ErrorCode::UnknownMember,
        ErrorCode::StaleGeneration,
        ErrorCode::PartitionNotAssigned,
        ErrorCode::GroupNotEmpty,
        ErrorCode::UnknownQueueGroup,
        ErrorCode::QueueEventNotHeld,
        ErrorCode::QueueLockExpired,
        ErrorCode::InvalidConfig,
        ErrorCode::UnknownNode,
        ErrorCode::InvalidReplicaSet,
        ErrorCode::BelowReplicationFactor,
        ErrorCode::MoveInProgress,
        ErrorCode::ControllerQuorum,
        ErrorCode::NotEnoughNodes,
        ErrorCode::NodeIdInUse,
        ErrorCode::AuthenticationFailed,
        ErrorCode::PermissionDenied,
        ErrorCode::UnknownUser,
        ErrorCode::InvalidAcl,
        ErrorCode::InvalidSchema,
        ErrorCode::IncompatibleSchema,
        ErrorCode::UnknownSubject,
        ErrorCode::UnknownSchemaId,
        ErrorCode::SchemaNotInSubject,
        ErrorCode::InvalidRecord,
        ErrorCode::SchemaTooLarge,
        ErrorCode::ReplicaLimit,
    ];

    pub fn as_u16(self) -> u16 {
        self as u16
    }

    pub fn from_u16(v: u16) -> Option<ErrorCode> {
        Self::ALL.iter().copied().find(|c| c.as_u16() == v)
    }

    /// The upper-case name used in messages and docs.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::UnknownTopic => "UNKNOWN_TOPIC",
            ErrorCode::UnknownPartition => "UNKNOWN_PARTITION",
            ErrorCode::NotLeader => "NOT_LEADER",
            ErrorCode::OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            ErrorCode::RecordTooLarge => "RECORD_TOO_LARGE",
            ErrorCode::BatchTooLarge => "BATCH_TOO_LARGE",
            ErrorCode::InvalidTopicName => "INVALID_TOPIC_NAME",
            ErrorCode::TopicAlreadyExists => "TOPIC_ALREADY_EXISTS",
            ErrorCode::InvalidReplicationFactor => "INVALID_REPLICATION_FACTOR",
            ErrorCode::InvalidPartitions => "INVALID_PARTITIONS",
            ErrorCode::CorruptBatch => "CORRUPT_BATCH",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Storage => "STORAGE_ERROR",
            ErrorCode::OutOfOrderSequence => "OUT_OF_ORDER_SEQUENCE",
            ErrorCode::ProducerFenced => "PRODUCER_FENCED",
            ErrorCode::DiskFull => "DISK_FULL",
            ErrorCode::UnknownGroup => "UNKNOWN_GROUP",
            ErrorCode::UnknownMember => "UNKNOWN_MEMBER",
            ErrorCode::StaleGeneration => "STALE_GENERATION",
            ErrorCode::PartitionNotAssigned => "PARTITION_NOT_ASSIGNED",
            ErrorCode::GroupNotEmpty => "GROUP_NOT_EMPTY",
            ErrorCode::InvalidConfig => "INVALID_CONFIG",
            ErrorCode::UnknownQueueGroup => "UNKNOWN_QUEUE_GROUP",
            ErrorCode::QueueEventNotHeld => "QUEUE_EVENT_NOT_HELD",
            ErrorCode::QueueLockExpired => "QUEUE_LOCK_EXPIRED",
            ErrorCode::UnknownNode => "UNKNOWN_NODE",
            ErrorCode::InvalidReplicaSet => "INVALID_REPLICA_SET",
            ErrorCode::BelowReplicationFactor => "BELOW_REPLICATION_FACTOR",
            ErrorCode::MoveInProgress => "MOVE_IN_PROGRESS",
            ErrorCode::ControllerQuorum => "CONTROLLER_QUORUM",
            ErrorCode::NotEnoughNodes => "NOT_ENOUGH_NODES",
            ErrorCode::NodeIdInUse => "NODE_ID_IN_USE",
            ErrorCode::AuthenticationFailed => "AUTHENTICATION_FAILED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::UnknownUser => "UNKNOWN_USER",
            ErrorCode::InvalidAcl => "INVALID_ACL",
            ErrorCode::InvalidSchema => "INVALID_SCHEMA",
            ErrorCode::IncompatibleSchema => "INCOMPATIBLE_SCHEMA",
            ErrorCode::UnknownSubject => "UNKNOWN_SUBJECT",
            ErrorCode::UnknownSchemaId => "UNKNOWN_SCHEMA_ID",
            ErrorCode::SchemaNotInSubject => "SCHEMA_NOT_IN_SUBJECT",
            ErrorCode::InvalidRecord => "INVALID_RECORD",
            ErrorCode::SchemaTooLarge => "SCHEMA_TOO_LARGE",
            ErrorCode::ReplicaLimit => "REPLICA_LIMIT",
        }
    }

    /// Retryable errors are transient: the same request may succeed later,
    /// possibly at another node. Everything else is the caller's to fix.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::NotLeader | ErrorCode::Unavailable | ErrorCode::Timeout)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.name(), self.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_u16()), "duplicate code {c}");
            assert_eq!(ErrorCode::from_u16(c.as_u16()), Some(c));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::NotLeader.as_u16(), 3, "wire value is part of the contract");
    }
}
