//! Quiet partitions on three real nodes.
//!
//! Contract checked: idle partition groups go quiet on every replica (they
//! stop ticking and heartbeating), and a quiet group loses nothing of what
//! a ticking one does: while quiet it still names its leader; a write wakes
//! it and is acknowledged at its first try; a restarted replica does not
//! unseat its quiet leaders; a SIGKILLed quiet leader is replaced and
//! writes resume; every acknowledged record is read back exactly once at
//! its offset. What each node reports of its groups to its peers
//! (`NodeInfo`: leaders, offsets, leader counts, readiness), which a node
//! keeps for its quiet groups rather than reading them all again for every
//! report, follows each group as it wakes, takes writes and goes quiet
//! again.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::{WAIT, wait_for};
use replog_client::{Client, PartitionReader, Producer, ProducerConfig, Record};
use replog_proto::pb::{self, replog_client::ReplogClient};
use replog_testkit::{Cluster, poll_until};

const PARTITIONS: u32 = 6;
/// The smallest the node accepts: twice the max election timeout.
const QUIET_AFTER_MS: &str = "1400";
/// Raft's leader lease: the max election timeout (the node's default).
const RAFT_LEASE: std::time::Duration = std::time::Duration::from_millis(700);

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

/// Produce requests the running nodes refused as not led, so far.
fn refused_as_not_led(cluster: &Cluster) -> f64 {
    let selector = r#"replog_produce_requests_total{result="NOT_LEADER"}"#;
    cluster.serving().into_iter().map(|id| common::metric(&cluster.node(id).metrics, selector).unwrap_or(0.0)).sum()
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
    one_each_by(&Producer::new(client.clone(), ProducerConfig::default()), tag, acked).await
}

/// [`one_each`] by `producer`: one that has written before writes without
/// asking the controller for a producer id, so that nothing but the
/// partitions' own groups changes.
async fn one_each_by(producer: &Producer, tag: &str, acked: &mut Vec<(u32, u64, String)>) {
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

/// The high watermark each partition has from the acknowledged records.
fn expected_hw(acked: &[(u32, u64, String)]) -> BTreeMap<u32, u64> {
    let mut hw = BTreeMap::new();
    for (p, off, _) in acked {
        let e = hw.entry(*p).or_insert(0);
        *e = (*e).max(off + 1);
    }
    hw
}

/// Every running node's `NodeInfo`, and the Raft group of each partition
/// of `q`.
async fn reports(cluster: &Cluster) -> (BTreeMap<u64, pb::NodeInfoResponse>, BTreeMap<u32, u64>) {
    let mut infos = BTreeMap::new();
    let mut groups = BTreeMap::new();
    for id in cluster.serving() {
        let mut c = ReplogClient::connect(format!("http://{}", cluster.node(id).addr)).await.expect("connect");
        infos.insert(id, c.node_info(pb::NodeInfoRequest {}).await.expect("node info").into_inner());
        let meta = c.metadata(pb::MetadataRequest { topics: vec!["q".into()] }).await.expect("metadata");
        for pm in &meta.into_inner().topics[0].partitions {
            groups.insert(pm.partition, pm.group_id);
        }
    }
    (infos, groups)
}

/// Where what the nodes report of the quiet groups differs from what was
/// written and who leads: every node names each partition's leader and
/// its whole log, each leader counts the groups it leads, and every node is
/// in sync. None when it all agrees.
async fn quiet_reports_differ(
    cluster: &Cluster,
    leaders: &BTreeMap<u32, u64>,
    acked: &[(u32, u64, String)],
) -> Option<String> {
    let (infos, groups) = reports(cluster).await;
    let hw = expected_hw(acked);
    for (id, info) in &infos {
        let led = leaders.values().filter(|l| *l == id).count() as u32;
        if info.leader_count != led || info.replica_count != PARTITIONS || !info.in_sync {
            return Some(format!(
                "node {id}: leads {} of {led}, {} replicas of {PARTITIONS}, in sync {}",
                info.leader_count, info.replica_count, info.in_sync
            ));
        }
        for (p, g) in &groups {
            let got = info.groups.iter().find(|s| s.group_id == *g).map(|s| (s.leader, s.high_watermark));
            if got != Some((leaders[p], hw[p])) {
                return Some(format!("node {id}, partition {p}: reports {got:?}, want {:?}", (leaders[p], hw[p])));
            }
        }
    }
    None
}

/// What the nodes report of the quiet groups agrees with `acked` and
/// `leaders` (within a few seconds: a leader's count rests on pings that
/// a loaded machine can delay); panics with the difference otherwise.
async fn check_quiet_reports(cluster: &Cluster, leaders: &BTreeMap<u32, u64>, acked: &[(u32, u64, String)]) {
    let limit = std::time::Duration::from_secs(10);
    let agreed = poll_until("the reports of the quiet groups to agree", limit, || async {
        quiet_reports_differ(cluster, leaders, acked).await.is_none().then_some(())
    })
    .await;
    if agreed.is_err() {
        panic!("{}", quiet_reports_differ(cluster, leaders, acked).await.unwrap_or_else(|| "agreed late".into()));
    }
}

/// Each partition's leader reports its high watermark past every
/// acknowledged record at once: a leader applies a record before it
/// acknowledges it, and its report reads an awake group afresh.
async fn check_leader_reports(cluster: &Cluster, leaders: &BTreeMap<u32, u64>, acked: &[(u32, u64, String)]) {
    let (infos, groups) = reports(cluster).await;
    for (p, hw) in expected_hw(acked) {
        let info = &infos[&leaders[&p]];
        let got = info.groups.iter().find(|s| s.group_id == groups[&p]).map(|s| s.high_watermark);
        assert_eq!(got, Some(hw), "partition {p}'s leader {}, right after the write", leaders[&p]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_idle_partitions_when_quiet_then_they_take_writes_keep_leaders_across_a_restart_and_fail_over() {
    let mut cluster = common::start(3, &["--quiesce-after-ms", QUIET_AFTER_MS]).await;
    let client = common::client(&cluster).await;
    client.create_topic("q", PARTITIONS, 3).await.expect("create topic");
    let mut acked = Vec::new();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    one_each_by(&producer, "first", &mut acked).await;

    // Idle: every replica of every group goes quiet, and the partitions
    // still have leaders.
    all_quiet(&cluster, "every group quiet after the first writes").await;
    let before = leaders(&client).await;
    check_quiet_reports(&cluster, &before, &acked).await;

    // A write wakes its group and is acknowledged, at its first try. Its
    // leader's report has it at once.
    let refused = refused_as_not_led(&cluster);
    one_each_by(&producer, "woken", &mut acked).await;
    assert_eq!(refused_as_not_led(&cluster), refused, "a write to a woken quiet leader was refused as not led");
    check_leader_reports(&cluster, &leaders(&client).await, &acked).await;
    check(&client, &acked).await;

    // After a longer nap, with both followers answering late (paused as
    // the write arrives): Raft's own lease (a majority acknowledged a
    // heartbeat within the election timeout's upper bound) has lapsed
    // while the group slept, and the woken leader waits for the
    // acknowledgements of the heartbeat its wake-up sent, rather than
    // refusing the write as not led (which would cost the producer a
    // backoff).
    all_quiet(&cluster, "every group quiet before a write meets slow followers").await;
    // Nothing to await but time: the lease lapses by itself.
    tokio::time::sleep(RAFT_LEASE + std::time::Duration::from_millis(300)).await;
    let leader = leaders(&client).await[&0];
    let followers: Vec<u64> = cluster.serving().into_iter().filter(|id| *id != leader).collect();
    let leader_metrics = cluster.node(leader).metrics.clone();
    let quiet = || common::metric(&leader_metrics, "replog_raft_groups_quiet").unwrap_or(0.0);
    let (quiet_before, refused) = (quiet(), refused_as_not_led(&cluster));
    for f in &followers {
        cluster.pause(*f).expect("pause a follower");
    }
    let value = "slow-followers-0";
    let handle = producer.enqueue("q", Some(0), Record::new(None, Bytes::from(value), 0)).await.expect("enqueue");
    // The write has reached the leader once it has woken the group there.
    wait_for("the write to wake partition 0 at its leader", WAIT, || async { (quiet() < quiet_before).then_some(()) })
        .await;
    for f in &followers {
        cluster.resume(*f).expect("resume a follower");
    }
    let (_, offset) = handle.wait().await.unwrap_or_else(|e| panic!("{value} not acknowledged: {e}"));
    acked.push((0, offset, value.to_string()));
    assert_eq!(
        refused_as_not_led(&cluster),
        refused,
        "a write after a long nap, followers late, was refused as not led"
    );
    check(&client, &acked).await;

    // A replica restarting while its groups are quiet: it follows the
    // leaders on the other nodes rather than unseating them.
    all_quiet(&cluster, "every group quiet again").await;
    check_quiet_reports(&cluster, &leaders(&client).await, &acked).await;
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
