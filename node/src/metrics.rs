//! Prometheus metrics and the `/metrics` + `/health` HTTP endpoint.
//!
//! Names follow `replog_<subsystem>_<name>_<unit>` in base units (seconds,
//! bytes), `_total` on counters only. Counters that live in other components
//! (the storage flusher) are brought up to date when scraped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::node::Node;

/// Every metric of a node, registered once.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub produce_requests: IntCounterVec,
    pub produce_records: IntCounter,
    pub produce_bytes: IntCounter,
    pub produce_latency: Histogram,
    pub fetch_requests: IntCounterVec,
    pub fetch_bytes: IntCounter,
    pub fetch_latency: HistogramVec,
    pub subscriptions: IntGauge,
    pub subscribe_bytes: IntCounter,
    pub groups: IntGauge,
    pub leaders: IntGauge,
    pub flushes: IntCounter,
    pub flush_waiters: IntCounter,
    pub files_synced: IntCounter,
    pub flush_seconds: Counter,
    pub partition_high_watermark: IntGaugeVec,
    pub controller_leader: IntGauge,
    pub disk_free: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let lat = |name: &str, help: &str| {
            HistogramOpts::new(name, help)
                .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0])
        };
        let m = Metrics {
            produce_requests: IntCounterVec::new(
                Opts::new("replog_produce_requests_total", "Produce requests by result code"),
                &["result"],
            )
            .expect("metric"),
            produce_records: IntCounter::new("replog_produce_records_total", "Records appended").expect("metric"),
            produce_bytes: IntCounter::new("replog_produce_bytes_total", "Batch bytes appended").expect("metric"),
            produce_latency: Histogram::with_opts(lat(
                "replog_produce_latency_seconds",
                "Produce request time at the leader, acks=all: until a majority has it on disk",
            ))
            .expect("metric"),
            fetch_requests: IntCounterVec::new(
                Opts::new("replog_fetch_requests_total", "Fetch requests by result code"),
                &["result"],
            )
            .expect("metric"),
            fetch_bytes: IntCounter::new("replog_fetch_bytes_total", "Batch bytes returned by fetch").expect("metric"),
            fetch_latency: HistogramVec::new(lat("replog_fetch_latency_seconds", "Fetch request time"), &["long_poll"])
                .expect("metric"),
            subscriptions: IntGauge::new("replog_subscriptions", "Open Subscribe streams").expect("metric"),
            subscribe_bytes: IntCounter::new(
                "replog_subscribe_bytes_total",
                "Batch bytes read for Subscribe streams (a stalled subscriber stops these reads)",
            )
            .expect("metric"),
            groups: IntGauge::new("replog_raft_groups", "Raft groups hosted (partitions)").expect("metric"),
            leaders: IntGauge::new("replog_raft_leaders", "Partition groups this node leads").expect("metric"),
            flushes: IntCounter::new(
                "replog_storage_flushes_total",
                "Group-commit flush rounds (fdatasync of dirty files)",
            )
            .expect("metric"),
            flush_waiters: IntCounter::new(
                "replog_storage_flush_waiters_total",
                "Writes made durable by those rounds (waiters / flushes = group-commit factor)",
            )
            .expect("metric"),
            files_synced: IntCounter::new("replog_storage_files_synced_total", "Files fdatasync'd by flush rounds")
                .expect("metric"),
            flush_seconds: Counter::new("replog_storage_flush_seconds_total", "Time spent in flush rounds")
                .expect("metric"),
            partition_high_watermark: IntGaugeVec::new(
                Opts::new("replog_partition_high_watermark", "High watermark of each hosted partition"),
                &["topic", "partition"],
            )
            .expect("metric"),
            controller_leader: IntGauge::new("replog_controller_leader", "Node id of the controller leader (0: none)")
                .expect("metric"),
            disk_free: IntGauge::new(
                "replog_storage_free_bytes",
                "Free space on the data volume (produce is refused below min_free_mb)",
            )
            .expect("metric"),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.produce_requests.clone())).expect("register");
        r.register(Box::new(m.produce_records.clone())).expect("register");
        r.register(Box::new(m.produce_bytes.clone())).expect("register");
        r.register(Box::new(m.produce_latency.clone())).expect("register");
        r.register(Box::new(m.fetch_requests.clone())).expect("register");
        r.register(Box::new(m.fetch_bytes.clone())).expect("register");
        r.register(Box::new(m.fetch_latency.clone())).expect("register");
        r.register(Box::new(m.subscriptions.clone())).expect("register");
        r.register(Box::new(m.subscribe_bytes.clone())).expect("register");
        r.register(Box::new(m.groups.clone())).expect("register");
        r.register(Box::new(m.leaders.clone())).expect("register");
        r.register(Box::new(m.flushes.clone())).expect("register");
        r.register(Box::new(m.flush_waiters.clone())).expect("register");
        r.register(Box::new(m.files_synced.clone())).expect("register");
        r.register(Box::new(m.flush_seconds.clone())).expect("register");
        r.register(Box::new(m.partition_high_watermark.clone())).expect("register");
        r.register(Box::new(m.controller_leader.clone())).expect("register");
        r.register(Box::new(m.disk_free.clone())).expect("register");
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Moves `c` up to `total`, a count kept elsewhere that only grows.
fn catch_up(c: &IntCounter, total: u64) {
    c.inc_by(total.saturating_sub(c.get()));
}

fn refresh(node: &Node) {
    let m = &node.metrics;
    let s = node.store.stats();
    catch_up(&m.flushes, s.flushes.load(Ordering::Relaxed));
    catch_up(&m.flush_waiters, s.waiters.load(Ordering::Relaxed));
    catch_up(&m.files_synced, s.files_synced.load(Ordering::Relaxed));
    let secs = s.micros.load(Ordering::Relaxed) as f64 / 1e6;
    m.flush_seconds.inc_by((secs - m.flush_seconds.get()).max(0.0));
    m.controller_leader.set(node.controller.leader().unwrap_or(0) as i64);
    m.disk_free.set(node.store.disk().free() as i64);
    let info = node.node_info();
    m.leaders.set(info.leader_count as i64);
    let meta = node.meta();
    m.partition_high_watermark.reset();
    for g in info.groups {
        if let Some((t, p)) = meta.locate(g.group_id) {
            m.partition_high_watermark
                .with_label_values(&[t.name.as_str(), &p.to_string()])
                .set(g.high_watermark as i64);
        }
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> (StatusCode, String) {
    refresh(&node);
    let mut buf = Vec::new();
    let enc = TextEncoder::new();
    if let Err(e) = enc.encode(&node.metrics.registry.gather(), &mut buf) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    (StatusCode::OK, String::from_utf8_lossy(&buf).into_owned())
}

/// Healthy once the node serves and its controller group has a leader.
async fn health(State(node): State<Arc<Node>>) -> (StatusCode, String) {
    match node.controller.leader() {
        Some(l) => (StatusCode::OK, format!("{{\"node\":{},\"controller_leader\":{l}}}\n", node.id)),
        None => (StatusCode::SERVICE_UNAVAILABLE, format!("{{\"node\":{},\"controller_leader\":null}}\n", node.id)),
    }
}

pub async fn serve(
    addr: SocketAddr,
    node: Arc<Node>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(metrics)).route("/health", get(health)).with_state(node);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
