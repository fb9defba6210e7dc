//! The scrape-time sampler: brings every gauge that describes state up to
//! date from where that state lives — openraft's metrics watch of each
//! hosted partition, the partitions' offsets, the consumer groups this node
//! coordinates, the store's counters and the disk — and decides readiness.
//!
//! It runs once per scrape, under one lock, so two scrapes never see a
//! half-filled family; the cost is one pass over the hosted partitions
//! (and, every [`SIZE_REFRESH`], a walk of their log directories).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use openraft::async_runtime::Instant as _;
use openraft::async_runtime::WatchReceiver;
use prometheus::IntCounter;
use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use replog_raft_store::controller::TopicMeta;
use replog_raft_store::queues::LogBounds;
use replog_raft_store::{GroupId, NodeId, Raft};

use crate::coordinator::GROUPS_TOPIC;
use crate::node::Node;

/// A follower more than this many entries behind its leader is out of sync.
pub const UNDER_REPLICATED_ENTRIES: u64 = 1000;
/// How often the partitions' sizes on disk are measured again (a directory
/// walk per partition).
pub const SIZE_REFRESH: Duration = Duration::from_secs(10);
/// A replica whose applied index is within this many entries of what its
/// leader reports committed counts as caught up (under steady writes a
/// follower always trails by a few).
pub const READY_SLACK_ENTRIES: u64 = 100;
/// Most reasons `/ready` lists.
const MAX_REASONS: usize = 20;

/// What the sampler remembers between scrapes.
#[derive(Default)]
pub struct State {
    /// The term each hosted partition had at the last scrape.
    terms: HashMap<GroupId, u64>,
    /// Since when this node leads each partition it leads (a new leader
    /// has no acknowledgements yet).
    leading_since: HashMap<GroupId, Instant>,
    /// Label sets of `replog_raft_elections_total` exported, so that those
    /// of partitions no longer here are dropped.
    election_labels: HashSet<Vec<String>>,
    sizes: HashMap<GroupId, u64>,
    sizes_at: Option<Instant>,
}

/// What one partition's Raft state says, read from its metrics watch.
struct RaftView {
    leads: bool,
    leader: Option<NodeId>,
    term: u64,
    last_log: u64,
    committed: u64,
    cluster_committed: u64,
    applied: u64,
    /// Leaders only: per other voter, entries behind and time since its
    /// last acknowledgement.
    followers: Vec<(NodeId, u64, Option<Duration>)>,
}

fn view(raft: &Raft, me: NodeId) -> RaftView {
    let rx = raft.metrics();
    let m = rx.borrow_watched();
    let leads = crate::members::leads(&m, me);
    let last_log = m.last_log_index.unwrap_or(0);
    let mut followers = Vec::new();
    if leads {
        for v in crate::members::voters(m.membership_config.membership()).filter(|v| *v != me) {
            let matched = m.replication.as_ref().and_then(|r| r.get(&v).cloned().flatten()).map(|l| l.index);
            let lag = matched.map_or(last_log, |i| last_log.saturating_sub(i));
            let acked = m.heartbeat.as_ref().and_then(|h| h.get(&v).cloned().flatten()).map(|t| t.elapsed());
            followers.push((v, lag, acked));
        }
    }
    RaftView {
        leads,
        leader: m.current_leader,
        term: m.current_term,
        last_log,
        committed: m.local_committed.map_or(0, |l| l.index),
        cluster_committed: cluster_committed(&m),
        applied: m.last_applied.map_or(0, |l| l.index),
        followers,
    }
}

/// Sums of one label set.
#[derive(Default)]
struct Row {
    replicas: i64,
    leader: i64,
    without_leader: i64,
    under_replicated: i64,
    log_start: i64,
    high_watermark: i64,
    bytes: i64,
    elections: u64,
    term: i64,
    last_log: i64,
    committed: i64,
    applied: i64,
}

/// Brings every sampled metric up to date. Call with the sampler lock held.
pub fn refresh(node: &Node, st: &mut State) {
    let m = &node.metrics;
    storage(node);
    let meta = node.meta();
    let per_partition = m.per_partition;
    let labels = |topic: &str, p: u32| -> Vec<String> {
        if per_partition { vec![topic.to_string(), p.to_string()] } else { vec![topic.to_string()] }
    };
    // Group id -> (topic, partition), once: locating each group through the
    // metadata would cost topics × partitions per partition.
    let located: HashMap<GroupId, (&str, u32)> = meta
        .topics
        .values()
        .flat_map(|t| t.partitions.iter().enumerate().map(move |(i, p)| (p.group, (t.name.as_str(), i as u32))))
        .collect();

    m.topic_partitions.reset();
    for t in meta.topics.values() {
        m.topic_partitions.with_label_values(&[t.name.as_str()]).set(t.partitions.len() as i64);
    }

    let partitions = node.partitions();
    if st.sizes_at.is_none_or(|t| t.elapsed() >= SIZE_REFRESH) {
        st.sizes = partitions.iter().map(|p| (p.group(), dir_bytes(&node.store.log_dir(p.group())))).collect();
        st.sizes_at = Some(Instant::now());
    }
    let out_of_sync_after = Duration::from_millis(node.config.election_timeout_max_ms.saturating_mul(2));
    let mut rows: BTreeMap<Vec<String>, Row> = BTreeMap::new();
    let mut lags: BTreeMap<Vec<String>, i64> = BTreeMap::new();
    let mut queues: BTreeMap<Vec<String>, QueueRow> = BTreeMap::new();
    let mut terms = HashMap::new();
    let mut leaders = 0;
    for p in &partitions {
        let g = p.group();
        let Some(&(topic, idx)) = located.get(&g) else { continue };
        let key = labels(topic, idx);
        let v = view(p.raft(), node.id);
        let row = rows.entry(key.clone()).or_default();
        row.replicas += 1;
        row.without_leader += v.leader.is_none() as i64;
        row.elections += v.term.saturating_sub(st.terms.get(&g).copied().unwrap_or(0));
        terms.insert(g, v.term);
        row.bytes += st.sizes.get(&g).copied().unwrap_or(0) as i64;
        row.term = v.term as i64;
        row.last_log = v.last_log as i64;
        row.committed = v.committed as i64;
        row.applied = v.applied as i64;
        if !v.leads {
            st.leading_since.remove(&g);
            continue;
        }
        leaders += 1;
        row.leader += 1;
        let since = *st.leading_since.entry(g).or_insert_with(Instant::now);
        let mut out_of_sync = false;
        for (follower, lag, acked) in v.followers {
            // No acknowledgement yet counts only once the leader has had
            // time to hear from it.
            // A quiet group sends no heartbeats: its followers held the
            // whole log when it went quiet.
            let silent = !p.is_quiet()
                && match acked {
                    Some(a) => a > out_of_sync_after,
                    None => since.elapsed() > out_of_sync_after,
                };
            out_of_sync |= silent || lag > UNDER_REPLICATED_ENTRIES;
            let mut k = key.clone();
            if per_partition {
                k.push(follower.to_string());
            }
            *lags.entry(k).or_default() += lag as i64;
        }
        row.under_replicated += out_of_sync as i64;
        let o = p.offsets();
        row.log_start += o.log_start_offset as i64;
        row.high_watermark += o.high_watermark as i64;
        let bounds = LogBounds { log_start: o.log_start_offset, high_watermark: o.high_watermark };
        for (name, q) in p.queues_here().iter() {
            let now = replog_proto::now_ms().max(q.clock_ms);
            let r = queues.entry([vec![name.clone()], key.clone()].concat()).or_default();
            r.in_flight += q.in_flight(now) as i64;
            r.backlog += q.backlog(bounds) as i64;
            r.dead_pending += q.dead.len() as i64;
            r.outcomes[0] += q.delivered as i64;
            r.outcomes[1] += q.redelivered as i64;
            r.outcomes[2] += q.acked as i64;
            r.outcomes[3] += q.dead_lettered as i64;
        }
    }
    queue_groups(node, &queues);
    st.terms = terms;
    st.leading_since.retain(|g, _| st.terms.contains_key(g));
    m.leaders.set(leaders);
    m.quiet_groups.set(partitions.iter().filter(|p| p.is_quiet()).count() as i64);
    m.groups.set(partitions.len() as i64);

    for vec in [
        &m.partition_replicas,
        &m.partition_leader,
        &m.partition_without_leader,
        &m.under_replicated,
        &m.follower_lag,
        &m.log_start_offset,
        &m.high_watermark,
        &m.partition_bytes,
        &m.raft_term,
        &m.raft_last_log_index,
        &m.raft_commit_index,
        &m.raft_applied_index,
    ] {
        vec.reset();
    }
    let mut elections_now = HashSet::new();
    for (k, r) in &rows {
        let k: Vec<&str> = k.iter().map(String::as_str).collect();
        m.partition_replicas.with_label_values(&k).set(r.replicas);
        m.partition_leader.with_label_values(&k).set(r.leader);
        m.partition_without_leader.with_label_values(&k).set(r.without_leader);
        m.under_replicated.with_label_values(&k).set(r.under_replicated);
        m.partition_bytes.with_label_values(&k).set(r.bytes);
        if r.leader > 0 {
            m.log_start_offset.with_label_values(&k).set(r.log_start);
            m.high_watermark.with_label_values(&k).set(r.high_watermark);
        }
        if per_partition {
            m.raft_term.with_label_values(&k).set(r.term);
            m.raft_last_log_index.with_label_values(&k).set(r.last_log);
            m.raft_commit_index.with_label_values(&k).set(r.committed);
            m.raft_applied_index.with_label_values(&k).set(r.applied);
        }
        m.elections.with_label_values(&k).inc_by(r.elections);
        elections_now.insert(k.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    }
    for k in st.election_labels.difference(&elections_now) {
        let k: Vec<&str> = k.iter().map(String::as_str).collect();
        let _ = m.elections.remove_label_values(&k);
    }
    st.election_labels = elections_now;
    for (k, lag) in &lags {
        let k: Vec<&str> = k.iter().map(String::as_str).collect();
        m.follower_lag.with_label_values(&k).set(*lag);
    }

    consumer_groups(node);
    for vec in
        [&m.produce_requests, &m.produce_records, &m.produce_bytes, &m.fetch_requests, &m.fetch_records, &m.fetch_bytes]
    {
        prune_topics(vec, &meta.topics);
    }
    m.ready.set(readiness(node).ready as i64);
}

/// Store counters and the disk.
fn storage(node: &Node) {
    let m = &node.metrics;
    let s = node.store.stats();
    catch_up(&m.flushes, s.flushes.load(Ordering::Relaxed));
    catch_up(&m.flush_waiters, s.waiters.load(Ordering::Relaxed));
    catch_up(&m.files_synced, s.files_synced.load(Ordering::Relaxed));
    let secs = s.micros.load(Ordering::Relaxed) as f64 / 1e6;
    m.flush_seconds.inc_by((secs - m.flush_seconds.get()).max(0.0));
    m.controller_leader.set(node.controller.leader().unwrap_or(0) as i64);
    m.disk_free.set(node.store.disk().free() as i64);
    m.disk_min_free.set(node.store.disk().min_free() as i64);
    m.disk_capacity.set(node.store.disk().capacity() as i64);
}

/// Moves `c` up to `total`, a count kept elsewhere that only grows.
fn catch_up(c: &IntCounter, total: u64) {
    c.inc_by(total.saturating_sub(c.get()));
}

/// Committed offsets and lag of the consumer groups of the
/// `__consumer_offsets` partitions this node leads — the groups it
/// coordinates. Lag is against the high watermark as the partition's leader
/// knows it (this node's own, or the leader's last report to the prober).
fn consumer_groups(node: &Node) {
    let m = &node.metrics;
    for vec in [&m.group_members, &m.group_committed, &m.group_lag] {
        vec.reset();
    }
    let meta = node.meta();
    let mut coordinated = 0;
    let mut committed_sum: BTreeMap<Vec<String>, i64> = BTreeMap::new();
    let mut lag_sum: BTreeMap<Vec<String>, i64> = BTreeMap::new();
    for part in meta.topics.get(GROUPS_TOPIC).map(|t| t.partitions.as_slice()).unwrap_or_default() {
        let Some(p) = node.partition(part.group) else { continue };
        if !p.is_leader() {
            continue;
        }
        for (name, state) in p.groups_here().iter() {
            coordinated += 1;
            m.group_members.with_label_values(&[name.as_str()]).set(state.members.len() as i64);
            let Ok(committed) = p.committed(name) else { continue };
            for (topic, partition, c) in committed {
                let Some(pm) = meta.topics.get(&topic).and_then(|t| t.partitions.get(partition as usize)) else {
                    continue;
                };
                let (_, high_watermark) = node.offsets_of(pm.group, node.leader_of(pm.group, &pm.replicas));
                let mut k = vec![name.clone(), topic];
                if m.per_partition {
                    k.push(partition.to_string());
                }
                *committed_sum.entry(k.clone()).or_default() += c.offset as i64;
                *lag_sum.entry(k).or_default() += high_watermark.saturating_sub(c.offset) as i64;
            }
        }
    }
    m.consumer_groups.set(coordinated);
    for (k, v) in committed_sum {
        let k: Vec<&str> = k.iter().map(String::as_str).collect();
        m.group_committed.with_label_values(&k).set(v);
    }
    for (k, v) in lag_sum {
        let k: Vec<&str> = k.iter().map(String::as_str).collect();
        m.group_lag.with_label_values(&k).set(v);
    }
}

/// One queue group on one partition (or the sum over a topic's).
#[derive(Default)]
struct QueueRow {
    in_flight: i64,
    backlog: i64,
    dead_pending: i64,
    /// Delivered, redelivered, acked, dead-lettered.
    outcomes: [i64; 4],
}

/// The queue groups of the partitions this node leads.
fn queue_groups(node: &Node, rows: &BTreeMap<Vec<String>, QueueRow>) {
    let m = &node.metrics;
    for vec in [&m.queue_in_flight, &m.queue_backlog, &m.queue_dead_letters_pending, &m.queue_events] {
        vec.reset();
    }
    for (k, r) in rows {
        let k: Vec<&str> = k.iter().map(String::as_str).collect();
        m.queue_in_flight.with_label_values(&k).set(r.in_flight);
        m.queue_backlog.with_label_values(&k).set(r.backlog);
        m.queue_dead_letters_pending.with_label_values(&k).set(r.dead_pending);
        for (outcome, n) in ["delivered", "redelivered", "acked", "dead_lettered"].into_iter().zip(r.outcomes) {
            m.queue_events.with_label_values(&[k.as_slice(), &[outcome]].concat()).set(n);
        }
    }
}

/// Drops the series of `vec` whose `topic` no longer exists.
fn prune_topics<B: MetricVecBuilder>(vec: &MetricVec<B>, topics: &BTreeMap<String, TopicMeta>) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: Vec<(&str, &str)> = metric.get_label().iter().map(|l| (l.name(), l.value())).collect();
            let gone = labels.iter().any(|(n, v)| *n == "topic" && !v.is_empty() && !topics.contains_key(*v));
            if gone {
                let by_name: HashMap<&str, &str> = labels.into_iter().collect();
                let _ = vec.remove(&by_name);
            }
        }
    }
}

/// Bytes of the files under `dir`, each file once however many hard links
/// (snapshots link the segments they refer to).
fn dir_bytes(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if seen.insert((md.dev(), md.ino())) {
                total += md.len();
            }
        }
    }
    total
}

/// Whether the node has caught up, and if not, with what.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    pub node: NodeId,
    pub ready: bool,
    pub controller_leader: Option<NodeId>,
    /// What is not caught up yet (at most 20 entries, then a count).
    pub waiting_for: Vec<String>,
}

/// Ready once the controller has a leader and this node has applied what
/// it committed (and, once after its start, everything committed before a
/// read index it asked for: until then it takes no writes), and every
/// partition the metadata places here is open, has a leader and is applied
/// up to what that leader has committed (within [`READY_SLACK_ENTRIES`]).
pub fn readiness(node: &Node) -> Readiness {
    let open = node.partition_map();
    let c = view(node.controller.raft(), node.id);
    let mut waiting: Vec<String> = controller_waiting_given(node, &c).into_iter().collect();
    let meta = node.meta();
    let mut more = 0;
    for t in meta.topics.values() {
        for (i, pm) in t.partitions.iter().enumerate() {
            if !pm.replicas.contains(&node.id) {
                continue;
            }
            // Names are formatted only for what is behind: this runs on
            // every scrape and every NodeInfo, over every partition placed
            // here.
            let why = match open.get(&pm.group) {
                None if open.len() >= node.replica_limit => {
                    Some(format!("not open: this node holds at most {} replicas (max_replicas)", node.replica_limit))
                }
                None => Some("not open yet".to_string()),
                Some(p) => behind(&p.raft().metrics().borrow_watched()).map(|b| b.to_string()),
            };
            if let Some(why) = why {
                if waiting.len() < MAX_REASONS {
                    waiting.push(format!("{}/{i}: {why}", t.name));
                } else {
                    more += 1;
                }
            }
        }
    }
    if more > 0 {
        waiting.push(format!("and {more} more partitions"));
    }
    Readiness { node: node.id, ready: waiting.is_empty(), controller_leader: c.leader, waiting_for: waiting }
}

/// What keeps the controller group here from counting as caught up, if
/// anything: part of [`readiness`].
pub fn controller_waiting(node: &Node) -> Option<String> {
    controller_waiting_given(node, &view(node.controller.raft(), node.id))
}

fn controller_waiting_given(node: &Node, c: &RaftView) -> Option<String> {
    match c.leader {
        None => Some("controller: no leader".to_string()),
        Some(_) if lagging(c.applied, c.cluster_committed) => {
            Some(format!("controller: applied {} of {} committed", c.applied, c.cluster_committed))
        }
        Some(_) if !node.controller.caught_up() => {
            Some("controller: metadata not yet caught up since start (no writes taken)".to_string())
        }
        Some(_) => None,
    }
}

/// What keeps an open partition replica from counting as caught up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behind {
    NoLeader,
    Applied { applied: u64, committed: u64 },
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Behind::NoLeader => write!(f, "no leader"),
            Behind::Applied { applied, committed } => write!(f, "applied {applied} of {committed} committed"),
        }
    }
}

/// What keeps the replica whose Raft metrics these are from counting as
/// caught up, if anything.
pub fn behind(m: &openraft::RaftMetrics<replog_raft_store::TypeConfig>) -> Option<Behind> {
    let (applied, committed) = (m.last_applied.map_or(0, |l| l.index), cluster_committed(m));
    if m.current_leader.is_none() {
        Some(Behind::NoLeader)
    } else if lagging(applied, committed) {
        Some(Behind::Applied { applied, committed })
    } else {
        None
    }
}

/// Behind what its leader reports committed by more than the slack.
fn lagging(applied: u64, cluster_committed: u64) -> bool {
    applied + READY_SLACK_ENTRIES < cluster_committed
}

/// The highest index the group has committed, as far as this replica knows:
/// its leader's word when it has one, else its own.
fn cluster_committed(m: &openraft::RaftMetrics<replog_raft_store::TypeConfig>) -> u64 {
    m.cluster_committed.or(m.local_committed).map_or(0, |l| l.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_links_are_counted_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.log"), vec![0u8; 1000]).unwrap();
        std::fs::create_dir_all(d.path().join("snapshots/1")).unwrap();
        std::fs::hard_link(d.path().join("a.log"), d.path().join("snapshots/1/a.log")).unwrap();
        std::fs::write(d.path().join("snapshots/1/header"), vec![0u8; 24]).unwrap();
        assert_eq!(dir_bytes(d.path()), 1024);
        assert_eq!(dir_bytes(&d.path().join("missing")), 0);
    }

    #[test]
    fn series_of_deleted_topics_are_dropped_and_unknown_topics_stay() {
        let m = crate::metrics::Metrics::new(false);
        m.produce_requests.with_label_values(&["kept", "ok"]).inc();
        m.produce_requests.with_label_values(&["deleted", "ok"]).inc();
        m.produce_requests.with_label_values(&["deleted", "TIMEOUT"]).inc();
        m.produce_requests.with_label_values(&["", "UNKNOWN_TOPIC"]).inc();
        let mut topics = BTreeMap::new();
        topics.insert(
            "kept".to_string(),
            TopicMeta { name: "kept".into(), id: 1, partitions: vec![], created_ms: 0, config: Default::default() },
        );
        prune_topics(&m.produce_requests, &topics);
        let left: Vec<String> = m.produce_requests.collect()[0]
            .get_metric()
            .iter()
            .map(|s| s.get_label().iter().map(|l| l.value().to_string()).collect::<Vec<_>>().join("/"))
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().all(|l| !l.contains("deleted")), "{left:?}");
    }
}
