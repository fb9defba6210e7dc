//! What the listener serves: each API key with the versions advertised in
//! ApiVersions, and the ApiVersions answer itself. Only what is served is
//! advertised, with one exception: Produce 0–2 (see [`PRODUCE_MIN_SERVED`]).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};

/// The APIs served, with the versions advertised (inclusive).
pub const APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 5),
    (ApiKey::DeleteTopics, 1, 4),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
];

/// Produce 0–2 carry the old message sets (magic 0 and 1), which are not
/// served; they are advertised because librdkafka before 2.11.1 turns
/// gzip and snappy off against a broker that does not list Produce v0. A
/// request at one of them closes the connection like any unserved version.
pub const PRODUCE_MIN_SERVED: i16 = 3;

/// The advertised range of `key`, if it is served at all.
pub fn advertised(key: ApiKey) -> Option<(i16, i16)> {
    APIS.iter().find(|(k, _, _)| *k == key).map(|(_, lo, hi)| (*lo, *hi))
}

/// Whether `key` at `version` is served (advertised, and not one of the
/// advertised-only Produce versions).
pub fn served(key: ApiKey, version: i16) -> bool {
    match advertised(key) {
        Some((lo, hi)) => (lo..=hi).contains(&version) && !(key == ApiKey::Produce && version < PRODUCE_MIN_SERVED),
        None => false,
    }
}

/// The ApiVersions answer; `error_code` UNSUPPORTED_VERSION when the
/// client asked at a version this node does not speak (KIP-511: the
/// answer is then encoded at version 0, and the client retries at the
/// highest version it finds for ApiVersions in the list).
pub fn api_versions(error_code: i16) -> ApiVersionsResponse {
    let keys = APIS
        .iter()
        .map(|(k, lo, hi)| ApiVersion::default().with_api_key(*k as i16).with_min_version(*lo).with_max_version(*hi))
        .collect();
    ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(keys)
}

/// The ApiVersions answer to a version not spoken.
pub fn unsupported() -> ApiVersionsResponse {
    api_versions(ResponseError::UnsupportedVersion.code())
}

#[cfg(test)]
mod tests {
    //! Each advertised version of each served message round-trips through
    //! the codec, requests and responses, headers at the version each
    //! message's flexible range asks for.

    use bytes::BytesMut;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::fetch_response::{self, FetchableTopicResponse};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};

    use super::*;

    /// Encoded, decoded and encoded again, the bytes are the same (fields a
    /// version does not carry are left out on the wire, so the decoded
    /// message is compared by its encoding).
    fn round_trip<T: Encodable + Decodable + std::fmt::Debug>(m: &T, version: i16) {
        let mut buf = BytesMut::new();
        m.encode(&mut buf, version).unwrap_or_else(|e| panic!("encode {m:?} v{version}: {e}"));
        let wire = buf.freeze();
        let mut bytes = wire.clone();
        let back = T::decode(&mut bytes, version).unwrap_or_else(|e| panic!("decode {m:?} v{version}: {e}"));
        assert!(bytes.is_empty(), "v{version}: {} bytes left over", bytes.len());
        let mut again = BytesMut::new();
        back.encode(&mut again, version).unwrap();
        assert_eq!(again.freeze(), wire, "{m:?} v{version}");
    }

    fn check<Req, Resp>(key: ApiKey, req: Req, resp: Resp)
    where
        Req: Encodable + Decodable + Message + std::fmt::Debug + Clone,
        Resp: Encodable + Decodable + Message + std::fmt::Debug + Clone,
    {
        check_each(key, |_| (req.clone(), resp.clone()));
    }

    /// As [`check`], with the messages built per version (for fields that
    /// exist only in some versions).
    fn check_each<Req, Resp>(key: ApiKey, build: impl Fn(i16) -> (Req, Resp))
    where
        Req: Encodable + Decodable + Message + std::fmt::Debug,
        Resp: Encodable + Decodable + Message + std::fmt::Debug,
    {
        let (lo, hi) = advertised(key).unwrap();
        // Produce 0–2 are advertised only; the codec starts at 3.
        let lo = if key == ApiKey::Produce { PRODUCE_MIN_SERVED } else { lo };
        assert!(Req::VERSIONS.min <= lo && hi <= Req::VERSIONS.max, "{key:?} {lo}..={hi} beyond the codec");
        for v in lo..=hi {
            let (req, resp) = build(v);
            round_trip(&req, v);
            round_trip(&resp, v);
            let header = RequestHeader::default()
                .with_request_api_key(key as i16)
                .with_request_api_version(v)
                .with_correlation_id(7)
                .with_client_id(Some(StrBytes::from_static_str("t")));
            round_trip(&header, key.request_header_version(v));
            round_trip(&ResponseHeader::default().with_correlation_id(7), key.response_header_version(v));
        }
    }

    #[test]
    fn given_every_advertised_version_then_messages_and_headers_round_trip() {
        let name = TopicName(StrBytes::from_static_str("orders"));
        check(ApiKey::ApiVersions, ApiVersionsRequest::default(), api_versions(0));
        check(
            ApiKey::Metadata,
            MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name.clone()))])),
            MetadataResponse::default()
                .with_brokers(vec![
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(1))
                        .with_host(StrBytes::from_static_str("127.0.0.1"))
                        .with_port(9091),
                ])
                .with_controller_id(BrokerId(1))
                .with_topics(vec![MetadataResponseTopic::default().with_name(Some(name.clone())).with_partitions(
                    vec![
                        MetadataResponsePartition::default()
                            .with_leader_id(BrokerId(1))
                            .with_leader_epoch(-1)
                            .with_replica_nodes(vec![BrokerId(1), BrokerId(2)])
                            .with_isr_nodes(vec![BrokerId(1), BrokerId(2)]),
                    ],
                )]),
        );
        check(
            ApiKey::Produce,
            ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![
                TopicProduceData::default().with_name(name.clone()).with_partition_data(vec![
                    PartitionProduceData::default().with_index(0).with_records(Some(bytes::Bytes::from_static(b"x"))),
                ]),
            ]),
            ProduceResponse::default().with_responses(vec![
                TopicProduceResponse::default().with_name(name.clone()).with_partition_responses(vec![
                    PartitionProduceResponse::default().with_index(0).with_base_offset(42).with_log_start_offset(0),
                ]),
            ]),
        );
        check(
            ApiKey::Fetch,
            FetchRequest::default().with_replica_id(BrokerId(-1)).with_max_wait_ms(500).with_min_bytes(1).with_topics(
                vec![FetchTopic::default().with_topic(name.clone()).with_partitions(vec![
                    FetchPartition::default().with_fetch_offset(5).with_partition_max_bytes(1 << 20),
                ])],
            ),
            FetchResponse::default().with_responses(vec![
                FetchableTopicResponse::default().with_topic(name.clone()).with_partitions(vec![
                    fetch_response::PartitionData::default()
                        .with_high_watermark(9)
                        .with_last_stable_offset(9)
                        .with_aborted_transactions(Some(vec![]))
                        .with_records(Some(bytes::Bytes::from_static(b"y"))),
                ]),
            ]),
        );
        check(
            ApiKey::ListOffsets,
            ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(name.clone())
                    .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-2)]),
            ]),
            ListOffsetsResponse::default().with_topics(vec![
                ListOffsetsTopicResponse::default()
                    .with_name(name)
                    .with_partitions(vec![ListOffsetsPartitionResponse::default().with_offset(3).with_timestamp(-1)]),
            ]),
        );
    }

    #[test]
    fn given_every_advertised_producer_and_admin_version_then_messages_and_headers_round_trip() {
        use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
        use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
        use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
        use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
        use kafka_protocol::messages::describe_configs_response::{
            DescribeConfigsResourceResult, DescribeConfigsResult,
        };
        let name = TopicName(StrBytes::from_static_str("orders"));
        check(
            ApiKey::InitProducerId,
            InitProducerIdRequest::default().with_transaction_timeout_ms(60_000),
            InitProducerIdResponse::default().with_producer_id(ProducerId(7)).with_producer_epoch(0),
        );
        check(
            ApiKey::CreateTopics,
            CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![
                CreatableTopic::default()
                    .with_name(name.clone())
                    .with_num_partitions(3)
                    .with_replication_factor(-1)
                    .with_configs(vec![
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_static_str("retention.ms"))
                            .with_value(Some(StrBytes::from_static_str("60000"))),
                    ]),
            ]),
            CreateTopicsResponse::default().with_topics(vec![
                CreatableTopicResult::default()
                    .with_name(name.clone())
                    .with_error_message(Some(StrBytes::from_static_str("m")))
                    .with_num_partitions(3)
                    .with_replication_factor(3)
                    .with_configs(Some(vec![
                        CreatableTopicConfigs::default()
                            .with_name(StrBytes::from_static_str("retention.ms"))
                            .with_value(Some(StrBytes::from_static_str("60000")))
                            .with_config_source(1),
                    ])),
            ]),
        );
        check(
            ApiKey::DeleteTopics,
            DeleteTopicsRequest::default().with_timeout_ms(5000).with_topic_names(vec![name.clone()]),
            DeleteTopicsResponse::default()
                .with_responses(vec![DeletableTopicResult::default().with_name(Some(name.clone()))]),
        );
        check(
            ApiKey::DescribeConfigs,
            DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("orders")),
            ]),
            DescribeConfigsResponse::default().with_results(vec![
                DescribeConfigsResult::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("orders"))
                    .with_configs(vec![
                        DescribeConfigsResourceResult::default()
                            .with_name(StrBytes::from_static_str("retention.bytes"))
                            .with_value(Some(StrBytes::from_static_str("-1")))
                            .with_config_source(5),
                    ]),
            ]),
        );
    }

    #[test]
    fn given_every_advertised_group_version_then_messages_and_headers_round_trip() {
        use crate::kafka::groups::encode_assignment;
        let s = |x: &'static str| StrBytes::from_static_str(x);
        let group = GroupId(s("billing"));
        let topic = TopicName(s("orders"));
        let assignment = encode_assignment(&[("orders".to_string(), [0u32, 1].into_iter().collect())].into());
        check_each(ApiKey::FindCoordinator, |v| {
            if v >= 4 {
                (
                    FindCoordinatorRequest::default().with_coordinator_keys(vec![s("billing"), s("audit")]),
                    FindCoordinatorResponse::default().with_coordinators(vec![
                        find_coordinator_response::Coordinator::default()
                            .with_key(s("billing"))
                            .with_node_id(BrokerId(2))
                            .with_host(s("127.0.0.1"))
                            .with_port(9092),
                        find_coordinator_response::Coordinator::default()
                            .with_key(s("audit"))
                            .with_node_id(BrokerId(-1))
                            .with_error_code(15)
                            .with_error_message(Some(s("none"))),
                    ]),
                )
            } else {
                let resp = FindCoordinatorResponse::default()
                    .with_node_id(BrokerId(2))
                    .with_host(s("127.0.0.1"))
                    .with_port(9092);
                (
                    FindCoordinatorRequest::default().with_key(s("billing")),
                    if v >= 1 { resp.with_error_message(Some(s("ok"))) } else { resp },
                )
            }
        });
        check_each(ApiKey::JoinGroup, |v| {
            let resp = JoinGroupResponse::default()
                .with_generation_id(4)
                .with_protocol_name(Some(s("range")))
                .with_leader(s("rdkafka-1"))
                .with_member_id(s("rdkafka-2"))
                .with_members(vec![
                    join_group_response::JoinGroupResponseMember::default()
                        .with_member_id(s("rdkafka-1"))
                        .with_metadata(bytes::Bytes::from_static(b"meta")),
                ]);
            (
                JoinGroupRequest::default()
                    .with_group_id(group.clone())
                    .with_session_timeout_ms(6000)
                    .with_rebalance_timeout_ms(if v >= 1 { 30_000 } else { -1 })
                    .with_member_id(s("rdkafka-2"))
                    .with_protocol_type(s("consumer"))
                    .with_protocols(vec![
                        join_group_request::JoinGroupRequestProtocol::default()
                            .with_name(s("range"))
                            .with_metadata(bytes::Bytes::from_static(b"sub")),
                    ]),
                if v >= 7 { resp.with_protocol_type(Some(s("consumer"))) } else { resp },
            )
        });
        check_each(ApiKey::SyncGroup, |v| {
            let req = SyncGroupRequest::default()
                .with_group_id(group.clone())
                .with_generation_id(4)
                .with_member_id(s("rdkafka-1"))
                .with_assignments(vec![
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(s("rdkafka-1"))
                        .with_assignment(assignment.clone()),
                ]);
            let resp = SyncGroupResponse::default().with_assignment(assignment.clone());
            if v >= 5 {
                (
                    req.with_protocol_type(Some(s("consumer"))).with_protocol_name(Some(s("range"))),
                    resp.with_protocol_type(Some(s("consumer"))).with_protocol_name(Some(s("range"))),
                )
            } else {
                (req, resp)
            }
        });
        check(
            ApiKey::Heartbeat,
            HeartbeatRequest::default().with_group_id(group.clone()).with_generation_id(4).with_member_id(s("m")),
            HeartbeatResponse::default().with_error_code(27),
        );
        check_each(ApiKey::LeaveGroup, |v| {
            if v >= 3 {
                (
                    LeaveGroupRequest::default().with_group_id(group.clone()).with_members(vec![
                        leave_group_request::MemberIdentity::default().with_member_id(s("a")),
                        leave_group_request::MemberIdentity::default().with_member_id(s("b")),
                    ]),
                    LeaveGroupResponse::default().with_members(vec![
                        leave_group_response::MemberResponse::default().with_member_id(s("a")),
                        leave_group_response::MemberResponse::default().with_member_id(s("b")).with_error_code(25),
                    ]),
                )
            } else {
                (
                    LeaveGroupRequest::default().with_group_id(group.clone()).with_member_id(s("a")),
                    LeaveGroupResponse::default().with_error_code(25),
                )
            }
        });
        check_each(ApiKey::OffsetCommit, |v| {
            let req = OffsetCommitRequest::default()
                .with_group_id(group.clone())
                .with_generation_id_or_member_epoch(4)
                .with_member_id(s("m"))
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic.clone())
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(1)
                                .with_committed_offset(42)
                                .with_committed_metadata(Some(s("meta"))),
                        ]),
                ]);
            (
                if (2..=4).contains(&v) { req.with_retention_time_ms(-1) } else { req },
                OffsetCommitResponse::default().with_topics(vec![
                    offset_commit_response::OffsetCommitResponseTopic::default()
                        .with_name(topic.clone())
                        .with_partitions(vec![
                            offset_commit_response::OffsetCommitResponsePartition::default().with_partition_index(1),
                        ]),
                ]),
            )
        });
        check_each(ApiKey::OffsetFetch, |v| {
            if v >= 8 {
                (
                    OffsetFetchRequest::default().with_groups(vec![
                        offset_fetch_request::OffsetFetchRequestGroup::default()
                            .with_group_id(group.clone())
                            .with_topics(Some(vec![
                                offset_fetch_request::OffsetFetchRequestTopics::default()
                                    .with_name(topic.clone())
                                    .with_partition_indexes(vec![0, 1]),
                            ])),
                        offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(GroupId(s("other"))),
                    ]),
                    OffsetFetchResponse::default().with_groups(vec![
                        offset_fetch_response::OffsetFetchResponseGroup::default()
                            .with_group_id(group.clone())
                            .with_topics(vec![
                                offset_fetch_response::OffsetFetchResponseTopics::default()
                                    .with_name(topic.clone())
                                    .with_partitions(vec![
                                        offset_fetch_response::OffsetFetchResponsePartitions::default()
                                            .with_committed_offset(42),
                                    ]),
                            ]),
                        offset_fetch_response::OffsetFetchResponseGroup::default()
                            .with_group_id(GroupId(s("other")))
                            .with_error_code(16),
                    ]),
                )
            } else {
                let resp = OffsetFetchResponse::default().with_topics(vec![
                    offset_fetch_response::OffsetFetchResponseTopic::default()
                        .with_name(topic.clone())
                        .with_partitions(vec![
                            offset_fetch_response::OffsetFetchResponsePartition::default()
                                .with_partition_index(1)
                                .with_committed_offset(42),
                        ]),
                ]);
                (
                    OffsetFetchRequest::default().with_group_id(group.clone()).with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopic::default()
                            .with_name(topic.clone())
                            .with_partition_indexes(vec![1]),
                    ])),
                    if v >= 2 { resp.with_error_code(0) } else { resp },
                )
            }
        });
    }

    #[test]
    fn given_produce_below_v3_then_it_is_advertised_but_not_served() {
        assert_eq!(advertised(ApiKey::Produce), Some((0, 9)));
        assert!(!served(ApiKey::Produce, 2));
        assert!(served(ApiKey::Produce, 3));
        assert!(!served(ApiKey::Fetch, 3));
        assert!(served(ApiKey::JoinGroup, 0));
        assert!(!served(ApiKey::JoinGroup, 8));
        assert!(!served(ApiKey::OffsetCommit, 1));
    }
}
