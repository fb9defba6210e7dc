//! Quiet partitions on three real nodes.
//!
//! Contract checked: idle partition groups go quiet on every replica (they
//! stop ticking and heartbeating), and a quiet group loses nothing of what
//! a ticking one does: while quiet it still names its leader; a write wakes
//! it and is acknowledged; a restarted replica does not unseat its quiet
//! leaders; a SIGKILLed quiet leader is replaced and writes resume; every
//! acknowledged record is read back exactly once at its offset.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::{WAIT, wait_for};
use replog_client::{Client, PartitionReader, Producer, ProducerConfig, Record};
use replog_testkit::Cluster;

const PARTITIONS: u32 = 6;
/// The smallest the node accepts: twice the max election timeout.
const QUIET_AFTER_MS: &str = "1400";

/// Waits until every running node reports all its partition groups quiet.
async fn all_quiet(cluster: &Cluster, what: &str) {
    let nodes: Vec<(u64, String)> =
        cluster.serving().into_iter().map(|id| (id, cluster.node(id).metrics.clone())).collect();
    wait_for(what, WAIT, || async {
        nodes
            .iter()
            .all(|(_, m)| {
                let groups = common::metric(m, "replog_raft_groups").unwrap_or(0.0);
                groups > 0.0 && common::metric(m, "replog_raft_groups_quiet") == Some(groups)
            })
            .then_some(())
    })
    .await
}

/// Leaders of every partition as the cluster reports them, once all have one.
async fn leaders(client: &Client) -> BTreeMap<u32, u64> {
    wait_for("a leader named for every partition", WAIT, || async {
        let t = client.describe_topic("q").await.ok()?;
        t.partitions.iter().enumerate().map(|(i, p)| Some((i as u32, p.leader?))).collect()
    })
    .await
}

/// One record per partition, each acknowledged; returns (partition, offset, value).
async fn one_each(client: &Client, tag: &str, acked: &mut Vec<(u32, u64, String)>) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for p in 0..PARTITIONS {
        let value = format!("{tag}-{p}");
        let rec = Record::new(None, Bytes::from(value.clone()), 0);
        let (part, off) = producer
            .enqueue("q", Some(p), rec)
            .await
            .expect("enqueue")
            .wait()
            .await
            .unwrap_or_else(|e| panic!("{value} not acknowledged: {e}"));
        assert_eq!(part, p);
        acked.push((p, off, value));
    }
}

/// Every acknowledged record is at its offset, and nothing else is there.
async fn check(client: &Client, acked: &[(u32, u64, String)]) {
    for p in 0..PARTITIONS {
        let recs = PartitionReader::new(client.clone(), "q", p, 0).read_to_end().await.expect("read");
        let got: Vec<(u64, String)> =
            recs.iter().map(|r| (r.offset, String::from_utf8(r.value.to_vec()).expect("utf8"))).collect();
        let want: Vec<(u64, String)> =
            acked.iter().filter(|(q, ..)| *q == p).map(|(_, o, v)| (*o, v.clone())).collect();
        assert_eq!(got, want, "partition {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_idle_partitions_when_quiet_then_they_take_writes_keep_leaders_across_a_restart_and_fail_over() {
    let mut cluster = common::start(3, &["--quiesce-after-ms", QUIET_AFTER_MS]).await;
    let client = common::client(&cluster).await;
    client.create_topic("q", PARTITIONS, 3).await.expect("create topic");
    let mut acked = Vec::new();
    one_each(&client, "first", &mut acked).await;

    // Idle: every replica of every group goes quiet, and the partitions
    // still have leaders.
    all_quiet(&cluster, "every group quiet after the first writes").await;
    let before = leaders(&client).await;

    // A write wakes its group and is acknowledged.
    one_each(&client, "woken", &mut acked).await;
    check(&client, &acked).await;

    // A replica restarting while its groups are quiet: it follows the
    // leaders on the other nodes rather than unseating them.
    all_quiet(&cluster, "every group quiet again").await;
    let restarted = before[&(PARTITIONS - 1)];
    cluster.kill(restarted).expect("kill");
    cluster.restart(restarted).expect("restart");
    cluster.wait_ready(WAIT).await.expect("ready");
    one_each(&client, "after-restart", &mut acked).await;
    let after = leaders(&client).await;
    let unseated: Vec<_> =
        before.iter().filter(|(p, l)| **l != restarted && after.get(p) != Some(*l)).map(|(p, _)| p).collect();
    assert!(unseated.is_empty(), "node {restarted} restarted and unseated leaders elsewhere: {before:?} -> {after:?}");
    check(&client, &acked).await;

    // The leader of a quiet group dies: its followers notice its node is
    // gone, wake, elect, and writes go on.
    all_quiet(&cluster, "every group quiet before the leader is killed").await;
    let now = leaders(&client).await;
    let victim = now[&0];
    cluster.kill(victim).expect("kill the leader");
    let client = common::client(&cluster).await;
    one_each(&client, "after-failover", &mut acked).await;
    let after = leaders(&client).await;
    assert_ne!(after[&0], victim, "partition 0 still led by the dead node {victim}");
    check(&client, &acked).await;
    cluster.restart(victim).expect("restart");
    cluster.wait_ready(WAIT).await.expect("ready");
}
