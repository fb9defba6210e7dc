//! `make chaos`: chaos runs against real local clusters, one table row per
//! run, and the contract's last line `chaos: runs=R acknowledged=A
//! anomalies=N`.
//!
//! Environment (see docs/chaos.md):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CHAOS_RUNS` | 20 | runs, each on a fresh cluster |
//! | `CHAOS_SECONDS` | 60 | workload + nemesis time per run |
//! | `CHAOS_SEED` | random (printed) | seed of run 1; run n's seed is derived from it and printed |
//! | `CHAOS_FAULTS` | all | comma list of faults (`kill,pause,partition-leader,partition-split,partition-bridge,partition-oneway,kill-all,netem,power-fail,power-fail-all,move`, or `partition`; `move` needs `CHAOS_NODES` ≥ 4 and `all` leaves it out below that) |
//! | `CHAOS_NODES` | 3 | nodes per cluster (3 or 5) |
//! | `CHAOS_PARTITIONS` | 6 | partitions of the topic (replication factor 3) |
//! | `CHAOS_PRODUCERS` | 4 | producers |
//! | `CHAOS_RATE` | 50 | sends per second per producer |
//! | `CHAOS_DEADLINE_MS` | 20000 | the workload client's retry deadline; below the fault windows (3–7 s) it makes writes indeterminate |
//! | `CHAOS_IDEMPOTENT` | 1 | 0 turns the SDK's idempotent producer off (retries may then append twice: `duplicate`) |
//! | `CHAOS_TOPIC_CHURN` | 1 | 0 turns off the client that creates and deletes topics under the faults |
//! | `CHAOS_OUT` | `target/chaos` | where histories, reports and node logs go |
//! | `CHAOS_TOLERATE` | none | anomaly kinds that are counted and printed but do not make the exit code non-zero |
//! | `CHAOS_FAULTFS` | auto | `auto`: nodes' data directories on replog-faultfs mounts when a power fault is enabled; `1` always; `0` never |
//! | `CHAOS_WORKLOAD` | `mix` | `log` (producers and readers of the log), `queue` (queue consumers: exactly-once settlement, `replog_chaos::queue_workload`), or `mix`: every third run is a queue run |
//! | `CHAOS_PLANT` | none | a planted bug in every node (`skip-fsync`): the schedule then checks that the runs catch it |
//! | `CHAOS_RECOVERY_SECONDS` | 60 (15 with `CHAOS_PLANT`) | how long each step of a run's end waits for the cluster to come back, for leaders and for replicas to catch up |
//!
//! `chaos check HISTORY.jsonl` runs the checker on a stored history instead;
//! `chaos net partition|delay|heal|show …` injects network faults by hand
//! (`chaos net --help`, and `replog_chaos::net_cmd`).
//!
//! Exit code: 0 when no run had an anomaly (or only tolerated ones) and no
//! run hit a problem (crash, failed heal, replica that never caught up), 1
//! otherwise, 2 on bad configuration. With `CHAOS_PLANT` the bug is meant
//! to be caught: 0 when every run reported lost acknowledged writes
//! (`lost-write` or `unseen`), 1 otherwise.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use replog_chaos::checker::{AnomalyKind, Report, check_events};
use replog_chaos::cluster::Plant;
use replog_chaos::history::HistoryFile;
use replog_chaos::nemesis::Fault;
use replog_chaos::net_cmd::{self, NetCommand, Scope, Target, parse_group};
use replog_chaos::queue_workload::run_queue_once;
use replog_chaos::runner::{
    RunConfig, anomaly_summary, default_out_dir, env_flag, env_or, fault_summary, run_main, run_once, run_seed,
};

/// Chaos runs against real local clusters, as configured by the CHAOS_*
/// variables (docs/chaos.md); or one of the subcommands.
#[derive(Parser)]
#[command(name = "chaos")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the checker on a stored history (a chaos run's or a soak's);
    /// exit 0 when it is clean.
    Check { history: String },
    /// Network faults by hand between the nodes of an `ops/cluster.sh`
    /// cluster or a real deployment; they stay until `chaos net heal`.
    /// Needs root.
    Net(NetArgs),
}

#[derive(Args)]
struct NetArgs {
    /// The nodes, ID=IP,... (on real hosts: run the same command on every
    /// node host); else the cluster.env of --cluster-dir.
    #[arg(long, env = "REPLOG_NODE_IPS", global = true)]
    nodes: Option<String>,
    /// The ops/cluster.sh state directory, started with REPLOG_PER_NODE_IP=1.
    #[arg(long, env = "REPLOG_CLUSTER_DIR", default_value = "target/replog-cluster", global = true)]
    cluster_dir: String,
    /// The device that delays act on.
    #[arg(long, env = "REPLOG_NETEM_DEV", default_value = "lo", global = true)]
    dev: String,
    #[command(subcommand)]
    cmd: NetSub,
}

#[derive(Subcommand)]
enum NetSub {
    /// Drop every packet between groups of nodes (iptables rules per pair
    /// of node addresses); client traffic is never matched.
    #[command(subcommand)]
    Partition(PartitionHow),
    /// Delay, jitter and loss on every node-to-node link (tc netem; where
    /// the kernel has no sch_netem, a slow shaped link plus random loss).
    Delay {
        #[arg(long = "delay", value_name = "MS", default_value_t = 100)]
        delay_ms: u32,
        #[arg(long = "jitter", value_name = "MS", default_value_t = 25)]
        jitter_ms: u32,
        #[arg(long = "loss", value_name = "PCT", default_value_t = 5.0)]
        loss_pct: f64,
    },
    /// Remove faults: everything (also what a crashed chaos run left), or
    /// only the partitions or the delay.
    Heal {
        #[arg(value_enum, default_value_t = ScopeArg::All)]
        scope: ScopeArg,
    },
    /// The faults in force: iptables rules, qdiscs, classes and filters.
    Show {
        #[arg(value_enum, default_value_t = ScopeArg::All)]
        scope: ScopeArg,
    },
}

#[derive(Subcommand)]
enum PartitionHow {
    /// Cut node ID off from every other node.
    Isolate { id: u64 },
    /// Groups (comma lists, e.g. `1 2,3`) that cannot reach each other.
    Split {
        #[arg(required = true, num_args = 2..)]
        groups: Vec<String>,
    },
    /// LEFT and RIGHT (comma lists) cannot talk; MIDDLE talks to both.
    Bridge { left: String, middle: u64, right: String },
    /// Drop packets FROM -> TO only (TO -> FROM pass).
    Oneway { from: u64, to: u64 },
}

#[derive(Clone, Copy, ValueEnum)]
enum ScopeArg {
    All,
    Partitions,
    Delay,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Scope {
        match s {
            ScopeArg::All => Scope::All,
            ScopeArg::Partitions => Scope::Partitions,
            ScopeArg::Delay => Scope::Delay,
        }
    }
}

impl NetSub {
    fn command(self) -> Result<NetCommand> {
        Ok(match self {
            NetSub::Partition(PartitionHow::Isolate { id }) => NetCommand::Isolate(id),
            NetSub::Partition(PartitionHow::Split { groups }) => {
                NetCommand::Split(groups.iter().map(|g| parse_group(g)).collect::<Result<_>>()?)
            }
            NetSub::Partition(PartitionHow::Bridge { left, middle, right }) => {
                NetCommand::Bridge(parse_group(&left)?, middle, parse_group(&right)?)
            }
            NetSub::Partition(PartitionHow::Oneway { from, to }) => NetCommand::Oneway(from, to),
            NetSub::Delay { delay_ms, jitter_ms, loss_pct } => NetCommand::Delay { delay_ms, jitter_ms, loss_pct },
            NetSub::Heal { scope } => NetCommand::Heal(scope.into()),
            NetSub::Show { scope } => NetCommand::Show(scope.into()),
        })
    }
}

struct Settings {
    runs: u32,
    seed: u64,
    base: RunConfig,
    tolerate: Vec<AnomalyKind>,
    plant: Option<Plant>,
    workload: Workload,
}

/// Which workload the runs use (`CHAOS_WORKLOAD`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Log,
    Queue,
    /// Every third run is a queue run.
    Mix,
}

impl Workload {
    fn from_env() -> Result<Workload> {
        match std::env::var("CHAOS_WORKLOAD").unwrap_or_default().trim() {
            "" | "mix" => Ok(Workload::Mix),
            "log" => Ok(Workload::Log),
            "queue" => Ok(Workload::Queue),
            w => bail!("CHAOS_WORKLOAD must be log, queue or mix, got {w:?}"),
        }
    }

    fn queue_run(self, run: u32) -> bool {
        match self {
            Workload::Log => false,
            Workload::Queue => true,
            Workload::Mix => run.is_multiple_of(3),
        }
    }
}

fn settings() -> Result<Settings> {
    let runs: u32 = env_or("CHAOS_RUNS", 20)?;
    let seconds: u64 = env_or("CHAOS_SECONDS", 60)?;
    let seed: u64 = env_or("CHAOS_SEED", rand::random::<u64>())?;
    let named = std::env::var("CHAOS_FAULTS").unwrap_or_default();
    let mut faults = Fault::parse_list(&named)?;
    let nodes: u64 = env_or("CHAOS_NODES", 3)?;
    if !(3..=9).contains(&nodes) {
        bail!("CHAOS_NODES must be 3..9 (3 or 5 make sense), got {nodes}");
    }
    // A move needs a node outside a partition's three replicas.
    if nodes <= 3 && faults.contains(&Fault::Move) {
        if named.split(',').any(|n| n.trim() == Fault::Move.name()) {
            bail!("the move fault needs more nodes than replicas: set CHAOS_NODES=4 or more");
        }
        faults.retain(|f| *f != Fault::Move);
    }
    if runs == 0 || seconds < 5 {
        bail!("CHAOS_RUNS must be > 0 and CHAOS_SECONDS >= 5");
    }
    let out_dir = std::env::var("CHAOS_OUT").map(Into::into).unwrap_or_else(|_| default_out_dir());
    let mut tolerate = Vec::new();
    for k in std::env::var("CHAOS_TOLERATE").unwrap_or_default().split(',').map(str::trim) {
        if k.is_empty() {
            continue;
        }
        match AnomalyKind::ALL.iter().find(|a| a.name() == k) {
            Some(a) => tolerate.push(*a),
            None => bail!("CHAOS_TOLERATE: unknown anomaly kind {k:?}"),
        }
    }
    Ok(Settings {
        runs,
        seed,
        tolerate,
        plant: Plant::from_env()?,
        workload: Workload::from_env()?,
        base: RunConfig {
            run: 0,
            seed,
            seconds,
            faults,
            nodes,
            partitions: env_or("CHAOS_PARTITIONS", 6)?,
            replication: 3,
            producers: env_or("CHAOS_PRODUCERS", 4)?,
            rate: env_or("CHAOS_RATE", 50)?,
            retry_deadline: std::time::Duration::from_millis(env_or("CHAOS_DEADLINE_MS", 20_000)?),
            idempotent: env_flag("CHAOS_IDEMPOTENT", true)?,
            churn: env_flag("CHAOS_TOPIC_CHURN", true)?,
            out_dir,
        },
    })
}

async fn run_all(s: &Settings) -> Result<bool> {
    let faults = s.base.faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(",");
    println!(
        "chaos: runs={} seconds={} seed={} faults={} nodes={} idempotent={} topic-churn={} deadline={:?} out={}",
        s.runs,
        s.base.seconds,
        s.seed,
        faults,
        s.base.nodes,
        s.base.idempotent,
        s.base.churn,
        s.base.retry_deadline,
        s.base.out_dir.display()
    );
    println!(
        "chaos: reproduce one run with CHAOS_RUNS=1 CHAOS_SEED=<its seed> CHAOS_SECONDS={} CHAOS_FAULTS={faults} CHAOS_NODES={}",
        s.base.seconds, s.base.nodes
    );
    if let Some(p) = s.plant {
        let (k, v) = p.env();
        println!(
            "chaos: planted bug {}: nodes run with {k}={v}; a run passes only if the checker reports lost acknowledged writes",
            p.name()
        );
    }
    let mut rows = Vec::new();
    let (mut acked, mut anomalies, mut failed, mut caught) = (0usize, 0usize, false, 0u32);
    for run in 1..=s.runs {
        let cfg = RunConfig { run, seed: run_seed(s.seed, run), ..s.base.clone() };
        eprintln!("chaos: run {run}/{} seed {} ...", s.runs, cfg.seed);
        let queue_run = s.workload.queue_run(run) && s.plant.is_none();
        let result = if queue_run { run_queue_once(&cfg).await } else { run_once(&cfg).await };
        let row = match result {
            Ok(r) => {
                acked += r.report.acknowledged;
                anomalies += r.report.anomaly_count();
                if let Some(q) = &r.queue {
                    anomalies += q.anomalies.len();
                    if !q.anomalies.is_empty() {
                        failed = true;
                    }
                    eprintln!("chaos:   {q}");
                    for a in q.anomalies.iter().take(10) {
                        eprintln!("chaos:   QUEUE ANOMALY {a}");
                    }
                }
                if r.report.count(AnomalyKind::LostWrite) + r.report.count(AnomalyKind::Unseen) > 0 {
                    caught += 1;
                }
                let intolerable = r.report.anomalies.iter().filter(|a| !s.tolerate.contains(&a.kind)).count();
                if intolerable > 0 || !r.problems.is_empty() {
                    failed = true;
                }
                for a in r.report.anomalies.iter().take(10) {
                    eprintln!("chaos:   ANOMALY {a}");
                }
                for p in &r.problems {
                    eprintln!("chaos:   PROBLEM {p}");
                }
                eprintln!("chaos:   history {} report {}", r.history_path.display(), r.report_path.display());
                let anomalies = match &r.queue {
                    Some(q) if q.anomalies.is_empty() => format!("queue: {} acked, none", q.acked),
                    Some(q) => format!("queue: {}", q.anomalies.len()),
                    None => anomaly_summary(&r.report),
                };
                format!(
                    "{run:>3} {:>20} {} {:>8} {}  {anomalies}",
                    cfg.seed,
                    r.report,
                    r.problems.len(),
                    fault_summary(&r.events),
                )
            }
            Err(e) => {
                failed = true;
                eprintln!("chaos:   run {run} failed: {e:#}");
                format!("{run:>3} {:>20} run failed: {e:#}", cfg.seed)
            }
        };
        // Progress on stderr; the table goes to stdout once, at the end.
        eprintln!("{row}");
        rows.push(row);
    }
    println!();
    println!("{:>3} {:>20} {} {:>8} faults  anomalies", "run", "seed", Report::header(), "problems");
    for r in &rows {
        println!("{r}");
    }
    println!("chaos: runs={} acknowledged={acked} anomalies={anomalies}", s.runs);
    if let Some(p) = s.plant {
        println!("chaos: planted {} caught in {caught} of {} runs", p.name(), s.runs);
        return Ok(caught == s.runs);
    }
    Ok(!failed)
}

/// `chaos check HISTORY.jsonl`: the checker on a stored history (from a
/// chaos run or a soak), its report on stdout; exit 0 when it is clean.
/// The file is read one event at a time ([`HistoryFile`]), so a soak's
/// history of millions of records is checked in about 100 bytes of memory
/// per record.
fn check_file(path: &str) -> ExitCode {
    let report = match check_events(&HistoryFile::new(path)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chaos: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{}\n{report}", Report::header());
    for a in &report.anomalies {
        println!("{a}");
    }
    println!(
        "chaos: check {path} sends={} acknowledged={} anomalies={}",
        report.sends,
        report.acknowledged,
        report.anomaly_count()
    );
    if report.is_valid() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// `chaos net …`: one network fault command; exit 1 if it failed.
fn net(args: NetArgs) -> ExitCode {
    let target = Target { nodes: args.nodes, cluster_dir: args.cluster_dir, dev: Some(args.dev) };
    match args.cmd.command().and_then(|cmd| net_cmd::run(&cmd, &target)) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chaos net: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().cmd {
        None => {}
        Some(Cmd::Check { history }) => return check_file(&history),
        Some(Cmd::Net(args)) => return net(args),
    }
    run_main("chaos", settings(), |s| async move { run_all(&s).await }).await
}
