//! A write whose outcome is unknown stays unknown: when an attempt of a
//! produce times out at the leader (it may still commit) and a later retry
//! of the same request is refused for good, the SDK reports the write as
//! indeterminate — `is_indeterminate()` is true, the message says the
//! earlier attempt may have been applied, the last code stays visible —
//! never as a definite failure that a caller would take as "not written".
//!
//! Five nodes, so that the controller keeps a majority while the
//! partition's replicas (three of the five) do not: the partition leader
//! cannot commit and answers TIMEOUT, yet the topic can still be deleted,
//! after which every retry is refused with UNKNOWN_TOPIC.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{WAIT, metric, wait_for};
use replog_client::{Acks, Client, ClientConfig, Error, ErrorCode, Record};
use replog_proto::batch;

/// A leader that hears from no majority refuses new writes once its lease
/// (the longest election timeout) runs out; until then it accepts writes it
/// cannot commit, which time out. The lease is made long enough for an
/// attempt to reach the leader within it even on a loaded machine.
const LONG_LEASE: [&str; 2] = ["--election-timeout-max-ms", "10000"];
/// Per-attempt timeout of the producing client: short, so that attempts
/// time out quickly while the partition has no majority.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_timed_out_produce_when_a_retry_is_refused_then_the_write_is_reported_indeterminate() {
    let (mut cluster, admin) = common::with_topic(5, &LONG_LEASE, "t", 3).await;
    // The partition keeps its leader but loses its majority.
    let leader = common::strand_leader(&mut cluster, &admin, "t").await;
    let leader_metrics = cluster.node(leader).metrics.clone();
    let timeouts = r#"replog_produce_requests_total{result="TIMEOUT"}"#;
    let before = metric(&leader_metrics, timeouts).unwrap_or(0.0);

    let cfg = ClientConfig { request_timeout: ATTEMPT_TIMEOUT, retry_deadline: WAIT, ..Default::default() };
    let producer = Client::connect_with([cluster.node(leader).addr.clone()], cfg).await.expect("connect");
    let one = batch::encode(&[Record::new(None, Bytes::from_static(b"maybe"), 1)]);
    let produce = tokio::spawn(async move { producer.produce_batch("t", 0, one, Acks::All).await });

    // Once an attempt has timed out at the leader, its fate is unknown;
    // from then on every retry is refused.
    wait_for("a produce attempt to time out at the leader", WAIT, || {
        let m = leader_metrics.clone();
        async move { (metric(&m, timeouts).unwrap_or(0.0) > before).then_some(()) }
    })
    .await;
    let admin = common::client(&cluster).await;
    admin.delete_topic("t").await.expect("delete with the controller's majority");

    let err = tokio::time::timeout(WAIT, produce)
        .await
        .expect("the produce must end once the topic is gone")
        .expect("produce task")
        .expect_err("the topic is gone, so no attempt can succeed any more");
    assert!(err.is_indeterminate(), "a refusal after a timed-out attempt must be indeterminate, got {err:?}");
    assert!(matches!(err, Error::Indeterminate { .. }), "{err:?}");
    assert_eq!(err.code(), Some(ErrorCode::UnknownTopic), "the final refusal stays visible: {err:?}");
    assert!(err.to_string().contains("may have been applied"), "{err}");
}
