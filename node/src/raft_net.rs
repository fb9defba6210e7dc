//! Raft transport, client side: one gRPC channel per peer shared by every
//! group; each call names its group. Payloads are openraft's own messages
//! encoded with bincode inside a protobuf envelope; [`encode_payload`] and
//! [`decode_payload`] are the one codec both ends use.

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bincode::Options;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetworkFactory, RaftNetworkV2};
use replog_proto::pb::raft_peer_client::RaftPeerClient;
use replog_proto::pb::replog_client::ReplogClient;
use replog_proto::pb::{RaftBatch, RaftMessage};
use replog_proto::transport::Unary;
use replog_raft_store::{GroupId, NodeId, Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::throttle::MoveThrottle;

/// Floor for an append's deadline: openraft passes the heartbeat interval,
/// which is too short for a large batch on a busy machine.
const MIN_APPEND_DEADLINE: Duration = Duration::from_secs(3);
/// One snapshot chunk (a megabyte) or the install that follows the last.
const CHUNK_DEADLINE: Duration = Duration::from_secs(120);
const VOTE_DEADLINE: Duration = Duration::from_secs(1);

/// Largest peer payload either end encodes or decodes: the peer service's
/// message limit (`server.rs`), so the budget never refuses a message the
/// transport would carry.
pub const MAX_PEER_PAYLOAD_BYTES: u64 = 256 << 20;

/// What a `SnapshotChunk` message carries: the leader's vote, the
/// snapshot's meta, the chunk's offset in the snapshot's byte stream, its
/// bytes, and whether the stream ends with it. A chunk at offset 0 without
/// bytes asks how much of the stream the receiver already holds.
pub type SnapshotChunkPayload = (Vote, SnapshotMeta, u64, Vec<u8>, bool);

/// The answer to a snapshot chunk.
#[derive(Debug, Serialize, Deserialize)]
pub enum ChunkReply {
    /// The receiver holds this many bytes of the stream: send from there.
    Have(u64),
    /// The last chunk arrived and the snapshot is installed.
    Installed(SnapshotResponse<TypeConfig>),
}

/// Bytes of a snapshot stream per chunk.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// The bincode configuration of peer payloads, the same on both ends.
///
/// The wire format is bincode 1's default (fixed-width little-endian
/// integers, u64 length prefixes), what `bincode::serialize` writes, so
/// nodes of either build interoperate. Two checks are added on decode,
/// because the payload comes off the network: a byte budget, so that no
/// length prefix can make the decoder read (or allocate) past it, and
/// trailing bytes are refused, since a sender never writes any and garbage
/// that happens to start like a message should not pass for one.
fn payload_codec() -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().reject_trailing_bytes().with_limit(MAX_PEER_PAYLOAD_BYTES)
}

/// Encodes one openraft request or response for a peer.
pub fn encode_payload<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    payload_codec().serialize(value)
}

/// Decodes a peer payload. Never panics and never allocates more than the
/// payload's own length per buffer, whatever the bytes are.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, bincode::Error> {
    payload_codec().deserialize(payload)
}

/// A channel to a peer. Each request ends with its message's frame
/// ([`Unary`]): most of what goes between nodes is small unary calls.
pub type PeerChannel = Unary<Channel>;

/// Connections to peers: one HTTP/2 channel per peer, shared by the Raft
/// traffic of every group, the prober and forwarded admin requests. Peers
/// are named by their advertised (client) address; the channel goes to
/// their peer service, on that host at the port plus `peer_port_offset`,
/// over mutual TLS when the node has peer certificates.
#[derive(Default)]
pub struct PeerPool {
    conns: Mutex<HashMap<String, Channel>>,
    local_ip: Option<IpAddr>,
    batchers: Mutex<HashMap<(String, Batched), mpsc::UnboundedSender<Queued>>>,
    /// Groups whose heartbeats go out without waiting for others, until
    /// the instant kept: leaders just woken from quiet, whose writes wait
    /// for the acknowledgements of those heartbeats (Raft's lease).
    hurried: Mutex<HashMap<GroupId, Instant>>,
    port_offset: u16,
    tls: Mutex<Option<ClientTlsConfig>>,
    /// Limits what goes to replicas that partition moves bring in.
    pub throttle: Option<Arc<MoveThrottle>>,
}

/// The peer-service address of the node advertised at `addr`.
pub fn peer_addr(addr: &str, offset: u16) -> Result<String, String> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("{addr:?} is not host:port"))?;
    let port: u16 = port.parse().map_err(|_| format!("{addr:?} is not host:port"))?;
    let port = port.checked_add(offset).ok_or_else(|| format!("{addr:?}: port plus {offset} is past 65535"))?;
    Ok(format!("{host}:{port}"))
}

/// One group's message waiting to go out with others of its kind to the
/// same peer.
type Pending = (RaftMessage, oneshot::Sender<Result<RaftMessage, String>>);

/// A message for a batcher, and whether its batch goes at once.
type Queued = (Pending, bool);

/// The messages that go to a peer in batches: many groups send them at
/// once (every heartbeat interval; when a node starts or fails), each is
/// small, and per-call overhead dominates their cost. Thousands of single
/// calls timing out together also reset thousands of HTTP/2 streams, which
/// makes the connection close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Batched {
    Heartbeat,
    Vote,
    PreVote,
}

/// How long a message waits for others to the same peer. Small against
/// the heartbeat interval and the election timeout.
const BATCH_LINGER: Duration = Duration::from_millis(5);
/// How long a woken leader's heartbeats skip the linger: its first round,
/// whose acknowledgements its writes wait for.
const HURRY_FOR: Duration = Duration::from_millis(100);
const BATCH_MAX: usize = 1024;
const BATCH_DEADLINE: Duration = Duration::from_secs(1);

/// The source address for this node's outgoing connections: its listen IP,
/// unless it listens on every interface. On a host with one address per
/// node (or 127.0.0.N per node in tests), packet filters can then tell the
/// nodes' traffic apart.
pub fn source_ip(listen: std::net::SocketAddr) -> Option<IpAddr> {
    (!listen.ip().is_unspecified()).then_some(listen.ip())
}

/// An endpoint to a peer's peer service at `addr`, bound to this node's
/// source address.
pub fn peer_endpoint(addr: &str, local_ip: Option<IpAddr>, tls: Option<ClientTlsConfig>) -> Result<Endpoint, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut e = Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| e.to_string())?;
    if let Some(tls) = tls {
        e = e.tls_config(tls).map_err(|e| e.to_string())?;
    }
    Ok(e.local_address(local_ip)
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(3)))
}

impl PeerPool {
    pub fn new(local_ip: Option<IpAddr>, port_offset: u16, tls: Option<ClientTlsConfig>) -> PeerPool {
        PeerPool {
            conns: Mutex::default(),
            local_ip,
            batchers: Mutex::default(),
            hurried: Mutex::default(),
            port_offset,
            tls: Mutex::new(tls),
            throttle: None,
        }
    }

    /// The pool, its sends to replicas being brought in by moves held to
    /// `throttle`.
    pub fn with_throttle(mut self, throttle: Arc<MoveThrottle>) -> PeerPool {
        self.throttle = Some(throttle);
        self
    }

    /// Waits for the move throttle before `bytes` go to `node` for `group`.
    async fn throttle(&self, group: GroupId, node: NodeId, bytes: usize) {
        if let Some(t) = &self.throttle {
            t.take(group, node, bytes).await;
        }
    }

    /// New peer certificates: connections made from now on use them (the
    /// open ones are dropped, and reconnect on their next call).
    pub fn set_tls(&self, tls: ClientTlsConfig) {
        *self.tls.lock().expect("peer tls lock") = Some(tls);
        self.conns.lock().expect("peer pool lock").clear();
        self.batchers.lock().expect("batchers lock").clear();
    }

    /// The heartbeats of `group` go out at once for a while (see
    /// [`HURRY_FOR`]), not after the batch linger: its leader has just
    /// woken from quiet, and a write there waits for their
    /// acknowledgements.
    pub fn hurry_heartbeats(&self, group: GroupId) {
        self.hurried.lock().expect("hurried lock").insert(group, Instant::now() + HURRY_FOR);
    }

    /// Whether `group`'s heartbeats go at once now; forgets it once not.
    fn heartbeats_hurried(&self, group: GroupId) -> bool {
        let mut hurried = self.hurried.lock().expect("hurried lock");
        match hurried.get(&group) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                hurried.remove(&group);
                false
            }
            None => false,
        }
    }

    /// Sends one group's message of `kind` to `addr` together with the
    /// other groups' messages of that kind to the same peer; `hurry`: its
    /// batch goes at once, with only what is already waiting.
    async fn batched(&self, addr: &str, kind: Batched, msg: RaftMessage, hurry: bool) -> Result<RaftMessage, String> {
        let tx = {
            let mut batchers = self.batchers.lock().expect("batchers lock");
            let key = (addr.to_string(), kind);
            match batchers.get(&key) {
                Some(tx) if !tx.is_closed() => tx.clone(),
                _ => {
                    let client = self.client(addr)?;
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(run_batcher(client, kind, rx));
                    batchers.insert(key, tx.clone());
                    tx
                }
            }
        };
        let (reply, rx) = oneshot::channel();
        tx.send(((msg, reply), hurry)).map_err(|_| format!("{kind:?} batcher stopped"))?;
        rx.await.map_err(|_| format!("{kind:?} batcher dropped the call"))?
    }

    /// The channel to the peer advertised at `addr`, connected on first use.
    pub fn channel(&self, addr: &str) -> Result<PeerChannel, String> {
        let mut conns = self.conns.lock().expect("peer pool lock");
        if let Some(c) = conns.get(addr) {
            return Ok(Unary(c.clone()));
        }
        let tls = self.tls.lock().expect("peer tls lock").clone();
        let c = peer_endpoint(&peer_addr(addr, self.port_offset)?, self.local_ip, tls)?.connect_lazy();
        conns.insert(addr.to_string(), c.clone());
        Ok(Unary(c))
    }

    /// The Raft peer service of `addr`.
    pub fn client(&self, addr: &str) -> Result<RaftPeerClient<PeerChannel>, String> {
        Ok(RaftPeerClient::new(self.channel(addr)?)
            .max_decoding_message_size(1 << 30)
            .max_encoding_message_size(1 << 30))
    }

    /// The client service of `addr` (probes, forwarded admin requests).
    pub fn replog_client(&self, addr: &str) -> Result<ReplogClient<PeerChannel>, String> {
        Ok(ReplogClient::new(self.channel(addr)?))
    }
}

/// Collects messages of `kind` for one peer for up to [`BATCH_LINGER`] and
/// sends them as one batch call.
async fn run_batcher(client: RaftPeerClient<PeerChannel>, kind: Batched, mut rx: mpsc::UnboundedReceiver<Queued>) {
    while let Some(first) = rx.recv().await {
        let batch = collect(first, &mut rx).await;
        // Sent from its own task so a slow peer never holds up the next batch.
        tokio::spawn(send_batch(client.clone(), kind, batch));
    }
}

/// A batch starting with `first`: what else comes within [`BATCH_LINGER`],
/// up to [`BATCH_MAX`]; once a message in it is hurried, only what is
/// already waiting.
async fn collect((first, mut hurry): Queued, rx: &mut mpsc::UnboundedReceiver<Queued>) -> Vec<Pending> {
    let until = tokio::time::Instant::now() + BATCH_LINGER;
    let mut batch = vec![first];
    while batch.len() < BATCH_MAX {
        let next =
            if hurry { rx.try_recv().ok() } else { tokio::time::timeout_at(until, rx.recv()).await.ok().flatten() };
        let Some((m, h)) = next else { break };
        hurry |= h;
        batch.push(m);
    }
    batch
}

/// One batch call, each answer handed to its caller.
async fn send_batch(mut c: RaftPeerClient<PeerChannel>, kind: Batched, batch: Vec<Pending>) {
    let (messages, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    // Kept for a peer from before vote batches (a rolling upgrade).
    let singly = (kind != Batched::Heartbeat).then(|| messages.clone());
    let mut req = tonic::Request::new(RaftBatch { messages });
    req.set_timeout(BATCH_DEADLINE);
    let call = async {
        match kind {
            Batched::Heartbeat => c.heartbeat_batch(req).await,
            Batched::Vote => c.vote_batch(req).await,
            Batched::PreVote => c.pre_vote_batch(req).await,
        }
    };
    let answer = match tokio::time::timeout(BATCH_DEADLINE, call).await {
        Ok(Ok(r)) => {
            let r = r.into_inner().messages;
            if r.len() == replies.len() { Ok(r) } else { Err(format!("{kind:?} batch answer has the wrong length")) }
        }
        Ok(Err(status)) if status.code() == tonic::Code::Unimplemented && singly.is_some() => {
            let calls = singly.into_iter().flatten().map(|m| {
                let mut c = c.clone();
                async move {
                    let mut req = tonic::Request::new(m);
                    req.set_timeout(BATCH_DEADLINE);
                    let r = match kind {
                        Batched::Vote => c.vote(req).await,
                        _ => c.pre_vote(req).await,
                    };
                    r.map(|r| r.into_inner()).map_err(|s| s.message().to_string())
                }
            });
            for (tx, r) in replies.into_iter().zip(futures::future::join_all(calls).await) {
                let _ = tx.send(r);
            }
            return;
        }
        Ok(Err(status)) => Err(status.message().to_string()),
        Err(_) => Err(format!("no {kind:?} batch answer within {BATCH_DEADLINE:?}")),
    };
    match answer {
        Ok(msgs) => {
            for (tx, m) in replies.into_iter().zip(msgs) {
                let _ = tx.send(Ok(m));
            }
        }
        Err(e) => {
            for tx in replies {
                let _ = tx.send(Err(e.clone()));
            }
        }
    }
}

/// Builds per-peer clients for one group.
pub struct NetworkFactory {
    pub pool: Arc<PeerPool>,
    pub group: GroupId,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConn {
        PeerConn { pool: self.pool.clone(), group: self.group, target, addr: node.addr.clone(), heartbeat: false }
    }

    async fn new_heartbeat_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConn {
        PeerConn { pool: self.pool.clone(), group: self.group, target, addr: node.addr.clone(), heartbeat: true }
    }
}

/// One group's view of one peer.
pub struct PeerConn {
    pool: Arc<PeerPool>,
    group: GroupId,
    target: NodeId,
    addr: String,
    /// openraft's heartbeat client: empty appends go through the batcher.
    heartbeat: bool,
}

type RpcResult<T> = Result<T, RPCError<TypeConfig>>;

fn net_err(msg: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(msg.to_string()))
}

impl PeerConn {
    /// Wraps `req` for this connection's group.
    fn envelope<Req: Serialize>(&self, req: &Req) -> RpcResult<RaftMessage> {
        let payload = encode_payload(req).map_err(net_err)?;
        Ok(RaftMessage { group_id: self.group, payload: payload.into(), error: String::new() })
    }

    /// Unwraps the peer's answer, or the error it reported.
    fn open<Resp: DeserializeOwned>(&self, resp: RaftMessage) -> RpcResult<Resp> {
        if !resp.error.is_empty() {
            // Usually "unknown group": the peer has not created it yet. Retry soon.
            return Err(net_err(format!("node {}: {}", self.target, resp.error)));
        }
        decode_payload(&resp.payload).map_err(net_err)
    }

    /// `req` sent with the other groups' messages of `kind` to this peer
    /// (a woken leader's heartbeats without waiting for them).
    async fn batched<Req: Serialize, Resp: DeserializeOwned>(&self, kind: Batched, req: &Req) -> RpcResult<Resp> {
        let hurry = kind == Batched::Heartbeat && self.pool.heartbeats_hurried(self.group);
        let sent = self.pool.batched(&self.addr, kind, self.envelope(req)?, hurry).await;
        self.open(sent.map_err(|e| net_err(format!("node {}: {e}", self.target)))?)
    }

    async fn call<Req, Resp, F, Fut>(&self, req: &Req, deadline: Duration, f: F) -> RpcResult<Resp>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftPeerClient<PeerChannel>, tonic::Request<RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let client = self.pool.client(&self.addr).map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))?;
        let mut r = tonic::Request::new(self.envelope(req)?);
        r.set_timeout(deadline);
        let resp = match tokio::time::timeout(deadline, f(client, r)).await {
            Err(_) => {
                return Err(net_err(format!("no answer from node {} within {deadline:?}", self.target)));
            }
            Ok(Err(status)) => {
                let msg = format!("node {} ({}): {}", self.target, self.addr, status.message());
                return Err(match status.code() {
                    tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::from_string(msg)),
                    _ => net_err(msg),
                });
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        self.open(resp)
    }
}

impl PeerConn {
    /// Streams `snapshot` to the peer in chunks, from wherever the peer's
    /// copy of this transfer ends, with at most a few chunks in memory.
    async fn send_snapshot(&self, vote: Vote, snapshot: Snapshot) -> RpcResult<SnapshotResponse<TypeConfig>> {
        let meta = snapshot.meta;
        // Its files stay until this send ends, even if a newer one is built.
        let _pin = snapshot.snapshot.pin();
        let chunk = |offset: u64, data: Vec<u8>, last: bool| -> SnapshotChunkPayload {
            (vote, meta.clone(), offset, data, last)
        };
        let call = |req: SnapshotChunkPayload| async move {
            self.call::<_, ChunkReply, _, _>(&req, CHUNK_DEADLINE, |mut c, r| async move { c.snapshot_chunk(r).await })
                .await
        };
        let mut have = match call(chunk(0, Vec::new(), false)).await? {
            ChunkReply::Have(n) => n,
            ChunkReply::Installed(r) => return Ok(r),
        };
        loop {
            // Read on a blocking thread, two chunks ahead at most.
            let (tx, mut rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(2);
            let data = snapshot.snapshot.clone();
            let skip = have;
            tokio::task::spawn_blocking(move || {
                let stream = data.stream().and_then(|mut s| {
                    std::io::copy(&mut (&mut s).take(skip), &mut std::io::sink())?;
                    Ok(s)
                });
                let mut s = match stream {
                    Ok(s) => s,
                    Err(e) => return drop(tx.blocking_send(Err(e))),
                };
                loop {
                    let mut buf = Vec::with_capacity(SNAPSHOT_CHUNK_BYTES);
                    match (&mut s).take(SNAPSHOT_CHUNK_BYTES as u64).read_to_end(&mut buf) {
                        Ok(0) => return drop(tx.blocking_send(Ok(Vec::new()))),
                        Ok(_) => {
                            if tx.blocking_send(Ok(buf)).is_err() {
                                return;
                            }
                        }
                        Err(e) => return drop(tx.blocking_send(Err(e))),
                    }
                }
            });
            let mut offset = have;
            let mut resend_from = None;
            while let Some(next) = rx.recv().await {
                let data = next.map_err(|e| net_err(format!("reading the snapshot: {e}")))?;
                let (len, last) = (data.len() as u64, data.is_empty());
                self.pool.throttle(self.group, self.target, data.len()).await;
                match call(chunk(offset, data, last)).await? {
                    ChunkReply::Installed(r) => return Ok(r),
                    ChunkReply::Have(n) if n == offset + len && !last => offset = n,
                    ChunkReply::Have(n) => {
                        resend_from = Some(n);
                        break;
                    }
                }
            }
            have = resend_from.ok_or_else(|| net_err("snapshot stream ended before the peer installed it"))?;
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConn {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<TypeConfig>> {
        if self.heartbeat && rpc.entries.is_empty() {
            return self.batched(Batched::Heartbeat, &rpc).await;
        }
        let deadline = option.hard_ttl().max(MIN_APPEND_DEADLINE);
        if !rpc.entries.is_empty() && self.pool.throttle.as_ref().is_some_and(|t| t.applies(self.group, self.target)) {
            // A replica a move brings in: its bytes count against the throttle.
            let bytes = payload_codec().serialized_size(&rpc).map_or(0, |n| n as usize);
            self.pool.throttle(self.group, self.target, bytes).await;
        }
        self.call(&rpc, deadline, |mut c, r| async move { c.append_entries(r).await }).await
    }

    async fn vote(&mut self, rpc: VoteRequest<TypeConfig>, _option: RPCOption) -> RpcResult<VoteResponse<TypeConfig>> {
        self.batched(Batched::Vote, &rpc).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<TypeConfig>> {
        self.batched(Batched::PreVote, &rpc).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let send = self.send_snapshot(vote, snapshot);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = send => r.map_err(StreamingError::from),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<TransferLeaderResponse<TypeConfig>> {
        self.call(&req, VOTE_DEADLINE, |mut c, r| async move { c.transfer_leader(r).await }).await
    }
}

#[cfg(test)]
mod tests {
    use openraft::vote::RaftLeaderId;

    use super::*;

    type LeaderId = openraft::type_config::alias::LeaderIdOf<TypeConfig>;

    fn append() -> AppendEntriesRequest<TypeConfig> {
        let log_id = replog_raft_store::LogId::new(LeaderId::new(3, 1).to_committed(), 7);
        AppendEntriesRequest {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id),
            entries: vec![replog_raft_store::Entry {
                log_id,
                payload: openraft::EntryPayload::Normal(replog_raft_store::Request::Append {
                    batch: bytes::Bytes::from_static(b"batch bytes"),
                    record_count: 1,
                    max_timestamp_ms: 5,
                }),
            }],
            leader_commit: Some(log_id),
        }
    }

    #[test]
    fn payloads_keep_bincode_1_default_wire_format() {
        let req = append();
        let ours = encode_payload(&req).expect("encode");
        assert_eq!(ours, bincode::serialize(&req).expect("plain bincode"), "nodes of older builds must read it");
        let back: AppendEntriesRequest<TypeConfig> = decode_payload(&ours).expect("decode");
        assert_eq!(encode_payload(&back).expect("encode"), ours);
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut b = encode_payload(&append()).expect("encode");
        b.push(0);
        assert!(decode_payload::<AppendEntriesRequest<TypeConfig>>(&b).is_err());
    }

    #[test]
    fn a_length_prefix_beyond_the_payload_is_an_error_not_an_allocation() {
        // The entries' count is the u64 after the vote (17 bytes) and the
        // prev_log_id (1 + 24 bytes).
        let mut b = encode_payload(&append()).expect("encode");
        assert_eq!(b[42..50], 1u64.to_le_bytes(), "the layout this test assumes");
        b[42..50].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_payload::<AppendEntriesRequest<TypeConfig>>(&b).is_err());
        // A byte-string length past the budget is refused before reading.
        let huge = [u64::MAX.to_le_bytes()].concat();
        assert!(decode_payload::<Vec<u8>>(&huge).is_err());
    }

    /// A peer from before vote batches: only single votes and pre-votes.
    struct OldPeer;

    #[tonic::async_trait]
    impl replog_proto::pb::raft_peer_server::RaftPeer for OldPeer {
        async fn append_entries(
            &self,
            _: tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("old peer"))
        }
        async fn vote(&self, r: tonic::Request<RaftMessage>) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            let m = r.into_inner();
            Ok(tonic::Response::new(RaftMessage { payload: [b"vote:", &m.payload[..]].concat().into(), ..m }))
        }
        async fn pre_vote(
            &self,
            r: tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            let m = r.into_inner();
            Ok(tonic::Response::new(RaftMessage { payload: [b"pre:", &m.payload[..]].concat().into(), ..m }))
        }
        async fn snapshot_chunk(
            &self,
            _: tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("old peer"))
        }
        async fn transfer_leader(
            &self,
            _: tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("old peer"))
        }
        async fn heartbeat_batch(
            &self,
            _: tonic::Request<RaftBatch>,
        ) -> Result<tonic::Response<RaftBatch>, tonic::Status> {
            Err(tonic::Status::unimplemented("old peer"))
        }
        async fn vote_batch(&self, _: tonic::Request<RaftBatch>) -> Result<tonic::Response<RaftBatch>, tonic::Status> {
            Err(tonic::Status::unimplemented("old peer"))
        }
        async fn pre_vote_batch(
            &self,
            _: tonic::Request<RaftBatch>,
        ) -> Result<tonic::Response<RaftBatch>, tonic::Status> {
            Err(tonic::Status::unimplemented("old peer"))
        }
        async fn quiesce(
            &self,
            _: tonic::Request<replog_proto::pb::QuiesceRequest>,
        ) -> Result<tonic::Response<replog_proto::pb::QuiesceResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("old peer"))
        }
    }

    /// A message for a batcher, numbered by its group; and the group
    /// numbers of a batch.
    fn queued(g: u64, hurry: bool) -> Queued {
        let m = RaftMessage { group_id: g, payload: Vec::new().into(), error: String::new() };
        ((m, oneshot::channel().0), hurry)
    }
    fn groups(batch: &[Pending]) -> Vec<u64> {
        batch.iter().map(|(m, _)| m.group_id).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_lingers_for_later_messages_unless_one_in_it_is_hurried() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = tokio::time::Instant::now();
        // Not hurried: what comes within the linger joins, later ones not.
        let late = tx.clone();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(BATCH_LINGER / 2).await;
            late.send(queued(2, false)).unwrap();
            tokio::time::sleep(BATCH_LINGER).await;
            late.send(queued(3, false)).unwrap();
        });
        assert_eq!(groups(&collect(queued(1, false), &mut rx).await), [1, 2]);
        assert_eq!(start.elapsed(), BATCH_LINGER, "the batch waited out its linger");
        sender.await.unwrap();
        assert_eq!(groups(&collect(rx.recv().await.unwrap(), &mut rx).await), [3]);

        // Hurried first: what already waits goes along, at once.
        let start = tokio::time::Instant::now();
        tx.send(queued(5, false)).unwrap();
        assert_eq!(groups(&collect(queued(4, true), &mut rx).await), [4, 5]);
        assert_eq!(start.elapsed(), Duration::ZERO, "a hurried batch waits for nothing");
        // Hurried later: the batch goes as soon as that one joins it.
        let start = tokio::time::Instant::now();
        let later = tx.clone();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(BATCH_LINGER / 5).await;
            later.send(queued(7, true)).unwrap();
        });
        assert_eq!(groups(&collect(queued(6, false), &mut rx).await), [6, 7]);
        assert_eq!(start.elapsed(), BATCH_LINGER / 5);
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn given_a_peer_without_vote_batches_then_batched_votes_go_as_single_calls_each_with_its_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(replog_proto::pb::raft_peer_server::RaftPeerServer::new(OldPeer))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let pool = PeerPool::new(None, 0, None);
        let msg =
            |g: u64| RaftMessage { group_id: g, payload: format!("g{g}").into_bytes().into(), error: String::new() };
        // Sent together, so that they share one batch.
        let (a, b, c) = tokio::join!(
            pool.batched(&addr, Batched::Vote, msg(1), false),
            pool.batched(&addr, Batched::Vote, msg(2), false),
            pool.batched(&addr, Batched::PreVote, msg(3), false),
        );
        let answer = |r: Result<RaftMessage, String>| {
            let m = r.expect("answered by a single call");
            (m.group_id, String::from_utf8(m.payload.to_vec()).unwrap())
        };
        assert_eq!(answer(a), (1, "vote:g1".to_string()));
        assert_eq!(answer(b), (2, "vote:g2".to_string()));
        assert_eq!(answer(c), (3, "pre:g3".to_string()));
        // Heartbeats have no such fallback: the old peer had their batches.
        let hb = pool.batched(&addr, Batched::Heartbeat, msg(4), false).await;
        assert!(hb.is_err_and(|e| e.contains("old peer")));
        server.abort();
    }
}
