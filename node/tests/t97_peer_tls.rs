//! Peers apart from clients: the Raft service is served on the peer
//! listener only, and with peer TLS only holders of a certificate from the
//! cluster CA reach it.
//!
//! One cluster of three real nodes in which nodes 1 and 2 hold certificates
//! from the cluster CA and node 3 one from another CA:
//! - the client port does not serve `RaftPeer` at all;
//! - on the peer port, a caller with no certificate or a foreign one is
//!   refused in the handshake (its vote never reaches Raft), while a caller
//!   with a cluster certificate gets Raft's answer;
//! - node 3 never joins: nodes 1 and 2 elect a controller leader and commit
//!   a topic without it, node 3 learns neither, and the leader does not
//!   change (node 3 cannot force an election).

mod common;

use std::time::Duration;

use common::{WAIT, options};
use replog_client::certs::{Ca, LOCAL_NAMES, Pem};
use replog_proto::codes::{ErrorCode, code_of};
use replog_proto::pb::raft_peer_client::RaftPeerClient;
use replog_proto::pb::replog_client::ReplogClient;
use replog_proto::pb::{MetadataRequest, RaftMessage};
use replog_testkit::cluster::PEER_PORT_OFFSET;
use replog_testkit::{Cluster, wait_for};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

fn peer_addr(addr: &str) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    format!("{host}:{}", port.parse::<u16>().unwrap() + PEER_PORT_OFFSET)
}

/// A `RaftPeer` client to `addr` over TLS trusting `ca`, showing `identity`.
async fn peer_client(
    addr: &str,
    ca: &Pem,
    identity: Option<&Pem>,
) -> Result<RaftPeerClient<tonic::transport::Channel>, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.cert));
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    let ep = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    Ok(RaftPeerClient::new(ep.connect().await.map_err(|e| format!("{e:?}"))?))
}

/// A vote request for the controller group whose payload is not a vote:
/// a caller that reaches Raft's service gets an answer naming the payload.
async fn call_vote(c: Result<RaftPeerClient<tonic::transport::Channel>, String>) -> Result<RaftMessage, String> {
    let mut c = c?;
    let m = RaftMessage { group_id: 0, payload: vec![1, 2, 3].into(), error: String::new() };
    c.vote(m).await.map(|r| r.into_inner()).map_err(|s| format!("{s:?}"))
}

fn node_tls_args(dir: &std::path::Path, name: &str) -> Vec<String> {
    let f = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
    vec![
        "--peer-tls-cert".into(),
        f("crt"),
        "--peer-tls-key".into(),
        f("key"),
        "--peer-tls-ca".into(),
        dir.join(if name == "foreign" { "foreign-ca.crt" } else { "ca.crt" }).display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_peer_mtls_then_only_cluster_certificates_reach_raft_and_the_client_port_serves_no_raft() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA").unwrap();
    let foreign_ca = Ca::new("foreign CA").unwrap();
    ca.pem().write(certs.path(), "ca").unwrap();
    foreign_ca.pem().write(certs.path(), "foreign-ca").unwrap();
    let node = ca.issue("node", &LOCAL_NAMES).unwrap();
    let foreign = foreign_ca.issue("node", &LOCAL_NAMES).unwrap();
    node.write(certs.path(), "node").unwrap();
    foreign.write(certs.path(), "foreign").unwrap();

    let mut opts = options(&[]);
    for id in [1, 2] {
        opts.node_args.insert(id, node_tls_args(certs.path(), "node"));
    }
    opts.node_args.insert(3, node_tls_args(certs.path(), "foreign"));
    let mut cluster = Cluster::prepare(3, opts).unwrap();
    for id in 1..=3 {
        cluster.restart(id).unwrap();
    }
    let leader = wait_for("nodes 1 and 2 to agree on a controller leader", WAIT, || async {
        let (a, b) = (cluster.controller_leader_at(1).await?, cluster.controller_leader_at(2).await?);
        (a == b && a != 3).then_some(a)
    })
    .await;

    // The client port does not serve the peer service.
    let mut plain = RaftPeerClient::connect(format!("http://{}", cluster.node(1).addr)).await.unwrap();
    let m = RaftMessage { group_id: 0, payload: vec![1].into(), error: String::new() };
    let status = plain.vote(m).await.expect_err("the client port must not serve RaftPeer");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");

    // On the peer port: only a cluster certificate gets an answer from Raft.
    let peer = peer_addr(&cluster.node(1).addr);
    let ok = call_vote(peer_client(&peer, ca.pem(), Some(&node)).await).await.expect("a cluster node's call");
    assert!(ok.error.contains("undecodable"), "Raft's service answered: {ok:?}");
    let foreign_call = call_vote(peer_client(&peer, ca.pem(), Some(&foreign)).await).await;
    assert!(foreign_call.is_err(), "a foreign certificate got through: {foreign_call:?}");
    let anonymous = call_vote(peer_client(&peer, ca.pem(), None).await).await;
    assert!(anonymous.is_err(), "a caller without a certificate got through: {anonymous:?}");
    // Nor does the foreign node accept the cluster's nodes.
    let into_foreign = call_vote(peer_client(&peer_addr(&cluster.node(3).addr), ca.pem(), Some(&node)).await).await;
    assert!(into_foreign.is_err(), "node 3 took a call from a cluster node: {into_foreign:?}");

    // Nodes 1 and 2 work without node 3, which learns nothing of it.
    let client =
        cluster.client(replog_client::ClientConfig { retry_deadline: WAIT, ..Default::default() }).await.unwrap();
    client.create_topic("t", 1, 2).await.expect("create a topic on nodes 1 and 2");
    let refused = client.create_topic("t3", 1, 3).await.expect_err("node 3 is not a live member");
    assert!(refused.to_string().contains("replication"), "{refused}");
    wait_for("node 2 to know topic t", WAIT, || async {
        replog_testkit::probe::metadata(&cluster.node(2).addr, "t", None)
            .await?
            .topics
            .iter()
            .any(|t| t.name == "t")
            .then_some(())
    })
    .await;
    // Node 3 never caught up with the cluster metadata: asked for t, it says
    // so (UNAVAILABLE: ask elsewhere) rather than answer that t is unknown.
    let mut at_3 = ReplogClient::connect(format!("http://{}", cluster.node(3).addr)).await.expect("connect to node 3");
    let st = at_3
        .metadata(MetadataRequest { topics: vec!["t".into()] })
        .await
        .expect_err("node 3 learned topic t, or claims to know the metadata");
    assert_eq!(code_of(&st), Some(ErrorCode::Unavailable), "{st:?}");
    assert_eq!(cluster.controller_leader_at(3).await, None, "node 3 knows a controller leader");
    assert_eq!(cluster.controller_leader_at(1).await, Some(leader), "node 3 forced an election");
    assert!(cluster.exited().is_empty(), "a node crashed");
    drop(client);
    cluster.kill_all().unwrap();
}
