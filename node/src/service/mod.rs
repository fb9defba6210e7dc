//! gRPC services: the client API (`Replog`, one file per RPC) and the
//! peer-only Raft transport (`RaftPeer`).

mod alter_topic_config;
mod cluster_status;
pub(crate) mod create_topic;
pub(crate) mod delete_topic;
mod fetch;
pub mod group;
pub(crate) mod init_producer;
mod list_offsets;
pub mod membership;
mod metadata;
pub(crate) mod produce;
pub mod queue;
pub mod raft_peer;
pub mod schema;
pub mod security;
mod subscribe;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use replog_proto::pb::replog_client::ReplogClient;
use replog_proto::pb::{self, replog_server::Replog};
use tonic::{Request, Response, Status};

use replog_raft_store::security::{Operation, ResourceType};

use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::raft_net::PeerChannel;
use crate::security::auth::{self, Principal};

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
    /// PERMISSION_DENIED unless the request's principal may do `op` on
    /// `rt`/`name` (see [`auth::authorize`]).
    fn check<T>(
        &self,
        req: &Request<T>,
        rt: ResourceType,
        name: &str,
        op: Operation,
    ) -> std::result::Result<(), Status> {
        auth::authorize(&self.node, &Principal::of(req), rt, name, op).map_err(Status::from)
    }

    /// Holds the answer back while `principal` is over `quota`.
    async fn throttle(&self, quota: &crate::security::quota::Quota, kind: &str, principal: &Principal, bytes: u64) {
        if *principal == Principal::Peer {
            return;
        }
        let wait = quota.charge(principal.name(), bytes);
        if !wait.is_zero() {
            self.node.metrics.quota_throttle_seconds.with_label_values(&[kind]).inc_by(wait.as_secs_f64());
            tokio::time::sleep(wait).await;
        }
    }

    /// A schema read: by subject, `describe` on it; by id, `describe` on a
    /// subject that holds the id (on every subject, `*`, when none does).
    fn check_schema_read<T>(&self, req: &Request<T>, id: u32, subject: &str) -> std::result::Result<(), Status> {
        if id == 0 {
            return self.check(req, Subject, subject, Describe);
        }
        let meta = self.node.meta();
        let mut holders = meta.schemas.subjects.iter().filter(|(_, s)| s.holds(id)).map(|(name, _)| name.as_str());
        let name = holders.find(|name| self.allowed(req, Subject, name, Describe)).unwrap_or("*");
        self.check(req, Subject, name, Describe)
    }

    fn allowed<T>(&self, req: &Request<T>, rt: ResourceType, name: &str, op: Operation) -> bool {
        auth::allowed(&self.node, &Principal::of(req), rt, name, op)
    }

    /// Runs an admin request that only the controller leader can serve (see
    /// [`on_controller`]).
    async fn on_controller<T, R, L, LF, F, FF>(&self, req: Request<T>, local: L, forward: F) -> Result<R>
    where
        L: FnOnce(Arc<Node>, T) -> LF,
        LF: Future<Output = Result<R>>,
        F: FnOnce(ReplogClient<PeerChannel>, Request<T>) -> FF,
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
    F: FnOnce(ReplogClient<PeerChannel>, Request<T>) -> FF,
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

use Operation::{Alter, Consume, Create, Delete, Describe, Produce};
use ResourceType::{Cluster, Group, Subject, Topic};

#[tonic::async_trait]
impl Replog for ClientService {
    async fn upsert_user(
        &self,
        req: Request<pb::UpsertUserRequest>,
    ) -> std::result::Result<Response<pb::UpsertUserResponse>, Status> {
        self.check(&req, Cluster, "*", Alter)?;
        security::users::prepare(req.get_ref())?;
        reply(self.on_controller(req, security::users::upsert, |mut c, r| async move { c.upsert_user(r).await }).await)
    }

    async fn delete_user(
        &self,
        req: Request<pb::DeleteUserRequest>,
    ) -> std::result::Result<Response<pb::DeleteUserResponse>, Status> {
        self.check(&req, Cluster, "*", Alter)?;
        reply(self.on_controller(req, security::users::delete, |mut c, r| async move { c.delete_user(r).await }).await)
    }

    async fn list_users(
        &self,
        req: Request<pb::ListUsersRequest>,
    ) -> std::result::Result<Response<pb::ListUsersResponse>, Status> {
        self.check(&req, Cluster, "*", Describe)?;
        Ok(Response::new(security::users::list(&self.node)))
    }

    async fn add_acl(&self, req: Request<pb::AclRequest>) -> std::result::Result<Response<pb::AclResponse>, Status> {
        self.check(&req, Cluster, "*", Alter)?;
        security::acls::parse(req.get_ref().acl.as_ref())?;
        reply(self.on_controller(req, security::acls::add, |mut c, r| async move { c.add_acl(r).await }).await)
    }

    async fn remove_acl(&self, req: Request<pb::AclRequest>) -> std::result::Result<Response<pb::AclResponse>, Status> {
        self.check(&req, Cluster, "*", Alter)?;
        security::acls::parse(req.get_ref().acl.as_ref())?;
        reply(self.on_controller(req, security::acls::remove, |mut c, r| async move { c.remove_acl(r).await }).await)
    }

    async fn list_acls(
        &self,
        req: Request<pb::ListAclsRequest>,
    ) -> std::result::Result<Response<pb::ListAclsResponse>, Status> {
        self.check(&req, Cluster, "*", Describe)?;
        Ok(Response::new(security::acls::list(&self.node)))
    }

    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> std::result::Result<Response<pb::WhoAmIResponse>, Status> {
        Ok(Response::new(security::who_am_i::handle(&self.node, &Principal::of(&req))))
    }

    async fn create_topic(
        &self,
        req: Request<pb::CreateTopicRequest>,
    ) -> std::result::Result<Response<pb::CreateTopicResponse>, Status> {
        let name = req.get_ref().name.clone();
        if !self.allowed(&req, Cluster, "*", Create) {
            self.check(&req, Topic, &name, Create)?;
        }
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
        self.check(&req, Topic, &req.get_ref().name, Delete)?;
        reply(self.on_controller(req, delete_topic::handle, |mut c, r| async move { c.delete_topic(r).await }).await)
    }

    async fn alter_topic_config(
        &self,
        req: Request<pb::AlterTopicConfigRequest>,
    ) -> std::result::Result<Response<pb::AlterTopicConfigResponse>, Status> {
        self.check(&req, Topic, &req.get_ref().name, Alter)?;
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
        self.check(&req, Cluster, "*", Alter)?;
        reply(group::floors::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn metadata(
        &self,
        req: Request<pb::MetadataRequest>,
    ) -> std::result::Result<Response<pb::MetadataResponse>, Status> {
        self.node.check_metadata_known()?;
        let mut r = metadata::handle(&self.node, req.get_ref().clone());
        if let Some(missing) = req.get_ref().topics.iter().find(|t| !r.topics.iter().any(|m| &m.name == *t))
            && !self.node.controller.caught_up()
        {
            return Err(self.node.unknown_topic(missing).into());
        }
        r.topics.retain(|t| self.allowed(&req, Topic, &t.name, Describe));
        Ok(Response::new(r))
    }

    async fn produce(
        &self,
        req: Request<pb::ProduceRequest>,
    ) -> std::result::Result<Response<pb::ProduceResponse>, Status> {
        self.check(&req, Topic, &req.get_ref().topic, Produce)?;
        let (principal, bytes) = (Principal::of(&req), req.get_ref().batch.len() as u64);
        let r = produce::handle(&self.node, req.into_inner()).await;
        self.throttle(&self.node.produce_quota, "produce", &principal, bytes).await;
        reply(r)
    }

    async fn fetch(&self, req: Request<pb::FetchRequest>) -> std::result::Result<Response<pb::FetchResponse>, Status> {
        self.check(&req, Topic, &req.get_ref().topic, Consume)?;
        let principal = Principal::of(&req);
        let r = fetch::handle(&self.node, req.into_inner()).await;
        if let Ok(r) = &r {
            let bytes = r.batches.iter().map(|b| b.batch.len() as u64).sum();
            self.throttle(&self.node.fetch_quota, "fetch", &principal, bytes).await;
        }
        reply(r)
    }

    type SubscribeStream = subscribe::SubscribeStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> std::result::Result<Response<Self::SubscribeStream>, Status> {
        self.check(&req, Topic, &req.get_ref().topic, Consume)?;
        reply(subscribe::handle(self.node.clone(), req.into_inner()))
    }

    async fn cluster_status(
        &self,
        _req: Request<pb::ClusterStatusRequest>,
    ) -> std::result::Result<Response<pb::ClusterStatusResponse>, Status> {
        self.check(&_req, Cluster, "*", Describe)?;
        Ok(Response::new(cluster_status::handle(&self.node).await))
    }

    async fn init_producer(
        &self,
        req: Request<pb::InitProducerRequest>,
    ) -> std::result::Result<Response<pb::InitProducerResponse>, Status> {
        reply(self.on_controller(req, init_producer::handle, |mut c, r| async move { c.init_producer(r).await }).await)
    }

    async fn join_cluster(
        &self,
        req: Request<pb::JoinClusterRequest>,
    ) -> std::result::Result<Response<pb::JoinClusterResponse>, Status> {
        // Nodes ask through the peer listener, as nodes.
        self.check(&req, Cluster, "*", Alter)?;
        reply(
            self.on_controller(req, membership::join::handle, |mut c, r| async move { c.join_cluster(r).await }).await,
        )
    }

    async fn move_partition(
        &self,
        req: Request<pb::MovePartitionRequest>,
    ) -> std::result::Result<Response<pb::MovePartitionResponse>, Status> {
        self.check(&req, Cluster, "*", Alter)?;
        reply(
            self.on_controller(
                req,
                membership::move_partition::handle,
                |mut c, r| async move { c.move_partition(r).await },
            )
            .await,
        )
    }

    async fn move_status(
        &self,
        req: Request<pb::MoveStatusRequest>,
    ) -> std::result::Result<Response<pb::MoveStatusResponse>, Status> {
        self.check(&req, Cluster, "*", Describe)?;
        Ok(Response::new(membership::status::handle(&self.node, req.into_inner())))
    }

    async fn decommission_node(
        &self,
        req: Request<pb::DecommissionNodeRequest>,
    ) -> std::result::Result<Response<pb::DecommissionNodeResponse>, Status> {
        self.check(&req, Cluster, "*", Alter)?;
        reply(
            self.on_controller(req, membership::decommission::handle, |mut c, r| async move {
                c.decommission_node(r).await
            })
            .await,
        )
    }

    async fn balance_cluster(
        &self,
        req: Request<pb::BalanceClusterRequest>,
    ) -> std::result::Result<Response<pb::BalanceClusterResponse>, Status> {
        let op = if req.get_ref().dry_run { Describe } else { Alter };
        self.check(&req, Cluster, "*", op)?;
        reply(
            self.on_controller(req, membership::balance::handle, |mut c, r| async move { c.balance_cluster(r).await })
                .await,
        )
    }

    async fn cluster_config(
        &self,
        req: Request<pb::ClusterConfigRequest>,
    ) -> std::result::Result<Response<pb::ClusterConfigResponse>, Status> {
        let op = if req.get_ref().set.is_empty() { Describe } else { Alter };
        self.check(&req, Cluster, "*", op)?;
        reply(
            self.on_controller(
                req,
                membership::cluster_config::handle,
                |mut c, r| async move { c.cluster_config(r).await },
            )
            .await,
        )
    }

    async fn controller_read_index(
        &self,
        req: Request<pb::ControllerReadIndexRequest>,
    ) -> std::result::Result<Response<pb::ControllerReadIndexResponse>, Status> {
        self.check(&req, Cluster, "*", Describe)?;
        if !self.node.controller.is_leader() {
            return Err(self.node.controller.not_leader().into());
        }
        reply(self.node.controller.read_index().await.map(|index| pb::ControllerReadIndexResponse { index }))
    }

    async fn controller_voters(
        &self,
        req: Request<pb::ControllerVotersRequest>,
    ) -> std::result::Result<Response<pb::ControllerVotersResponse>, Status> {
        let r = req.get_ref();
        let op = if r.add.is_empty() && r.remove.is_empty() { Describe } else { Alter };
        self.check(&req, Cluster, "*", op)?;
        reply(
            self.on_controller(req, membership::voters::handle, |mut c, r| async move { c.controller_voters(r).await })
                .await,
        )
    }

    async fn finish_move(
        &self,
        req: Request<pb::FinishMoveRequest>,
    ) -> std::result::Result<Response<pb::FinishMoveResponse>, Status> {
        // Partition leaders report through the peer listener, as nodes.
        self.check(&req, Cluster, "*", Alter)?;
        reply(
            self.on_controller(req, membership::finish_move::handle, |mut c, r| async move { c.finish_move(r).await })
                .await,
        )
    }

    async fn node_info(
        &self,
        _req: Request<pb::NodeInfoRequest>,
    ) -> std::result::Result<Response<pb::NodeInfoResponse>, Status> {
        self.check(&_req, Cluster, "*", Describe)?;
        Ok(Response::new(self.node.node_info()))
    }

    async fn list_offsets(
        &self,
        req: Request<pb::ListOffsetsRequest>,
    ) -> std::result::Result<Response<pb::ListOffsetsResponse>, Status> {
        self.check(&req, Topic, &req.get_ref().topic, Describe)?;
        reply(list_offsets::handle(&self.node, req.into_inner()).await)
    }

    async fn find_coordinator(
        &self,
        req: Request<pb::FindCoordinatorRequest>,
    ) -> std::result::Result<Response<pb::FindCoordinatorResponse>, Status> {
        self.check(&req, Group, &req.get_ref().group, Describe)?;
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
        self.check(&req, Group, &req.get_ref().group, Consume)?;
        reply(group::join_group::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn group_heartbeat(
        &self,
        req: Request<pb::GroupHeartbeatRequest>,
    ) -> std::result::Result<Response<pb::GroupHeartbeatResponse>, Status> {
        self.check(&req, Group, &req.get_ref().group, Consume)?;
        reply(group::heartbeat::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn leave_group(
        &self,
        req: Request<pb::LeaveGroupRequest>,
    ) -> std::result::Result<Response<pb::LeaveGroupResponse>, Status> {
        self.check(&req, Group, &req.get_ref().group, Consume)?;
        reply(group::leave_group::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn commit_offsets(
        &self,
        req: Request<pb::CommitOffsetsRequest>,
    ) -> std::result::Result<Response<pb::CommitOffsetsResponse>, Status> {
        self.check(&req, Group, &req.get_ref().group, Consume)?;
        reply(group::commit_offsets::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn fetch_offsets(
        &self,
        req: Request<pb::FetchOffsetsRequest>,
    ) -> std::result::Result<Response<pb::FetchOffsetsResponse>, Status> {
        self.check(&req, Group, &req.get_ref().group, Describe)?;
        reply(group::fetch_offsets::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn describe_group(
        &self,
        req: Request<pb::DescribeGroupRequest>,
    ) -> std::result::Result<Response<pb::DescribeGroupResponse>, Status> {
        self.check(&req, Group, &req.get_ref().group, Describe)?;
        reply(group::describe_group::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn list_groups(
        &self,
        req: Request<pb::ListGroupsRequest>,
    ) -> std::result::Result<Response<pb::ListGroupsResponse>, Status> {
        let principal = Principal::of(&req);
        let mut r = group::list_groups::handle(self.node.clone(), req.into_inner()).await;
        if let Ok(r) = &mut r {
            r.groups.retain(|g| auth::allowed(&self.node, &principal, Group, &g.group, Describe));
        }
        reply(r)
    }

    async fn reset_offsets(
        &self,
        req: Request<pb::ResetOffsetsRequest>,
    ) -> std::result::Result<Response<pb::ResetOffsetsResponse>, Status> {
        self.check(&req, Group, &req.get_ref().group, Alter)?;
        reply(group::reset_offsets::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn delete_group(
        &self,
        req: Request<pb::DeleteGroupRequest>,
    ) -> std::result::Result<Response<pb::DeleteGroupResponse>, Status> {
        self.check(&req, Group, &req.get_ref().group, Delete)?;
        reply(group::delete_group::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn queue_receive(
        &self,
        req: Request<pb::QueueReceiveRequest>,
    ) -> std::result::Result<Response<pb::QueueReceiveResponse>, Status> {
        self.check(&req, Group, &req.get_ref().group, Consume)?;
        self.check(&req, Topic, &req.get_ref().topic, Consume)?;
        reply(queue::receive::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn queue_ack(
        &self,
        req: Request<pb::QueueEventsRequest>,
    ) -> std::result::Result<Response<pb::QueueAckResponse>, Status> {
        self.check(&req, Group, &req.get_ref().group, Consume)?;
        self.check(&req, Topic, &req.get_ref().topic, Consume)?;
        reply(queue::ack::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn queue_release(
        &self,
        req: Request<pb::QueueEventsRequest>,
    ) -> std::result::Result<Response<pb::QueueReleaseResponse>, Status> {
        self.check(&req, Group, &req.get_ref().group, Consume)?;
        self.check(&req, Topic, &req.get_ref().topic, Consume)?;
        reply(queue::release::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn queue_reject(
        &self,
        req: Request<pb::QueueEventsRequest>,
    ) -> std::result::Result<Response<pb::QueueRejectResponse>, Status> {
        self.check(&req, Group, &req.get_ref().group, Consume)?;
        self.check(&req, Topic, &req.get_ref().topic, Consume)?;
        reply(queue::reject::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn queue_renew(
        &self,
        req: Request<pb::QueueEventsRequest>,
    ) -> std::result::Result<Response<pb::QueueRenewResponse>, Status> {
        self.check(&req, Group, &req.get_ref().group, Consume)?;
        self.check(&req, Topic, &req.get_ref().topic, Consume)?;
        reply(queue::renew::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn queue_describe(
        &self,
        req: Request<pb::QueueDescribeRequest>,
    ) -> std::result::Result<Response<pb::QueueDescribeResponse>, Status> {
        self.check(&req, Group, &req.get_ref().group, Describe)?;
        self.check(&req, Topic, &req.get_ref().topic, Describe)?;
        reply(queue::describe::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn queue_reset(
        &self,
        req: Request<pb::QueueResetRequest>,
    ) -> std::result::Result<Response<pb::QueueResetResponse>, Status> {
        self.check(&req, Group, &req.get_ref().group, Alter)?;
        self.check(&req, Topic, &req.get_ref().topic, Describe)?;
        reply(queue::reset::handle(self.node.clone(), req.into_inner()).await)
    }

    async fn register_schema(
        &self,
        req: Request<pb::RegisterSchemaRequest>,
    ) -> std::result::Result<Response<pb::RegisterSchemaResponse>, Status> {
        self.check(&req, Subject, &req.get_ref().subject, Alter)?;
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
        self.check(&req, Subject, &req.get_ref().subject, Describe)?;
        reply(self.on_controller(req, schema::check::handle, |mut c, r| async move { c.check_schema(r).await }).await)
    }

    async fn get_schema(
        &self,
        req: Request<pb::GetSchemaRequest>,
    ) -> std::result::Result<Response<pb::GetSchemaResponse>, Status> {
        self.check_schema_read(&req, req.get_ref().id, &req.get_ref().subject)?;
        reply(self.on_controller(req, schema::get::handle, |mut c, r| async move { c.get_schema(r).await }).await)
    }

    async fn list_schemas(
        &self,
        req: Request<pb::ListSchemasRequest>,
    ) -> std::result::Result<Response<pb::ListSchemasResponse>, Status> {
        let principal = Principal::of(&req);
        let mut r = reply(
            self.on_controller(req, schema::list::handle, |mut c, r| async move { c.list_schemas(r).await }).await,
        )?;
        // Only the subjects the principal may describe.
        r.get_mut().subjects.retain(|s| auth::allowed(&self.node, &principal, Subject, &s.subject, Describe));
        Ok(r)
    }

    async fn delete_schema(
        &self,
        req: Request<pb::DeleteSchemaRequest>,
    ) -> std::result::Result<Response<pb::DeleteSchemaResponse>, Status> {
        self.check(&req, Subject, &req.get_ref().subject, Delete)?;
        reply(self.on_controller(req, schema::delete::handle, |mut c, r| async move { c.delete_schema(r).await }).await)
    }

    async fn set_schema_compatibility(
        &self,
        req: Request<pb::SetSchemaCompatibilityRequest>,
    ) -> std::result::Result<Response<pb::SetSchemaCompatibilityResponse>, Status> {
        self.check(&req, Subject, &req.get_ref().subject, Alter)?;
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

#[cfg(test)]
mod tests {
    /// Client handlers reach Raft only through `Partition` and `Controller`;
    /// the peer service is Raft's own door. (The crate's name is spelled in
    /// two halves so that this file does not name it.)
    #[test]
    fn only_the_peer_service_names_the_raft_crate() {
        let krate = concat!("open", "raft");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/service");
        let mut stack = vec![root.clone()];
        let mut naming = Vec::new();
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("service dir").flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if std::fs::read_to_string(&path).expect("source").contains(krate) {
                    naming.push(path.strip_prefix(&root).expect("under root").display().to_string());
                }
            }
        }
        naming.sort();
        assert_eq!(naming, ["raft_peer.rs"], "only the peer service may name {krate}");
    }
}
