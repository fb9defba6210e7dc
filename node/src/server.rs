//! Wires a node: storage and groups, the gRPC server, the metrics endpoint.

use std::future::Future;
use std::time::Duration;

use replog_proto::pb::raft_peer_server::RaftPeerServer;
use replog_proto::pb::replog_server::ReplogServer;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::metrics::{self, Metrics};
use crate::node::Node;
use crate::security::auth::{Authenticate, FromPeer};
use crate::security::{self, conn, tls::Acceptor};
use crate::service::ClientService;
use crate::service::raft_peer::PeerService;
use tonic::service::interceptor::InterceptedService;

/// Largest gRPC message sent, and accepted on the peer listener (nodes
/// forward produce requests of dead letters).
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// What a client request may hold besides its batch (topic name, fields,
/// topic settings): the client listener accepts `max_batch_bytes` plus
/// this, so that a batch just over the limit still gets BATCH_TOO_LARGE
/// from the produce handler while a huge message is refused unread.
const REQUEST_OVERHEAD_BYTES: usize = 64 << 10;
/// Floor of the client listener's message limit: requests without a batch
/// (a metadata request naming many topics) may be larger than a small
/// configured batch limit, and must still get their replog error code.
const MIN_CLIENT_MESSAGE_BYTES: usize = 4 << 20;
/// Largest peer message: an append carries at most `max_payload_entries`
/// (64) entries of at most one batch each; snapshots travel whole for now.
const MAX_PEER_MESSAGE_BYTES: usize = 256 << 20;
/// Streams a peer connection may have reset (by the peer's timeouts, or
/// here) before h2 closes it; see `serve`.
const PEER_MAX_RESET_STREAMS: usize = 100_000;
/// How long a graceful stop waits for open calls once the server stops
/// accepting new ones: a subscription whose client stopped reading cannot
/// send its last frames, so it would hold the stop forever.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// Runs a node serving its clients on `listener` and its peers on the peer
/// listener (bound here, see `NodeConfig::peer_listen_addr`) until `shutdown` resolves, then
/// stops it gracefully. The listener is bound by the caller, so a test can
/// bind port 0; `config.listen` becomes its actual address.
pub async fn run(
    listener: tokio::net::TcpListener,
    mut config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.listen = listener.local_addr()?;
    let node = Node::start(config.clone(), Metrics::new(config.metrics_per_partition)).await?;
    node.store.set_observer(node.metrics.storage_observer());
    node.spawn_tasks();
    info!(
        id = node.id,
        addr = %node.addr,
        metrics = %config.metrics_listen,
        data = %config.data_dir.display(),
        per_partition_metrics = config.metrics_per_partition,
        "replog node started"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let metrics_task = tokio::spawn(metrics::serve(config.metrics_listen, node.clone(), stopped(stop_rx.clone())));

    // Peers: Raft, and the client API for what nodes ask each other
    // (probes, forwarded admin requests, dead letters, retention floors).
    // Clients: the client API only.
    let peer_listener = tokio::net::TcpListener::bind(config.peer_listen_addr())
        .await
        .map_err(|e| anyhow::anyhow!("binding the peer listener {}: {e}", config.peer_listen_addr()))?;
    let peer_tls = match security::peer_tls_files(&config) {
        Some(f) => {
            let a = Acceptor::new(f, "peer").map_err(anyhow::Error::msg)?;
            let pool = node.pool.clone();
            a.spawn_reloader(move |a| match a.files().peer_client_config() {
                Ok(c) => pool.set_tls(c),
                Err(e) => warn!(error = e, "peer client TLS does not load"),
            });
            Some(a)
        }
        None => None,
    };
    let client_tls = match security::client_tls_files(&config) {
        Some(f) => {
            let a = Acceptor::new(f, "client").map_err(anyhow::Error::msg)?;
            a.spawn_reloader(|_| {});
            Some(a)
        }
        None => None,
    };
    info!(
        peer = %config.peer_listen_addr(),
        peer_tls = peer_tls.is_some(),
        client_tls = client_tls.is_some(),
        "listening"
    );
    // A client's largest request is a produce of one batch; a larger
    // length prefix is refused before its bytes are buffered.
    let client_limit = (config.max_batch_bytes + REQUEST_OVERHEAD_BYTES).max(MIN_CLIENT_MESSAGE_BYTES);
    let client_api = |decode_limit: usize| {
        ReplogServer::new(ClientService { node: node.clone() })
            .max_decoding_message_size(decode_limit)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    };
    // Every client request is authenticated first (security/auth.rs);
    // every peer request is a node's.
    let authenticated = InterceptedService::new(client_api(client_limit), Authenticate { node: node.clone() });
    let from_peer = InterceptedService::new(client_api(MAX_MESSAGE_BYTES), FromPeer);
    let peer = RaftPeerServer::new(PeerService { node: node.clone() })
        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
    let per_ip = conn::PerIp::new(config.max_connections_per_ip);
    let incoming = conn::incoming(listener, client_tls, per_ip, &node.metrics);
    let peer_incoming = conn::incoming(peer_listener, peer_tls, conn::PerIp::default(), &node.metrics);
    let grpc = tonic::transport::Server::builder()
        .max_concurrent_streams((config.max_requests_per_connection > 0).then_some(config.max_requests_per_connection))
        .add_service(authenticated)
        .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
    // Peers cancel calls as a matter of course: every vote or append that
    // outlives its timeout resets its stream. h2 closes a connection past
    // 20 such resets (its guard against a client's rapid resets), and with
    // thousands of groups electing at a cluster start that failed every
    // call on the connection, heartbeats included, which started more
    // elections. Only peers reach this listener (with mutual TLS, when on).
    let peer_grpc = tonic::transport::Server::builder()
        .http2_max_pending_accept_reset_streams(Some(PEER_MAX_RESET_STREAMS))
        .http2_max_local_error_reset_streams(Some(PEER_MAX_RESET_STREAMS))
        .add_service(peer)
        .add_service(from_peer)
        .serve_with_incoming_shutdown(peer_incoming, stopped(stop_rx.clone()));
    // Kafka clients, when configured (docs/kafka.md).
    let kafka_task = match config.kafka_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("binding the Kafka listener {addr}: {e}"))?;
            info!(kafka = %addr, advertised = ?config.kafka_advertised_addr(), "listening for Kafka clients");
            Some(tokio::spawn(crate::kafka::serve(l, node.clone(), stopped(stop_rx.clone()))))
        }
        None => None,
    };
    let mut grpc_task = tokio::spawn(async move {
        let (a, b) = tokio::join!(grpc, peer_grpc);
        a.and(b)
    });

    shutdown.await;
    info!("shutting down");
    // Hand off leadership while the gRPC server still answers peers.
    node.shutdown().await;
    let _ = stop_tx.send(true);
    if tokio::time::timeout(DRAIN_WAIT, &mut grpc_task).await.is_err() {
        warn!("open calls did not finish within {DRAIN_WAIT:?}; closing them");
        grpc_task.abort();
    }
    if let Some(t) = kafka_task {
        let _ = t.await;
    }
    let _ = metrics_task.await;
    info!("stopped");
    Ok(())
}
