//! The `replog` CLI's consumer-group commands and the SDK's examples, run
//! as a user runs them — separate processes — against real nodes.
//!
//! Contract checked (DESIGN.md's CLI contract):
//! - `replog consume TOPIC --group G` commits as it goes: a second run of
//!   the same group continues where the first stopped, nothing twice;
//! - `replog group list|describe --output json` give the documented shapes
//!   (`describe`: `members`, and `partitions` with `topic`, `partition`,
//!   `committed_offset`, `high_watermark`, `lag`);
//! - `replog group reset-offsets` moves a group's offsets by
//!   `--to-earliest`, `--shift-by`, `--to-timestamp` (the first record at
//!   or after it), changes nothing with `--dry-run`, and is refused with
//!   GROUP_NOT_EMPTY(24) while a member is active; `group delete` removes
//!   the group (UNKNOWN_GROUP(20) afterwards);
//! - `consume --group` stopped by SIGINT commits what it printed and leaves;
//! - the examples `producer`, `group_consumer` and `replay` run and do what
//!   their docs say.
//!
//! The node binary is `REPLOG_NODE_BIN` or the one a workspace build left
//! under `target/`; the examples are built by `cargo test`/`nextest`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use replog_testkit::{Cluster, ClusterOptions, wait_for};
use serde_json::Value;

const TOPIC: &str = "demo";
const GROUP: &str = "readers";
/// Generous bound for anything awaited here (2 cores, debug builds).
const WAIT: Duration = Duration::from_secs(60);

struct Env {
    _cluster: Cluster,
    bootstrap: String,
}

impl Env {
    fn cmd(&self, program: PathBuf, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args).env("REPLOG_BOOTSTRAP", &self.bootstrap).env("REPLOG_LOG", "warn");
        c
    }

    /// Runs `replog ARGS`; returns its output whatever the exit status.
    fn replog_raw(&self, args: &[&str]) -> Output {
        self.cmd(env!("CARGO_BIN_EXE_replog").into(), args).output().expect("run replog")
    }

    /// Runs `replog ARGS`, which must succeed; returns its stdout.
    fn replog(&self, args: &[&str]) -> String {
        let out = self.replog_raw(args);
        assert!(out.status.success(), "replog {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        serde_json::from_str(&self.replog(&a)).expect("one JSON document")
    }

    /// Runs an example, which must succeed; returns its stdout.
    fn example(&self, name: &str, args: &[&str]) -> String {
        let out = self.cmd(example_bin(name), args).output().expect("run example");
        assert!(
            out.status.success(),
            "example {name} {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }
}

/// `target/<profile>/examples/NAME`, next to this test's `deps/`.
fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps/<test>");
    let p = profile_dir.join("examples").join(name);
    assert!(p.is_file(), "{} is missing: cargo test builds the examples (cargo build --examples)", p.display());
    p
}

/// The values `replog consume --output json` printed, one per line.
fn consumed(stdout: &str) -> Vec<(u64, u64, String)> {
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON record per line");
            (v["partition"].as_u64().unwrap(), v["offset"].as_u64().unwrap(), v["value"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Per partition of the group's description: (committed_offset, high_watermark, lag).
fn lags(describe: &Value) -> Vec<(Option<u64>, u64, Option<u64>)> {
    describe["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| (p["committed_offset"].as_u64(), p["high_watermark"].as_u64().unwrap(), p["lag"].as_u64()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_topic_when_the_cli_and_the_examples_consume_it_in_groups_then_groups_continue_reset_and_replay_as_documented()
 {
    let opts = ClusterOptions {
        extra_args: vec!["--group-partitions".into(), "3".into()],
        ready_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let cluster = Cluster::start(1, opts).await.expect("start a node (REPLOG_NODE_BIN or a workspace build)");
    let env = Env { bootstrap: cluster.serving_addrs().join(","), _cluster: cluster };
    env.replog(&["topic", "create", TOPIC, "--partitions", "3", "--replication-factor", "1"]);

    // The producer example: 30 keyed records, each acknowledged.
    let produced = env.example("producer", &[TOPIC, "30"]);
    assert_eq!(produced.lines().count(), 30, "one line per acknowledged record:\n{produced}");
    let between = replog_client::now_ms();

    // consume --group: a second run continues where the first stopped.
    let first = consumed(&env.replog(&[
        "consume",
        TOPIC,
        "--group",
        GROUP,
        "--from-beginning",
        "--max-messages",
        "10",
        "--output",
        "json",
    ]));
    assert_eq!(first.len(), 10);
    let second = consumed(&env.replog(&[
        "consume",
        TOPIC,
        "--group",
        GROUP,
        "--max-messages",
        "100",
        "--timeout-ms",
        "3000",
        "--output",
        "json",
    ]));
    let all: BTreeSet<(u64, u64)> = first.iter().chain(&second).map(|(p, o, _)| (*p, *o)).collect();
    assert_eq!((first.len() + second.len(), all.len()), (30, 30), "two runs: every record once");
    let values: BTreeSet<String> = first.iter().chain(&second).map(|(_, _, v)| v.clone()).collect();
    assert_eq!(values, (0..30).map(|i| format!("event {i}")).collect(), "the producer example's values");

    // list and describe: the group, empty, caught up.
    let list = env.json(&["group", "list"]);
    let listed: Vec<&Value> =
        list["groups"].as_array().expect("groups").iter().filter(|g| g["group"] == GROUP).collect();
    assert_eq!(listed.len(), 1, "{list}");
    assert_eq!((listed[0]["state"].as_str(), listed[0]["members"].as_u64()), (Some("empty"), Some(0)), "{list}");
    let d = env.json(&["group", "describe", GROUP]);
    assert_eq!(d["members"].as_array().map(Vec::len), Some(0), "{d}");
    let ends: Vec<u64> = lags(&d).iter().map(|(_, hw, _)| *hw).collect();
    assert_eq!(ends.iter().sum::<u64>(), 30);
    assert!(lags(&d).iter().all(|(c, hw, lag)| *c == Some(*hw) && *lag == Some(0)), "caught up: {d}");

    // reset-offsets: a dry run changes nothing; shift-by moves back.
    let dry = env.json(&["group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-earliest", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert!(dry["partitions"].as_array().unwrap().iter().all(|p| p["new_offset"] == 0), "{dry}");
    assert!(
        lags(&env.json(&["group", "describe", GROUP])).iter().all(|(_, _, lag)| *lag == Some(0)),
        "dry run moved offsets"
    );
    env.json(&["group", "reset-offsets", GROUP, "--shift-by", "-2"]);
    let d = env.json(&["group", "describe", GROUP]);
    // Clamped to the log start where a partition holds fewer than 2 records.
    let shifted =
        |(c, hw, lag): &(Option<u64>, u64, Option<u64>)| *c == Some(hw.saturating_sub(2)) && *lag == Some((*hw).min(2));
    assert!(lags(&d).iter().all(shifted), "shifted back by 2: {d}");

    // --to-timestamp: the first record at or after it, in each partition.
    let later = env.example("producer", &[TOPIC, "9"]);
    assert_eq!(later.lines().count(), 9);
    let at = between.to_string();
    let r = env.json(&["group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-timestamp", &at]);
    let new: Vec<u64> = r["partitions"].as_array().unwrap().iter().map(|p| p["new_offset"].as_u64().unwrap()).collect();
    assert_eq!(new, ends, "the first record at or after {at} is the first of the second run: {r}");
    let replayed = consumed(&env.replog(&[
        "consume",
        TOPIC,
        "--group",
        GROUP,
        "--max-messages",
        "9",
        "--timeout-ms",
        "5000",
        "--output",
        "json",
    ]));
    let vals: BTreeSet<String> = replayed.into_iter().map(|(_, _, v)| v).collect();
    assert_eq!(vals, (0..9).map(|i| format!("event {i}")).collect(), "replayed exactly the records after the time");

    // While a member is active a reset is refused; SIGINT makes the member
    // commit what it printed and leave.
    env.example("producer", &[TOPIC, "6"]);
    let member = env
        .cmd(env!("CARGO_BIN_EXE_replog").into(), &["consume", TOPIC, "--group", GROUP, "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start consume --group");
    wait_for("the member to consume the 6 new records", WAIT, || async {
        let d = env.json(&["group", "describe", GROUP]);
        let members = d["members"].as_array().map_or(0, Vec::len);
        (members == 1 && lags(&d).iter().all(|(_, _, lag)| *lag == Some(0))).then_some(())
    })
    .await;
    let refused = env.replog_raw(&["group", "reset-offsets", GROUP, "--to-earliest"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("GROUP_NOT_EMPTY(24)"), "the refusal names its code: {err}");
    let deleted = env.replog_raw(&["group", "delete", GROUP]);
    assert!(!deleted.status.success() && String::from_utf8_lossy(&deleted.stderr).contains("GROUP_NOT_EMPTY(24)"));
    let pid = member.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().expect("kill -INT").success());
    let out = member.wait_with_output().expect("member exits");
    assert!(
        out.status.success(),
        "consume --group on SIGINT: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(consumed(&String::from_utf8_lossy(&out.stdout)).len(), 6, "the member printed the 6 new records");
    let d = env.json(&["group", "describe", GROUP]);
    assert_eq!(d["members"].as_array().map(Vec::len), Some(0), "the member left: {d}");

    // The group_consumer example continues after the CLI's commits; the
    // replay example reads back from a time without touching the group.
    env.example("producer", &[TOPIC, "5"]);
    let got = env.example("group_consumer", &[TOPIC, GROUP, "5"]);
    assert_eq!(got.lines().count(), 5, "the example's member got the 5 records after the group's offsets:\n{got}");
    let d = env.json(&["group", "describe", GROUP]);
    assert!(lags(&d).iter().all(|(_, _, lag)| *lag == Some(0)), "the example committed what it printed: {d}");
    let replay = env.example("replay", &[TOPIC, &at, "1000"]);
    assert_eq!(replay.lines().count(), 9 + 6 + 5, "records since {at}:\n{replay}");

    // delete: gone, and describing it says so with its code.
    env.replog(&["group", "delete", GROUP]);
    let gone = env.replog_raw(&["group", "describe", GROUP]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("UNKNOWN_GROUP(20)"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
}
