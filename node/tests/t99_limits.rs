//! Limits that keep one client from hurting others, on a real node.
//!
//! One node with `--max-connections-per-ip 32` and a produce quota of
//! 256 KiB/s per principal:
//! - a client that opens 200 connections from 127.0.0.2 and holds them
//!   gets 32; the rest are closed at once (counted in
//!   `replog_node_connections_refused_total`), and a client on 127.0.0.1
//!   keeps producing meanwhile (its latency before and during is printed,
//!   not asserted);
//! - a produce request far above the batch limit is refused by the
//!   transport before the node buffers it, and the node serves on;
//! - a connection learns in its HTTP/2 settings that it may have at most
//!   `--max-requests-per-connection` requests open at once; when it fills
//!   them with produce requests whose bodies never finish (a slow
//!   client), another client keeps producing (latency printed);
//! - a user producing over the quota has answers held back
//!   (`replog_quota_throttle_seconds_total`), while each of its produces
//!   still succeeds.
//!
//! And, on three nodes, the replica limit (docs/operations.md): a create
//! that would put more partition replicas on a node than its
//! `--max-replicas` is refused with REPLICA_LIMIT naming that node, and
//! nothing is created; a node restarted with a lower limit than it holds
//! opens only that many, says so in /ready and keeps running, and the
//! partitions go on taking writes on the other replicas.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{WAIT, metric};
use replog_client::client::Credentials;
use replog_client::{Client, ClientConfig};
use replog_proto::batch::{self, Record};
use replog_proto::pb::Acks;
use replog_testkit::wait_for;

const FLOOD: usize = 200;
const PER_IP: usize = 32;
const PER_CONNECTION: usize = 8;

async fn produce_latencies(client: &Client, n: usize) -> Vec<Duration> {
    let mut v = Vec::new();
    for i in 0..n {
        let b = batch::encode(&[Record::new(None, Bytes::from(format!("v{i}")), 1)]);
        let t0 = Instant::now();
        client.produce_batch("t", 0, b, Acks::All).await.expect("the other client still produces");
        v.push(t0.elapsed());
    }
    v.sort();
    v
}

fn summary(v: &[Duration]) -> String {
    format!("p50 {:?}, max {:?}", v[v.len() / 2], v[v.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_limits_then_a_flooding_or_oversized_or_greedy_client_does_not_starve_others() {
    let cluster = common::start(
        1,
        &[
            "--max-connections-per-ip",
            &PER_IP.to_string(),
            "--max-requests-per-connection",
            &PER_CONNECTION.to_string(),
            "--produce-quota-bytes-per-sec",
            "262144",
        ],
    )
    .await;
    let client = common::client(&cluster).await;
    client.create_topic("t", 1, 1).await.expect("create");
    let addr: std::net::SocketAddr = cluster.node(1).addr.parse().unwrap();
    let metrics = cluster.node(1).metrics.clone();
    let before = produce_latencies(&client, 30).await;

    // The flood: 200 connections from another address, held open.
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        flood.push(s.connect(addr).await.expect("the kernel accepts the connection"));
    }
    let refused = (FLOOD - PER_IP) as f64;
    wait_for("the connections over the cap to be closed", WAIT, || async {
        (metric(&metrics, "replog_node_connections_refused_total")? >= refused).then_some(())
    })
    .await;
    let during = produce_latencies(&client, 30).await;
    println!("another client's produce latency: before the flood {}, during {}", summary(&before), summary(&during));
    let mut closed = 0;
    for s in &mut flood {
        let mut buf = [0u8; 64];
        // A refused connection reads end-of-file (or a reset) at once.
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(200), async {
            use tokio::io::AsyncReadExt;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => return Ok(0),
                    Ok(_) => continue,
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, FLOOD - PER_IP, "connections the node closed");
    drop(flood);

    // Far above the batch limit: refused unread.
    let huge = Bytes::from(vec![7u8; 16 << 20]);
    let once = cluster
        .client(ClientConfig { retry_deadline: Duration::from_millis(500), ..Default::default() })
        .await
        .expect("connect");
    let r = once.produce_batch("t", 0, huge, Acks::All).await;
    assert!(r.is_err(), "a 16 MiB request was taken");
    produce_latencies(&client, 1).await;

    // Requests per connection: the node's settings frame says how many.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, mut conn) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    let advertised = tokio::time::timeout(
        WAIT,
        std::future::poll_fn(|cx| {
            use std::task::Poll;
            if let Poll::Ready(r) = std::pin::Pin::new(&mut conn).poll(cx) {
                return Poll::Ready(Err(r));
            }
            match conn.max_concurrent_send_streams() {
                PER_CONNECTION => Poll::Ready(Ok(PER_CONNECTION)),
                _ => Poll::Pending,
            }
        }),
    )
    .await
    .expect("the node's settings within the wait");
    assert_eq!(advertised.expect("the connection stays open"), PER_CONNECTION);
    // A slow client: every request it may open is a produce whose body
    // announces 1 MiB and sends 5 bytes of it, and then nothing.
    let driver = tokio::spawn(conn);
    let mut stalled = Vec::new();
    for _ in 0..PER_CONNECTION {
        let mut send = send.clone().ready().await.expect("a stream to open");
        let req = http::Request::post(format!("http://{addr}/replog.v1.Replog/Produce"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (response, mut body) = send.send_request(req, false).expect("open a request");
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(1u32 << 20).to_be_bytes());
        frame.extend_from_slice(b"slow");
        body.send_data(Bytes::from(frame), false).expect("send part of the body");
        stalled.push((response, body));
    }
    let slow = produce_latencies(&client, 30).await;
    println!("another client's produce latency with {PER_CONNECTION} stalled requests: {}", summary(&slow));
    drop(stalled);
    driver.abort();

    // Quotas: a user that sends 1 MiB at 256 KiB/s is slowed, not refused.
    client.upsert_user("greedy", "pw").await.expect("create the user");
    let greedy = cluster
        .client(ClientConfig {
            credentials: Some(Credentials { user: "greedy".into(), password: "pw".into() }),
            retry_deadline: WAIT,
            ..Default::default()
        })
        .await
        .expect("greedy connects");
    let t0 = Instant::now();
    for _ in 0..16 {
        let b = batch::encode(&[Record::new(None, Bytes::from(vec![1u8; 64 << 10]), 1)]);
        greedy.produce_batch("t", 0, b, Acks::All).await.expect("a throttled produce still lands");
    }
    println!("1 MiB at a 256 KiB/s quota took {:?}", t0.elapsed());
    let held = metric(&metrics, "replog_quota_throttle_seconds_total{kind=\"produce\"}").unwrap_or(0.0);
    assert!(held > 0.0, "no answer was held back");
    assert!(cluster.serving().contains(&1));
}

/// `/ready` of the node whose metrics listen on `metrics`: whether it
/// answered 200, and its body.
fn ready(metrics: &str) -> Option<(bool, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(metrics).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET /ready HTTP/1.0\r\nHost: {metrics}\r\n\r\n").as_bytes()).ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some((body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"), body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_replica_limit_then_a_create_past_it_is_refused_and_a_node_over_it_stays_up() {
    use replog_proto::codes::ErrorCode;
    const LIMIT: usize = 5;
    let mut opts = common::options(&[]);
    opts.node_args.insert(3, vec!["--max-replicas".into(), LIMIT.to_string()]);
    let mut cluster = common::Cluster::start(3, opts).await.expect("start the cluster");
    let client = common::client(&cluster).await;

    client.create_topic("fits", LIMIT as u32, 3).await.expect("node 3 can hold 5 replicas");
    let e = client.create_topic("over", 1, 3).await.expect_err("a sixth replica on node 3 must be refused");
    assert_eq!(e.code(), Some(ErrorCode::ReplicaLimit), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("node 3 would hold 6") && msg.contains("at most 5"), "{msg}");
    let gone = client.describe_topic("over").await.expect_err("nothing was created");
    assert_eq!(gone.code(), Some(ErrorCode::UnknownTopic), "{gone}");

    // Node 3 back with room for 3 of its 5: it opens 3, says why it is
    // not ready, and every partition still takes acknowledged writes.
    common::stop(&mut cluster, 3).await;
    cluster.set_node_args(3, &["--max-replicas", "3"]);
    cluster.restart(3).expect("restart node 3");
    let metrics = cluster.node(3).metrics.clone();
    let body = wait_for("node 3 to report the replicas it keeps closed", WAIT, || {
        let metrics = metrics.clone();
        async move {
            let (ok, body) = ready(&metrics)?;
            (!ok && body.contains("holds at most 3 replicas")).then_some(body)
        }
    })
    .await;
    assert_eq!(body.matches("holds at most 3 replicas").count(), 2, "two of five stay closed: {body}");
    assert_eq!(metric(&metrics, "replog_raft_groups"), Some(3.0), "3 partition groups are open");
    for p in 0..LIMIT as u32 {
        let b = batch::encode(&[Record::new(None, Bytes::from_static(b"v"), 1)]);
        client.produce_batch("fits", p, b, Acks::All).await.unwrap_or_else(|e| panic!("fits/{p}: {e}"));
    }
    assert!(cluster.is_running(3), "node 3 is still running:\n{}", cluster.log_tail(3, 30));
}
