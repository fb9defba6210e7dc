//! Raft transport, server side — only for cluster peers. Each message names
//! its group; the payload is the openraft request, bincode-encoded with the
//! codec of [`crate::raft_net`], the same one the sending side uses.
//!
//! The port is not authenticated (peer TLS is on the roadmap), so a request
//! here may come from anyone. What a well-formed request can do to Raft is
//! Raft's business, with one exception checked here: terms near the top of
//! `u64` ([`MAX_TERM`]), which no cluster reaches and which would leave a
//! group unable to ever elect again.

use std::path::PathBuf;
use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use openraft::vote::RaftLeaderId;
use replog_proto::pb::raft_peer_server::RaftPeer;
use replog_proto::pb::{RaftBatch, RaftMessage};
use replog_raft_store::{LogId, Raft, SnapshotData, TypeConfig, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::raft_net::{ChunkReply, SnapshotChunkPayload, decode_payload, encode_payload};

/// Largest term a peer message may carry. openraft starts an election at
/// `term + 1`: a group that took a term of `u64::MAX` from a message would
/// overflow at its next election (a panic in its Raft task with overflow
/// checks, a wrap to term 0 without), i.e. never have a leader again. 2^62
/// elections at one per millisecond take 146 million years, so no real
/// cluster comes near.
pub const MAX_TERM: u64 = 1 << 62;

/// The terms a request carries, so they can be checked before Raft sees them.
pub trait Terms {
    fn terms(&self) -> Vec<u64>;
}

fn vote_term(v: &Vote) -> u64 {
    v.leader_id.term()
}

fn log_term(l: Option<&LogId>) -> Option<u64> {
    l.map(|l| l.committed_leader_id().term())
}

impl Terms for AppendEntriesRequest<TypeConfig> {
    fn terms(&self) -> Vec<u64> {
        let mut t = vec![vote_term(&self.vote)];
        t.extend(log_term(self.prev_log_id.as_ref()));
        t.extend(log_term(self.leader_commit.as_ref()));
        t.extend(self.entries.iter().map(|e| e.log_id.committed_leader_id().term()));
        t
    }
}

impl Terms for VoteRequest<TypeConfig> {
    fn terms(&self) -> Vec<u64> {
        let mut t = vec![vote_term(&self.vote)];
        t.extend(log_term(self.last_log_id.as_ref()));
        t
    }
}

impl Terms for TransferLeaderRequest<TypeConfig> {
    fn terms(&self) -> Vec<u64> {
        let mut t = vec![vote_term(self.from_leader())];
        t.extend(log_term(self.last_log_id()));
        t
    }
}

impl Terms for SnapshotChunkPayload {
    fn terms(&self) -> Vec<u64> {
        let (vote, meta, ..) = self;
        let mut t = vec![vote_term(vote)];
        t.extend(log_term(meta.last_log_id.as_ref()));
        t.extend(log_term(meta.last_membership.log_id().as_ref()));
        t
    }
}

/// Decodes a peer payload and refuses terms above [`MAX_TERM`].
pub fn decode_request<T: DeserializeOwned + Terms>(payload: &[u8]) -> Result<T, String> {
    let rpc: T = decode_payload(payload).map_err(|e| format!("undecodable payload: {e}"))?;
    if let Some(t) = rpc.terms().into_iter().find(|t| *t > MAX_TERM) {
        return Err(format!("term {t} is above {MAX_TERM}, which no cluster reaches"));
    }
    Ok(rpc)
}

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
        self.node.raft_of(group).ok_or_else(|| format!("unknown group {group}"))
    }
}

impl PeerService {
    /// Decodes one message for its group, runs `f` on that group's Raft, and
    /// encodes the answer (or the error).
    async fn handle<Req, Resp, E, F, Fut>(&self, m: RaftMessage, f: F) -> RaftMessage
    where
        Req: DeserializeOwned + Terms,
        Resp: Serialize,
        E: std::fmt::Display,
        F: FnOnce(Raft, Req) -> Fut,
        Fut: Future<Output = Result<Resp, E>>,
    {
        let r = async {
            let raft = self.raft(m.group_id)?;
            let rpc: Req = decode_request(&m.payload)?;
            f(raft, rpc).await.map_err(|e| e.to_string())
        };
        reply(m.group_id, r.await)
    }
}

/// Takes one chunk of a snapshot stream into `<group dir>/received-<index>.snap.part`
/// and installs the snapshot with the last one. A transfer is known by the
/// snapshot's last log id and the sending leader; a part file of any other
/// transfer is dropped.
async fn receive_chunk(raft: Raft, dir: PathBuf, chunk: SnapshotChunkPayload) -> Result<ChunkReply, String> {
    let (vote, meta, offset, data, last) = chunk;
    let index = meta.last_log_id.map_or(0, |l| l.index);
    let term = meta.last_log_id.map_or(0, |l| l.committed_leader_id().term());
    let transfer = format!("received-{index:020}-{term}-{}.snap.part", vote.leader_id.node_id);
    let part = dir.join(&transfer);
    let io = |e: std::io::Error| format!("snapshot transfer {transfer}: {e}");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".snap.part") && name != transfer {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let have = std::fs::metadata(&part).map_or(0, |m| m.len());
    if offset != have {
        return Ok(ChunkReply::Have(have));
    }
    if !data.is_empty() {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&part).map_err(io)?;
        f.write_all(&data).map_err(io)?;
    }
    if !last {
        return Ok(ChunkReply::Have(have + data.len() as u64));
    }
    let file = dir.join(format!("received-{index:020}.snap"));
    std::fs::rename(&part, &file).map_err(io)?;
    let snap = replog_raft_store::Snapshot { meta, snapshot: SnapshotData::Received(file.clone()) };
    let r = raft.install_full_snapshot(vote, snap).await.map_err(|e| e.to_string());
    // Installed or refused, the received copy is not needed again.
    let _ = std::fs::remove_file(&file);
    r.map(ChunkReply::Installed)
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

    async fn snapshot_chunk(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let m = req.into_inner();
        let dir = match self.node.store.log(m.group_id) {
            Ok(log) if self.node.raft_of(m.group_id).is_some() => log.dir().to_path_buf(),
            _ => return Ok(Response::new(reply::<(), _>(m.group_id, Err(format!("unknown group {}", m.group_id))))),
        };
        let f = |raft: Raft, chunk: SnapshotChunkPayload| receive_chunk(raft, dir, chunk);
        Ok(Response::new(self.handle(m, f).await))
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
