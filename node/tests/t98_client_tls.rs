//! TLS on the client listener, with client certificates required.
//!
//! One node with TLS on both listeners (certificates from a throwaway CA):
//! - a client with the CA and a certificate it issued works end to end;
//! - a client without a certificate, with a certificate from another CA,
//!   or trusting another CA is refused, and so is plaintext to the TLS
//!   port — each fails at once with a transport error, never hangs, and the
//!   node keeps serving;
//! - the node's certificate is replaced on disk by one from a second CA:
//!   without a restart, new connections get the new certificate (clients
//!   trusting the second CA get in, clients trusting only the first no
//!   longer do).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{WAIT, options};
use replog_client::certs::{Ca, LOCAL_NAMES, Pem};
use replog_client::client::TlsOptions;
use replog_client::{Client, ClientConfig, Error, PartitionReader};
use replog_proto::batch::{self, Record};
use replog_proto::pb::Acks;
use replog_testkit::{Cluster, wait_for};

/// How long a refused client may take to give up: it must fail on its
/// first attempts, not retry for the default 30 s.
const REFUSAL: Duration = Duration::from_secs(3);

fn tls(ca: &Pem, identity: Option<&Pem>) -> TlsOptions {
    TlsOptions {
        ca_pem: ca.cert.clone().into_bytes(),
        identity: identity.map(|p| (p.cert.clone().into_bytes(), p.key.clone().into_bytes())),
    }
}

async fn connect(addr: &str, tls: Option<TlsOptions>) -> Result<Client, Error> {
    let config = ClientConfig { tls, retry_deadline: REFUSAL, connect_timeout: REFUSAL, ..Default::default() };
    Client::connect_with([addr.to_string()], config).await
}

async fn produce(client: &Client, value: &'static str) {
    let b = batch::encode(&[Record::new(None, Bytes::from_static(value.as_bytes()), 1)]);
    client.produce_batch("t", 0, b, Acks::All).await.expect("produce over TLS");
}

fn flag(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_client_tls_with_client_certificates_then_only_trusted_clients_get_in_and_certificates_reload() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("cluster CA").unwrap();
    let other_ca = Ca::new("other CA").unwrap();
    ca.pem().write(d, "ca").unwrap();
    ca.issue("node", &LOCAL_NAMES).unwrap().write(d, "node").unwrap();
    let alice = ca.issue("alice", &[]).unwrap();
    let mallory = other_ca.issue("alice", &[]).unwrap();

    let mut opts = options(&[
        "--tls-cert",
        &flag(d, "node.crt"),
        "--tls-key",
        &flag(d, "node.key"),
        "--tls-ca",
        &flag(d, "ca.crt"),
        "--peer-tls-cert",
        &flag(d, "node.crt"),
        "--peer-tls-key",
        &flag(d, "node.key"),
        "--peer-tls-ca",
        &flag(d, "ca.crt"),
    ]);
    opts.client_tls = Some(tls(ca.pem(), Some(&alice)));
    let mut cluster = Cluster::start(1, opts).await.expect("a TLS node starts");
    let addr = cluster.node(1).addr.clone();
    let pid = cluster.pid(1);

    let client = cluster.client(ClientConfig { retry_deadline: WAIT, ..Default::default() }).await.unwrap();
    client.create_topic("t", 1, 1).await.expect("create over TLS");
    produce(&client, "over tls").await;
    let records = PartitionReader::new(client.clone(), "t", 0, 0).poll().await.expect("fetch over TLS");
    assert_eq!(records.first().map(|r| &r.value[..]), Some(&b"over tls"[..]));

    for (what, t) in [
        ("no client certificate", Some(tls(ca.pem(), None))),
        ("a client certificate from another CA", Some(tls(ca.pem(), Some(&mallory)))),
        ("trusting another CA", Some(tls(other_ca.pem(), Some(&alice)))),
        ("plaintext", None),
    ] {
        let t0 = Instant::now();
        let r = connect(&addr, t).await;
        let e = r.err().unwrap_or_else(|| panic!("a client with {what} got in"));
        assert!(
            e.is_retryable() || matches!(e, Error::DeadlineExceeded { .. }),
            "{what}: not a transport failure: {e}"
        );
        assert!(t0.elapsed() < REFUSAL + Duration::from_secs(5), "{what}: took {:?}", t0.elapsed());
    }
    produce(&client, "still serving").await;

    // Rotate the node's certificate to one from a second CA; the node's CA
    // for client certificates stays.
    let ca2 = Ca::new("rotated CA").unwrap();
    ca2.issue("node", &LOCAL_NAMES).unwrap().write(d, "node").unwrap();
    wait_for("the node to serve the rotated certificate", WAIT, || async {
        connect(&addr, Some(tls(ca2.pem(), Some(&alice)))).await.ok()
    })
    .await;
    assert!(connect(&addr, Some(tls(ca.pem(), Some(&alice)))).await.is_err(), "the old certificate is still served");
    assert_eq!(cluster.pid(1), pid, "the node restarted");
    assert!(cluster.exited().is_empty());
    cluster.kill_all().unwrap();
}
