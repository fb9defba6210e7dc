//! One chaos run, end to end: a fresh cluster, a topic, the workload under
//! the nemesis for the run's duration, healing, final reads, the checker.
//!
//! [`run_once`] leaves behind, under the output directory:
//!
//! - `run-<n>.jsonl`: the history (streamed while the run goes, so a run
//!   that dies half-way still leaves it);
//! - `run-<n>.nemesis.log`: every fault with its times on the history's
//!   clock;
//! - `run-<n>.report.txt`: the checker's report, every anomaly with the
//!   faults active while its writes were in flight;
//! - `run-<n>/`: the nodes' data and logs (`node-<i>.log`).
//!
//! [`wind_down`] is the part every run ends with (heal, wait for the
//! cluster, stop the workload, final reads, settled topic states); the soak
//! ([`crate::soak`]) shares it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use replog_client::{Client, ClientConfig};
use replog_testkit::{Cluster, clear_run_dir, target_dir};

use crate::checker::{AnomalyKind, Report, check};
use crate::cluster::options_from_env;
use crate::history::{Event, Events, Outcome, Recorder, SendOp, TopicOp, TopicOutcome};
use crate::nemesis::{Fault, Nemesis, NemesisEvent, schedule};
use crate::net::Net;
use crate::workload::{ChurnConfig, Workload, WorkloadConfig, final_reads, settle_topic_states};

/// Everything that defines one run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// 1-based run number (names the files).
    pub run: u32,
    pub seed: u64,
    pub seconds: u64,
    pub faults: Vec<Fault>,
    pub nodes: u64,
    pub partitions: u32,
    pub replication: u32,
    pub producers: u32,
    /// Sends per second per producer.
    pub rate: u32,
    /// The SDK's idempotent producer on (the default) or off.
    pub idempotent: bool,
    /// The SDK's retry deadline for the workload's requests: shorter than
    /// the fault windows, it turns more writes indeterminate.
    pub retry_deadline: Duration,
    /// Topics created and deleted under the faults, beside the main topic.
    pub churn: bool,
    pub out_dir: PathBuf,
}

/// The topic-churn client of a run on `cluster`: two names used in turn
/// (so each is created again every other cycle), two partitions each.
pub fn churn_config(cluster: &Cluster, replication: u32) -> ChurnConfig {
    ChurnConfig {
        names: 2,
        partitions: 2,
        replication: replication.min(cluster.ids().len() as u32),
        records: 20,
        nodes: cluster.addrs().into_values().collect(),
    }
}

/// How long the cluster gets to come back after healing, and the replicas
/// to catch up with their leaders before the final reads, at each step of
/// [`wind_down`]: `CHAOS_RECOVERY_SECONDS`, else 60 s, or 15 s with a
/// planted bug (`CHAOS_PLANT`), which can leave partition groups that never
/// open again: every step would wait its limit out, some ten minutes for a
/// run.
pub fn recovery_limit() -> Duration {
    let planted = std::env::var("CHAOS_PLANT").is_ok_and(|v| !v.trim().is_empty());
    let seconds = std::env::var("CHAOS_RECOVERY_SECONDS").ok().and_then(|v| v.trim().parse::<u64>().ok());
    Duration::from_secs(seconds.unwrap_or(if planted { 15 } else { 60 }))
}

/// The end of every run: heals what the nemesis left (`nemesis_result` is
/// how its schedule went), waits until the cluster serves `topic` again,
/// stops the workload, reads every partition of `topic` and of the churned
/// topics still alive from the leader and every replica, and records what
/// each node says about the churned names. Returns the problems found on
/// the way (each one fails the run) and the number of records read.
pub async fn wind_down(
    cluster: &mut Cluster,
    nemesis: &mut Nemesis,
    workload: &mut Workload,
    client: &Client,
    rec: &Recorder,
    topic: &str,
    nemesis_result: Result<()>,
) -> (Vec<String>, u64) {
    let limit = recovery_limit();
    let heal_result = nemesis.heal_all(cluster);
    let mut problems: Vec<String> = Vec::new();
    if let Err(e) = nemesis_result.and(heal_result) {
        problems.push(format!("nemesis failed: {e:#}"));
        // Heal what can be healed; the final reads still run.
        let _ = nemesis.heal_all(cluster);
    }

    // Healed: the cluster must come back, with a leader for every
    // partition, while the producers keep writing.
    let ready = async {
        cluster.wait_ready(limit).await?;
        cluster.wait_leaders(client, topic, limit).await
    }
    .await;
    if let Err(e) = &ready {
        problems.push(format!("after healing: {e:#}"));
    }
    // Moves of the `move` fault, and of the balancer when there are more
    // nodes than replicas.
    if let Err(e) = moves_settled(cluster, limit).await {
        problems.push(format!("after healing: {e:#}"));
    }
    let churned = workload.stop_producers().await;
    problems.extend(churned.notes.iter().map(|n| format!("topic churn: {n}")));
    problems.extend(workload.stop_consumers().await);
    let addrs = cluster.addrs();
    let mut read = 0;
    let mut topics = vec![(topic.to_string(), 0, true)];
    topics.extend(churned.live.iter().cloned());
    for (name, generation, certain) in topics {
        if name != topic && !certain && client.describe_topic(&name).await.is_err() {
            // A create whose outcome was unknown that did not land.
            continue;
        }
        match final_reads(client, rec, &name, generation, &addrs, limit).await {
            Ok(n) => {
                problems.extend(n.notes);
                read += n.records;
            }
            Err(e) => problems.push(format!("final reads of {name}: {e:#}")),
        }
    }
    let nodes: Vec<String> = addrs.into_values().collect();
    problems.extend(settle_topic_states(client, rec, &nodes, &churned.names, limit).await);
    problems.extend(nemesis.crashes.iter().cloned());
    for (id, status) in cluster.exited() {
        problems.push(format!("node {id} exited on its own ({status})"));
    }
    (problems, read)
}

/// Waits until no partition move is under way: every move the nemesis
/// started completed or was rolled back, and none hangs.
async fn moves_settled(cluster: &Cluster, limit: Duration) -> Result<()> {
    let admin = cluster.client(ClientConfig::default()).await?;
    let last = std::sync::Mutex::new(Vec::new());
    let settled = replog_testkit::wait::poll_until("every partition move to finish", limit, || async {
        let s = admin.move_status().await.ok()?;
        *last.lock().expect("last") =
            s.moves.iter().map(|m| format!("group {} {:?} -> {:?}", m.group_id, m.from, m.to)).collect();
        s.moves.is_empty().then_some(())
    })
    .await;
    settled.map_err(|e| anyhow::anyhow!("{e:#}; still moving: {}", last.lock().expect("last").join(", ")))
}

/// What a run produced.
pub struct RunResult {
    pub report: Report,
    /// The faults actually applied, in order.
    pub events: Vec<NemesisEvent>,
    /// Findings beside the checker's anomalies: node crashes, replicas that
    /// never caught up, corrupt reads. Each one fails the run.
    pub problems: Vec<String>,
    pub history_path: PathBuf,
    pub report_path: PathBuf,
    /// The queue checker's verdict, for a run of the queue workload
    /// ([`crate::queue_workload`]).
    pub queue: Option<crate::queue_workload::QueueReport>,
}

/// Reads environment variable `name`, or `default` when unset or empty.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|e| anyhow::anyhow!("{name}={v:?}: {e}")),
        _ => Ok(default),
    }
}

/// A 1/0 switch (also true/false, on/off); unset or empty is `default`.
pub fn env_flag(name: &str, default: bool) -> Result<bool> {
    match std::env::var(name).unwrap_or_default().trim() {
        "" => Ok(default),
        "1" | "true" | "on" => Ok(true),
        "0" | "false" | "off" => Ok(false),
        v => anyhow::bail!("{name} must be 1 or 0, got {v:?}"),
    }
}

/// The seed of run `run` (1-based) of a schedule seeded with `base`: run 1
/// uses `base` itself, so `CHAOS_RUNS=1 CHAOS_SEED=<a run's seed>` repeats
/// that run.
pub fn run_seed(base: u64, run: u32) -> u64 {
    if run <= 1 {
        return base;
    }
    // splitmix64 of base + run
    let mut z = base.wrapping_add((run as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The body of a harness binary (`chaos`, `soak`): runs `work` on its
/// settings to its end, or until Ctrl-C, and turns the outcome into the
/// process's exit code: 2 bad settings, 0 passed, 1 failed or an error
/// (printed after `prog:`), 130 interrupted. Ctrl-C drops the work in
/// progress: its cluster kills its nodes and the network faults are
/// removed (Drop impls) before the process exits.
pub async fn run_main<S, F, Fut>(prog: &str, settings: Result<S>, work: F) -> ExitCode
where
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let settings = match settings.with_context(|| format!("{prog} configuration")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{prog}: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = tokio::select! {
        r = work(settings) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("{prog}: interrupted; cleaned up");
            return ExitCode::from(130);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{prog}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The directory for chaos output: `<target>/chaos`, the target directory
/// found above the running executable.
pub fn default_out_dir() -> PathBuf {
    target_dir().map_or_else(|_| PathBuf::from("target/chaos"), |t| t.join("chaos"))
}

/// What every kind of run starts from: its node directory cleared, a
/// cluster with what the run's faults need (FUSE volumes, per-node
/// addresses for the network controller), a client bounded by the run's
/// retry deadline, and `topic` created with a leader for every partition.
pub(crate) async fn start_run(cfg: &RunConfig, topic: &str) -> Result<(Cluster, Option<Net>, Client)> {
    std::fs::create_dir_all(&cfg.out_dir)?;
    let run_dir = cfg.out_dir.join(format!("run-{}", cfg.run));
    clear_run_dir(&run_dir)?;
    let (cluster_opts, secure) = options_from_env(&run_dir, cfg.faults.iter().any(|f| f.needs_faultfs()))?;
    let cluster = Cluster::start(cfg.nodes, cluster_opts).await?;
    let net = if cfg.faults.iter().any(|f| f.needs_net()) { Some(Net::new(cluster.ips())?) } else { None };
    let config = ClientConfig {
        request_timeout: Duration::from_secs(5).min(cfg.retry_deadline),
        retry_deadline: cfg.retry_deadline,
        ..ClientConfig::default()
    };
    let client = match &secure {
        Some(s) => s.workload_client(&cluster, config, Duration::from_secs(60)).await?,
        None => cluster.client(config).await?,
    };
    client.create_topic(topic, cfg.partitions, cfg.replication.min(cfg.nodes as u32)).await.context("create topic")?;
    cluster.wait_leaders(&client, topic, Duration::from_secs(60)).await?;
    Ok((cluster, net, client))
}

/// Runs one chaos run; see the module docs.
pub async fn run_once(cfg: &RunConfig) -> Result<RunResult> {
    let topic = "chaos";
    let out = &cfg.out_dir;
    let history_path = out.join(format!("run-{}.jsonl", cfg.run));
    let report_path = out.join(format!("run-{}.report.txt", cfg.run));
    let nemesis_path = out.join(format!("run-{}.nemesis.log", cfg.run));

    let windows = schedule(cfg.seed, &cfg.faults, Duration::from_secs(cfg.seconds));
    let (mut cluster, net, client) = start_run(cfg, topic).await?;

    let rec = Recorder::create(&history_path)?;
    let mut workload = Workload::start(
        client.clone(),
        rec.clone(),
        WorkloadConfig {
            topic: topic.into(),
            partitions: cfg.partitions,
            producers: cfg.producers,
            rate: cfg.rate,
            max_in_flight: 200,
            idempotent: cfg.idempotent,
            record_size: 0,
            churn: cfg.churn.then(|| churn_config(&cluster, cfg.replication)),
            consumers: true,
            first_producer: 1,
        },
    );
    let mut nemesis = Nemesis::new(net, topic, cfg.partitions, rec.clone()).with_counters(workload.counters.clone());
    let t0 = tokio::time::Instant::now();
    let nemesis_result = nemesis.run(&mut cluster, &windows, t0).await;
    tokio::time::sleep_until(t0 + Duration::from_secs(cfg.seconds)).await;
    let (problems, _) =
        wind_down(&mut cluster, &mut nemesis, &mut workload, &client, &rec, topic, nemesis_result).await;
    let history = rec.finish()?;
    let events = nemesis.events().to_vec();
    drop(nemesis); // heals the network and removes the chain (Net's drop)
    drop(cluster);

    let log: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&nemesis_path, &log)?;
    let report = check(&history);
    std::fs::write(&report_path, describe(cfg, &report, &problems, &history, &events)?)?;
    Ok(RunResult { report, events, problems, history_path, report_path, queue: None })
}

/// The run's report: counts, every anomaly, and for each anomaly the send
/// attempts of its values with the faults active while they were in flight.
pub fn describe(
    cfg: &RunConfig,
    report: &Report,
    problems: &[String],
    history: &dyn Events,
    events: &[NemesisEvent],
) -> io::Result<String> {
    // The send attempts and topic operations the anomalies name, found in
    // one pass over the history (which may be a file too long to load).
    let named_values: HashSet<&str> =
        report.anomalies.iter().flat_map(|a| a.values.iter().map(String::as_str)).collect();
    let named_topics: HashSet<&str> = report
        .anomalies
        .iter()
        .filter(|a| matches!(a.kind, AnomalyKind::UndeletedTopic | AnomalyKind::MissingTopic))
        .map(|a| a.topic.as_str())
        .collect();
    let mut sends: HashMap<String, Vec<SendOp>> = HashMap::new();
    let mut topic_ops: Vec<TopicOp> = Vec::new();
    if !report.anomalies.is_empty() {
        history.scan(&mut |e| match e {
            Event::Send(op) if named_values.contains(op.value.as_str()) => {
                sends.entry(op.value.clone()).or_default().push(op.clone())
            }
            Event::Topic(op) if named_topics.contains(op.topic.as_str()) => topic_ops.push(op.clone()),
            _ => {}
        })?;
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "run {} seed {} faults {} seconds {} nodes {} idempotent {} retry deadline {:?} topic churn {}",
        cfg.run,
        cfg.seed,
        cfg.faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(","),
        cfg.seconds,
        cfg.nodes,
        cfg.idempotent,
        cfg.retry_deadline,
        cfg.churn
    );
    let _ = writeln!(s, "{}\n{report}\n", Report::header());
    let _ = writeln!(s, "nemesis:");
    for e in events {
        let _ = writeln!(s, "  {e}");
    }
    if !problems.is_empty() {
        let _ = writeln!(s, "problems:");
        for p in problems {
            let _ = writeln!(s, "  {p}");
        }
    }
    let _ = writeln!(s, "anomalies: {}", report.anomaly_count());
    let during = |start_us: u64, end_us: u64| {
        let during: Vec<String> = events
            .iter()
            .filter(|e| e.start_us <= end_us && start_us <= e.end_us)
            .map(|e| format!("{} ({})", e.fault, e.detail))
            .collect();
        if during.is_empty() { "no fault".to_string() } else { during.join("; ") }
    };
    for a in &report.anomalies {
        let _ = writeln!(s, "  {a}");
        if matches!(a.kind, AnomalyKind::UndeletedTopic | AnomalyKind::MissingTopic) {
            for op in topic_ops.iter().filter(|op| op.topic == a.topic) {
                let outcome = match &op.outcome {
                    TopicOutcome::Ok { topic_id } => format!("ok (id {topic_id})"),
                    TopicOutcome::Fail { error } => format!("fail: {error}"),
                    TopicOutcome::Unknown { error } => format!("unknown: {error}"),
                };
                let _ = writeln!(
                    s,
                    "    {:?} g{} {:.3}s–{:.3}s -> {outcome}; while: {}",
                    op.action,
                    op.generation,
                    op.start_us as f64 / 1e6,
                    op.end_us as f64 / 1e6,
                    during(op.start_us, op.end_us)
                );
            }
        }
        for v in &a.values {
            for op in sends.get(v).into_iter().flatten() {
                let outcome = match &op.outcome {
                    Outcome::Ok { partition, offset } => format!("ok {partition}@{offset}"),
                    Outcome::Fail { error } => format!("fail: {error}"),
                    Outcome::Unknown { error } => format!("unknown: {error}"),
                };
                let _ = writeln!(
                    s,
                    "    send {v} by {} {:.3}s–{:.3}s -> {outcome}; while: {}",
                    op.producer,
                    op.start_us as f64 / 1e6,
                    op.end_us as f64 / 1e6,
                    during(op.start_us, op.end_us)
                );
            }
        }
    }
    Ok(s)
}

/// The anomalies of a report by kind, compactly: `duplicate=3 lost-write=1`.
pub fn anomaly_summary(report: &Report) -> String {
    let parts: Vec<String> = AnomalyKind::ALL
        .iter()
        .filter(|k| report.count(**k) > 0)
        .map(|k| format!("{k}={}", report.count(*k)))
        .collect();
    if parts.is_empty() { "none".into() } else { parts.join(" ") }
}

/// The faults that were applied, by kind with counts: `kill×2,pause×1`.
pub fn fault_summary(events: &[NemesisEvent]) -> String {
    let mut by: BTreeMap<Fault, usize> = BTreeMap::new();
    for e in events {
        *by.entry(e.fault).or_default() += 1;
    }
    if by.is_empty() {
        return "-".into();
    }
    by.iter().map(|(f, n)| format!("{}x{n}", f.name())).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{FinalRead, History, ReadRecord, SendOp};

    #[test]
    fn given_run_seed_then_run_one_uses_the_base_seed_and_others_differ() {
        assert_eq!(run_seed(42, 1), 42);
        assert_ne!(run_seed(42, 2), 42);
        assert_ne!(run_seed(42, 2), run_seed(42, 3));
        assert_eq!(run_seed(42, 7), run_seed(42, 7));
    }

    #[test]
    fn given_duplicate_when_described_then_report_names_its_sends_and_the_fault_in_flight() {
        let mut h = History::new();
        h.push(SendOp {
            producer: "p1".into(),
            topic: "chaos".into(),
            partition: None,
            value: "w-1-0".into(),
            outcome: Outcome::Ok { partition: 0, offset: 1 },
            start_us: 1_000_000,
            end_us: 3_000_000,
            generation: 0,
            seq: None,
        });
        h.push(FinalRead {
            reader: "leader".into(),
            topic: "chaos".into(),
            partition: 0,
            start_offset: 0,
            high_watermark: 2,
            records: vec![ReadRecord::new(0, "w-1-0"), ReadRecord::new(1, "w-1-0")],
            start_us: 4_000_000,
            end_us: 4_100_000,
            generation: 0,
        });
        let report = check(&h);
        assert_eq!(report.count(AnomalyKind::Duplicate), 1);
        let events = vec![
            NemesisEvent {
                fault: Fault::Kill,
                detail: "SIGKILL node 2".into(),
                start_us: 2_000_000,
                end_us: 2_500_000,
            },
            NemesisEvent { fault: Fault::Pause, detail: "later".into(), start_us: 3_500_000, end_us: 3_900_000 },
        ];
        let cfg = RunConfig {
            run: 1,
            seed: 7,
            seconds: 10,
            faults: vec![Fault::Kill],
            nodes: 3,
            partitions: 1,
            replication: 3,
            producers: 1,
            rate: 1,
            idempotent: true,
            retry_deadline: Duration::from_secs(1),
            churn: false,
            out_dir: PathBuf::from("unused"),
        };
        let text = describe(&cfg, &report, &[], &h, &events).unwrap();
        assert!(text.contains("duplicate chaos/0 offsets=[0, 1]"), "{text}");
        assert!(text.contains("send w-1-0 by p1 1.000s–3.000s -> ok 0@1; while: kill (SIGKILL node 2)"), "{text}");
        let send_line = text.lines().find(|l| l.contains("send w-1-0")).unwrap();
        assert!(!send_line.contains("later"), "a fault after the send ended is not blamed: {send_line}");
        assert_eq!(anomaly_summary(&report), "duplicate=1");
        assert_eq!(fault_summary(&events), "killx1,pausex1");
    }
}
