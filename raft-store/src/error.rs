//! Errors of the storage crate.
//!
//! openraft's storage traits speak `io::Error`, so the Raft-facing methods
//! keep it; what the broker reads directly (the partition read path) and
//! what a state machine refuses are typed here, so that the node maps each
//! case to its wire code in one place instead of decoding error kinds.

use serde::{Deserialize, Serialize};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The batch holding `offset` is no longer stored (released by
    /// retention since the reader looked at the offsets).
    #[error("offset {offset} is no longer stored; the log starts at {log_start}")]
    Evicted { offset: u64, log_start: u64, high_watermark: u64 },
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
}

impl From<StoreError> for std::io::Error {
    fn from(e: StoreError) -> std::io::Error {
        match e {
            StoreError::Io(e) => e,
            other => std::io::Error::new(std::io::ErrorKind::NotFound, other.to_string()),
        }
    }
}

/// Why a state machine refused a committed entry. Every replica refuses
/// alike, so the entry takes no offset anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// The batch header cannot be read.
    #[error("corrupt batch: {0}")]
    CorruptBatch(String),
    /// An idempotent producer's batch leaves a gap in, or reuses, its sequence.
    #[error("{0}")]
    OutOfOrderSequence(String),
    /// An idempotent producer's epoch is older than the partition has seen.
    #[error("{0}")]
    ProducerFenced(String),
    /// The entry makes no sense for this group or has invalid fields.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A consumer group that does not exist.
    #[error("{0}")]
    UnknownGroup(String),
    /// A member id the group does not know (expired, left, or never joined).
    #[error("{0}")]
    UnknownMember(String),
    /// A member acting on an assignment older than its current one.
    #[error("{0}")]
    StaleGeneration(String),
    /// A commit for a partition not assigned to the member.
    #[error("{0}")]
    NotAssigned(String),
    /// A reset or delete of a group that still has members.
    #[error("{0}")]
    GroupNotEmpty(String),
    /// A queue group this partition does not know (created by its first
    /// receive).
    #[error("{0}")]
    UnknownQueueGroup(String),
    /// A settle or renew of a queue event the consumer does not hold.
    #[error("{0}")]
    NotHeld(String),
    /// A settle or renew of a queue event whose lock has expired.
    #[error("{0}")]
    LockExpired(String),
}
