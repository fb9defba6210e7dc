//! Raft transport, server side — only for cluster peers. Each message names
//! its group; the payload is the openraft request, bincode-encoded with the
//! codec of [`crate::raft_net`], the same one the sending side uses.

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use replog_proto::pb::raft_peer_server::RaftPeer;
use replog_proto::pb::{RaftBatch, RaftMessage};
use replog_raft_store::{Raft, TypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::raft_net::{SnapshotPayload, decode_payload, encode_payload};

pub struct PeerService {
    pub node: Arc<Node>,
}

fn reply<T: Serialize, E: std::fmt::Display>(group: u64, r: Result<T, E>) -> RaftMessage {
    match r.map_err(|e| e.to_string()).and_then(|v| encode_payload(&v).map_err(|e| e.to_string())) {
        Ok(payload) => RaftMessage { group_id: group, payload: payload.into(), error: String::new() },
        Err(error) => RaftMessage { group_id: group, payload: Default::default(), error },
    }
}

impl PeerService {
    fn raft(&self, group: u64) -> Result<Raft, String> {
        if group == replog_raft_store::CONTROLLER_GROUP {
            return Ok(self.node.controller.raft.clone());
        }
        self.node.group(group).map(|g| g.raft.clone()).ok_or_else(|| format!("unknown group {group}"))
    }

    fn decode<T: DeserializeOwned>(m: &RaftMessage) -> Result<T, String> {
        decode_payload(&m.payload).map_err(|e| format!("undecodable payload: {e}"))
    }
}

impl PeerService {
    /// Decodes one message for its group, runs `f` on that group's Raft, and
    /// encodes the answer (or the error).
    async fn handle<Req, Resp, E, F, Fut>(&self, m: RaftMessage, f: F) -> RaftMessage
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        E: std::fmt::Display,
        F: FnOnce(Raft, Req) -> Fut,
        Fut: Future<Output = Result<Resp, E>>,
    {
        let r = async {
            let raft = self.raft(m.group_id)?;
            let rpc: Req = Self::decode(&m)?;
            f(raft, rpc).await.map_err(|e| e.to_string())
        };
        reply(m.group_id, r.await)
    }
}

/// Appends and heartbeats, whether they come alone or batched.
async fn append(raft: Raft, rpc: AppendEntriesRequest<TypeConfig>) -> Result<impl Serialize, impl std::fmt::Display> {
    raft.append_entries(rpc).await
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        Ok(Response::new(self.handle(req.into_inner(), append).await))
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let f = |raft: Raft, rpc: VoteRequest<TypeConfig>| async move { raft.vote(rpc).await };
        Ok(Response::new(self.handle(req.into_inner(), f).await))
    }

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let f = |raft: Raft, rpc: VoteRequest<TypeConfig>| async move { raft.pre_vote(rpc).await };
        Ok(Response::new(self.handle(req.into_inner(), f).await))
    }

    async fn install_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let f = |raft: Raft, (vote, meta, data): SnapshotPayload| async move {
            let snap = replog_raft_store::Snapshot { meta, snapshot: std::io::Cursor::new(data) };
            raft.install_full_snapshot(vote, snap).await
        };
        Ok(Response::new(self.handle(req.into_inner(), f).await))
    }

    async fn heartbeat_batch(&self, req: Request<RaftBatch>) -> Result<Response<RaftBatch>, Status> {
        let calls = req.into_inner().messages.into_iter().map(|m| self.handle(m, append));
        Ok(Response::new(RaftBatch { messages: futures::future::join_all(calls).await }))
    }

    async fn transfer_leader(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let f =
            |raft: Raft, rpc: TransferLeaderRequest<TypeConfig>| async move { raft.handle_transfer_leader(rpc).await };
        Ok(Response::new(self.handle(req.into_inner(), f).await))
    }
}
