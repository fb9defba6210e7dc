//! Prometheus metrics and the HTTP endpoints `/metrics`, `/health` (liveness)
//! and `/ready` (caught up).
//!
//! Names follow `replog_<subsystem>_<name>_<unit>` in base units (seconds,
//! bytes), `_total` on counters only. One struct, [`Metrics`], registered
//! once per node; docs/operations.md lists every series.
//!
//! **Cardinality.** By default per-partition facts are summed per topic:
//! a node exports a bounded number of series per topic, whatever its
//! partition count. With `metrics_per_partition` the same names gain a
//! `partition` label (the follower lag also a `follower` label) and the
//! Raft term and indexes appear, about 15 series per hosted partition.
//! Every series that exists in both modes is a sum, so `sum by (topic)`
//! gives the same answer in either, and dashboards and alerts work in both.
//! Request counters take the `topic` label only for topics that exist (a
//! request naming any other is counted under `topic=""`), so clients cannot
//! grow the label set; series of deleted topics are dropped when scraped.
//!
//! **Where values come from.**
//! - Handlers count requests as they end (produce, fetch).
//! - Storage reports flush rounds, log appends and applies through an
//!   [`Observer`] ([`StorageObserver`]).
//! - Everything else is sampled when scraped ([`sample`]): each hosted
//!   partition's Raft state from openraft's metrics watch, offsets, the lag
//!   of the consumer groups this node coordinates, disk — never on the
//!   write path.
//!
//! - [`sample`]: the scrape-time sampler and readiness.
//! - [`http`]: the endpoints.
//! - [`connections`]: counting the gRPC connections.

pub mod connections;
pub mod http;
pub mod sample;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Counter, CounterVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};
use replog_raft_store::controller::ClusterMeta;
use replog_raft_store::observe::Observer;

pub use http::serve;

/// Buckets of request latencies (seconds): 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];
/// Buckets of storage latencies (seconds): 50 µs to 2.5 s.
const STORAGE_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
/// Buckets of the writes one flush round makes durable.
const GROUP_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Every metric of a node, registered once.
pub struct Metrics {
    pub registry: Registry,
    /// Per-partition series instead of per-topic sums.
    pub per_partition: bool,
    /// Names of every registered family, for checks of dashboards and
    /// alert rules.
    names: Vec<String>,
    /// Names present only with `per_partition`.
    partition_only: Vec<String>,

    // --- produce and fetch, by topic
    pub produce_requests: IntCounterVec,
    pub produce_records: IntCounterVec,
    pub produce_bytes: IntCounterVec,
    pub produce_latency: HistogramVec,
    pub fetch_requests: IntCounterVec,
    pub fetch_records: IntCounterVec,
    pub fetch_bytes: IntCounterVec,
    /// Kafka protocol requests by API and outcome.
    pub kafka_requests: IntCounterVec,
    pub fetch_latency: HistogramVec,

    // --- node
    pub build_info: IntGaugeVec,
    pub ready: IntGauge,
    pub connections: IntGauge,
    pub connections_accepted: IntCounter,
    /// Security limits: connections refused over the per-address cap,
    /// seconds requests were held back by byte-rate quotas.
    pub connections_refused: IntCounter,
    pub quota_throttle_seconds: CounterVec,
    /// The move throttle (`throttle.rs`): bytes sent under it to replicas
    /// catching up, sends that waited, and how long.
    pub move_throttled_bytes: IntCounter,
    pub move_throttle_waits: IntCounter,
    pub move_throttle_wait_seconds: Counter,
    pub subscriptions: IntGauge,
    pub subscribe_bytes: IntCounter,
    pub groups: IntGauge,
    pub leaders: IntGauge,
    pub quiet_groups: IntGauge,
    pub controller_leader: IntGauge,

    // --- storage
    pub flushes: IntCounter,
    pub flush_waiters: IntCounter,
    pub files_synced: IntCounter,
    pub flush_seconds: Counter,
    pub fsync_seconds: Histogram,
    pub flush_group_size: Histogram,
    pub disk_free: IntGauge,
    pub disk_min_free: IntGauge,
    pub disk_capacity: IntGauge,
    pub partition_bytes: IntGaugeVec,

    // --- Raft and partitions
    pub raft_append_seconds: Histogram,
    pub raft_apply_seconds: Histogram,
    pub snapshots_built: IntCounter,
    pub snapshots_installed: IntCounter,
    pub topic_partitions: IntGaugeVec,
    pub partition_replicas: IntGaugeVec,
    pub partition_leader: IntGaugeVec,
    pub partition_without_leader: IntGaugeVec,
    pub under_replicated: IntGaugeVec,
    pub follower_lag: IntGaugeVec,
    pub elections: IntCounterVec,
    pub appends_received: IntCounterVec,
    pub log_start_offset: IntGaugeVec,
    pub high_watermark: IntGaugeVec,
    pub raft_term: IntGaugeVec,
    pub raft_last_log_index: IntGaugeVec,
    pub raft_commit_index: IntGaugeVec,
    pub raft_applied_index: IntGaugeVec,

    // --- consumer groups this node coordinates
    pub consumer_groups: IntGauge,
    pub group_members: IntGaugeVec,
    pub group_committed: IntGaugeVec,
    pub group_lag: IntGaugeVec,

    // --- queue groups of the partitions this node leads
    pub queue_in_flight: IntGaugeVec,
    pub queue_backlog: IntGaugeVec,
    pub queue_dead_letters_pending: IntGaugeVec,
    pub queue_events: IntGaugeVec,

    /// What the sampler remembers between scrapes.
    pub(crate) sampler: Mutex<sample::State>,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("metric")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("metric")
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("metric")
}

fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels).expect("metric")
}

impl Metrics {
    /// Every metric, registered; `per_partition` chooses the labels of the
    /// partition series (see the module docs).
    pub fn new(per_partition: bool) -> Metrics {
        // Labels of per-partition facts: the topic, and the partition only
        // when asked for.
        let part: &[&str] = if per_partition { &["topic", "partition"] } else { &["topic"] };
        let lag_labels: &[&str] = if per_partition { &["topic", "partition", "follower"] } else { &["topic"] };
        let group_labels: &[&str] = if per_partition { &["group", "topic", "partition"] } else { &["group", "topic"] };
        let m = Metrics {
            registry: Registry::new(),
            per_partition,
            names: Vec::new(),
            partition_only: Vec::new(),
            produce_requests: counter_vec(
                "replog_produce_requests_total",
                "Produce requests by topic and result (ok, or the error code's name)",
                &["topic", "result"],
            ),
            kafka_requests: counter_vec(
                "replog_kafka_requests_total",
                "Kafka protocol requests by API and result: ok (answered), or closed (the connection was closed on it)",
                &["api", "result"],
            ),
            produce_records: counter_vec(
                "replog_produce_records_total",
                "Records appended with acks=all, at the leader",
                &["topic"],
            ),
            produce_bytes: counter_vec(
                "replog_produce_bytes_total",
                "Batch bytes appended with acks=all, at the leader",
                &["topic"],
            ),
            produce_latency: histogram_vec(
                "replog_produce_latency_seconds",
                "Produce request time at the leader, acks=all: until a majority has it on disk",
                &["topic"],
                LATENCY_BUCKETS,
            ),
            fetch_requests: counter_vec(
                "replog_fetch_requests_total",
                "Fetch requests by topic and result (ok, or the error code's name)",
                &["topic", "result"],
            ),
            fetch_records: counter_vec(
                "replog_fetch_records_total",
                "Records in the batches fetch returned",
                &["topic"],
            ),
            fetch_bytes: counter_vec("replog_fetch_bytes_total", "Batch bytes returned by fetch", &["topic"]),
            fetch_latency: histogram_vec(
                "replog_fetch_latency_seconds",
                "Fetch request time (long_poll: whether the request asked to wait)",
                &["topic", "long_poll"],
                LATENCY_BUCKETS,
            ),
            build_info: gauge_vec("replog_node_build_info", "1, labelled with the node's version", &["version"]),
            ready: IntGauge::new(
                "replog_node_ready",
                "1 when /ready answers 200: caught up with the controller and every hosted partition",
            )
            .expect("metric"),
            connections: IntGauge::new(
                "replog_node_connections",
                "Open TCP connections to the gRPC port (clients and peers)",
            )
            .expect("metric"),
            connections_accepted: IntCounter::new(
                "replog_node_connections_accepted_total",
                "TCP connections accepted on the gRPC port",
            )
            .expect("metric"),
            connections_refused: IntCounter::new(
                "replog_node_connections_refused_total",
                "Client connections closed at once: their address had max_connections_per_ip open",
            )
            .expect("metric"),
            quota_throttle_seconds: CounterVec::new(
                prometheus::Opts::new(
                    "replog_quota_throttle_seconds_total",
                    "Time answers were held back because their principal was over its byte-rate quota",
                ),
                &["kind"],
            )
            .expect("metric"),
            move_throttled_bytes: IntCounter::new(
                "replog_move_throttled_bytes_total",
                "Bytes sent to replicas a partition move is bringing in, under a move throttle rate",
            )
            .expect("metric"),
            move_throttle_waits: IntCounter::new(
                "replog_move_throttle_waits_total",
                "Sends to replicas being brought in by a move that waited for the move throttle",
            )
            .expect("metric"),
            move_throttle_wait_seconds: Counter::new(
                "replog_move_throttle_wait_seconds_total",
                "Time sends to replicas being brought in by a move waited for the move throttle",
            )
            .expect("metric"),
            subscriptions: IntGauge::new("replog_subscriptions", "Open Subscribe streams").expect("metric"),
            subscribe_bytes: IntCounter::new(
                "replog_subscribe_bytes_total",
                "Batch bytes read for Subscribe streams (a stalled subscriber stops these reads)",
            )
            .expect("metric"),
            groups: IntGauge::new("replog_raft_groups", "Raft groups hosted (partitions)").expect("metric"),
            leaders: IntGauge::new("replog_raft_leaders", "Partition groups this node leads").expect("metric"),
            quiet_groups: IntGauge::new(
                "replog_raft_groups_quiet",
                "Partition groups hosted here that are quiet: idle, not ticking nor heartbeating",
            )
            .expect("metric"),
            controller_leader: IntGauge::new("replog_controller_leader", "Node id of the controller leader (0: none)")
                .expect("metric"),
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
            fsync_seconds: histogram(
                "replog_storage_fsync_seconds",
                "Time of one group-commit flush round: the fdatasyncs of every dirty file",
                STORAGE_BUCKETS,
            ),
            flush_group_size: histogram(
                "replog_storage_flush_group_size",
                "Writes made durable by one flush round (group commit)",
                GROUP_SIZE_BUCKETS,
            ),
            disk_free: IntGauge::new(
                "replog_storage_free_bytes",
                "Free space on the data volume (produce is refused below min_free_mb)",
            )
            .expect("metric"),
            disk_min_free: IntGauge::new(
                "replog_storage_min_free_bytes",
                "Free space the node keeps on its data volume: below it produce answers DISK_FULL",
            )
            .expect("metric"),
            disk_capacity: IntGauge::new("replog_storage_capacity_bytes", "Size of the data volume").expect("metric"),
            partition_bytes: gauge_vec(
                "replog_storage_partition_bytes",
                "Bytes of the partition logs (segments, snapshots) on this node's disk",
                part,
            ),
            raft_append_seconds: histogram(
                "replog_raft_append_seconds",
                "Raft log append, from the write until it is durable (fsync included)",
                STORAGE_BUCKETS,
            ),
            raft_apply_seconds: histogram(
                "replog_raft_apply_seconds",
                "One apply of committed entries to a state machine",
                STORAGE_BUCKETS,
            ),
            snapshots_built: IntCounter::new(
                "replog_raft_snapshots_built_total",
                "Snapshots built here, of partitions and the controller (before a log purge, or for a lagging replica)",
            )
            .expect("metric"),
            snapshots_installed: IntCounter::new(
                "replog_raft_snapshots_installed_total",
                "Snapshots installed here: a replica that fell behind what its leader's log still holds",
            )
            .expect("metric"),
            topic_partitions: gauge_vec(
                "replog_topic_partitions",
                "Partitions of each topic in the cluster metadata (the same on every node)",
                &["topic"],
            ),
            partition_replicas: gauge_vec("replog_partition_replicas", "Partition replicas hosted here", part),
            partition_leader: gauge_vec("replog_partition_leader", "Partitions this node leads (1 or 0 each)", part),
            partition_without_leader: gauge_vec(
                "replog_partition_without_leader",
                "Hosted partitions whose replica here knows no leader",
                part,
            ),
            under_replicated: gauge_vec(
                "replog_partition_under_replicated",
                "Partitions led here with a voter out of sync (no acknowledgement for two election timeouts, \
                 or more than 1000 entries behind)",
                part,
            ),
            follower_lag: gauge_vec(
                "replog_raft_follower_lag_entries",
                "Log entries the followers of partitions led here are behind the leader's log",
                lag_labels,
            ),
            elections: counter_vec(
                "replog_raft_elections_total",
                "Raft terms begun (elections) seen by the replicas hosted here",
                part,
            ),
            appends_received: counter_vec(
                "replog_raft_appends_received_total",
                "Raft appends this node's replicas received from their leaders, by kind: entries (carrying log \
                 entries), empty (a commit index or a probe alone) and heartbeat",
                &["kind"],
            ),
            log_start_offset: gauge_vec(
                "replog_partition_log_start_offset",
                "First offset held, of partitions led here (per topic: the sum)",
                part,
            ),
            high_watermark: gauge_vec(
                "replog_partition_high_watermark",
                "High watermark (committed records) of partitions led here (per topic: the sum, the records \
                 the topic holds since offset 0)",
                part,
            ),
            raft_term: gauge_vec("replog_raft_term", "Current Raft term of each hosted partition", part),
            raft_last_log_index: gauge_vec(
                "replog_raft_last_log_index",
                "Last Raft log index of each hosted partition",
                part,
            ),
            raft_commit_index: gauge_vec(
                "replog_raft_commit_index",
                "Committed Raft log index of each hosted partition",
                part,
            ),
            raft_applied_index: gauge_vec(
                "replog_raft_applied_index",
                "Applied Raft log index of each hosted partition",
                part,
            ),
            consumer_groups: IntGauge::new("replog_consumer_groups", "Consumer groups this node coordinates")
                .expect("metric"),
            group_members: gauge_vec(
                "replog_consumer_group_members",
                "Members of each consumer group this node coordinates",
                &["group"],
            ),
            group_committed: gauge_vec(
                "replog_consumer_group_committed_offset",
                "Committed offset of each consumer group (per topic: the sum over its partitions)",
                group_labels,
            ),
            group_lag: gauge_vec(
                "replog_consumer_group_lag_records",
                "Records between a group's committed offset and the high watermark (per topic: the sum)",
                group_labels,
            ),
            queue_in_flight: gauge_vec(
                "replog_queue_in_flight",
                "Events locked to a consumer of a queue group, lock not expired (per topic: the sum)",
                group_labels,
            ),
            queue_backlog: gauge_vec(
                "replog_queue_backlog_records",
                "Events between the log start and the high watermark a queue group has not settled, in flight included",
                group_labels,
            ),
            queue_dead_letters_pending: gauge_vec(
                "replog_queue_dead_letters_pending",
                "Events of a queue group waiting to be written to its dead-letter topic",
                group_labels,
            ),
            queue_events: gauge_vec(
                "replog_queue_events",
                "Events of a queue group by outcome so far (delivered, redelivered, acked, dead_lettered), \
                 as the partition's replicated state counts them",
                &[group_labels, &["outcome"]].concat(),
            ),
            sampler: Mutex::default(),
        };
        m.register_all()
    }

    fn register_all(mut self) -> Metrics {
        let all: Vec<(Box<dyn Collector>, bool)> = vec![
            (Box::new(self.produce_requests.clone()), false),
            (Box::new(self.produce_records.clone()), false),
            (Box::new(self.kafka_requests.clone()), false),
            (Box::new(self.produce_bytes.clone()), false),
            (Box::new(self.produce_latency.clone()), false),
            (Box::new(self.fetch_requests.clone()), false),
            (Box::new(self.fetch_records.clone()), false),
            (Box::new(self.fetch_bytes.clone()), false),
            (Box::new(self.fetch_latency.clone()), false),
            (Box::new(self.subscriptions.clone()), false),
            (Box::new(self.subscribe_bytes.clone()), false),
            (Box::new(self.build_info.clone()), false),
            (Box::new(self.ready.clone()), false),
            (Box::new(self.connections.clone()), false),
            (Box::new(self.connections_accepted.clone()), false),
            (Box::new(self.connections_refused.clone()), false),
            (Box::new(self.quiet_groups.clone()), false),
            (Box::new(self.quota_throttle_seconds.clone()), false),
            (Box::new(self.move_throttled_bytes.clone()), false),
            (Box::new(self.move_throttle_waits.clone()), false),
            (Box::new(self.move_throttle_wait_seconds.clone()), false),
            (Box::new(self.groups.clone()), false),
            (Box::new(self.leaders.clone()), false),
            (Box::new(self.controller_leader.clone()), false),
            (Box::new(self.flushes.clone()), false),
            (Box::new(self.flush_waiters.clone()), false),
            (Box::new(self.files_synced.clone()), false),
            (Box::new(self.flush_seconds.clone()), false),
            (Box::new(self.fsync_seconds.clone()), false),
            (Box::new(self.flush_group_size.clone()), false),
            (Box::new(self.disk_free.clone()), false),
            (Box::new(self.disk_min_free.clone()), false),
            (Box::new(self.disk_capacity.clone()), false),
            (Box::new(self.partition_bytes.clone()), false),
            (Box::new(self.raft_append_seconds.clone()), false),
            (Box::new(self.raft_apply_seconds.clone()), false),
            (Box::new(self.snapshots_built.clone()), false),
            (Box::new(self.snapshots_installed.clone()), false),
            (Box::new(self.topic_partitions.clone()), false),
            (Box::new(self.partition_replicas.clone()), false),
            (Box::new(self.partition_leader.clone()), false),
            (Box::new(self.partition_without_leader.clone()), false),
            (Box::new(self.under_replicated.clone()), false),
            (Box::new(self.follower_lag.clone()), false),
            (Box::new(self.elections.clone()), false),
            (Box::new(self.appends_received.clone()), false),
            (Box::new(self.log_start_offset.clone()), false),
            (Box::new(self.high_watermark.clone()), false),
            (Box::new(self.raft_term.clone()), true),
            (Box::new(self.raft_last_log_index.clone()), true),
            (Box::new(self.raft_commit_index.clone()), true),
            (Box::new(self.raft_applied_index.clone()), true),
            (Box::new(self.consumer_groups.clone()), false),
            (Box::new(self.group_members.clone()), false),
            (Box::new(self.group_committed.clone()), false),
            (Box::new(self.group_lag.clone()), false),
            (Box::new(self.queue_in_flight.clone()), false),
            (Box::new(self.queue_backlog.clone()), false),
            (Box::new(self.queue_dead_letters_pending.clone()), false),
            (Box::new(self.queue_events.clone()), false),
        ];
        for (c, partition_only) in all {
            let names: Vec<String> = c.desc().iter().map(|d| d.fq_name.clone()).collect();
            // Series only meaningful per partition are not even registered
            // per topic: no empty family shows up.
            if partition_only && !self.per_partition {
                self.partition_only.extend(names);
                continue;
            }
            if partition_only {
                self.partition_only.extend(names.iter().cloned());
            }
            self.names.extend(names);
            self.registry.register(c).expect("register");
        }
        #[cfg(target_os = "linux")]
        {
            let p = prometheus::process_collector::ProcessCollector::for_self();
            self.names.extend(p.desc().iter().map(|d| d.fq_name.clone()));
            self.registry.register(Box::new(p)).expect("register");
        }
        self.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        self
    }

    /// The move throttle's counters.
    pub fn throttle_metrics(&self) -> crate::throttle::ThrottleMetrics {
        crate::throttle::ThrottleMetrics {
            bytes: self.move_throttled_bytes.clone(),
            waits: self.move_throttle_waits.clone(),
            wait_seconds: self.move_throttle_wait_seconds.clone(),
        }
    }

    /// Every family name this node exports (histograms without their
    /// `_bucket`/`_sum`/`_count` suffixes), including those present only
    /// per partition.
    pub fn family_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.names.iter().chain(&self.partition_only).cloned().collect();
        v.sort();
        v.dedup();
        v
    }

    /// Families present only with `metrics_per_partition`.
    pub fn partition_only_names(&self) -> &[String] {
        &self.partition_only
    }

    /// The `topic` label of a request naming `topic`: the name if the topic
    /// exists, else empty, so that requests cannot grow the label set.
    pub fn topic_label<'a>(meta: &ClusterMeta, topic: &'a str) -> &'a str {
        if meta.topics.contains_key(topic) { topic } else { "" }
    }

    /// The observer storage reports to ([`replog_raft_store::Store::set_observer`]).
    pub fn storage_observer(&self) -> Arc<StorageObserver> {
        Arc::new(StorageObserver {
            fsync: self.fsync_seconds.clone(),
            group_size: self.flush_group_size.clone(),
            append: self.raft_append_seconds.clone(),
            apply: self.raft_apply_seconds.clone(),
            built: self.snapshots_built.clone(),
            installed: self.snapshots_installed.clone(),
        })
    }
}

/// Records storage events into the node's histograms.
pub struct StorageObserver {
    fsync: Histogram,
    group_size: Histogram,
    append: Histogram,
    apply: Histogram,
    built: IntCounter,
    installed: IntCounter,
}

impl Observer for StorageObserver {
    fn flush_round(&self, took: Duration, writes: usize, _files: usize) {
        self.fsync.observe(took.as_secs_f64());
        self.group_size.observe(writes as f64);
    }

    fn log_append(&self, took: Duration, _entries: usize) {
        self.append.observe(took.as_secs_f64());
    }

    fn apply(&self, took: Duration) {
        self.apply.observe(took.as_secs_f64());
    }

    fn snapshot_built(&self, _took: Duration) {
        self.built.inc();
    }

    fn snapshot_installed(&self, _took: Duration) {
        self.installed.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_follows_the_naming_rule_and_counters_alone_end_in_total() {
        let m = Metrics::new(true);
        for f in m.registry.gather() {
            let name = f.name();
            if name.starts_with("process_") {
                continue;
            }
            assert!(name.starts_with("replog_"), "{name} lacks the replog_ prefix");
            let counter = f.get_field_type() == prometheus::proto::MetricType::COUNTER;
            assert_eq!(counter, name.ends_with("_total"), "{name}: only counters end in _total");
            assert!(!name.contains("_ms") && !name.contains("_millis"), "{name}: base units only");
        }
    }

    #[test]
    fn per_topic_mode_has_no_partition_label_and_no_per_partition_families() {
        let m = Metrics::new(false);
        m.partition_leader.with_label_values(&["t"]).set(1);
        m.follower_lag.with_label_values(&["t"]).set(3);
        let families = m.registry.gather();
        assert!(!families.iter().any(|f| f.name() == "replog_raft_term"));
        for f in &families {
            for s in f.get_metric() {
                assert!(
                    s.get_label().iter().all(|l| l.name() != "partition"),
                    "{} has a partition label in per-topic mode",
                    f.name()
                );
            }
        }
        assert!(m.family_names().contains(&"replog_raft_term".to_string()), "still known as a name");
        assert!(m.partition_only_names().contains(&"replog_raft_term".to_string()));
    }

    /// Every series a dashboard query or an alert names is one the node
    /// exports (or Prometheus's own `up`), and every query names one.
    #[test]
    fn every_dashboard_query_and_alert_names_an_exported_series() {
        let known = Metrics::new(false).family_names();
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../ops/grafana/replog-dashboard.json")).expect("dashboard JSON");
        let mut queries = Vec::new();
        collect_queries(&dashboard, &mut queries);
        assert!(queries.len() >= 20, "the dashboard has {} queries", queries.len());
        let alerts = include_str!("../../ops/alerts.yml");
        for (what, q) in queries.iter().map(|q| ("dashboard", q.as_str())).chain([("alerts.yml", alerts)]) {
            let names = series_names(q, &known);
            assert!(!names.is_empty(), "{what}: {q:?} names no series");
            for n in names {
                assert!(n == "up" || known.contains(&n), "{what}: {q:?} names {n}, which no node exports");
            }
        }
        // Per-partition-only series would be empty with the default.
        for n in series_names(&queries.join("\n"), &known) {
            assert!(!Metrics::new(false).partition_only_names().contains(&n), "the dashboard uses {n}");
        }
    }

    /// Every PromQL expression in a dashboard: panel targets and template
    /// variable queries.
    fn collect_queries(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => collect_queries(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect_queries(v, out)),
            _ => {}
        }
    }

    /// The series names in PromQL text `q`: identifiers outside quotes that
    /// start with `replog_` or `process_`, or are `up`, histogram suffixes
    /// taken off the names of known histograms.
    pub(crate) fn series_names(q: &str, known: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        let mut in_quote = None;
        let mut word = String::new();
        let mut prev = ' ';
        for c in q.chars().chain([' ']) {
            if let Some(qc) = in_quote {
                if c == qc && prev != '\\' {
                    in_quote = None;
                }
                prev = c;
                continue;
            }
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                word.push(c);
            } else {
                if word.starts_with("replog_") || word.starts_with("process_") || word == "up" {
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s).filter(|b| known.iter().any(|k| k == b)))
                        .map(str::to_string);
                    out.push(base.unwrap_or_else(|| word.clone()));
                }
                word.clear();
                if c == '"' || c == '\'' || c == '`' {
                    in_quote = Some(c);
                }
            }
            prev = c;
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn series_names_skip_label_values_and_histogram_suffixes() {
        let known = vec!["replog_a_seconds".to_string(), "replog_b_total".to_string()];
        let q = r#"histogram_quantile(0.9, sum by (le) (rate(replog_a_seconds_bucket{x="replog_c"}[5m]))) / up"#;
        assert_eq!(series_names(q, &known), vec!["replog_a_seconds", "up"]);
        assert_eq!(series_names("sum(replog_b_total)", &known), vec!["replog_b_total"]);
    }

    #[test]
    fn an_unknown_topic_is_counted_without_its_name() {
        let mut meta = ClusterMeta::default();
        meta.topics.insert(
            "known".into(),
            replog_raft_store::controller::TopicMeta {
                name: "known".into(),
                id: 1,
                partitions: vec![],
                created_ms: 0,
                config: Default::default(),
            },
        );
        assert_eq!(Metrics::topic_label(&meta, "known"), "known");
        assert_eq!(Metrics::topic_label(&meta, "made-up-by-a-client"), "");
    }
}
