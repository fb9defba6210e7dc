//! replog errors as Kafka error codes: the one place a [`NodeError`] meets
//! Kafka's numbering. Kafka clients act on the code (retry, refresh
//! metadata, give up), so each replog code goes to the Kafka code whose
//! client behaviour fits.

use kafka_protocol::ResponseError as K;
use replog_proto::codes::ErrorCode as R;

use crate::error::NodeError;

/// The Kafka error code for `e`.
pub fn code(e: &NodeError) -> i16 {
    let k = match e.code() {
        R::UnknownTopic | R::UnknownPartition => K::UnknownTopicOrPartition,
        // Not led here (or not hosted here): the client refreshes its
        // metadata and goes to the leader.
        R::NotLeader => K::NotLeaderOrFollower,
        R::OffsetOutOfRange => K::OffsetOutOfRange,
        R::RecordTooLarge | R::BatchTooLarge => K::MessageTooLarge,
        R::CorruptBatch => K::CorruptMessage,
        R::InvalidRecord | R::UnknownSchemaId | R::SchemaNotInSubject => K::InvalidRecord,
        R::InvalidRequest => K::InvalidRequest,
        // Outcome unknown (lost lease, leadership moved, no commit in
        // time): retriable, and the client's retry goes by fresh metadata.
        R::Unavailable | R::Timeout => K::RequestTimedOut,
        R::DiskFull | R::Storage => K::KafkaStorageError,
        R::PermissionDenied => K::TopicAuthorizationFailed,
        R::OutOfOrderSequence => K::OutOfOrderSequenceNumber,
        R::ProducerFenced => K::InvalidProducerEpoch,
        R::InvalidTopicName => K::InvalidTopicException,
        R::TopicAlreadyExists => K::TopicAlreadyExists,
        // More partitions than the brokers can hold.
        R::InvalidPartitions | R::ReplicaLimit => K::InvalidPartitions,
        R::InvalidReplicationFactor => K::InvalidReplicationFactor,
        R::InvalidConfig => K::InvalidConfig,
        _ => K::UnknownServerError,
    };
    k.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_replog_errors_then_kafka_clients_get_the_code_they_act_on() {
        let not_leader = NodeError::NotLeader { what: "t/0".into(), leader: None };
        assert_eq!(code(&not_leader), 6);
        assert_eq!(code(&NodeError::UnknownTopic("t".into())), 3);
        assert_eq!(code(&NodeError::CorruptBatch("crc".into())), 2);
        assert_eq!(code(&NodeError::OffsetOutOfRange { offset: 9, log_start: 0, high_watermark: 3 }), 1);
        assert_eq!(code(&NodeError::Timeout("slow".into())), 7);
        assert_eq!(code(&NodeError::Internal("bug".into())), -1);
    }
}
