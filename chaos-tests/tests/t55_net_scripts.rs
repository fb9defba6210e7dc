//! The operator scripts in `chaos-tests/scripts/`, as docs/chaos.md shows
//! them, over the `chaos net` subcommands they wrap: each command changes
//! exactly the firewall or traffic-control state it names, faults add up
//! across commands and stay until healed, `netem.sh off` leaves
//! partitions alone, `heal.sh` removes everything, and bad node lists are
//! refused with a clear error before anything changes.
//!
//! Nodes are given as `REPLOG_NODE_IPS` (127.0.0.11–13); no node runs: the
//! rules are checked with `iptables -S` and `tc qdisc show`. Needs root;
//! without it only the usage is checked, except under CI (`CI` set), where
//! it must run.

use std::path::PathBuf;
use std::process::{Command, Output};

use replog_testkit::{Need, runnable};

const NODES: &str = "1=127.0.0.11,2=127.0.0.12,3=127.0.0.13";

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name)
}

/// Runs a script with the freshly built chaos binary and `nodes`.
fn run_with(nodes: &str, name: &str, args: &[&str]) -> Output {
    Command::new(script(name))
        .args(args)
        .env("REPLOG_CHAOS_BIN", env!("CARGO_BIN_EXE_chaos"))
        .env("REPLOG_NODE_IPS", nodes)
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"))
}

/// Runs a script that must succeed; its stdout.
fn run(name: &str, args: &[&str]) -> String {
    let out = run_with(NODES, name, args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} {args:?} failed ({}): {stdout}{stderr}", out.status);
    stdout.into_owned()
}

/// The DROP rules in the chain, as (source, destination, random loss).
fn rules() -> Vec<(String, String, bool)> {
    let out = Command::new("iptables").args(["-w", "-S", "REPLOG-CHAOS"]).output().expect("iptables");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.starts_with("-A "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let after =
                |flag: &str| w.iter().position(|x| *x == flag).map(|i| w[i + 1].to_string()).unwrap_or_default();
            (after("-s"), after("-d"), l.contains("--mode random"))
        })
        .collect()
}

fn chain_exists() -> bool {
    Command::new("iptables").args(["-w", "-n", "-L", "REPLOG-CHAOS"]).output().expect("iptables").status.success()
}

fn jumps() -> usize {
    let out = Command::new("iptables").args(["-w", "-S"]).output().expect("iptables");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.ends_with("-j REPLOG-CHAOS")).count()
}

fn our_qdisc() -> bool {
    let out = Command::new("tc").args(["qdisc", "show", "dev", "lo"]).output().expect("tc");
    String::from_utf8_lossy(&out.stdout).contains(" 7e57: root")
}

#[test]
fn given_the_documented_script_commands_then_each_changes_what_it_names_and_heal_removes_all() {
    // Usage needs nothing of the machine.
    let help = run_with(NODES, "partition.sh", &["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("isolate ID"));
    assert_eq!(run_with(NODES, "netem.sh", &[]).status.code(), Some(2), "no command is a usage error");

    if !runnable("the network scripts test", &[Need::Root]) {
        return;
    }
    run("heal.sh", &[]);
    assert!(!chain_exists() && jumps() == 0 && !our_qdisc(), "heal.sh leaves nothing behind");

    // Bad node lists change nothing.
    let shared = run_with("1=127.0.0.1,2=127.0.0.1", "partition.sh", &["isolate", "1"]);
    assert!(!shared.status.success());
    assert!(String::from_utf8_lossy(&shared.stderr).contains("REPLOG_PER_NODE_IP=1"));
    let unknown = run_with(NODES, "partition.sh", &["isolate", "9"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown node 9"));
    assert!(!chain_exists(), "a refused command installs nothing");

    // Partitions add up across commands.
    assert_eq!(run("partition.sh", &["isolate", "2"]).trim(), "isolated node 2 from 1,3");
    let mut want = vec![
        ("127.0.0.11/32", "127.0.0.12/32"),
        ("127.0.0.12/32", "127.0.0.11/32"),
        ("127.0.0.12/32", "127.0.0.13/32"),
        ("127.0.0.13/32", "127.0.0.12/32"),
    ];
    let got = |r: Vec<(String, String, bool)>| {
        let mut v: Vec<(String, String)> = r.into_iter().filter(|x| !x.2).map(|x| (x.0, x.1)).collect();
        v.sort();
        v
    };
    let owned = |w: &[(&str, &str)]| w.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
    assert_eq!(got(rules()), owned(&want));
    assert_eq!(jumps(), 2, "one jump from INPUT, one from OUTPUT");
    run("partition.sh", &["oneway", "1", "3"]);
    want.insert(1, ("127.0.0.11/32", "127.0.0.13/32"));
    assert_eq!(got(rules()), owned(&want));
    assert!(run("partition.sh", &["show"]).contains("-s 127.0.0.11/32 -d 127.0.0.13/32"));

    // A delay on top; `off` removes it and nothing else.
    let on = run("netem.sh", &["on", "--delay", "50", "--jitter", "10", "--loss", "1"]);
    assert!(on.contains("on every link between nodes 1,2,3 on lo"), "{on}");
    assert!(our_qdisc());
    assert!(run("netem.sh", &["show"]).contains("7e57:"));
    run("netem.sh", &["off"]);
    assert!(!our_qdisc());
    assert!(rules().iter().all(|r| !r.2), "the shaped delay's loss rules go with it");
    assert_eq!(got(rules()), owned(&want), "netem.sh off leaves partitions in force");

    // heal: the partitions only, then everything.
    run("partition.sh", &["split", "1", "2,3"]);
    run("partition.sh", &["heal"]);
    assert!(!chain_exists() && jumps() == 0);
    run("partition.sh", &["bridge", "1", "2", "3"]);
    assert_eq!(got(rules()), owned(&[("127.0.0.11/32", "127.0.0.13/32"), ("127.0.0.13/32", "127.0.0.11/32")]));
    run("netem.sh", &["on"]);
    assert_eq!(run("heal.sh", &[]).trim(), "network healed");
    assert!(!chain_exists() && jumps() == 0 && !our_qdisc(), "heal.sh leaves nothing behind");
}
