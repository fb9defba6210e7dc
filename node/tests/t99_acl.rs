//! Authentication and authorization on real nodes.
//!
//! Three nodes with mutual TLS between them, TLS to clients (client
//! certificates optional, so that users may authenticate with a password
//! instead), `--authorization` and the super user `admin` (the test's
//! own certificate CN). One cluster for all cases, in order:
//! - the super user creates a topic and the user alice (SCRAM-SHA-256
//!   credential), and allows alice to produce to it: alice produces, and
//!   her fetch is refused with PERMISSION_DENIED; a wrong password is
//!   AUTHENTICATION_FAILED;
//! - a client that shows nothing is ANONYMOUS: its admin calls are denied
//!   and it does not see the topic;
//! - a certificate's CN is a principal like any user (bob may consume);
//! - ACL changes take effect without a restart: alice may consume once
//!   allowed and may no longer produce once that ACL is removed, on every
//!   node (the partition leader need not lead the controller);
//! - a deleted user can no longer authenticate.

mod common;

use std::path::Path;

use bytes::Bytes;
use common::{WAIT, options};
use replog_client::certs::{Ca, LOCAL_NAMES, Pem};
use replog_client::client::{Credentials, TlsOptions};
use replog_client::schema::Format;
use replog_client::security::Acl;
use replog_client::{Client, ClientConfig, Error, PartitionReader};
use replog_proto::batch::{self, Record};
use replog_proto::codes::ErrorCode;
use replog_proto::pb::Acks;
use replog_testkit::{Cluster, wait_for};

const TOPIC: &str = "orders";

fn tls(ca: &Pem, identity: Option<&Pem>) -> TlsOptions {
    TlsOptions {
        ca_pem: ca.cert.clone().into_bytes(),
        identity: identity.map(|p| (p.cert.clone().into_bytes(), p.key.clone().into_bytes())),
    }
}

fn flag(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// A client of `cluster` over TLS trusting `ca`, as `identity` and/or `user`.
async fn client_as(
    cluster: &Cluster,
    ca: &Pem,
    identity: Option<&Pem>,
    user: Option<(&str, &str)>,
) -> Result<Client, Error> {
    let config = ClientConfig {
        tls: Some(tls(ca, identity)),
        credentials: user.map(|(u, p)| Credentials { user: u.into(), password: p.into() }),
        retry_deadline: WAIT,
        ..Default::default()
    };
    Client::connect_with(cluster.serving_addrs(), config).await
}

async fn produce(client: &Client) -> Result<(), Error> {
    let b = batch::encode(&[Record::new(None, Bytes::from_static(b"event"), 1)]);
    client.produce_batch(TOPIC, 0, b, Acks::All).await.map(|_| ())
}

async fn fetch(client: &Client) -> Result<usize, Error> {
    PartitionReader::new(client.clone(), TOPIC, 0, 0).poll().await.map(|r| r.len())
}

fn code<T>(r: Result<T, Error>) -> Option<ErrorCode> {
    r.err().and_then(|e| e.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_authorization_then_principals_get_what_acls_allow_and_changes_apply_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("cluster CA").unwrap();
    ca.pem().write(d, "ca").unwrap();
    ca.issue("node", &LOCAL_NAMES).unwrap().write(d, "node").unwrap();
    let admin = ca.issue("admin", &[]).unwrap();
    let bob = ca.issue("bob", &[]).unwrap();

    let (crt, key, cacrt) = (flag(d, "node.crt"), flag(d, "node.key"), flag(d, "ca.crt"));
    let mut opts = options(&[
        "--tls-cert",
        &crt,
        "--tls-key",
        &key,
        "--tls-ca",
        &cacrt,
        "--tls-client-auth",
        "optional",
        "--peer-tls-cert",
        &crt,
        "--peer-tls-key",
        &key,
        "--peer-tls-ca",
        &cacrt,
        "--authorization",
        "true",
        "--super-users",
        "admin",
    ]);
    opts.client_tls = Some(tls(ca.pem(), Some(&admin)));
    let cluster = Cluster::start(3, opts).await.expect("start");

    // The super user sets things up.
    let root = client_as(&cluster, ca.pem(), Some(&admin), None).await.expect("admin connects");
    let me = root.who_am_i().await.unwrap();
    assert_eq!((me.principal.as_str(), me.super_user), ("admin", true));
    root.create_topic(TOPIC, 1, 3).await.expect("create");
    cluster.wait_leaders(&root, TOPIC, WAIT).await.expect("a leader");
    root.upsert_user("alice", "wonderland").await.expect("create alice");
    let produce_acl = Acl::new("alice", "topic", TOPIC, "produce");
    root.add_acl(&produce_acl).await.expect("allow alice to produce");
    root.add_acl(&Acl::new("bob", "topic", "ord*", "consume")).await.expect("allow bob to consume");
    wait_for("alice to be listed", WAIT, || async { (root.list_users().await.ok()? == ["alice"]).then_some(()) }).await;
    // Listed from the answering node's copy, which may lag the leader's.
    wait_for("both ACLs to be listed", WAIT, || async { (root.list_acls().await.ok()?.len() == 2).then_some(()) })
        .await;

    // Alice: produce yes, consume no; a wrong password gets nowhere.
    let alice = wait_for("alice to authenticate on every node", WAIT, || async {
        client_as(&cluster, ca.pem(), None, Some(("alice", "wonderland"))).await.ok()
    })
    .await;
    assert_eq!(alice.who_am_i().await.unwrap().principal, "alice");
    wait_for("alice's produce ACL to reach the partition leader", WAIT, || async { produce(&alice).await.ok() }).await;
    assert_eq!(code(fetch(&alice).await), Some(ErrorCode::PermissionDenied));
    let wrong = client_as(&cluster, ca.pem(), None, Some(("alice", "wrong"))).await;
    assert_eq!(code(wrong), Some(ErrorCode::AuthenticationFailed));
    let nobody = client_as(&cluster, ca.pem(), None, Some(("mallory", "x"))).await;
    assert_eq!(code(nobody), Some(ErrorCode::AuthenticationFailed));
    assert_eq!(code(alice.add_acl(&Acl::new("alice", "topic", "*", "all")).await), Some(ErrorCode::PermissionDenied));

    // Anonymous: no admin calls, and the topic is not even visible.
    let anon = client_as(&cluster, ca.pem(), None, None).await.expect("anonymous connects");
    assert_eq!(anon.who_am_i().await.unwrap().principal, "ANONYMOUS");
    assert_eq!(code(anon.create_topic("mine", 1, 1).await), Some(ErrorCode::PermissionDenied));
    assert_eq!(code(anon.delete_topic(TOPIC).await), Some(ErrorCode::PermissionDenied));
    assert_eq!(code(anon.upsert_user("eve", "pw").await), Some(ErrorCode::PermissionDenied));
    assert_eq!(code(anon.cluster_status().await), Some(ErrorCode::PermissionDenied));
    assert!(anon.list_topics().await.unwrap().iter().all(|t| t.name != TOPIC), "anonymous sees the topic");
    // Nor membership changes, nor a look at them.
    assert_eq!(code(anon.move_partition(TOPIC, 0, &[3, 2, 1], false).await), Some(ErrorCode::PermissionDenied));
    assert_eq!(code(anon.move_status().await), Some(ErrorCode::PermissionDenied));
    assert_eq!(code(anon.decommission_node(3).await), Some(ErrorCode::PermissionDenied));
    assert_eq!(code(anon.balance_cluster(true).await), Some(ErrorCode::PermissionDenied));
    assert_eq!(code(anon.balance_cluster(false).await), Some(ErrorCode::PermissionDenied));
    assert!(root.move_status().await.expect("the super user may look").moves.is_empty());

    // Schema subjects: describe to read (by subject, or by an id a
    // readable subject holds; lists show only those), alter to register.
    const SCHEMA: &str = r#"{"type": "object"}"#;
    let orders = root.register_schema("orders-value", Format::Json, SCHEMA).await.expect("register orders-value");
    let payments = root
        .register_schema("payments-value", Format::Json, r#"{"type": "string"}"#)
        .await
        .expect("register payments-value");
    root.add_acl(&Acl::new("bob", "subject", "orders*", "describe")).await.expect("allow bob to read orders*");
    assert_eq!(code(anon.schema_by_id(orders.id).await), Some(ErrorCode::PermissionDenied));
    assert_eq!(
        code(anon.register_schema("orders-value", Format::Json, SCHEMA).await),
        Some(ErrorCode::PermissionDenied)
    );

    // A certificate's CN is a principal: bob may consume, not produce.
    let bob = client_as(&cluster, ca.pem(), Some(&bob), None).await.expect("bob connects");
    assert_eq!(bob.who_am_i().await.unwrap().principal, "bob");
    assert!(fetch(&bob).await.expect("bob consumes") >= 1);
    assert_eq!(code(produce(&bob).await), Some(ErrorCode::PermissionDenied));
    wait_for("bob's subject ACL to apply", WAIT, || async { bob.schema_by_id(orders.id).await.ok() }).await;
    assert_eq!(bob.schema_version("orders-value", None).await.expect("by subject").id, orders.id);
    assert_eq!(code(bob.schema_by_id(payments.id).await), Some(ErrorCode::PermissionDenied));
    assert_eq!(code(bob.schema_version("payments-value", None).await), Some(ErrorCode::PermissionDenied));
    let listed: Vec<String> = bob.list_schemas(None).await.expect("list").into_iter().map(|s| s.subject).collect();
    assert_eq!(listed, ["orders-value"]);
    assert_eq!(
        code(bob.register_schema("orders-value", Format::Json, SCHEMA).await),
        Some(ErrorCode::PermissionDenied)
    );
    assert_eq!(code(bob.delete_schema("orders-value", None).await), Some(ErrorCode::PermissionDenied));
    assert_eq!(code(bob.set_schema_compatibility("orders-value", None).await), Some(ErrorCode::PermissionDenied));

    // ACL changes apply without a restart.
    root.add_acl(&Acl::new("alice", "topic", TOPIC, "consume")).await.unwrap();
    wait_for("alice's consume ACL to apply", WAIT, || async { fetch(&alice).await.ok() }).await;
    root.remove_acl(&produce_acl).await.unwrap();
    wait_for("the removal of alice's produce ACL to apply", WAIT, || async {
        (code(produce(&alice).await) == Some(ErrorCode::PermissionDenied)).then_some(())
    })
    .await;

    // A deleted user cannot authenticate.
    root.delete_user("alice").await.unwrap();
    wait_for("alice's deletion to apply on every node", WAIT, || async {
        let mut refused = 0;
        for addr in cluster.serving_addrs() {
            let config = ClientConfig {
                tls: Some(tls(ca.pem(), None)),
                credentials: Some(Credentials { user: "alice".into(), password: "wonderland".into() }),
                retry_deadline: std::time::Duration::from_secs(2),
                ..Default::default()
            };
            if code(Client::connect_with([addr], config).await) == Some(ErrorCode::AuthenticationFailed) {
                refused += 1;
            }
        }
        (refused == 3).then_some(())
    })
    .await;
    assert_eq!(code(root.delete_user("alice").await), Some(ErrorCode::UnknownUser));
}
