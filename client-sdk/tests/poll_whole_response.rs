//! `PartitionReader::poll` takes a fetch response whole or not at all: when
//! a later batch of a response cannot be decoded, the poll fails and the
//! position stays where it was, so the records of the good batches before
//! it are read again by the next poll — none is skipped.
//!
//! The broker side is a small real gRPC server speaking the replog client
//! protocol, not a replog node: a node validates every batch's checksum
//! before appending it, so a real cluster cannot be made to serve a
//! response whose second batch is damaged (that would take damage on the
//! wire or on disk at a precise spot).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use replog_client::{Client, ClientConfig, Error, PartitionReader, Record};
use replog_proto::batch;
use replog_proto::pb::{self, replog_server::Replog, replog_server::ReplogServer};
use tonic::{Request, Response, Status};

/// Bound on every request of the test; the server answers at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    addr: String,
    /// Damage the second batch of every fetch response.
    damage_second_batch: bool,
    /// The offset of every fetch received, in order.
    fetched_at: Vec<u64>,
}

/// Partition `t`/0 holding five records in two batches: `r0..r2` at 0 and
/// `r3, r4` at 3.
#[derive(Clone, Default)]
struct OnePartition(Arc<Mutex<State>>);

fn values(range: std::ops::Range<u64>) -> Vec<Record> {
    range.map(|i| Record::new(None, Bytes::from(format!("r{i}")), 1)).collect()
}

#[tonic::async_trait]
impl Replog for OnePartition {
    async fn register_schema(
        &self,
        _: Request<pb::RegisterSchemaRequest>,
    ) -> Result<Response<pb::RegisterSchemaResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn check_schema(
        &self,
        _: Request<pb::CheckSchemaRequest>,
    ) -> Result<Response<pb::CheckSchemaResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn get_schema(&self, _: Request<pb::GetSchemaRequest>) -> Result<Response<pb::GetSchemaResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn list_schemas(
        &self,
        _: Request<pb::ListSchemasRequest>,
    ) -> Result<Response<pb::ListSchemasResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn delete_schema(
        &self,
        _: Request<pb::DeleteSchemaRequest>,
    ) -> Result<Response<pb::DeleteSchemaResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn set_schema_compatibility(
        &self,
        _: Request<pb::SetSchemaCompatibilityRequest>,
    ) -> Result<Response<pb::SetSchemaCompatibilityResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn metadata(&self, _: Request<pb::MetadataRequest>) -> Result<Response<pb::MetadataResponse>, Status> {
        let addr = self.0.lock().expect("state").addr.clone();
        Ok(Response::new(pb::MetadataResponse {
            nodes: vec![pb::BrokerInfo { id: 1, addr }],
            topics: vec![pb::TopicMetadata {
                configs: Default::default(),
                name: "t".into(),
                topic_id: 1,
                partitions: vec![pb::PartitionMetadata {
                    partition: 0,
                    group_id: 1,
                    leader: 1,
                    replicas: vec![1],
                    log_start_offset: 0,
                    high_watermark: 5,
                }],
            }],
        }))
    }

    async fn fetch(&self, req: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        let mut st = self.0.lock().expect("state");
        st.fetched_at.push(req.get_ref().offset);
        let mut second = batch::encode(&values(3..5)).to_vec();
        if st.damage_second_batch {
            let last = second.len() - 1;
            second[last] ^= 0xff;
        }
        Ok(Response::new(pb::FetchResponse {
            batches: vec![
                pb::FetchedBatch { base_offset: 0, batch: batch::encode(&values(0..3)) },
                pb::FetchedBatch { base_offset: 3, batch: Bytes::from(second) },
            ],
            high_watermark: 5,
            log_start_offset: 0,
        }))
    }

    async fn create_topic(
        &self,
        _: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn alter_topic_config(
        &self,
        _: Request<pb::AlterTopicConfigRequest>,
    ) -> Result<Response<pb::AlterTopicConfigResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn group_floors(
        &self,
        _: Request<pb::GroupFloorsRequest>,
    ) -> Result<Response<pb::GroupFloorsResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn delete_topic(
        &self,
        _: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn produce(&self, _: Request<pb::ProduceRequest>) -> Result<Response<pb::ProduceResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn cluster_status(
        &self,
        _: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn node_info(&self, _: Request<pb::NodeInfoRequest>) -> Result<Response<pb::NodeInfoResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn init_producer(
        &self,
        _: Request<pb::InitProducerRequest>,
    ) -> Result<Response<pb::InitProducerResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    type SubscribeStream = tokio_stream::Empty<Result<pb::FetchResponse, Status>>;

    async fn subscribe(&self, _: Request<pb::SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("subscribe"))
    }

    async fn list_offsets(
        &self,
        _: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        Err(Status::unimplemented("list_offsets"))
    }

    async fn find_coordinator(
        &self,
        _: Request<pb::FindCoordinatorRequest>,
    ) -> Result<Response<pb::FindCoordinatorResponse>, Status> {
        Err(Status::unimplemented("find_coordinator"))
    }

    async fn join_group(&self, _: Request<pb::JoinGroupRequest>) -> Result<Response<pb::JoinGroupResponse>, Status> {
        Err(Status::unimplemented("join_group"))
    }

    async fn group_heartbeat(
        &self,
        _: Request<pb::GroupHeartbeatRequest>,
    ) -> Result<Response<pb::GroupHeartbeatResponse>, Status> {
        Err(Status::unimplemented("group_heartbeat"))
    }

    async fn leave_group(&self, _: Request<pb::LeaveGroupRequest>) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        Err(Status::unimplemented("leave_group"))
    }

    async fn commit_offsets(
        &self,
        _: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        Err(Status::unimplemented("commit_offsets"))
    }

    async fn fetch_offsets(
        &self,
        _: Request<pb::FetchOffsetsRequest>,
    ) -> Result<Response<pb::FetchOffsetsResponse>, Status> {
        Err(Status::unimplemented("fetch_offsets"))
    }

    async fn describe_group(
        &self,
        _: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        Err(Status::unimplemented("describe_group"))
    }

    async fn list_groups(&self, _: Request<pb::ListGroupsRequest>) -> Result<Response<pb::ListGroupsResponse>, Status> {
        Err(Status::unimplemented("list_groups"))
    }

    async fn reset_offsets(
        &self,
        _: Request<pb::ResetOffsetsRequest>,
    ) -> Result<Response<pb::ResetOffsetsResponse>, Status> {
        Err(Status::unimplemented("reset_offsets"))
    }

    async fn queue_receive(
        &self,
        _: Request<pb::QueueReceiveRequest>,
    ) -> Result<Response<pb::QueueReceiveResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn queue_ack(&self, _: Request<pb::QueueEventsRequest>) -> Result<Response<pb::QueueAckResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn queue_release(
        &self,
        _: Request<pb::QueueEventsRequest>,
    ) -> Result<Response<pb::QueueReleaseResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn queue_reject(
        &self,
        _: Request<pb::QueueEventsRequest>,
    ) -> Result<Response<pb::QueueRejectResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn queue_renew(
        &self,
        _: Request<pb::QueueEventsRequest>,
    ) -> Result<Response<pb::QueueRenewResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn queue_describe(
        &self,
        _: Request<pb::QueueDescribeRequest>,
    ) -> Result<Response<pb::QueueDescribeResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn queue_reset(&self, _: Request<pb::QueueResetRequest>) -> Result<Response<pb::QueueResetResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn upsert_user(&self, _: Request<pb::UpsertUserRequest>) -> Result<Response<pb::UpsertUserResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn delete_user(&self, _: Request<pb::DeleteUserRequest>) -> Result<Response<pb::DeleteUserResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn list_users(&self, _: Request<pb::ListUsersRequest>) -> Result<Response<pb::ListUsersResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn add_acl(&self, _: Request<pb::AclRequest>) -> Result<Response<pb::AclResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn remove_acl(&self, _: Request<pb::AclRequest>) -> Result<Response<pb::AclResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn list_acls(&self, _: Request<pb::ListAclsRequest>) -> Result<Response<pb::ListAclsResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn who_am_i(&self, _: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn delete_group(
        &self,
        _: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        Err(Status::unimplemented("delete_group"))
    }

    async fn join_cluster(
        &self,
        _: Request<pb::JoinClusterRequest>,
    ) -> Result<Response<pb::JoinClusterResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn move_partition(
        &self,
        _: Request<pb::MovePartitionRequest>,
    ) -> Result<Response<pb::MovePartitionResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn move_status(&self, _: Request<pb::MoveStatusRequest>) -> Result<Response<pb::MoveStatusResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn decommission_node(
        &self,
        _: Request<pb::DecommissionNodeRequest>,
    ) -> Result<Response<pb::DecommissionNodeResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn balance_cluster(
        &self,
        _: Request<pb::BalanceClusterRequest>,
    ) -> Result<Response<pb::BalanceClusterResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn finish_move(&self, _: Request<pb::FinishMoveRequest>) -> Result<Response<pb::FinishMoveResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn cluster_config(
        &self,
        _: Request<pb::ClusterConfigRequest>,
    ) -> Result<Response<pb::ClusterConfigResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn controller_read_index(
        &self,
        _: Request<pb::ControllerReadIndexRequest>,
    ) -> Result<Response<pb::ControllerReadIndexResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }

    async fn controller_voters(
        &self,
        _: Request<pb::ControllerVotersRequest>,
    ) -> Result<Response<pb::ControllerVotersResponse>, Status> {
        Err(Status::unimplemented("not needed here"))
    }
}

async fn serve(state: OnePartition) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    state.0.lock().expect("state").addr = addr.to_string();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder().add_service(ReplogServer::new(state)).serve_with_incoming(incoming),
    );
    addr
}

#[tokio::test]
async fn given_a_response_whose_second_batch_is_damaged_when_polled_then_nothing_is_taken_and_nothing_skipped() {
    let state = OnePartition::default();
    state.0.lock().expect("state").damage_second_batch = true;
    let addr = serve(state.clone()).await;
    let cfg = ClientConfig { request_timeout: REQUEST_TIMEOUT, retry_deadline: REQUEST_TIMEOUT, ..Default::default() };
    let client = Client::connect_with([addr.to_string()], cfg).await.expect("connect");
    let mut reader = PartitionReader::new(client, "t", 0, 0);

    let err = reader.poll().await.expect_err("the second batch is damaged");
    assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
    assert_eq!(reader.position(), 0, "a rejected response must not move the position");

    state.0.lock().expect("state").damage_second_batch = false;
    let got: Vec<(u64, Bytes)> = reader.poll().await.expect("poll").into_iter().map(|r| (r.offset, r.value)).collect();
    let want: Vec<(u64, Bytes)> = (0..5).map(|i| (i, Bytes::from(format!("r{i}")))).collect();
    assert_eq!(got, want, "the records of the good batch must come back, none skipped");
    assert_eq!(reader.position(), 5);
    assert_eq!(state.0.lock().expect("state").fetched_at, vec![0, 0], "the second poll asks from the same offset");
}
