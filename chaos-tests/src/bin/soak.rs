//! `make soak`: one long run at half of peak throughput with a fault at a
//! fixed interval, each node's RSS sampled, then the chaos checker; ends
//! with the line `soak: seconds=S records=N rss_slope_mb_per_min=X
//! max_rss_mb=Y anomalies=Z`.
//!
//! Environment (see docs/chaos.md):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SOAK_SECONDS` | 600 | length of the soak phase |
//! | `SOAK_RATE` | half the measured peak | records per second, all producers together; set, the peak is not measured |
//! | `SOAK_PEAK_SECONDS` | 15 | length of the peak measurement (after 3 s of ramp-up) |
//! | `SOAK_FAULT_EVERY` | 30 | seconds between faults (0: none) |
//! | `SOAK_FAULT_SECONDS` | 5 | how long each fault lasts (kill-all at most 2.5) |
//! | `SOAK_FAULTS` | all | comma list of faults, as `CHAOS_FAULTS` |
//! | `SOAK_SEED` | random (printed) | seed of the fault kinds and choices |
//! | `SOAK_RSS_INTERVAL` | 2 | seconds between RSS samples |
//! | `SOAK_RSS_LIMIT_MB` | 3072 | a node above this ends the soak early (a failure) |
//! | `SOAK_MIN_FREE_DISK_MB` | 3072 | less free disk than this under `SOAK_OUT` ends it early |
//! | `SOAK_MAX_DATA_MB` | 16384 | more node data than this (all nodes) ends it early |
//! | `SOAK_MAX_RSS_SLOPE` | unset | MB/min; when set, a steeper worst-node slope fails the soak |
//! | `SOAK_NODES` | 3 | nodes |
//! | `SOAK_PARTITIONS` | 6 | partitions of the topic (replication factor 3) |
//! | `SOAK_PRODUCERS` | 4 | producers |
//! | `SOAK_RECORD_SIZE` | 64 | bytes per record |
//! | `SOAK_TOPIC_CHURN` | 1 | 0 turns off the client that creates and deletes topics |
//! | `SOAK_IDEMPOTENT` | 1 | 0 turns the SDK's idempotent producer off |
//! | `SOAK_OUT` | `target/soak` | history, report, `rss.csv`, node logs |
//!
//! `soak rss RSS_CSV SECONDS` summarizes a soak's `rss.csv` again (the soak
//! phase lasted SECONDS): per node RSS start, max and end and both slopes.
//!
//! Exit code: 0 when the checker found no anomaly, no problem occurred
//! (crash, heal failure, the RSS or disk limit reached) and the slope is
//! within `SOAK_MAX_RSS_SLOPE` (when set); 1 otherwise; 2 on bad
//! configuration.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use replog_chaos::nemesis::Fault;
use replog_chaos::runner::{default_out_dir, env_flag, env_or, run_main};
use replog_chaos::soak::{RssSummary, SoakConfig, read_rss_csv, run_soak};

fn settings() -> Result<SoakConfig> {
    let nodes: u64 = env_or("SOAK_NODES", 3)?;
    if !(3..=9).contains(&nodes) {
        bail!("SOAK_NODES must be 3..9, got {nodes}");
    }
    let seconds: u64 = env_or("SOAK_SECONDS", 600)?;
    if seconds < 10 {
        bail!("SOAK_SECONDS must be >= 10");
    }
    let rate = match env_or::<u64>("SOAK_RATE", 0)? {
        0 => None,
        r => Some(r),
    };
    let max_rss_slope = match std::env::var("SOAK_MAX_RSS_SLOPE") {
        Ok(v) if !v.trim().is_empty() => {
            Some(v.trim().parse::<f64>().map_err(|e| anyhow::anyhow!("SOAK_MAX_RSS_SLOPE={v:?}: {e}"))?)
        }
        _ => None,
    };
    let out_dir =
        std::env::var("SOAK_OUT").map(Into::into).unwrap_or_else(|_| default_out_dir().with_file_name("soak"));
    Ok(SoakConfig {
        seconds,
        rate,
        peak_seconds: env_or("SOAK_PEAK_SECONDS", 15)?,
        fault_every: Duration::from_secs(env_or("SOAK_FAULT_EVERY", 30)?),
        fault_seconds: Duration::from_secs(env_or("SOAK_FAULT_SECONDS", 5)?),
        faults: Fault::parse_list(&std::env::var("SOAK_FAULTS").unwrap_or_default())?,
        seed: env_or("SOAK_SEED", rand::random::<u64>())?,
        rss_every: Duration::from_secs(env_or::<u64>("SOAK_RSS_INTERVAL", 2)?.max(1)),
        rss_limit_mb: env_or("SOAK_RSS_LIMIT_MB", 3072)?,
        min_free_disk_mb: env_or("SOAK_MIN_FREE_DISK_MB", 3072)?,
        max_data_mb: env_or("SOAK_MAX_DATA_MB", 16384)?,
        max_rss_slope,
        nodes,
        partitions: env_or("SOAK_PARTITIONS", 6)?,
        producers: env_or("SOAK_PRODUCERS", 4)?,
        record_size: env_or("SOAK_RECORD_SIZE", 64)?,
        churn: env_flag("SOAK_TOPIC_CHURN", true)?,
        idempotent: env_flag("SOAK_IDEMPOTENT", true)?,
        out_dir,
    })
}

async fn soak(cfg: &SoakConfig) -> Result<bool> {
    println!(
        "soak: seconds={} rate={} fault_every={:?} faults={} seed={} record_size={} out={}",
        cfg.seconds,
        cfg.rate.map_or("half-of-peak".to_string(), |r| r.to_string()),
        cfg.fault_every,
        cfg.faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(","),
        cfg.seed,
        cfg.record_size,
        cfg.out_dir.display()
    );
    let r = run_soak(cfg).await?;
    if let Some(p) = r.peak_rate {
        println!("soak: peak {p:.0} records/s ({} in the peak phase)", r.peak_records);
    }
    println!(
        "soak: asked {} records/s, acknowledged {:.0}/s ({:.1} MB/s)",
        r.rate,
        r.records as f64 / r.seconds.max(1e-9),
        r.bytes as f64 / 1e6 / r.seconds.max(1e-9)
    );
    print_rss(&r.rss);
    for a in r.report.anomalies.iter().take(10) {
        println!("soak: ANOMALY {a}");
    }
    for p in &r.problems {
        println!("soak: PROBLEM {p}");
    }
    println!(
        "soak: report {} rss {}",
        cfg.out_dir.join("soak.report.txt").display(),
        cfg.out_dir.join("rss.csv").display()
    );
    println!("{}", r.summary());
    Ok(r.passed(cfg.max_rss_slope))
}

/// Per node: the verdict's slope, RSS start/max/end, and both fits.
fn print_rss(rss: &RssSummary) {
    let f = |v: Option<f64>| v.map_or("n/a".to_string(), |s| format!("{s:.1}"));
    for (node, slope) in &rss.slopes {
        let n = rss.nodes[node];
        println!(
            "soak: node {node} rss_slope_mb_per_min={} rss_mb start={:.0} max={:.0} end={:.0} processes={} \
             within_processes={} per_minute_maxima={}",
            f(*slope),
            n.start_mb,
            n.max_mb,
            n.end_mb,
            n.processes,
            f(n.within),
            f(n.maxima)
        );
    }
}

/// `soak rss RSS_CSV SECONDS`.
fn rss_command(path: &str, seconds: &str) -> ExitCode {
    let summary = std::fs::read_to_string(path)
        .map_err(anyhow::Error::from)
        .and_then(|text| read_rss_csv(&text))
        .and_then(|samples| Ok(RssSummary::of(&samples, seconds.parse::<f64>()?)));
    match summary {
        Ok(rss) => {
            print_rss(&rss);
            let worst = rss.worst_slope().map_or("n/a".to_string(), |(_, s)| format!("{s:.1}"));
            println!("soak: rss_slope_mb_per_min={worst} max_rss_mb={:.0} samples={}", rss.max_mb, rss.samples);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("soak rss: {path}: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("rss") {
        return match (args.get(2), args.get(3)) {
            (Some(path), Some(seconds)) => rss_command(path, seconds),
            _ => {
                eprintln!("usage: soak rss RSS_CSV SECONDS");
                ExitCode::from(2)
            }
        };
    }
    run_main("soak", settings(), |cfg| async move { soak(&cfg).await }).await
}
