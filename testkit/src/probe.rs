//! Questions put to one node, over a direct connection to that node.
//!
//! The SDK's [`replog_client::Client`] sends cluster-wide requests to any
//! node it knows of (known nodes first, the bootstrap list last), so a
//! client bootstrapped with one address may well ask another node. What a
//! given node sees (its controller leader, its metadata) is asked here
//! with the generated gRPC client on a channel to that node alone.

use std::time::Duration;

use replog_client::ClientConfig;
use replog_proto::pb::replog_client::ReplogClient;
use replog_proto::pb::{ClusterStatusRequest, MetadataRequest, MetadataResponse};
use tonic::transport::{Channel, Endpoint};

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

/// A gRPC client for the node at `addr` (`host:port`) only; `None` if it
/// does not accept a connection within [`PROBE_CONNECT`].
pub async fn connect(addr: &str) -> Option<ReplogClient<Channel>> {
    let endpoint =
        Endpoint::from_shared(format!("http://{addr}")).ok()?.connect_timeout(PROBE_CONNECT).timeout(PROBE_TIMEOUT);
    Some(ReplogClient::new(endpoint.connect().await.ok()?))
}

/// The controller leader as the node at `addr` sees it; `None`: no answer,
/// or no leader.
pub async fn controller_leader(addr: &str) -> Option<u64> {
    let status = connect(addr).await?.cluster_status(ClusterStatusRequest {}).await.ok()?.into_inner();
    (status.controller_leader != 0).then_some(status.controller_leader)
}

/// The metadata of `topic` as the node at `addr` holds it.
pub async fn metadata(addr: &str, topic: &str) -> Option<MetadataResponse> {
    let req = MetadataRequest { topics: vec![topic.to_string()] };
    Some(connect(addr).await?.metadata(req).await.ok()?.into_inner())
}

/// The leader of `topic`/`partition` as the node at `addr` knows it.
pub async fn partition_leader(addr: &str, topic: &str, partition: u32) -> Option<u64> {
    let meta = metadata(addr, topic).await?;
    let t = meta.topics.into_iter().find(|t| t.name == topic)?;
    let p = t.partitions.into_iter().find(|p| p.partition == partition)?;
    (p.leader != 0).then_some(p.leader)
}
