//! gRPC services: the client API (`Replog`, one file per RPC) and the
//! peer-only Raft transport (`RaftPeer`).

mod cluster_status;
mod create_topic;
mod delete_topic;
mod fetch;
mod init_producer;
mod metadata;
mod produce;
pub mod raft_peer;

use std::sync::Arc;

use replog_proto::pb::{self, replog_server::Replog};
use tonic::{Request, Response, Status};

use crate::node::Node;

/// Metadata marking an admin request one node forwarded to the controller
/// leader, so it is never forwarded twice.
pub const FORWARDED_KEY: &str = "replog-forwarded";

pub struct ClientService {
    pub node: Arc<Node>,
}

fn forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED_KEY)
}

#[tonic::async_trait]
impl Replog for ClientService {
    async fn create_topic(
        &self,
        req: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let fwd = forwarded(&req);
        create_topic::handle(&self.node, req.into_inner(), fwd).await.map(Response::new)
    }

    async fn delete_topic(
        &self,
        req: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let fwd = forwarded(&req);
        delete_topic::handle(&self.node, req.into_inner(), fwd).await.map(Response::new)
    }

    async fn metadata(&self, req: Request<pb::MetadataRequest>) -> Result<Response<pb::MetadataResponse>, Status> {
        Ok(Response::new(metadata::handle(&self.node, req.into_inner())))
    }

    async fn produce(&self, req: Request<pb::ProduceRequest>) -> Result<Response<pb::ProduceResponse>, Status> {
        produce::handle(&self.node, req.into_inner()).await.map(Response::new).map_err(Status::from)
    }

    async fn fetch(&self, req: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        fetch::handle(&self.node, req.into_inner()).await.map(Response::new).map_err(Status::from)
    }

    async fn cluster_status(
        &self,
        _req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        Ok(Response::new(cluster_status::handle(&self.node).await))
    }

    async fn init_producer(
        &self,
        req: Request<pb::InitProducerRequest>,
    ) -> Result<Response<pb::InitProducerResponse>, Status> {
        let fwd = forwarded(&req);
        init_producer::handle(&self.node, req.into_inner(), fwd).await.map(Response::new)
    }

    async fn node_info(&self, _req: Request<pb::NodeInfoRequest>) -> Result<Response<pb::NodeInfoResponse>, Status> {
        Ok(Response::new(self.node.node_info()))
    }
}

/// Sends an admin request to the controller leader's client service.
async fn forward_to_controller<T, R, F, Fut>(node: &Node, req: T, call: F) -> Result<R, Status>
where
    F: FnOnce(pb::replog_client::ReplogClient<tonic::transport::Channel>, Request<T>) -> Fut,
    Fut: Future<Output = Result<Response<R>, Status>>,
{
    let what = "the controller group".to_string();
    let leader = node.controller_leader().filter(|l| *l != node.id);
    let Some(addr) = leader.and_then(|l| node.node_addr(l)) else {
        return Err(crate::error::NodeError::Unavailable("the controller group has no leader right now".into()).into());
    };
    let ep = crate::raft_net::peer_endpoint(&addr, crate::raft_net::source_ip(node.config.listen))
        .map_err(|_| Status::from(node.not_leader(what.clone(), leader)))?;
    let client = pb::replog_client::ReplogClient::new(ep.connect_lazy());
    let mut r = Request::new(req);
    r.metadata_mut().insert(FORWARDED_KEY, "1".parse().expect("valid metadata"));
    r.set_timeout(std::time::Duration::from_secs(20));
    call(client, r).await.map(Response::into_inner)
}
