//! A real Prometheus scraping a live 3-node cluster with the shipped
//! configuration (ops/prometheus.yml and ops/alerts.yml, rewritten only for
//! the test cluster's ports, 1 s intervals and `for: 0s`), checked through
//! Prometheus's HTTP API:
//!
//! - every node is scraped (`up` is 1 for each);
//! - after a known workload the key series hold exactly what was done:
//!   records produced per topic (counted at the leaders, and as the sum of
//!   the partitions' high watermarks), the partitions each node leads, the
//!   partitions of each topic, a consumer group's committed offsets and lag;
//! - every series the Grafana dashboard queries exists;
//! - once a node is SIGKILLed, the node-down and under-replicated alerts
//!   fire (`/api/v1/alerts`).
//!
//! Prometheus is Debian's package, installed by ops/ensure-prometheus.sh
//! when missing (root); it runs as a child process on a loopback port and
//! is stopped by its PID. Without root and without the package the test
//! says so and passes vacuously, except under CI, where it fails.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, WAIT, wait_for};
use replog_client::Client;
use replog_proto::batch::{self, Record};
use replog_proto::pb::{self, replog_client::ReplogClient};
use serde_json::Value;

/// How long Prometheus may take to start answering.
const PROMETHEUS_READY: Duration = Duration::from_secs(60);
/// How long until a scraped value shows up in a query: a few 1 s scrape
/// rounds, on a busy 2-core machine.
const SCRAPED: Duration = Duration::from_secs(60);
/// How long until an alert fires after its cause: detection (two election
/// timeouts for an out-of-sync follower), a scrape and an evaluation.
const ALERT: Duration = Duration::from_secs(90);

/// Topics of the workload: name, partitions, records per partition.
const TOPICS: [(&str, u32, u64); 2] = [("orders", 3, 100), ("events", 2, 60)];
/// Records per produced batch.
const BATCH: u64 = 20;
const GROUP: &str = "billing";
/// Offsets the group commits on `orders`, by partition.
const COMMITTED: [(u32, u64); 3] = [(0, 40), (1, 100), (2, 0)];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_live_cluster_when_prometheus_scrapes_it_then_series_and_alerts_match_the_cluster() {
    let Some(prometheus_bin) = ensure_prometheus() else { return };
    // One __consumer_offsets partition keeps the cluster small.
    let mut cluster = common::start(3, &["--group-partitions", "1"]).await;
    let client = common::client(&cluster).await;
    for (topic, partitions, _) in TOPICS {
        client.create_topic(topic, partitions, 3).await.expect("create topic");
        cluster.wait_leaders(&client, topic, WAIT).await.expect("leaders");
    }
    produce_workload(&client, &TOPICS).await;
    commit_group_offsets(&cluster).await;

    let mut prom = Prometheus::start(&prometheus_bin, &cluster);
    let api = prom.addr.clone();
    wait_for("Prometheus to answer", PROMETHEUS_READY, || async {
        (get(&api, "/-/ready").await?.0 == 200).then_some(())
    })
    .await;

    // Every node scraped.
    let up = wait_for("every node scraped", SCRAPED, || async {
        let v = query(&api, r#"up{job="replog"}"#).await?;
        (v.len() == 3 && v.values().all(|x| *x == 1.0)).then_some(v)
    })
    .await;
    println!("up: {up:?}");

    // Records per topic: counted by the leaders as acknowledged, and held
    // below the partitions' high watermarks.
    let expected: BTreeMap<String, f64> =
        TOPICS.iter().map(|(t, p, n)| (format!("topic={t}"), (*p as u64 * n) as f64)).collect();
    for q in [
        r#"sum by (topic) (replog_produce_records_total{topic=~"orders|events"})"#,
        r#"sum by (topic) (replog_partition_high_watermark{topic=~"orders|events"})"#,
    ] {
        wait_for(&format!("{q} to be {expected:?}"), SCRAPED, || async {
            let got = query(&api, q).await?;
            (got == expected).then_some(())
        })
        .await;
    }
    let partitions: BTreeMap<String, f64> = TOPICS
        .iter()
        .map(|(t, p, _)| (format!("topic={t}"), *p as f64))
        .chain([("topic=__consumer_offsets".to_string(), 1.0)])
        .collect();
    for q in ["max by (topic) (replog_topic_partitions)", "sum by (topic) (replog_partition_leader)"] {
        wait_for(&format!("{q} to be {partitions:?}"), SCRAPED, || async {
            (query(&api, q).await? == partitions).then_some(())
        })
        .await;
    }

    // Leaders per node: what Prometheus scraped matches the cluster's own
    // answer (leadership may move meanwhile, so both are read each round).
    wait_for("leaders per node in Prometheus to match the cluster", SCRAPED, || async {
        let want = leaders_per_node(&client).await?;
        let got = query(&api, r#"sum by (node) (replog_raft_leaders{job="replog"})"#).await?;
        (got == want).then_some(())
    })
    .await;

    // The consumer group: committed offsets and lag against the high
    // watermarks (100 records in each partition of orders).
    let committed: f64 = COMMITTED.iter().map(|(_, o)| *o as f64).sum();
    let lag: f64 = COMMITTED.iter().map(|(_, o)| 100.0 - *o as f64).sum();
    let key = format!("group={GROUP},topic=orders");
    wait_for("the group's committed offsets and lag", SCRAPED, || async {
        let c = query(&api, "sum by (group, topic) (replog_consumer_group_committed_offset)").await?;
        let l = query(&api, "sum by (group, topic) (replog_consumer_group_lag_records)").await?;
        (c.get(&key) == Some(&committed) && l.get(&key) == Some(&lag)).then_some(())
    })
    .await;

    // Every series the dashboard queries exists in Prometheus.
    let names = dashboard_series();
    wait_for("every dashboard series in Prometheus", SCRAPED, || async {
        let (_, body) = get(&api, "/api/v1/label/__name__/values").await?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let have: Vec<&str> = v["data"].as_array()?.iter().filter_map(Value::as_str).collect();
        let missing: Vec<&String> = names.iter().filter(|n| !have.contains(&n.as_str())).collect();
        if !missing.is_empty() {
            println!("not in Prometheus yet: {missing:?}");
        }
        missing.is_empty().then_some(())
    })
    .await;

    // No node down and nothing under-replicated while all run.
    wait_for("no node-down or under-replicated alert while every node runs", ALERT, || async {
        let a = firing(&api).await?;
        (!a.iter().any(|(name, _)| name == "ReplogNodeDown" || name == "ReplogUnderReplicatedPartitions")).then_some(())
    })
    .await;

    // SIGKILL one node: it goes down, and the partitions it replicates are
    // under-replicated at their (new) leaders.
    let victim = 3;
    cluster.kill(victim).expect("kill");
    let alerts = wait_for("ReplogNodeDown for the killed node and ReplogUnderReplicatedPartitions", ALERT, || async {
        let a = firing(&api).await?;
        let down = a.iter().any(|(n, l)| n == "ReplogNodeDown" && l.get("node") == Some(&victim.to_string()));
        let under = a.iter().any(|(n, _)| n == "ReplogUnderReplicatedPartitions");
        (down && under).then_some(a)
    })
    .await;
    println!("firing after the kill: {alerts:?}");
    let down: Vec<_> = alerts.iter().filter(|(n, _)| n == "ReplogNodeDown").collect();
    assert_eq!(down.len(), 1, "only the killed node is down: {down:?}");

    prom.stop();
}

/// Liveness does not depend on other nodes, readiness does: a node started
/// alone of a 3-node first cluster answers /health but not /ready, and
/// says why; with per-partition metrics every series names its partition
/// and the sums by topic are what they are per topic; with JSON logs every
/// line is a JSON object.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_node_alone_then_it_is_live_not_ready_and_per_partition_series_sum_to_the_topic() {
    let opts = common::options(&["--metrics-per-partition", "true", "--log-format", "json"]);
    let mut cluster = Cluster::prepare(3, opts).expect("prepare the cluster");
    cluster.restart(1).expect("start node 1 alone");
    let m1 = cluster.node(1).metrics.clone();
    let (health, ready) = wait_for("node 1 to answer /health and /ready", WAIT, || async {
        let h = get(&m1, "/health").await?;
        let r = get(&m1, "/ready").await?;
        Some((h, r))
    })
    .await;
    assert_eq!(health.0, 200, "alone, node 1 is still live: {health:?}");
    assert!(health.1.contains("\"controller_leader\":null"), "{health:?}");
    assert_eq!(ready.0, 503, "alone, node 1 cannot be ready: {ready:?}");
    assert!(ready.1.contains("controller: no leader"), "/ready says why: {ready:?}");

    cluster.restart(2).expect("start node 2");
    cluster.restart(3).expect("start node 3");
    cluster.wait_ready(common::CLUSTER_READY).await.expect("the cluster forms");
    let client = common::client(&cluster).await;
    let (topic, partitions, per_partition) = TOPICS[0];
    client.create_topic(topic, partitions, 3).await.expect("create topic");
    cluster.wait_leaders(&client, topic, WAIT).await.expect("leaders");
    produce_workload(&client, &TOPICS[..1]).await;

    for id in cluster.ids() {
        let addr = cluster.node(id).metrics.clone();
        wait_for(&format!("node {id} to be ready"), WAIT, || async {
            (get(&addr, "/ready").await?.0 == 200).then_some(())
        })
        .await;
    }
    let metrics: Vec<String> = cluster.ids().iter().map(|id| cluster.node(*id).metrics.clone()).collect();
    let sum = |sel: String| {
        let metrics = metrics.clone();
        async move { metrics.iter().map(|a| common::metric(a, &sel).unwrap_or(0.0)).sum::<f64>() }
    };
    for p in 0..partitions {
        let part = format!(r#"topic="{topic}",partition="{p}""#);
        wait_for(&format!("{topic}/{p}: one leader, {per_partition} records, three replicas"), WAIT, || {
            let part = part.clone();
            async move {
                let leaders = sum(format!("replog_partition_leader{{{part}}}")).await;
                let hw = sum(format!("replog_partition_high_watermark{{{part}}}")).await;
                let replicas = sum(format!("replog_partition_replicas{{{part}}}")).await;
                (leaders == 1.0 && hw == per_partition as f64 && replicas == 3.0).then_some(())
            }
        })
        .await;
        for a in &metrics {
            let term = common::metric(a, &format!("replog_raft_term{{{part}}}"));
            assert!(term.is_some_and(|t| t >= 1.0), "{a}: raft term of {topic}/{p}: {term:?}");
        }
    }
    // Summed over partitions, the records are the topic's, as per topic.
    let total = sum(format!(r#"replog_partition_high_watermark{{topic="{topic}"}}"#)).await;
    assert_eq!(total, (partitions as u64 * per_partition) as f64);
    // Leaders report their followers' lag, each follower by name.
    let mut lag_lines = Vec::new();
    for a in &metrics {
        let body = get(a, "/metrics").await.expect("scrape").1;
        lag_lines.extend(body.lines().filter(|l| l.starts_with("replog_raft_follower_lag_entries{")).map(String::from));
    }
    assert_eq!(lag_lines.len(), partitions as usize * 2, "two followers per partition: {lag_lines:?}");
    assert!(lag_lines.iter().all(|l| l.contains("follower=\"")), "{lag_lines:?}");

    // --log-format json: every log line is one JSON object, fields as keys.
    let log = cluster.log(1);
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    let started = lines.iter().find(|l| l["message"] == "replog node started").expect("a start line");
    assert_eq!(started["id"], 1, "structured fields are keys: {started}");
    assert!(lines.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string()));
}

/// Debian's prometheus, installed if missing; `None` (test skipped) where
/// it cannot be installed, except under CI.
fn ensure_prometheus() -> Option<PathBuf> {
    let script = ops_dir().join("ensure-prometheus.sh");
    let out = Command::new("bash").arg(&script).output().expect("run ops/ensure-prometheus.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(3) => {
            assert!(std::env::var_os("CI").is_none(), "Prometheus is needed in CI: {stderr}");
            eprintln!("skipped: {stderr}");
            return None;
        }
        _ => panic!("ops/ensure-prometheus.sh failed: {stderr}"),
    }
    let which = Command::new("sh").args(["-c", "command -v prometheus"]).output().expect("which");
    Some(PathBuf::from(String::from_utf8_lossy(&which.stdout).trim()))
}

fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops")
}

/// Every partition of `topics` gets its records, [`BATCH`] at a time.
async fn produce_workload(client: &Client, topics: &[(&str, u32, u64)]) {
    for &(topic, partitions, per_partition) in topics {
        for p in 0..partitions {
            for b in 0..per_partition / BATCH {
                let records: Vec<Record> = (0..BATCH)
                    .map(|i| Record::new(None, Bytes::from(format!("{topic}-{p}-{b}-{i}")), replog_proto::now_ms()))
                    .collect();
                client.produce_batch(topic, p, batch::encode(&records), pb::Acks::All).await.expect("produce");
            }
        }
    }
}

/// Commits [`COMMITTED`] for [`GROUP`] on `orders` (a reset: the group has
/// no members).
async fn commit_group_offsets(cluster: &Cluster) {
    let any = cluster.serving_addrs()[0].clone();
    let addr = wait_for("a coordinator for the group", WAIT, || async {
        let mut c = ReplogClient::connect(format!("http://{any}")).await.ok()?;
        let r = c.find_coordinator(pb::FindCoordinatorRequest { group: GROUP.into() }).await.ok()?.into_inner();
        (r.node_id != 0).then_some(r.addr)
    })
    .await;
    let offsets = COMMITTED
        .iter()
        .map(|(p, o)| pb::OffsetCommit { topic: "orders".into(), partition: *p, offset: *o, metadata: String::new() })
        .collect();
    let mut c = ReplogClient::connect(format!("http://{addr}")).await.expect("connect to the coordinator");
    c.reset_offsets(pb::ResetOffsetsRequest { group: GROUP.into(), offsets }).await.expect("reset offsets");
}

/// Partitions led by each node, as `node=<id>` → count, from the cluster's
/// metadata (every topic, the internal one included).
async fn leaders_per_node(client: &Client) -> Option<BTreeMap<String, f64>> {
    let mut out: BTreeMap<String, f64> = (1..=3).map(|id| (format!("node={id}"), 0.0)).collect();
    for topic in TOPICS.iter().map(|t| t.0).chain(["__consumer_offsets"]) {
        for p in client.describe_topic(topic).await.ok()?.partitions {
            *out.get_mut(&format!("node={}", p.leader?))? += 1.0;
        }
    }
    Some(out)
}

/// Series names the dashboard queries (histograms by their `_bucket`
/// series, as queried).
fn dashboard_series() -> Vec<String> {
    let text = std::fs::read_to_string(ops_dir().join("grafana/replog-dashboard.json")).expect("dashboard");
    let mut names: Vec<String> = Vec::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if (word.starts_with("replog_") || word.starts_with("process_")) && !names.iter().any(|n| n == word) {
            names.push(word.to_string());
        }
    }
    assert!(names.len() > 15, "dashboard series: {names:?}");
    names
}

/// A Prometheus process with the shipped configuration rewritten for the
/// test cluster.
struct Prometheus {
    child: Option<Child>,
    addr: String,
}

impl Prometheus {
    fn start(bin: &Path, cluster: &Cluster) -> Prometheus {
        let dir = cluster.dir().join("prometheus");
        std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        let config = test_config(&std::fs::read_to_string(ops_dir().join("prometheus.yml")).expect("config"), cluster);
        std::fs::write(dir.join("prometheus.yml"), config).expect("write config");
        let rules = test_rules(&std::fs::read_to_string(ops_dir().join("alerts.yml")).expect("rules"));
        std::fs::write(dir.join("alerts.yml"), rules).expect("write rules");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--storage.tsdb.retention.time=1h");
        let child = replog_testkit::child::spawn_logged(cmd, &dir.join("prometheus.log"), libc::SIGKILL)
            .expect("start prometheus");
        println!("prometheus pid {} on {addr}, files in {}", child.id(), dir.display());
        Prometheus { child: Some(child), addr }
    }

    /// Stops the process by its PID (SIGKILL; its data is thrown away).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// ops/prometheus.yml for the test cluster: 1 s intervals, the rules next
/// to it, and node i's metrics address in place of 127.0.0.1:910i. Each
/// rewrite must apply, so that a change to the shipped file's layout shows
/// up here rather than as a test of something else.
fn test_config(shipped: &str, cluster: &Cluster) -> String {
    let mut out = String::new();
    let mut rewrites = 0;
    for line in shipped.lines() {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        let new = if t.starts_with("scrape_interval:") {
            format!("{indent}scrape_interval: 1s")
        } else if t.starts_with("scrape_timeout:") {
            format!("{indent}scrape_timeout: 1s")
        } else if t.starts_with("evaluation_interval:") {
            format!("{indent}evaluation_interval: 1s")
        } else if let Some(id) = (1..=3).find(|id| t.contains(&format!("127.0.0.1:910{id}"))) {
            line.replace(&format!("127.0.0.1:910{id}"), &cluster.node(id).metrics)
        } else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        rewrites += 1;
        out.push_str(&new);
        out.push('\n');
    }
    assert_eq!(rewrites, 6, "ops/prometheus.yml: expected 3 intervals and 3 targets to rewrite");
    assert!(out.contains("- alerts.yml"), "ops/prometheus.yml must load alerts.yml next to it");
    out
}

/// ops/alerts.yml with every `for:` at 0 s: an alert fires at the first
/// evaluation that finds its condition.
fn test_rules(shipped: &str) -> String {
    let mut n = 0;
    let out: Vec<String> = shipped
        .lines()
        .map(|line| {
            let t = line.trim_start();
            if t.starts_with("for:") {
                n += 1;
                format!("{}for: 0s", &line[..line.len() - t.len()])
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(n >= 6, "ops/alerts.yml: only {n} rules with for:");
    out.join("\n") + "\n"
}

/// GET `path` from `addr` (HTTP/1.0): status and body.
async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let (addr, path) = (addr.to_string(), path.to_string());
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    })
    .await
    .ok()?
}

/// An instant query: each result series as `label=value,...` (sorted, the
/// `__name__`, `instance` and `job` labels left out unless they are all there
/// is) → its value.
async fn query(api: &str, promql: &str) -> Option<BTreeMap<String, f64>> {
    let (status, body) = get(api, &format!("/api/v1/query?query={}", encode(promql))).await?;
    if status != 200 {
        println!("query {promql} answered {status}: {body}");
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let mut out = BTreeMap::new();
    for r in v["data"]["result"].as_array()? {
        let labels: Vec<String> = r["metric"]
            .as_object()?
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "instance" | "job" | "cluster"))
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        let value: f64 = r["value"][1].as_str()?.parse().ok()?;
        out.insert(labels.join(","), value);
    }
    Some(out)
}

/// Firing alerts: name and labels.
async fn firing(api: &str) -> Option<Vec<(String, BTreeMap<String, String>)>> {
    let (status, body) = get(api, "/api/v1/alerts").await?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let mut out = Vec::new();
    for a in v["data"]["alerts"].as_array()? {
        if a["state"] != "firing" {
            continue;
        }
        let labels: BTreeMap<String, String> = a["labels"]
            .as_object()?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        out.push((labels.get("alertname")?.clone(), labels));
    }
    Some(out)
}

/// Percent-encoding of a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
