//! `bench failover`: load as `bench produce` offers it, and part-way
//! through a fault against one node — by default the leader of partition
//! 0 — run as a shell command (`{node}` stands for its id). For every
//! partition that node led when the fault began, the report gives how long
//! the partition acknowledged nothing (`ms`): the longest wait between two
//! acknowledgements that ends after the fault began — the time the
//! partition took to accept writes again, as a producer sees it (election,
//! its retries and metadata refresh included). Records are offered every
//! few milliseconds per partition at the usual rates, which bounds the
//! figure's resolution. `first_ack_ms` adds when, after the fault command
//! returned, the first record meant to be sent after that was
//! acknowledged.
//!
//! The default commands suit the local cluster of `ops/cluster.sh` from
//! the repository's root: `kill` SIGKILLs the node and starts it again
//! later; `isolate` cuts it off from its peers with
//! `chaos net partition isolate` (root, and a cluster started with
//! `REPLOG_PER_NODE_IP=1`) and heals the network later.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::json;

use super::{BenchArgs, ensure_topic, extend, load, progress, report, values};
use crate::{Client, Producer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fault {
    /// SIGKILL the node (and start it again at --heal-after).
    Kill,
    /// Cut the node off from every peer (and heal at --heal-after).
    Isolate,
}

#[derive(Debug, Args)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub load: BenchArgs,
    #[arg(long, value_enum, default_value_t = Fault::Kill)]
    pub fault: Fault,
    /// Seconds into the run at which the fault begins.
    #[arg(long, default_value_t = 3.0)]
    pub fault_after: f64,
    /// Seconds into the run at which the heal command runs (never if it
    /// is empty).
    #[arg(long, default_value_t = 8.0)]
    pub heal_after: f64,
    /// The node to fault; default: the leader of partition 0.
    #[arg(long)]
    pub node: Option<u64>,
    /// Shell command that begins the fault (`{node}`: the node id).
    /// Default: `ops/cluster.sh kill {node}`, or for isolate
    /// `target/release/chaos net partition isolate {node}`.
    #[arg(long)]
    pub fault_cmd: Option<String>,
    /// Shell command that ends it. Default: `ops/cluster.sh start {node}`,
    /// or for isolate `target/release/chaos net heal`. Empty: never.
    #[arg(long)]
    pub heal_cmd: Option<String>,
}

impl FailoverArgs {
    fn commands(&self, node: u64) -> (String, String) {
        let (f, h) = match self.fault {
            Fault::Kill => ("ops/cluster.sh kill {node}", "ops/cluster.sh start {node}"),
            Fault::Isolate => ("target/release/chaos net partition isolate {node}", "target/release/chaos net heal"),
        };
        let fill = |s: &str| s.replace("{node}", &node.to_string());
        (fill(self.fault_cmd.as_deref().unwrap_or(f)), fill(self.heal_cmd.as_deref().unwrap_or(h)))
    }
}

async fn shell(cmd: &str) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("sh").arg("-c").arg(cmd).output().await?;
    if !out.status.success() {
        anyhow::bail!("`{cmd}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// When the fault began, and each partition's leader just before.
type FaultStart = (Instant, BTreeMap<u32, Option<u64>>);

/// Per partition: the first acknowledgement of a record meant to be sent
/// once the fault was in force, and the longest wait between
/// acknowledgements ending after the fault began (and overall).
#[derive(Default, Clone, Copy)]
struct Track {
    first_after: Option<Instant>,
    last_ack: Option<Instant>,
    outage: Duration,
    longest_gap: Duration,
}

pub async fn run(client: Client, f: FailoverArgs) -> anyhow::Result<()> {
    let a = &f.load;
    a.check()?;
    if a.partitioner != super::Partitioner::Spread {
        anyhow::bail!(
            "failover times each partition, so every partition must be written all along: --partitioner spread"
        );
    }
    if !(f.fault_after.is_finite() && f.fault_after >= 0.0) {
        anyhow::bail!("--fault-after must be a number of seconds");
    }
    let topic = ensure_topic(&client, a).await?;
    // Every partition led before the load starts (a new topic elects).
    let settle = Instant::now() + Duration::from_secs(30);
    let info = loop {
        let info = client.describe_topic(&topic).await?;
        if info.partitions.iter().all(|p| p.leader.is_some()) || Instant::now() > settle {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let node = match f.node {
        Some(n) => n,
        None => info
            .partitions
            .first()
            .and_then(|p| p.leader)
            .ok_or_else(|| anyhow::anyhow!("partition 0 of {topic} has no leader to fault"))?,
    };
    let (fault_cmd, heal_cmd) = f.commands(node);
    let producer = Producer::new(client.clone(), a.producer_config()?);
    let pool = Arc::new(values(a.payload, a.record_size, 4096));
    let value: load::ValueFn = Arc::new(move |j, _| pool[(j as usize * 7) % pool.len()].clone());
    let spec = a.load_spec(&topic);
    let pb = progress(spec.records, "failover");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<load::Outcome>();
    let start = Instant::now();
    let load = tokio::spawn(load::run(producer, spec, value, Some(tx), pb.clone()));

    // The fault, and the leaders just before it.
    let fault_at: Arc<OnceLock<FaultStart>> = Arc::new(OnceLock::new());
    // When the fault command returned: the fault is in force.
    let in_force: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let injector = {
        let (client, topic, fault_at, in_force) = (client.clone(), topic.clone(), fault_at.clone(), in_force.clone());
        let (fault_after, heal_after) = (Duration::from_secs_f64(f.fault_after), f.heal_after);
        tokio::spawn(async move {
            tokio::time::sleep_until((start + fault_after).into()).await;
            let before = client.describe_topic(&topic).await?;
            let leaders = before.partitions.iter().map(|p| (p.partition, p.leader)).collect();
            let _ = fault_at.set((Instant::now(), leaders));
            shell(&fault_cmd).await?;
            let _ = in_force.set(Instant::now());
            if !heal_cmd.trim().is_empty() && heal_after.is_finite() {
                tokio::time::sleep_until((start + Duration::from_secs_f64(heal_after.max(0.0))).into()).await;
                shell(&heal_cmd).await?;
            }
            anyhow::Ok(())
        })
    };
    let mut tracks = vec![Track::default(); info.partitions.len()];
    while let Some(o) = rx.recv().await {
        if !o.ok {
            continue;
        }
        let t = &mut tracks[o.partition as usize];
        if let Some(last) = t.last_ack {
            let gap = o.done.saturating_duration_since(last);
            t.longest_gap = t.longest_gap.max(gap);
            if fault_at.get().is_some_and(|(at, _)| o.done > *at) {
                t.outage = t.outage.max(gap);
            }
        }
        t.last_ack = Some(t.last_ack.map_or(o.done, |l| l.max(o.done)));
        if let Some(at) = in_force.get()
            && o.intended >= *at
        {
            t.first_after = Some(t.first_after.map_or(o.done, |d| d.min(o.done)));
        }
    }
    let r = load.await??;
    injector.await??;
    pb.finish_and_clear();
    let Some((at, leaders)) = fault_at.get() else {
        anyhow::bail!("the run ended before the fault (--fault-after {} s)", f.fault_after);
    };
    let after = client.describe_topic(&topic).await?;
    let mut per = Vec::new();
    let mut hist = load::histogram();
    let mut unrecovered = 0;
    for (p, leader) in leaders {
        if *leader != Some(node) {
            continue;
        }
        let t = tracks[*p as usize];
        let forced = in_force.get().copied().unwrap_or(*at);
        let first = t.first_after.map(|d| d.saturating_duration_since(forced).as_secs_f64() * 1000.0);
        let ms = t.outage.as_secs_f64() * 1000.0;
        match first {
            Some(_) => {
                let _ = hist.record((ms * 1000.0).max(1.0) as u64);
            }
            None => unrecovered += 1,
        }
        per.push(json!({"partition": p, "leader_before": leader,
                        "leader_after": after.partitions.get(*p as usize).and_then(|p| p.leader),
                        "ms": ms.round(), "first_ack_ms": first.map(|m| m.round()),
                        "longest_ack_gap_ms": t.longest_gap.as_millis() as u64}));
    }
    let q = |x: f64| (!hist.is_empty()).then(|| hist.value_at_quantile(x) as f64 / 1000.0);
    let mut extra = a.settings(&topic);
    extend(
        &mut extra,
        json!({"offered": r.offered, "errors": r.errors, "first_error": r.first_error,
               "fault": format!("{:?}", f.fault).to_lowercase(), "node": node,
               "fault_at_s": ((*at - start).as_secs_f64() * 1000.0).round() / 1000.0,
               "fault_cmd_ms": in_force.get().map(|f| (*f - *at).as_millis() as u64),
               "fault_cmd": f.commands(node).0, "heal_cmd": f.commands(node).1,
               "partitions_faulted": per.len(), "failover": per,
               "failover_p50_ms": q(0.5).map(f64::round), "failover_max_ms": (!hist.is_empty()).then(|| (hist.max() as f64 / 1000.0).round()),
               "unrecovered": unrecovered}),
    );
    report("failover", r.acked, r.acked * a.record_size as u64, r.elapsed, &r.hist, extra);
    if r.errors > 0 {
        anyhow::bail!("{} records were not acknowledged", r.errors);
    }
    if unrecovered > 0 {
        anyhow::bail!("{unrecovered} partitions acknowledged no write after the fault before the run ended");
    }
    Ok(())
}
