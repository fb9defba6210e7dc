//! What the node tests share on top of the test kit (`replog-testkit`):
//! clusters of this package's own `replog-node` binary on 127.0.0.1, each
//! in a temporary directory, and the waits and look-ups several tests use.

#![allow(dead_code)]

use std::time::Duration;

use replog_client::{Client, ClientConfig};
pub use replog_testkit::{Cluster, ClusterOptions, wait_for};

/// How long a cluster may take to elect its controller after starting.
pub const CLUSTER_READY: Duration = Duration::from_secs(30);
/// Generous bound for anything awaited in these tests (CI has 2 cores and
/// runs debug builds in parallel).
pub const WAIT: Duration = Duration::from_secs(60);
/// How long a node may take to exit cleanly on SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// Nodes of the binary cargo built for these tests, with `extra_args`.
pub fn options(extra_args: &[&str]) -> ClusterOptions {
    ClusterOptions {
        node_bin: Some(env!("CARGO_BIN_EXE_replog-node").into()),
        extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        ready_timeout: CLUSTER_READY,
        ..ClusterOptions::default()
    }
}

/// Starts `n` nodes and waits until they agree on a controller leader.
pub async fn start(n: u64, extra_args: &[&str]) -> Cluster {
    Cluster::start(n, options(extra_args)).await.expect("start the cluster")
}

/// A client of the serving nodes that retries for as long as the tests wait.
pub async fn client(cluster: &Cluster) -> Client {
    cluster.client(ClientConfig { retry_deadline: WAIT, ..Default::default() }).await.expect("connect")
}

/// SIGTERM node `id` and wait for a clean exit.
pub async fn stop(cluster: &mut Cluster, id: u64) {
    let status = cluster.stop(id, STOP_GRACE).await.expect("stop");
    assert!(status.is_some_and(|s| s.success()), "node {id} did not exit cleanly on SIGTERM: {status:?}");
}

/// The sum of the samples on a node's `/metrics` page that match
/// `selector`, a name with optional labels, e.g.
/// `replog_produce_requests_total{result="TIMEOUT"}`: every sample of that
/// name carrying those labels counts, whatever its other labels (such as
/// `topic`). `None` if the node does not answer or has no such sample yet.
pub fn metric(metrics_addr: &str, selector: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(metrics_addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {metrics_addr}\r\n\r\n").as_bytes()).ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let (name, want) = match selector.split_once('{') {
        Some((n, rest)) => (n, labels(rest.trim_end_matches('}'))),
        None => (selector, Vec::new()),
    };
    let mut found = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (n, have) = match series.split_once('{') {
            Some((n, rest)) => (n, labels(rest.trim_end_matches('}'))),
            None => (series, Vec::new()),
        };
        if n == name && want.iter().all(|w| have.contains(w)) {
            *found.get_or_insert(0.0) += value.trim().parse::<f64>().ok()?;
        }
    }
    found
}

/// `a="x",b="y"` as pairs (label values here hold no commas or quotes).
fn labels(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// Waits until `topic`/`partition` is led by its preferred replica (the
/// first) and returns `(leader, replicas)`. Leadership that is elsewhere
/// moves there once the balancer runs, so only this leader is stable
/// enough for a test to act on.
pub async fn preferred_leader(client: &Client, topic: &str, partition: u32) -> (u64, Vec<u64>) {
    wait_for("the preferred replica to lead", WAIT, || async {
        let p = client.describe_topic(topic).await.ok()?.partitions.get(partition as usize)?.clone();
        (p.leader? == *p.replicas.first()?).then(|| (p.leader.unwrap_or_default(), p.replicas))
    })
    .await
}

/// Starts `n` nodes with a one-partition topic `topic` at RF `rf` led by
/// its preferred replica; returns the cluster and a client.
pub async fn with_topic(n: u64, extra_args: &[&str], topic: &str, rf: u32) -> (Cluster, Client) {
    let cluster = start(n, extra_args).await;
    let client = client(&cluster).await;
    client.create_topic(topic, 1, rf).await.expect("create topic");
    preferred_leader(&client, topic, 0).await;
    (cluster, client)
}

/// Kills every replica of `topic`/0 but its leader, which keeps leading
/// (for as long as its lease lasts) but can commit nothing; returns it.
pub async fn strand_leader(cluster: &mut Cluster, client: &Client, topic: &str) -> u64 {
    let (leader, replicas) = preferred_leader(client, topic, 0).await;
    for r in replicas.iter().filter(|r| **r != leader) {
        cluster.kill(*r).expect("kill");
    }
    leader
}

/// Runs `ops/<script>`, which installs a tool the test needs when it is
/// missing and prints what to use (exit 0), or says why it cannot here
/// (exit 3): then `None` (the test is skipped), except under CI, where the
/// tool must be had. Any other exit fails the test.
pub fn ensure_tool(script: &str, tool: &str) -> Option<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops").join(script);
    let out = std::process::Command::new("bash").arg(&path).output().unwrap_or_else(|e| panic!("run {script}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => Some(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        Some(3) => {
            assert!(std::env::var_os("CI").is_none(), "{tool} is needed in CI: {stderr}");
            eprintln!("skipped: {stderr}");
            None
        }
        _ => panic!("ops/{script} failed: {stderr}"),
    }
}

/// Debian's kcat, installed if missing (`ops/ensure-kcat.sh`).
pub fn ensure_kcat() -> Option<()> {
    ensure_tool("ensure-kcat.sh", "kcat").map(drop)
}

/// A Python with confluent-kafka, installed if missing
/// (`ops/ensure-confluent-kafka.sh`).
pub fn ensure_python() -> Option<std::path::PathBuf> {
    ensure_tool("ensure-confluent-kafka.sh", "confluent-kafka").map(Into::into)
}
