//! Test harness: a cluster of real `replog-node` processes on loopback,
//! each with its own data directory, started, killed and restarted by PID.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use replog_client::{Client, ClientConfig};

/// How long a cluster may take to elect its controller after starting.
pub const CLUSTER_READY: Duration = Duration::from_secs(30);
/// Generous bound for anything awaited in these tests (CI has 2 cores and
/// runs debug builds in parallel).
pub const WAIT: Duration = Duration::from_secs(60);

pub struct TestNode {
    pub id: u64,
    pub addr: String,
    pub metrics: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
}

pub struct TestCluster {
    pub nodes: BTreeMap<u64, TestNode>,
    pub initial: String,
    pub extra_args: Vec<String>,
    _tmp: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl TestCluster {
    /// Starts `n` nodes and waits until the controller has a leader.
    pub async fn start(n: u64, extra_args: &[&str]) -> TestCluster {
        Self::prepare(n, extra_args).launch().await
    }

    /// Chooses addresses and data directories for `n` nodes without starting
    /// any, so a test can prepare a node's directory (e.g. mount a volume).
    pub fn prepare(n: u64, extra_args: &[&str]) -> TestCluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let dir = tmp.path().join(format!("node-{id}"));
            nodes.insert(
                id,
                TestNode {
                    id,
                    addr: format!("127.0.0.1:{}", free_port()),
                    metrics: format!("127.0.0.1:{}", free_port()),
                    dir,
                    child: None,
                },
            );
        }
        let initial = nodes.values().map(|n| format!("{}={}", n.id, n.addr)).collect::<Vec<_>>().join(",");
        TestCluster { nodes, initial, extra_args: extra_args.iter().map(|s| s.to_string()).collect(), _tmp: tmp }
    }

    /// Starts every node and waits until the controller has a leader.
    pub async fn launch(mut self) -> TestCluster {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.spawn(id);
        }
        self.wait_ready().await;
        self
    }

    /// The directory of the whole test cluster.
    pub fn root(&self) -> &std::path::Path {
        self._tmp.path()
    }

    pub fn spawn(&mut self, id: u64) {
        let initial = self.initial.clone();
        let extra = self.extra_args.clone();
        let n = self.nodes.get_mut(&id).expect("node");
        assert!(n.child.is_none(), "node {id} is already running");
        std::fs::create_dir_all(&n.dir).expect("data dir");
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(n.dir.with_extension("log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_replog-node"))
            .args(["--id", &id.to_string(), "--listen", &n.addr, "--metrics-listen", &n.metrics])
            .arg("--data-dir")
            .arg(n.dir.join("data"))
            .args(["--initial-cluster", &initial])
            .args(&extra)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::from(log.try_clone().expect("log fd")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn replog-node");
        n.child = Some(child);
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    pub fn running_addrs(&self) -> Vec<String> {
        self.nodes.values().filter(|n| n.child.is_some()).map(|n| n.addr.clone()).collect()
    }

    pub async fn client(&self) -> Client {
        let cfg = ClientConfig { retry_deadline: WAIT, ..Default::default() };
        Client::connect_with(self.running_addrs(), cfg).await.expect("connect")
    }

    /// SIGKILL: no chance to flush or hand over anything.
    pub fn kill(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).expect("node");
        if let Some(mut c) = n.child.take() {
            c.kill().expect("kill");
            c.wait().expect("wait");
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).expect("node");
        if let Some(mut c) = n.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let status = c.wait().expect("wait");
            assert!(status.success(), "node {id} exited with {status} on SIGTERM");
        }
    }

    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(self.nodes[&id].dir.with_extension("log")).unwrap_or_default()
    }

    /// Waits until every running node reports the same controller leader.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + CLUSTER_READY;
        loop {
            if self.controller_agreed().await {
                return;
            }
            if Instant::now() > deadline {
                for id in self.nodes.keys() {
                    eprintln!("--- node {id} log ---\n{}", self.log_of(*id));
                }
                panic!("cluster not ready within {CLUSTER_READY:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn controller_agreed(&self) -> bool {
        let mut leader = None;
        for addr in self.running_addrs() {
            let Ok(c) = Client::connect_with(
                [addr.clone()],
                ClientConfig { retry_deadline: Duration::from_millis(200), ..Default::default() },
            )
            .await
            else {
                return false;
            };
            match c.cluster_status().await {
                Ok(s) if s.controller_leader != 0 => {
                    if leader.is_some_and(|l| l != s.controller_leader) {
                        return false;
                    }
                    leader = Some(s.controller_leader);
                }
                _ => return false,
            }
        }
        leader.is_some()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one sample on a node's `/metrics` page, e.g.
/// `replog_produce_requests_total{result="TIMEOUT"}`; `None` if the node
/// does not answer or has no such sample yet.
pub fn metric(metrics_addr: &str, sample: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(metrics_addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {metrics_addr}\r\n\r\n").as_bytes()).ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
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

impl TestCluster {
    /// Starts `n` nodes with a one-partition topic `topic` at RF `rf` led by
    /// its preferred replica; returns the cluster and a client.
    pub async fn with_topic(n: u64, extra_args: &[&str], topic: &str, rf: u32) -> (TestCluster, Client) {
        let cluster = TestCluster::start(n, extra_args).await;
        let client = cluster.client().await;
        client.create_topic(topic, 1, rf).await.expect("create topic");
        preferred_leader(&client, topic, 0).await;
        (cluster, client)
    }

    /// Kills every replica of `topic`/0 but its leader, which keeps leading
    /// (for as long as its lease lasts) but can commit nothing; returns it.
    pub async fn strand_leader(&mut self, client: &Client, topic: &str) -> u64 {
        let (leader, replicas) = preferred_leader(client, topic, 0).await;
        for r in replicas.iter().filter(|r| **r != leader) {
            self.kill(*r);
        }
        leader
    }
}
