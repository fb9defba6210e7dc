//! Questions put to one node, over a direct connection to that node.
//!
//! The SDK's [`replog_client::Client`] sends cluster-wide requests to any
//! node it knows of (known nodes first, the bootstrap list last), so a
//! client bootstrapped with one address may well ask another node. What a
//! given node sees (its controller leader, its metadata) is asked here
//! with the generated gRPC client on a channel to that node alone.

use std::time::Duration;

use replog_client::ClientConfig;
use replog_client::client::TlsOptions as Tls;
use replog_proto::pb::replog_client::ReplogClient;
use replog_proto::pb::{ClusterStatusRequest, MetadataRequest, MetadataResponse};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Connecting to a node: a live node on loopback answers at once, so a
/// slow connect means a paused or cut-off node.
pub const PROBE_CONNECT: Duration = Duration::from_millis(500);
/// One probe request: short, so that a paused or partitioned node costs a
/// second, not thirty.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// SDK client settings for control-plane look-ups (leaders, readiness)
/// with the same short limits as the probes.
pub fn probe_config() -> ClientConfig {
    ClientConfig {
        request_timeout: PROBE_TIMEOUT,
        retry_deadline: PROBE_TIMEOUT,
        connect_timeout: PROBE_CONNECT,
        ..ClientConfig::default()
    }
}

/// A gRPC client for the node at `addr` (`host:port`) only, over TLS
/// when the cluster's clients speak it; `None` if it does not accept a
/// connection within [`PROBE_CONNECT`].
pub async fn connect(addr: &str, tls: Option<&Tls>) -> Option<ReplogClient<Channel>> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint =
        Endpoint::from_shared(format!("{scheme}://{addr}")).ok()?.connect_timeout(PROBE_CONNECT).timeout(PROBE_TIMEOUT);
    if let Some(t) = tls {
        let mut c = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&t.ca_pem));
        if let Some((cert, key)) = &t.identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(c).ok()?;
    }
    Some(ReplogClient::new(endpoint.connect().await.ok()?))
}

/// The controller leader as the node at `addr` sees it; `None`: no answer,
/// or no leader.
pub async fn controller_leader(addr: &str, tls: Option<&Tls>) -> Option<u64> {
    let status = connect(addr, tls).await?.cluster_status(ClusterStatusRequest {}).await.ok()?.into_inner();
    (status.controller_leader != 0).then_some(status.controller_leader)
}

/// The metadata of `topic` as the node at `addr` holds it.
pub async fn metadata(addr: &str, topic: &str, tls: Option<&Tls>) -> Option<MetadataResponse> {
    let req = MetadataRequest { topics: vec![topic.to_string()] };
    Some(connect(addr, tls).await?.metadata(req).await.ok()?.into_inner())
}

/// The leader of `topic`/`partition` as the node at `addr` knows it.
pub async fn partition_leader(addr: &str, topic: &str, partition: u32, tls: Option<&Tls>) -> Option<u64> {
    let meta = metadata(addr, topic, tls).await?;
    let t = meta.topics.into_iter().find(|t| t.name == topic)?;
    let p = t.partitions.into_iter().find(|p| p.partition == partition)?;
    (p.leader != 0).then_some(p.leader)
}
