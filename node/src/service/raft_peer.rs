//! Raft transport, server side — only for cluster peers. Each message names
//! its group; the payload is the openraft request, bincode-encoded with the
//! codec of [`crate::raft_net`], the same one the sending side uses.
//!
//! It is served on the peer listener only, never on the client listener.
//! With peer TLS configured only nodes holding a certificate from the
//! cluster CA get here; without it (the default, for a trusted network) a
//! request may come from anyone who reaches the port. What a well-formed
//! request can do to Raft is Raft's business, with one exception checked
//! here: terms near the top of
//! `u64` ([`MAX_TERM`]), which no cluster reaches and which would leave a
//! group unable to ever elect again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use openraft::vote::RaftLeaderId;
use replog_proto::pb::raft_peer_server::RaftPeer;
use replog_proto::pb::{QuiesceRequest, QuiesceResponse, RaftBatch, RaftMessage};
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

/// What taking one chunk of a snapshot transfer leaves.
#[derive(Debug, PartialEq, Eq)]
enum Took {
    /// The bytes of the transfer held so far: where the sender goes on.
    Have(u64),
    /// The whole stream, in this file.
    Complete(PathBuf),
}

/// Takes one chunk of a snapshot stream into `<group dir>/received-<index>-<term>-<leader>.snap.part`;
/// with the last one the file becomes `received-<index>.snap`. A transfer
/// is known by the snapshot's last log id and the sending leader; a part
/// file of any other transfer is dropped. A chunk that does not start where
/// the part file ends is not taken: the answer says where it ends, so a
/// sender whose connection broke resumes there.
fn take_chunk(dir: &Path, chunk: &SnapshotChunkPayload) -> Result<Took, String> {
    let (vote, meta, offset, data, last) = chunk;
    let index = meta.last_log_id.map_or(0, |l| l.index);
    let term = meta.last_log_id.map_or(0, |l| l.committed_leader_id().term());
    let transfer = format!("received-{index:020}-{term}-{}.snap.part", vote.leader_id.node_id);
    let part = dir.join(&transfer);
    let io = |e: std::io::Error| format!("snapshot transfer {transfer}: {e}");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".snap.part") && name != transfer {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let have = std::fs::metadata(&part).map_or(0, |m| m.len());
    if *offset != have {
        return Ok(Took::Have(have));
    }
    if !data.is_empty() {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&part).map_err(io)?;
        f.write_all(data).map_err(io)?;
    }
    if !last {
        return Ok(Took::Have(have + data.len() as u64));
    }
    let file = dir.join(format!("received-{index:020}.snap"));
    std::fs::rename(&part, &file).map_err(io)?;
    Ok(Took::Complete(file))
}

/// Takes a chunk (see [`take_chunk`]) and installs the snapshot once the
/// stream is complete.
async fn receive_chunk(raft: Raft, dir: PathBuf, chunk: SnapshotChunkPayload) -> Result<ChunkReply, String> {
    let file = match take_chunk(&dir, &chunk)? {
        Took::Have(n) => return Ok(ChunkReply::Have(n)),
        Took::Complete(file) => file,
    };
    let (vote, meta, ..) = chunk;
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

impl PeerService {
    /// A vote asked of a quiet group is refused: its leader's node is alive
    /// (else the group would have woken), and a candidate (a restarted
    /// replica that has not heard the leader yet) must not win against it.
    /// A quiet leader wakes so that the candidate hears it.
    fn refused_while_quiet(&self, group: u64) -> Option<RaftMessage> {
        let p = self.node.partition(group).filter(|p| p.is_quiet())?;
        if p.led_here() {
            self.node.quiescer.wake(&p);
        }
        Some(reply::<(), _>(group, Err("the group is quiet under a live leader")))
    }
}

impl PeerService {
    async fn vote_one(&self, m: RaftMessage) -> RaftMessage {
        if let Some(refused) = self.refused_while_quiet(m.group_id) {
            return refused;
        }
        self.handle(m, |raft: Raft, rpc: VoteRequest<TypeConfig>| async move { raft.vote(rpc).await }).await
    }

    async fn pre_vote_one(&self, m: RaftMessage) -> RaftMessage {
        if let Some(refused) = self.refused_while_quiet(m.group_id) {
            return refused;
        }
        self.handle(m, |raft: Raft, rpc: VoteRequest<TypeConfig>| async move { raft.pre_vote(rpc).await }).await
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let m = req.into_inner();
        // Entries on a quiet follower: its leader is writing again (and
        // ticks again), so must this replica.
        if let Some(p) = self.node.partition(m.group_id).filter(|p| p.is_quiet()) {
            self.node.quiescer.wake(&p);
        }
        let received = &self.node.metrics.appends_received;
        let f = |raft: Raft, rpc: AppendEntriesRequest<TypeConfig>| {
            received.with_label_values(&[if rpc.entries.is_empty() { "empty" } else { "entries" }]).inc();
            append(raft, rpc)
        };
        Ok(Response::new(self.handle(m, f).await))
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        Ok(Response::new(self.vote_one(req.into_inner()).await))
    }

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        Ok(Response::new(self.pre_vote_one(req.into_inner()).await))
    }

    async fn vote_batch(&self, req: Request<RaftBatch>) -> Result<Response<RaftBatch>, Status> {
        let calls = req.into_inner().messages.into_iter().map(|m| self.vote_one(m));
        Ok(Response::new(RaftBatch { messages: futures::future::join_all(calls).await }))
    }

    async fn pre_vote_batch(&self, req: Request<RaftBatch>) -> Result<Response<RaftBatch>, Status> {
        let calls = req.into_inner().messages.into_iter().map(|m| self.pre_vote_one(m));
        Ok(Response::new(RaftBatch { messages: futures::future::join_all(calls).await }))
    }

    async fn quiesce(&self, req: Request<QuiesceRequest>) -> Result<Response<QuiesceResponse>, Status> {
        Ok(Response::new(self.node.quiescer.answer(&self.node, req.into_inner())))
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
        let messages = req.into_inner().messages;
        self.node.metrics.appends_received.with_label_values(&["heartbeat"]).inc_by(messages.len() as u64);
        let calls = messages.into_iter().map(|m| {
            // Quiet groups hear no heartbeats but from a new leader.
            if let Some(p) = self.node.partition(m.group_id).filter(|p| p.is_quiet())
                && let Ok(rpc) = decode_payload::<AppendEntriesRequest<TypeConfig>>(&m.payload)
            {
                self.node.quiescer.heartbeat_reaches(&p, rpc.vote.leader_id.node_id, vote_term(&rpc.vote));
            }
            self.handle(m, append)
        });
        Ok(Response::new(RaftBatch { messages: futures::future::join_all(calls).await }))
    }

    async fn transfer_leader(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let f =
            |raft: Raft, rpc: TransferLeaderRequest<TypeConfig>| async move { raft.handle_transfer_leader(rpc).await };
        Ok(Response::new(self.handle(req.into_inner(), f).await))
    }
}

#[cfg(test)]
mod tests {
    use replog_raft_store::{SnapshotMeta, StoredMembership};

    use super::*;

    type LeaderId = openraft::type_config::alias::LeaderIdOf<TypeConfig>;

    fn chunk(leader: u64, offset: u64, data: &[u8], last: bool) -> SnapshotChunkPayload {
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(LeaderId::new(2, leader).to_committed(), 40)),
            last_membership: StoredMembership::default(),
        };
        (Vote::new_committed(2, leader), meta, offset, data.to_vec(), last)
    }

    #[test]
    fn a_transfer_resumes_where_the_part_file_ends_and_completes_whole() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(take_chunk(dir.path(), &chunk(1, 0, b"", false)).unwrap(), Took::Have(0));
        assert_eq!(take_chunk(dir.path(), &chunk(1, 0, b"abc", false)).unwrap(), Took::Have(3));
        assert_eq!(take_chunk(dir.path(), &chunk(1, 3, b"def", false)).unwrap(), Took::Have(6));
        // The connection broke; the sender starts over by asking.
        assert_eq!(take_chunk(dir.path(), &chunk(1, 0, b"", false)).unwrap(), Took::Have(6));
        // A chunk that does not start at the end is not taken.
        assert_eq!(take_chunk(dir.path(), &chunk(1, 3, b"xyz", false)).unwrap(), Took::Have(6));
        match take_chunk(dir.path(), &chunk(1, 6, b"g", true)).unwrap() {
            Took::Complete(f) => assert_eq!(std::fs::read(f).unwrap(), b"abcdefg"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_transfer_from_another_leader_drops_the_old_part() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(take_chunk(dir.path(), &chunk(1, 0, b"abc", false)).unwrap(), Took::Have(3));
        assert_eq!(take_chunk(dir.path(), &chunk(3, 0, b"", false)).unwrap(), Took::Have(0));
        let parts: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert!(parts.is_empty(), "{parts:?}");
    }
}
