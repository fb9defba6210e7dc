//! Every `replog bench` load mode, run as a user runs it — a separate
//! process — against three real nodes, with small counts: the last line
//! is the JSON of DESIGN.md's contract and its counts add up.
//!
//! - `produce --rate R --duration S` offers R × S records, every one
//!   acknowledged, none refused, with keyless records as `make bench`
//!   sends them (the producer picks their partitions);
//! - `e2e` consumes exactly what it produced;
//! - `failover` SIGKILLs the leader of partition 0 part-way through and
//!   names every partition it led, each with the time until writes were
//!   acknowledged again; nothing offered is lost.
//!
//! The figures themselves are not checked: timing is what `make bench`
//! measures, on a quiet machine.

use std::process::Command;

use replog_testkit::{Cluster, ClusterOptions};
use serde_json::Value;

fn bench(bootstrap: &str, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_replog"))
        .arg("bench")
        .args(args)
        .args(["--output", "json"])
        .env("REPLOG_BOOTSTRAP", bootstrap)
        .env("REPLOG_LOG", "warn")
        .output()
        .expect("run replog bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "replog bench {args:?}: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("a JSON line");
    let v: Value = serde_json::from_str(last).expect("the last line is JSON");
    for key in ["records", "seconds", "records_per_sec", "p50_ms", "p99_ms", "p999_ms", "max_ms"] {
        assert!(v[key].is_number(), "{key} missing from {v}");
    }
    v
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} is not a count in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_cluster_when_each_bench_mode_runs_then_its_json_parses_and_its_counts_add_up() {
    let cluster = Cluster::start(3, ClusterOptions::default()).await.expect("start 3 nodes");
    let bootstrap = cluster.serving_addrs().join(",");
    let common = ["--partitions", "3", "--producers", "2", "--record-size", "64"];

    // produce at a fixed rate: rate × duration records, all acknowledged.
    let mut args =
        vec!["produce", "--topic", "b-produce", "--rate", "400", "--duration", "2", "--partitioner", "keyless"];
    args.extend(common);
    let v = bench(&bootstrap, &args);
    assert_eq!(v["bench"], "produce");
    assert_eq!((n(&v, "records"), n(&v, "offered"), n(&v, "errors")), (800, 800, 0), "{v}");
    assert_eq!(v["latency_from"], "intended send time");
    assert_eq!(v["partitioner"], "keyless");
    // Each record's latency includes its own send delay, so every
    // quantile of the one is at least that of the other.
    for q in ["p50", "p99"] {
        let (delay, latency) = (&v[format!("send_delay_{q}_ms")], &v[format!("{q}_ms")]);
        assert!(delay.as_f64().is_some_and(|d| d <= latency.as_f64().unwrap()), "send delay {q}: {v}");
    }
    assert!(v["send_delay_max_ms"].as_f64().is_some_and(|d| d <= v["max_ms"].as_f64().unwrap()), "{v}");

    // closed loop, as before: --records records.
    let mut args = vec!["produce", "--topic", "b-produce", "--records", "500"];
    args.extend(common);
    let v = bench(&bootstrap, &args);
    assert_eq!((n(&v, "records"), n(&v, "errors")), (500, 0), "{v}");
    assert!(v.get("send_delay_p50_ms").is_none(), "no send delay without a rate: {v}");

    // e2e: everything produced is consumed, once.
    let mut args = vec!["e2e", "--topic", "b-e2e", "--rate", "400", "--duration", "2", "--partitioner", "keyless"];
    args.extend(common);
    let v = bench(&bootstrap, &args);
    assert_eq!(v["bench"], "e2e");
    assert_eq!((n(&v, "produced"), n(&v, "consumed"), n(&v, "records")), (800, 800, 800), "{v}");

    // failover: SIGKILL the leader of partition 0 two seconds in.
    let pids = cluster.dir().join("bench-pids");
    std::fs::create_dir_all(&pids).expect("pid dir");
    for id in cluster.ids() {
        let pid = cluster.pid(id).expect("node running");
        std::fs::write(pids.join(id.to_string()), pid.to_string()).expect("pid file");
    }
    let kill = format!("kill -9 $(cat {}/{{node}})", pids.display());
    let mut args = vec![
        "failover",
        "--topic",
        "b-failover",
        "--rate",
        "300",
        "--duration",
        "6",
        "--fault-after",
        "2",
        "--fault-cmd",
        &kill,
        "--heal-cmd",
        "",
    ];
    args.extend(common);
    let v = bench(&bootstrap, &args);
    assert_eq!(v["bench"], "failover");
    assert_eq!((n(&v, "records"), n(&v, "offered"), n(&v, "errors")), (1800, 1800, 0), "{v}");
    let per = v["failover"].as_array().expect("failover list");
    assert!(!per.is_empty(), "the faulted node led partition 0: {v}");
    assert_eq!(per.len() as u64, n(&v, "partitions_faulted"));
    let node = n(&v, "node");
    for p in per {
        assert_eq!(p["leader_before"].as_u64(), Some(node), "{p}");
        assert!(p["ms"].is_number() && p["first_ack_ms"].is_number(), "every faulted partition took writes again: {p}");
        assert_ne!(p["leader_after"].as_u64(), Some(node), "a killed node leads nothing: {p}");
    }
    assert_eq!(n(&v, "unrecovered"), 0);
}
