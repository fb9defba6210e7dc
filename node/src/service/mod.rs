//! gRPC services: the client API (`Replog`, one file per RPC) and the
//! peer-only Raft transport (`RaftPeer`).

mod alter_topic_config;
mod cluster_status;
pub(crate) mod create_topic;
mod delete_topic;
mod fetch;
pub mod group;
mod init_producer;
mod list_offsets;
mod metadata;
mod produce;
pub mod queue;
pub mod raft_peer;
pub mod schema;
mod subscribe;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use replog_proto::pb::replog_client::ReplogClient;
use replog_proto::pb::{self, replog_server::Replog};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::error::{NodeError, Result};
use crate::node::Node;

/// Metadata marking an admin request one node forwarded to the controller
/// leader, so it is never forwarded twice.
pub const FORWARDED_KEY: &str = "replog-forwarded";
/// How long a forwarded admin request may take at the controller leader
/// (a topic creation waits for every partition to elect a leader).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(20);

pub struct ClientService {
    pub node: Arc<Node>,
}

fn reply<T>(r: Result<T>) -> std::result::Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

impl ClientService {
    /// Runs an admin request that only the controller leader can serve (see
    /// [`on_controller`]).
    async fn on_controller<T, R, L, LF, F, FF>(&self, req: Request<T>, local: L, forward: F) -> Result<R>
    where
        L: FnOnce(Arc<Node>, T) -> LF,
        LF: Future<Output = Result<R>>,
        F: FnOnce(ReplogClient<Channel>, Request<T>) -> FF,
        FF: Future<Output = std::result::Result<Response<R>, Status>>,
    {
        on_controller(&self.node, req, local, forward).await
    }
}

/// Runs an admin request that only the controller leader can serve: here if
/// this node leads the controller, else at the leader, once (a request
/// already forwarded is not forwarded again).
pub(crate) async fn on_controller<T, R, L, LF, F, FF>(
    node: &Arc<Node>,
    req: Request<T>,
    local: L,
    forward: F,
) -> Result<R>
where
    L: FnOnce(Arc<Node>, T) -> LF,
    LF: Future<Output = Result<R>>,
    F: FnOnce(ReplogClient<Channel>, Request<T>) -> FF,
    FF: Future<Output = std::result::Result<Response<R>, Status>>,
{
    if node.controller.is_leader() {
        return local(node.clone(), req.into_inner()).await;
    }
    if req.metadata().contains_key(FORWARDED_KEY) {
        return Err(NodeError::Unavailable("controller leadership moved; retry".into()));
    }
    let leader = node.controller.leader().filter(|l| *l != node.id);
    let Some(addr) = leader.and_then(|l| node.members.addr(l)) else {
        return Err(NodeError::Unavailable("the controller group has no leader right now".into()));
    };
    let client = node.pool.replog_client(&addr).map_err(|_| node.controller.not_leader())?;
    let mut r = Request::new(req.into_inner());
    r.metadata_mut().insert(FORWARDED_KEY, "1".parse().expect("valid metadata"));
    r.set_timeout(FORWARD_TIMEOUT);
    forward(client, r).await.map(Response::into_inner).map_err(|s| NodeError::from_remote(&addr, s))
}

#[tonic::async_trait]
impl Replog for ClientService {
    async fn create_topic(
        &self,
        req: Request<pb::CreateTopicRequest>,
    ) -> std::result::Result<Response<pb::CreateTopicResponse>, Status> {
        let (md, ext, mut inner) = req.into_parts();
        if let Err(e) = create_topic::prepare(&self.node, &mut inner) {
            return Err(e.into());
        }
        let req = Request::from_parts(md, ext, inner);
        reply(self.on_controller(req, create_topic::handle, |mut c, r| async move { c.create_topic(r).await }).await)
    }

    async fn delete_topic(
        &self,
        req: Request<pb::DeleteTopicRequest>,
    ) -> std::result::Result<Response<pb::DeleteTopicResponse>, Status> {
        reply(self.on_controller(req, delete_topic::handle, |mut c, r| async move { c.delete_topic(r).await }).await)
    }

    async fn alter_topic_config(
        &self,
        req: Request<pb::AlterTopicConfigRequest>,
    ) -> std::result::Result<Response<pb::AlterTopicConfigResponse>, Status> {
        if let Err(e) = alter_topic_config::prepare(req.get_ref()) {
            return Err(e.into());
        }
        reply(
            self.on_controller(
                req,
                alter_topic_config::handle,
                |mut c, r| async move { c.alter_topic_config(r).await },
            )
            .await,
        )
    }

    async fn group_floors(
        &self,
        req: Request<pb::GroupFloorsRequest>,
    ) -> std::result::Result<Response<pb::GroupFloorsResponse>, Status> {
        reply(group::floors::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn metadata(
        &self,
        req: Request<pb::MetadataRequest>,
    ) -> std::result::Result<Response<pb::MetadataResponse>, Status> {
        Ok(Response::new(metadata::handle(&self.node, req.into_inner())))
    }

    async fn produce(
        &self,
        req: Request<pb::ProduceRequest>,
    ) -> std::result::Result<Response<pb::ProduceResponse>, Status> {
        reply(produce::handle(&self.node, req.into_inner()).await)
    }

    async fn fetch(&self, req: Request<pb::FetchRequest>) -> std::result::Result<Response<pb::FetchResponse>, Status> {
        reply(fetch::handle(&self.node, req.into_inner()).await)
    }

    type SubscribeStream = subscribe::SubscribeStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> std::result::Result<Response<Self::SubscribeStream>, Status> {
        reply(subscribe::handle(self.node.clone(), req.into_inner()))
    }

    async fn cluster_status(
        &self,
        _req: Request<pb::ClusterStatusRequest>,
    ) -> std::result::Result<Response<pb::ClusterStatusResponse>, Status> {
        Ok(Response::new(cluster_status::handle(&self.node).await))
    }

    async fn init_producer(
        &self,
        req: Request<pb::InitProducerRequest>,
    ) -> std::result::Result<Response<pb::InitProducerResponse>, Status> {
        reply(self.on_controller(req, init_producer::handle, |mut c, r| async move { c.init_producer(r).await }).await)
    }

    async fn node_info(
        &self,
        _req: Request<pb::NodeInfoRequest>,
    ) -> std::result::Result<Response<pb::NodeInfoResponse>, Status> {
        Ok(Response::new(self.node.node_info()))
    }

    async fn list_offsets(
        &self,
        req: Request<pb::ListOffsetsRequest>,
    ) -> std::result::Result<Response<pb::ListOffsetsResponse>, Status> {
        reply(list_offsets::handle(&self.node, req.into_inner()).await)
    }

    async fn find_coordinator(
        &self,
        req: Request<pb::FindCoordinatorRequest>,
    ) -> std::result::Result<Response<pb::FindCoordinatorResponse>, Status> {
        let create = || async {
            let live = self.node.live_nodes().len() as u32;
            let req = Request::new(pb::CreateTopicRequest {
                name: crate::coordinator::GROUPS_TOPIC.into(),
                partitions: self.node.config.group_partitions,
                replication_factor: live.clamp(1, 3),
                configs: Default::default(),
            });
            self.on_controller(req, create_topic::handle, |mut c, r| async move { c.create_topic(r).await })
                .await
                .map(|_| ())
        };
        reply(group::find_coordinator::handle(self.node.clone(), req.into_inner(), create).await)
    }

    async fn join_group(
        &self,
        req: Request<pb::JoinGroupRequest>,
    ) -> std::result::Result<Response<pb::JoinGroupResponse>, Status> {
        reply(group::join_group::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn group_heartbeat(
        &self,
        req: Request<pb::GroupHeartbeatRequest>,
    ) -> std::result::Result<Response<pb::GroupHeartbeatResponse>, Status> {
        reply(group::heartbeat::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn leave_group(
        &self,
        req: Request<pb::LeaveGroupRequest>,
    ) -> std::result::Result<Response<pb::LeaveGroupResponse>, Status> {
        reply(group::leave_group::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn commit_offsets(
        &self,
        req: Request<pb::CommitOffsetsRequest>,
    ) -> std::result::Result<Response<pb::CommitOffsetsResponse>, Status> {
        reply(group::commit_offsets::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn fetch_offsets(
        &self,
        req: Request<pb::FetchOffsetsRequest>,
    ) -> std::result::Result<Response<pb::FetchOffsetsResponse>, Status> {
        reply(group::fetch_offsets::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn describe_group(
        &self,
        req: Request<pb::DescribeGroupRequest>,
    ) -> std::result::Result<Response<pb::DescribeGroupResponse>, Status> {
        reply(group::describe_group::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn list_groups(
        &self,
        req: Request<pb::ListGroupsRequest>,
    ) -> std::result::Result<Response<pb::ListGroupsResponse>, Status> {
        reply(group::list_groups::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn reset_offsets(
        &self,
        req: Request<pb::ResetOffsetsRequest>,
    ) -> std::result::Result<Response<pb::ResetOffsetsResponse>, Status> {
        reply(group::reset_offsets::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn delete_group(
        &self,
        req: Request<pb::DeleteGroupRequest>,
    ) -> std::result::Result<Response<pb::DeleteGroupResponse>, Status> {
        reply(group::delete_group::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn queue_receive(
        &self,
        req: Request<pb::QueueReceiveRequest>,
    ) -> std::result::Result<Response<pb::QueueReceiveResponse>, Status> {
        reply(queue::receive::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn queue_ack(
        &self,
        req: Request<pb::QueueEventsRequest>,
    ) -> std::result::Result<Response<pb::QueueAckResponse>, Status> {
        reply(queue::ack::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn queue_release(
        &self,
        req: Request<pb::QueueEventsRequest>,
    ) -> std::result::Result<Response<pb::QueueReleaseResponse>, Status> {
        reply(queue::release::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn queue_reject(
        &self,
        req: Request<pb::QueueEventsRequest>,
    ) -> std::result::Result<Response<pb::QueueRejectResponse>, Status> {
        reply(queue::reject::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn queue_renew(
        &self,
        req: Request<pb::QueueEventsRequest>,
    ) -> std::result::Result<Response<pb::QueueRenewResponse>, Status> {
        reply(queue::renew::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn queue_describe(
        &self,
        req: Request<pb::QueueDescribeRequest>,
    ) -> std::result::Result<Response<pb::QueueDescribeResponse>, Status> {
        reply(queue::describe::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn queue_reset(
        &self,
        req: Request<pb::QueueResetRequest>,
    ) -> std::result::Result<Response<pb::QueueResetResponse>, Status> {
        reply(queue::reset::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn register_schema(
        &self,
        req: Request<pb::RegisterSchemaRequest>,
    ) -> std::result::Result<Response<pb::RegisterSchemaResponse>, Status> {
        if let Err(e) = schema::register::prepare(req.get_ref()) {
            return Err(e.into());
        }
        reply(
            self.on_controller(req, schema::register::handle, |mut c, r| async move { c.register_schema(r).await })
                .await,
        )
    }

    async fn check_schema(
        &self,
        req: Request<pb::CheckSchemaRequest>,
    ) -> std::result::Result<Response<pb::CheckSchemaResponse>, Status> {
        reply(self.on_controller(req, schema::check::handle, |mut c, r| async move { c.check_schema(r).await }).await)
    }

    async fn get_schema(
        &self,
        req: Request<pb::GetSchemaRequest>,
    ) -> std::result::Result<Response<pb::GetSchemaResponse>, Status> {
        reply(self.on_controller(req, schema::get::handle, |mut c, r| async move { c.get_schema(r).await }).await)
    }

    async fn list_schemas(
        &self,
        req: Request<pb::ListSchemasRequest>,
    ) -> std::result::Result<Response<pb::ListSchemasResponse>, Status> {
        reply(self.on_controller(req, schema::list::handle, |mut c, r| async move { c.list_schemas(r).await }).await)
    }

    async fn delete_schema(
        &self,
        req: Request<pb::DeleteSchemaRequest>,
    ) -> std::result::Result<Response<pb::DeleteSchemaResponse>, Status> {
        reply(self.on_controller(req, schema::delete::handle, |mut c, r| async move { c.delete_schema(r).await }).await)
    }

    async fn set_schema_compatibility(
        &self,
        req: Request<pb::SetSchemaCompatibilityRequest>,
    ) -> std::result::Result<Response<pb::SetSchemaCompatibilityResponse>, Status> {
        if let Err(e) = schema::set_compatibility::prepare(req.get_ref()) {
            return Err(e.into());
        }
        reply(
            self.on_controller(req, schema::set_compatibility::handle, |mut c, r| async move {
                c.set_schema_compatibility(r).await
            })
            .await,
        )
    }
}
