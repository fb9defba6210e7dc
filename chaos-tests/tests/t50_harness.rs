//! The harness against a real cluster: an iptables partition cuts the
//! isolated node off from its peers (they elect a new controller leader)
//! while clients on 127.0.0.1 still reach it, and healing brings it back.
//!
//! Needs root (iptables) and a built `replog-node` (`REPLOG_NODE_BIN`, or
//! the workspace's target directory); without either it says so and passes
//! vacuously, so that `cargo test` works for a non-root developer — except
//! under CI (`CI` set), where it must run and fails if it cannot.

use std::time::Duration;

use replog_chaos::cluster::chaos_options;
use replog_chaos::net::Net;
use replog_client::Client;
use replog_testkit::{Cluster, Need, probe_config, runnable, wait_for};

/// Cluster start and agreement after a heal or restart: generous for a
/// busy 2-core machine.
const READY: Duration = Duration::from_secs(60);
/// A new controller election once the leader is cut off or paused: a few
/// election timeouts, plus the probes' own timeouts.
const ELECTION: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_isolated_controller_leader_when_partitioned_then_peers_elect_another_and_heal_rejoins() {
    if !runnable("the harness test", &[Need::Root, Need::NodeBin]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(3, chaos_options(dir.path())).await.unwrap();
    let old = cluster.wait_ready(READY).await.unwrap();
    let net = Net::new(cluster.ips()).unwrap();

    net.isolate(old).unwrap();
    let others: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != old).collect();
    wait_for("the majority to elect a new controller leader", ELECTION, || async {
        let mut seen = Vec::new();
        for id in &others {
            seen.push(cluster.controller_leader_at(*id).await);
        }
        (seen.iter().all(|l| l.is_some_and(|l| l != old)) && seen.windows(2).all(|w| w[0] == w[1])).then_some(())
    })
    .await;
    // Client traffic (from 127.0.0.1) is not partitioned: the isolated
    // node still answers.
    let c = Client::connect_with([cluster.node(old).addr.clone()], probe_config()).await.unwrap();
    c.cluster_status().await.expect("isolated node still reachable from 127.0.0.1");

    net.heal().unwrap();
    cluster.wait_ready(READY).await.unwrap();

    // Kill and restart on its data, pause and resume: the cluster agrees again.
    cluster.kill(old).unwrap();
    assert!(!cluster.is_running(old));
    cluster.restart(old).unwrap();
    let leader = cluster.wait_ready(READY).await.unwrap();
    cluster.pause(leader).unwrap();
    wait_for("a leader other than the paused node", ELECTION, || async {
        let mut ok = true;
        for id in cluster.serving() {
            ok &= cluster.controller_leader_at(id).await.is_some_and(|l| l != leader);
        }
        ok.then_some(())
    })
    .await;
    cluster.resume(leader).unwrap();
    cluster.wait_ready(READY).await.unwrap();
    drop(net);
    let rules = std::process::Command::new("iptables").args(["-S"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains("REPLOG-CHAOS"),
        "the chain and its jumps are gone after drop"
    );
}
