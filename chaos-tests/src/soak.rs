//! The soak: a long run at a steady half of peak throughput with a fault at
//! a fixed interval, each node's memory sampled throughout, then the same
//! final reads and checker as a chaos run.
//!
//! [`run_soak`] goes through these phases on one fresh cluster:
//!
//! 1. **Peak** (unless a rate is given): producers send as fast as they
//!    can for a few seconds, no faults; the acknowledged records per second
//!    after a short ramp-up are the peak.
//! 2. **Soak**: producers at half the peak (in records per second, all
//!    producers together), one consumer per partition, the topic-churn
//!    client, and one fault every `fault_every` (drawn from the seed, each
//!    healed after `fault_seconds`). Every `rss_every` each node's RSS is
//!    read from `/proc/<pid>/status` (`VmRSS`) and appended to `rss.csv`.
//!    The phase ends early, as a problem, if a node passes `rss_limit_mb`,
//!    the nodes' data passes `max_data_mb` or the disk holding the run runs
//!    low, so that a leak cannot take the machine down with it.
//! 3. **Wind-down** ([`crate::runner::wind_down`]): heal, final reads of
//!    every partition from the leader and every replica, settled topic
//!    states; then the checker.
//!
//! The memory verdict is the least-squares slope of RSS over time in the
//! second half of the soak phase (the first half is warm-up: caches fill,
//! groups start), in MB per minute, per node; the worst node's is reported.
//! A node restarted by a fault starts a new process whose memory starts
//! afresh and then climbs while it catches up with its peers, so the slope
//! is fitted per process — each process's samples around their own mean,
//! one common slope per node (a fixed-effects fit) — leaving out each
//! process's first [`PROCESS_WARM_UP`].
//!
//! Nodes are found by PID without a hook in the cluster: they are the
//! children of this process whose command is `replog-node`, and their
//! `--id` argument names the node.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use replog_client::ClientConfig;
use replog_testkit::Cluster;
use tokio::sync::watch;

use crate::checker::{Report, check_events};
use crate::cluster::chaos_options;
use crate::history::{HistoryFile, Recorder};
use crate::nemesis::{Fault, Nemesis, NemesisEvent, Window};
use crate::net::Net;
use crate::runner::{RunConfig, churn_config, describe, wind_down};
use crate::workload::{Counters, Workload, WorkloadConfig};

/// Everything that defines a soak.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Length of the soak phase.
    pub seconds: u64,
    /// Records per second, all producers together; `None` measures the
    /// peak first and takes half of it.
    pub rate: Option<u64>,
    /// Length of the peak measurement.
    pub peak_seconds: u64,
    pub fault_every: Duration,
    pub fault_seconds: Duration,
    pub faults: Vec<Fault>,
    pub seed: u64,
    pub rss_every: Duration,
    /// A node above this ends the soak early (a problem of the run).
    pub rss_limit_mb: u64,
    /// Less free disk than this under the output directory ends it too.
    pub min_free_disk_mb: u64,
    /// So does more node data than this (all nodes together): a soak at
    /// tens of MB/s writes gigabytes a minute on each replica.
    pub max_data_mb: u64,
    /// When set, a worst-node RSS slope above it fails the soak.
    pub max_rss_slope: Option<f64>,
    pub nodes: u64,
    pub partitions: u32,
    pub producers: u32,
    pub record_size: usize,
    pub churn: bool,
    pub idempotent: bool,
    pub out_dir: PathBuf,
}

/// What a soak measured.
#[derive(Debug)]
pub struct SoakResult {
    /// Seconds the soak phase lasted (less than asked if it ended early).
    pub seconds: f64,
    /// The measured peak, records per second, when it was measured.
    pub peak_rate: Option<f64>,
    /// The rate asked of the producers, records per second.
    pub rate: u64,
    /// Acknowledged records in the soak phase.
    pub records: u64,
    /// Acknowledged bytes of record values in the soak phase.
    pub bytes: u64,
    /// Acknowledged records of the peak phase.
    pub peak_records: u64,
    pub rss: RssSummary,
    pub report: Report,
    pub problems: Vec<String>,
    pub events: Vec<NemesisEvent>,
}

impl SoakResult {
    /// The contract line: `soak: seconds=S records=N
    /// rss_slope_mb_per_min=X max_rss_mb=Y anomalies=Z`.
    pub fn summary(&self) -> String {
        let slope = match self.rss.worst_slope() {
            Some((_, s)) => format!("{s:.1}"),
            None => "n/a".into(),
        };
        format!(
            "soak: seconds={:.0} records={} rss_slope_mb_per_min={slope} max_rss_mb={:.0} anomalies={}",
            self.seconds,
            self.records,
            self.rss.max_mb,
            self.report.anomaly_count()
        )
    }

    /// Whether the soak passed: no anomaly, no problem, and the slope
    /// within `max_rss_slope` when one is set.
    pub fn passed(&self, max_rss_slope: Option<f64>) -> bool {
        let slope_ok = match (max_rss_slope, self.rss.worst_slope()) {
            (Some(max), Some((_, s))) => s <= max,
            _ => true,
        };
        self.report.is_valid() && self.problems.is_empty() && slope_ok
    }
}

/// One RSS sample of one node process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RssSample {
    /// Seconds since the soak phase started.
    pub t: f64,
    pub node: u64,
    pub pid: u32,
    pub rss_mb: f64,
}

/// The memory verdict of a soak.
#[derive(Debug, Clone, Default)]
pub struct RssSummary {
    /// Node → the verdict's MB per minute: the slope within processes over
    /// the second half, else (every process of the node too short-lived to
    /// be past its warm-up there) the slope of its per-minute maxima
    /// (`None`: too few samples for either).
    pub slopes: BTreeMap<u64, Option<f64>>,
    /// Node → its RSS and both slopes.
    pub nodes: BTreeMap<u64, NodeRss>,
    pub max_mb: f64,
    pub samples: usize,
}

/// One node's memory over a soak phase.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeRss {
    /// The first and last samples, and the largest, in MB.
    pub start_mb: f64,
    pub max_mb: f64,
    pub end_mb: f64,
    /// Node processes seen (1 + restarts).
    pub processes: usize,
    /// MB per minute within processes over the second half, each process
    /// past its warm-up ([`PROCESS_WARM_UP`]).
    pub within: Option<f64>,
    /// MB per minute of the node's largest RSS in each minute, from the
    /// second minute on, across restarts: memory that grows with the log a
    /// node holds raises it even when no process lives long (faults that
    /// restart every node every minute or two).
    pub maxima: Option<f64>,
}

/// The windows [`NodeRss::maxima`] takes the largest sample of.
pub const MAXIMA_WINDOW: Duration = Duration::from_secs(60);

/// How long after its first sample a node process's memory is still
/// warming up: a restarted node catches up with its peers and refills its
/// caches, and its RSS was seen to climb for about 100 s (back to its
/// peers' level) after a kill-all in a 3000 records/s soak.
pub const PROCESS_WARM_UP: Duration = Duration::from_secs(120);

impl RssSummary {
    /// Summarizes `samples` of a soak phase that lasted `seconds`: the
    /// second half, less each process's warm-up.
    pub fn of(samples: &[RssSample], seconds: f64) -> RssSummary {
        let half = seconds / 2.0;
        let mut first_seen: BTreeMap<u32, f64> = BTreeMap::new();
        for s in samples {
            let t = first_seen.entry(s.pid).or_insert(s.t);
            *t = t.min(s.t);
        }
        // Processes seen from the first sample on were started before the
        // soak phase: their warm-up is long over.
        let start = samples.iter().map(|s| s.t).fold(f64::INFINITY, f64::min);
        let warm = |s: &RssSample| {
            let first = first_seen[&s.pid];
            first <= start || s.t - first >= PROCESS_WARM_UP.as_secs_f64()
        };
        let mut slopes = BTreeMap::new();
        let mut stats = BTreeMap::new();
        let mut nodes: Vec<u64> = samples.iter().map(|s| s.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        for n in nodes {
            let mine: Vec<RssSample> = samples.iter().filter(|s| s.node == n).copied().collect();
            let late: Vec<RssSample> = mine.iter().filter(|s| s.t >= half && warm(s)).copied().collect();
            let mut pids: Vec<u32> = mine.iter().map(|s| s.pid).collect();
            pids.sort_unstable();
            pids.dedup();
            let first = mine.iter().min_by(|a, b| a.t.total_cmp(&b.t)).expect("a sample");
            let last = mine.iter().max_by(|a, b| a.t.total_cmp(&b.t)).expect("a sample");
            let node = NodeRss {
                start_mb: first.rss_mb,
                max_mb: mine.iter().map(|s| s.rss_mb).fold(0.0, f64::max),
                end_mb: last.rss_mb,
                processes: pids.len(),
                within: slope_mb_per_min(&late),
                maxima: maxima_slope_mb_per_min(&mine, start + MAXIMA_WINDOW.as_secs_f64()),
            };
            slopes.insert(n, node.within.or(node.maxima));
            stats.insert(n, node);
        }
        RssSummary {
            slopes,
            nodes: stats,
            max_mb: samples.iter().map(|s| s.rss_mb).fold(0.0, f64::max),
            samples: samples.len(),
        }
    }

    /// The node with the steepest slope, and the slope.
    pub fn worst_slope(&self) -> Option<(u64, f64)> {
        self.slopes.iter().filter_map(|(n, s)| s.map(|s| (*n, s))).max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// Least-squares slope of RSS over time, in MB per minute, with one
/// intercept per process (samples are grouped by PID, so a restart does
/// not read as a fall), or `None` without two samples of one process at
/// different times.
pub fn slope_mb_per_min(samples: &[RssSample]) -> Option<f64> {
    let mut by_pid: BTreeMap<u32, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples {
        by_pid.entry(s.pid).or_default().push((s.t, s.rss_mb));
    }
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for points in by_pid.values() {
        let n = points.len() as f64;
        let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mr = points.iter().map(|p| p.1).sum::<f64>() / n;
        for (t, r) in points {
            sxy += (t - mt) * (r - mr);
            sxx += (t - mt) * (t - mt);
        }
    }
    (sxx > 0.0).then(|| sxy / sxx * 60.0)
}

/// The samples of an `rss.csv` written by a soak (`t_s,node,pid,rss_mb,
/// ...`), to summarize it again.
pub fn read_rss_csv(text: &str) -> Result<Vec<RssSample>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || anyhow::anyhow!("rss.csv line {}: {line:?}", i + 1);
        if f.len() < 4 {
            return Err(bad());
        }
        out.push(RssSample {
            t: f[0].parse().map_err(|_| bad())?,
            node: f[1].parse().map_err(|_| bad())?,
            pid: f[2].parse().map_err(|_| bad())?,
            rss_mb: f[3].parse().map_err(|_| bad())?,
        });
    }
    Ok(out)
}

/// Least-squares slope, in MB per minute, of the largest RSS in each
/// [`MAXIMA_WINDOW`] from `from` on (one node's samples, any process), or
/// `None` with fewer than three windows sampled.
pub fn maxima_slope_mb_per_min(samples: &[RssSample], from: f64) -> Option<f64> {
    let w = MAXIMA_WINDOW.as_secs_f64();
    let mut maxima: BTreeMap<u64, f64> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.t >= from) {
        let m = maxima.entry(((s.t - from) / w) as u64).or_insert(0.0);
        *m = m.max(s.rss_mb);
    }
    if maxima.len() < 3 {
        return None;
    }
    // One process standing for all windows: the within-process fit, on
    // the windows' midpoints.
    let points: Vec<RssSample> = maxima
        .iter()
        .map(|(i, m)| RssSample { t: from + (*i as f64 + 0.5) * w, node: 0, pid: 0, rss_mb: *m })
        .collect();
    slope_mb_per_min(&points)
}

/// The node processes that are children of process `parent`: node id →
/// PID, from `/proc/<pid>/stat` (parent and command) and
/// `/proc/<pid>/cmdline` (`--id N`).
pub fn node_pids(parent: u32) -> BTreeMap<u64, u32> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if parse_stat(&stat) != Some(("replog-node", parent)) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        if let Some(id) = node_id_arg(&cmdline) {
            out.insert(id, pid);
        }
    }
    out
}

/// `(command, parent pid)` from a `/proc/<pid>/stat` line. The command
/// sits in parentheses and may itself hold spaces or parentheses, so the
/// fields after it are found from the last `)`.
pub fn parse_stat(stat: &str) -> Option<(&str, u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

/// The value after `--id` in a NUL-separated command line.
pub fn node_id_arg(cmdline: &[u8]) -> Option<u64> {
    let mut args = cmdline.split(|b| *b == 0);
    while let Some(a) = args.next() {
        if a == b"--id" {
            return std::str::from_utf8(args.next()?).ok()?.parse().ok();
        }
    }
    None
}

/// `VmRSS` in MB from a `/proc/<pid>/status` text.
pub fn parse_vm_rss_mb(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Free space, in MB, of the filesystem holding `path`.
fn free_disk_mb(path: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills the struct it is given; the path is a valid
    // NUL-terminated string for the duration of the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64 / (1 << 20))
}

/// Bytes under `dir`, recursively (files only; errors count as empty).
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::symlink_metadata(dir) else { return 0 };
    disk_bytes_on(dir, root.dev())
}

/// The disk space files under `dir` take (allocated blocks, as `du -x`
/// counts them), on device `dev` only: a node's `data` directory on a
/// faultfs mount shows the files of its `disk` directory again, which
/// must not count twice.
fn disk_bytes_on(dir: &Path, dev: u64) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match std::fs::symlink_metadata(e.path()) {
            Ok(m) if m.dev() != dev => 0,
            Ok(m) if m.is_dir() => disk_bytes_on(&e.path(), dev),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// The soak's fault windows: one every `every` (the first after one
/// interval), each lasting `length` (kill-all at most 2.5 s, as in a chaos
/// run), kinds and choices from `seed`; the last ends before `total`.
pub fn soak_schedule(seed: u64, faults: &[Fault], total: Duration, every: Duration, length: Duration) -> Vec<Window> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    if faults.is_empty() || every.is_zero() {
        return out;
    }
    let mut start = every;
    loop {
        let fault = *faults.choose(&mut rng).expect("not empty");
        let whole_cluster = matches!(fault, Fault::KillAll | Fault::PowerFailAll);
        let duration = if whole_cluster { length.min(Duration::from_millis(2500)) } else { length };
        let choice = rng.r#gen::<u64>();
        if start + duration >= total {
            break;
        }
        out.push(Window { start, duration, fault, choice });
        start += every;
    }
    out
}

/// Samples every node's RSS until `stop`, appending to `csv`; raises
/// `abort` (with the reason) when a node passes the limit or the disk runs
/// low.
async fn sample_rss(
    cfg: SoakConfig,
    csv: PathBuf,
    t0: tokio::time::Instant,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
    abort: watch::Sender<Option<String>>,
) -> Result<Vec<RssSample>> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(&csv)?);
    writeln!(file, "t_s,node,pid,rss_mb,acked_records,acked_mb")?;
    let me = std::process::id();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(cfg.rss_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        let t = t0.elapsed().as_secs_f64();
        let acked = counters.acked.load(Ordering::Relaxed);
        let acked_mb = counters.acked_bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64;
        for (node, pid) in node_pids(me) {
            let Some(rss_mb) =
                std::fs::read_to_string(format!("/proc/{pid}/status")).ok().as_deref().and_then(parse_vm_rss_mb)
            else {
                continue;
            };
            writeln!(file, "{t:.1},{node},{pid},{rss_mb:.1},{acked},{acked_mb:.1}")?;
            samples.push(RssSample { t, node, pid, rss_mb });
            if rss_mb > cfg.rss_limit_mb as f64 && abort.borrow().is_none() {
                let _ = abort.send(Some(format!(
                    "node {node} RSS {rss_mb:.0} MB passed SOAK_RSS_LIMIT_MB={} at {t:.0}s: soak ended early",
                    cfg.rss_limit_mb
                )));
            }
        }
        file.flush()?;
        let data_mb = dir_bytes(&cfg.out_dir.join("cluster")) >> 20;
        if data_mb > cfg.max_data_mb && abort.borrow().is_none() {
            let _ = abort.send(Some(format!(
                "node data {data_mb} MB passed SOAK_MAX_DATA_MB={} at {t:.0}s: soak ended early",
                cfg.max_data_mb
            )));
        }
        if let Some(free) = free_disk_mb(&cfg.out_dir)
            && free < cfg.min_free_disk_mb
            && abort.borrow().is_none()
        {
            let _ = abort.send(Some(format!(
                "{free} MB free under {} (below {} MB) at {t:.0}s: soak ended early",
                cfg.out_dir.display(),
                cfg.min_free_disk_mb
            )));
        }
    }
    Ok(samples)
}

/// How long the peak phase ramps up before its rate counts.
const PEAK_RAMP_UP: Duration = Duration::from_secs(3);
/// Outstanding sends per producer in the peak phase: enough to keep every
/// partition's batch full.
const PEAK_IN_FLIGHT: usize = 5_000;
/// The producers of the peak phase are numbered from here, so that their
/// values never collide with the soak phase's.
const PEAK_PRODUCER_BASE: u32 = 1000;

/// Runs a soak; see the module docs.
pub async fn run_soak(cfg: &SoakConfig) -> Result<SoakResult> {
    let topic = "soak";
    let out = &cfg.out_dir;
    std::fs::create_dir_all(out)?;
    let run_dir = out.join("cluster");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir).with_context(|| format!("remove {}", run_dir.display()))?;
    }
    // zstd-compressed: at tens of thousands of records a second the JSON
    // history runs to gigabytes.
    let history_path = out.join("soak.jsonl.zst");
    let report_path = out.join("soak.report.txt");
    let csv_path = out.join("rss.csv");
    let retry_deadline = Duration::from_secs(20);

    // The power faults need every node's data directory on a faultfs mount.
    let mut cluster_opts = chaos_options(&run_dir);
    cluster_opts.faultfs = cfg.faults.iter().any(|f| f.needs_faultfs());
    let mut cluster = Cluster::start(cfg.nodes, cluster_opts).await?;
    let net = if cfg.faults.iter().any(|f| f.needs_net()) { Some(Net::new(cluster.ips())?) } else { None };
    let client = cluster
        .client(ClientConfig { request_timeout: Duration::from_secs(5), retry_deadline, ..ClientConfig::default() })
        .await?;
    client.create_topic(topic, cfg.partitions, 3.min(cfg.nodes as u32)).await.context("create topic")?;
    cluster.wait_leaders(&client, topic, Duration::from_secs(60)).await?;
    // Streamed only: a soak's history is too long to hold twice.
    let rec = Recorder::streaming(&history_path)?;
    let base = WorkloadConfig {
        topic: topic.into(),
        partitions: cfg.partitions,
        producers: cfg.producers,
        rate: 0,
        max_in_flight: PEAK_IN_FLIGHT,
        idempotent: cfg.idempotent,
        record_size: cfg.record_size,
        churn: None,
        consumers: false,
        first_producer: PEAK_PRODUCER_BASE,
    };

    let (peak_rate, peak_records) = match cfg.rate {
        Some(_) => (None, 0),
        None => {
            eprintln!("soak: measuring peak throughput for {}s ...", cfg.peak_seconds);
            let mut peak = Workload::start(client.clone(), rec.clone(), base.clone());
            tokio::time::sleep(PEAK_RAMP_UP).await;
            let (a0, t0) = (peak.counters.acked.load(Ordering::Relaxed), tokio::time::Instant::now());
            tokio::time::sleep(Duration::from_secs(cfg.peak_seconds.max(1))).await;
            let a1 = peak.counters.acked.load(Ordering::Relaxed);
            let rate = (a1 - a0) as f64 / t0.elapsed().as_secs_f64();
            peak.stop_producers().await;
            peak.stop_consumers().await;
            eprintln!("soak: peak {rate:.0} records/s ({:.1} MB/s)", rate * cfg.record_size.max(1) as f64 / 1e6);
            (Some(rate), peak.counters.acked.load(Ordering::Relaxed))
        }
    };
    let rate = cfg.rate.unwrap_or_else(|| (peak_rate.unwrap_or(0.0) / 2.0) as u64).max(1);
    let per_producer = rate.div_ceil(cfg.producers.max(1) as u64) as u32;
    eprintln!(
        "soak: {}s at {rate} records/s ({per_producer} per producer, {} B records), a fault every {:?}",
        cfg.seconds, cfg.record_size, cfg.fault_every
    );

    let mut workload = Workload::start(
        client.clone(),
        rec.clone(),
        WorkloadConfig {
            rate: per_producer,
            max_in_flight: 1000,
            churn: cfg.churn.then(|| churn_config(&cluster, 3)),
            consumers: true,
            first_producer: 1,
            ..base
        },
    );
    let windows =
        soak_schedule(cfg.seed, &cfg.faults, Duration::from_secs(cfg.seconds), cfg.fault_every, cfg.fault_seconds);
    let mut nemesis = Nemesis::new(net, topic, cfg.partitions, rec.clone()).with_counters(workload.counters.clone());
    let t0 = tokio::time::Instant::now();
    let (stop_sampler, sampler_stop) = watch::channel(false);
    let (abort_tx, mut abort_rx) = watch::channel(None::<String>);
    let sampler =
        tokio::spawn(sample_rss(cfg.clone(), csv_path.clone(), t0, workload.counters.clone(), sampler_stop, abort_tx));
    let progress = tokio::spawn(report_progress(t0, workload.counters.clone()));
    let end = t0 + Duration::from_secs(cfg.seconds);
    let nemesis_result = tokio::select! {
        r = async {
            let r = nemesis.run(&mut cluster, &windows, t0).await;
            tokio::time::sleep_until(end).await;
            r
        } => r,
        _ = abort_rx.wait_for(|a| a.is_some()) => Ok(()),
    };
    let seconds = t0.elapsed().as_secs_f64();
    let records = workload.counters.acked.load(Ordering::Relaxed);
    let bytes = workload.counters.acked_bytes.load(Ordering::Relaxed);
    let _ = stop_sampler.send(true);
    progress.abort();
    let samples = sampler.await.context("RSS sampler")??;
    let mut problems: Vec<String> = abort_rx.borrow().iter().cloned().collect();
    eprintln!("soak: soak phase over after {seconds:.0}s; healing, final reads, checking ...");

    let (more, _) = wind_down(&mut cluster, &mut nemesis, &mut workload, &client, &rec, topic, nemesis_result).await;
    problems.extend(more);
    let events = nemesis.events().to_vec();
    drop(nemesis);
    drop(cluster);
    drop(client);

    // Checked from the file, one event at a time: the history of a soak at
    // tens of thousands of records a second does not fit in memory as
    // events, and the checker keeps about 100 bytes per record.
    rec.flush()?;
    let history = HistoryFile::new(&history_path);
    let report = check_events(&history)?;
    let rss = RssSummary::of(&samples, seconds);
    let result = SoakResult { seconds, peak_rate, rate, records, bytes, peak_records, rss, report, problems, events };
    let run = RunConfig {
        run: 1,
        seed: cfg.seed,
        seconds: cfg.seconds,
        faults: cfg.faults.clone(),
        nodes: cfg.nodes,
        partitions: cfg.partitions,
        replication: 3,
        producers: cfg.producers,
        rate: per_producer,
        idempotent: cfg.idempotent,
        retry_deadline,
        churn: cfg.churn,
        out_dir: out.clone(),
    };
    let mut text = soak_text(cfg, &result);
    text.push_str(&describe(&run, &result.report, &result.problems, &history, &result.events)?);
    std::fs::write(&report_path, text)?;
    // A clean soak's node data is only bulk (gigabytes); a failed one's is
    // evidence and stays.
    if result.passed(cfg.max_rss_slope) {
        for id in 1..=cfg.nodes {
            let _ = std::fs::remove_dir_all(run_dir.join(format!("node-{id}")).join("data"));
        }
    }
    Ok(result)
}

/// One progress line on stderr every 30 s.
async fn report_progress(t0: tokio::time::Instant, counters: Arc<Counters>) {
    let mut last = (0u64, 0.0f64);
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let t = t0.elapsed().as_secs_f64();
        let acked = counters.acked.load(Ordering::Relaxed);
        let rss: Vec<String> = node_pids(std::process::id())
            .iter()
            .filter_map(|(n, pid)| {
                let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                Some(format!("n{n}={:.0}MB", parse_vm_rss_mb(&s)?))
            })
            .collect();
        eprintln!(
            "soak: {t:.0}s acked={acked} ({:.0}/s) in-flight={} topics +{}/-{} rss {}",
            (acked - last.0) as f64 / (t - last.1),
            counters.in_flight.load(Ordering::Relaxed),
            counters.topics_created.load(Ordering::Relaxed),
            counters.topics_deleted.load(Ordering::Relaxed),
            rss.join(" ")
        );
        last = (acked, t);
    }
}

/// The soak part of the report: rates, memory per node.
fn soak_text(cfg: &SoakConfig, r: &SoakResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "soak: asked {}s, ran {:.0}s; peak {}; rate {} records/s of {} B; {} producers, {} partitions, {} nodes; a fault every {:?} for {:?} from {}; seed {}",
        cfg.seconds,
        r.seconds,
        r.peak_rate.map_or("not measured (SOAK_RATE given)".to_string(), |p| format!("{p:.0} records/s")),
        r.rate,
        cfg.record_size,
        cfg.producers,
        cfg.partitions,
        cfg.nodes,
        cfg.fault_every,
        cfg.fault_seconds,
        cfg.faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(","),
        cfg.seed
    );
    let _ = writeln!(
        s,
        "soak: acknowledged {} records ({:.0}/s, {:.1} MB) in the soak phase, {} in the peak phase",
        r.records,
        r.records as f64 / r.seconds.max(1e-9),
        r.bytes as f64 / 1e6,
        r.peak_records
    );
    let mb_min = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1} MB/min"));
    for (node, n) in &r.rss.nodes {
        let _ = writeln!(
            s,
            "soak: node {node} RSS start {:.0} MB, max {:.0} MB, end {:.0} MB, {} process(es); slope within \
             processes over the second half {}, of per-minute maxima {}",
            n.start_mb,
            n.max_mb,
            n.end_mb,
            n.processes,
            mb_min(n.within),
            mb_min(n.maxima)
        );
    }
    let _ = writeln!(s, "soak: max RSS {:.0} MB over {} samples (rss.csv)", r.rss.max_mb, r.rss.samples);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_files_in_nested_directories_when_sized_then_allocated_blocks_are_summed_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/one"), vec![1u8; 100_000]).unwrap();
        std::fs::write(dir.path().join("a/b/two"), vec![2u8; 200_000]).unwrap();
        // A sparse file: long, but almost nothing allocated.
        let sparse = std::fs::File::create(dir.path().join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();

        let bytes = dir_bytes(dir.path());

        assert!((300_000..400_000).contains(&bytes), "{bytes}");
        assert_eq!(dir_bytes(&dir.path().join("missing")), 0);
    }

    fn sample(t: f64, node: u64, pid: u32, rss_mb: f64) -> RssSample {
        RssSample { t, node, pid, rss_mb }
    }

    #[test]
    fn given_linear_growth_when_fitted_then_slope_is_mb_per_minute() {
        // 2 MB per second = 120 MB per minute.
        let s: Vec<_> = (0..20).map(|i| sample(i as f64, 1, 10, 300.0 + 2.0 * i as f64)).collect();
        let slope = slope_mb_per_min(&s).unwrap();
        assert!((slope - 120.0).abs() < 1e-6, "{slope}");
    }

    #[test]
    fn given_a_restart_in_the_window_when_fitted_then_the_drop_is_not_a_negative_slope() {
        // Growing 1 MB/s, restarted at t=10 (new pid, back to 300 MB),
        // growing 1 MB/s again: the slope is 60 MB/min, not negative.
        let mut s: Vec<_> = (0..10).map(|i| sample(i as f64, 1, 10, 900.0 + i as f64)).collect();
        s.extend((10..20).map(|i| sample(i as f64, 1, 11, 300.0 + (i - 10) as f64)));
        let slope = slope_mb_per_min(&s).unwrap();
        assert!((slope - 60.0).abs() < 1e-6, "{slope}");
    }

    #[test]
    fn given_flat_memory_or_too_few_samples_when_fitted_then_slope_is_zero_or_unknown() {
        let flat: Vec<_> =
            (0..10).map(|i| sample(i as f64, 1, 10, 400.0 + if i % 2 == 0 { 1.0 } else { -1.0 })).collect();
        assert!(slope_mb_per_min(&flat).unwrap().abs() < 15.0);
        assert_eq!(slope_mb_per_min(&[sample(1.0, 1, 10, 400.0)]), None);
        // Two processes with one sample each: nothing to fit.
        assert_eq!(slope_mb_per_min(&[sample(1.0, 1, 10, 400.0), sample(2.0, 1, 11, 500.0)]), None);
    }

    #[test]
    fn given_samples_of_a_run_when_summarized_then_only_the_second_half_counts_and_the_worst_node_is_named() {
        let mut s = Vec::new();
        for i in 0..100 {
            let t = i as f64;
            // Node 1 grows fast during warm-up only; node 2 grows steadily.
            s.push(sample(t, 1, 10, if t < 50.0 { 100.0 + 10.0 * t } else { 600.0 }));
            s.push(sample(t, 2, 20, 200.0 + 0.5 * t));
        }
        let r = RssSummary::of(&s, 100.0);
        assert!(r.slopes[&1].unwrap().abs() < 1e-6);
        assert!((r.slopes[&2].unwrap() - 30.0).abs() < 1e-6);
        assert_eq!(r.worst_slope().map(|(n, _)| n), Some(2));
        assert_eq!(r.max_mb, 600.0);
        assert_eq!(r.samples, 200);
    }

    #[test]
    fn given_a_node_restarted_late_when_summarized_then_its_catch_up_is_left_out() {
        // Restarted at t=250 (second half of a 400 s soak): climbs 2 MB/s
        // for 90 s while it catches up, then flat; before, flat too.
        let s: Vec<_> = (0..400)
            .map(|i| {
                let t = i as f64;
                if t < 250.0 { sample(t, 1, 10, 500.0) } else { sample(t, 1, 11, 300.0 + 2.0 * (t - 250.0).min(90.0)) }
            })
            .collect();
        let r = RssSummary::of(&s, 400.0);
        assert!(r.slopes[&1].unwrap().abs() < 1e-6, "{:?}", r.slopes);
        // Without the warm-up rule the climb would read as growth.
        assert!(slope_mb_per_min(&s[200..]).unwrap() > 10.0);
    }

    #[test]
    fn given_every_process_short_lived_when_summarized_then_the_slope_of_per_minute_maxima_is_the_verdict() {
        // A 600 s soak whose node restarts every 50 s: each process climbs
        // from 80 MB to a plateau, which is flat (node 1) or rises 10 MB
        // a minute with the soak's time (node 2, memory held per logged
        // record). No process outlives its warm-up in the second half.
        let mut s = Vec::new();
        for i in 0..300 {
            let t = i as f64 * 2.0;
            let pid = (t / 50.0) as u32;
            let age = t % 50.0;
            let climb = (age * 2.0).min(40.0);
            s.push(sample(t, 1, 100 + pid, 80.0 + climb));
            s.push(sample(t, 2, 200 + pid, 80.0 + climb + t / 6.0));
        }
        let r = RssSummary::of(&s, 600.0);
        let (n1, n2) = (r.nodes[&1], r.nodes[&2]);
        assert_eq!((n1.within, n2.within), (None, None), "{r:?}");
        assert!(n1.maxima.unwrap().abs() < 1.0, "{n1:?}");
        assert!((n2.maxima.unwrap() - 10.0).abs() < 1.0, "{n2:?}");
        assert_eq!(r.slopes[&2], n2.maxima);
        assert_eq!(r.worst_slope().map(|(n, _)| n), Some(2));
        assert_eq!((n1.start_mb, n1.max_mb, n1.processes), (80.0, 120.0, 12));
        // A long-lived process's own fit is the verdict when there is one.
        let long: Vec<_> = (0..300).map(|i| sample(i as f64 * 2.0, 3, 9, 100.0 + i as f64 * 0.01)).collect();
        let r = RssSummary::of(&long, 600.0);
        assert_eq!(r.slopes[&3], r.nodes[&3].within);
        assert!(r.nodes[&3].within.is_some() && r.nodes[&3].maxima.is_some());
    }

    #[test]
    fn given_proc_texts_when_parsed_then_command_parent_id_and_rss_are_found() {
        assert_eq!(parse_stat("4242 (replog-node) S 17 4242 4242 0 -1"), Some(("replog-node", 17)));
        // A command with spaces and parentheses.
        assert_eq!(parse_stat("7 (a (b) c) R 1 7 7"), Some(("a (b) c", 1)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(node_id_arg(b"replog-node\0--id\x003\0--listen\x00127.0.0.13:1\0"), Some(3));
        assert_eq!(node_id_arg(b"replog-node\0--listen\0x\0"), None);
        let status = "Name:\treplog-node\nVmPeak:\t  900000 kB\nVmRSS:\t  563736 kB\nThreads:\t9\n";
        assert!((parse_vm_rss_mb(status).unwrap() - 550.523).abs() < 0.01);
        assert_eq!(parse_vm_rss_mb("Name:\tx\n"), None);
        let csv = "t_s,node,pid,rss_mb,acked_records,acked_mb\n0.0,1,9230,54.4,0,0.0\n2.0,2,9231,60.5,10,0.1\n";
        assert_eq!(read_rss_csv(csv).unwrap(), vec![sample(0.0, 1, 9230, 54.4), sample(2.0, 2, 9231, 60.5)]);
        assert!(read_rss_csv("t_s,node\n1.0,x,1,2\n").is_err());
    }

    #[test]
    fn given_running_nodes_when_listed_then_only_our_children_named_replog_node_are_found() {
        // This test process has no node children.
        assert!(node_pids(std::process::id()).is_empty());
    }

    #[test]
    fn given_soak_schedule_then_one_fault_per_interval_each_healed_before_the_next_and_the_end() {
        let every = Duration::from_secs(30);
        let w = soak_schedule(7, &Fault::ALL, Duration::from_secs(600), every, Duration::from_secs(5));
        assert_eq!(w.len(), 19, "{w:?}");
        for (i, x) in w.iter().enumerate() {
            assert_eq!(x.start, every * (i as u32 + 1));
            assert!(x.duration <= Duration::from_secs(5));
            if x.fault == Fault::KillAll {
                assert!(x.duration <= Duration::from_millis(2500));
            }
        }
        assert!(w.last().map(|x| x.start + x.duration < Duration::from_secs(600)).unwrap());
        assert_eq!(w, soak_schedule(7, &Fault::ALL, Duration::from_secs(600), every, Duration::from_secs(5)));
        assert!(soak_schedule(7, &[], Duration::from_secs(600), every, Duration::from_secs(5)).is_empty());
    }
}
