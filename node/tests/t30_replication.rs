//! Durability and consistency of the replicated log on three real nodes.
//!
//! Contract checked: a record acknowledged with acks=all survives the loss
//! of a minority of replicas (SIGKILL of a partition leader) and a restart
//! of every node; every acknowledged record is read back exactly once, in
//! per-partition order, at the offset its acknowledgement gave; and a
//! restarted replica converges to a byte-identical copy of the leader's log.

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use common::{CLUSTER_READY, WAIT, wait_for};
use replog_client::{Client, ConsumedRecord, PartitionReader, Producer, ProducerConfig, Record};

const PARTITIONS: u32 = 6;
const PHASE_RECORDS: usize = 10_000;

/// (partition, offset) per acknowledged value.
type Acks = HashMap<String, (u32, u64)>;

async fn produce(client: &Client, topic: &str, prefix: &str, n: usize, acks: &mut Acks) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let value = format!("{prefix}-{i}");
        let key = Bytes::from(format!("k{}", i % 97));
        let rec = Record::new(Some(key), Bytes::from(value.clone()), i as i64);
        handles.push((value, producer.enqueue(topic, None, rec).await.expect("enqueue")));
    }
    for (value, h) in handles {
        let (p, off) = h.wait().await.unwrap_or_else(|e| panic!("{value} not acknowledged: {e}"));
        assert!(acks.insert(value, (p, off)).is_none());
    }
}

async fn read_partition(client: &Client, topic: &str, p: u32) -> Vec<ConsumedRecord> {
    PartitionReader::new(client.clone(), topic, p, 0).read_to_end().await.expect("read partition")
}

/// The copy held by the replica at `addr`; an error while it is still
/// starting up (group not open yet) counts as "not there yet".
async fn read_replica(client: &Client, topic: &str, p: u32, addr: &str) -> Option<Vec<ConsumedRecord>> {
    PartitionReader::new(client.clone(), topic, p, 0).from_replica(addr).read_to_end().await.ok()
}

/// Every acknowledged value is at its acknowledged offset, exactly once,
/// offsets are contiguous from 0, and nothing unacknowledged is there.
async fn check_all_acked(client: &Client, topic: &str, acks: &Acks) {
    let mut seen: HashMap<String, (u32, u64)> = HashMap::new();
    for p in 0..PARTITIONS {
        let recs = read_partition(client, topic, p).await;
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "offsets in partition {p} must be contiguous from 0");
            let v = String::from_utf8(r.value.to_vec()).expect("utf8 value");
            if let Some(prev) = seen.insert(v.clone(), (p, r.offset)) {
                panic!("{v} appears twice: at {prev:?} and at ({p}, {})", r.offset);
            }
        }
    }
    for (v, at) in acks {
        assert_eq!(seen.get(v), Some(at), "acknowledged {v} not found at its acknowledged {at:?}");
    }
    assert_eq!(seen.len(), acks.len(), "the log holds records that were never acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_three_nodes_when_a_leader_is_killed_then_no_acknowledged_record_is_lost_and_replicas_converge() {
    let mut cluster = common::start(3, &[]).await;
    let client = common::client(&cluster).await;
    client.create_topic("events", PARTITIONS, 3).await.expect("create topic");

    let mut acks = Acks::new();
    produce(&client, "events", "a", PHASE_RECORDS, &mut acks).await;

    let leaders_before = cluster.wait_leaders(&client, "events", WAIT).await.expect("every partition led");
    let victim = *leaders_before.values().next().expect("a leader");
    eprintln!("leaders {leaders_before:?}; killing node {victim}");
    cluster.kill(victim).expect("kill");

    let client = common::client(&cluster).await;
    produce(&client, "events", "b", PHASE_RECORDS, &mut acks).await;
    check_all_acked(&client, "events", &acks).await;

    // The killed node comes back on its data and catches up.
    cluster.restart(victim).expect("restart");
    let addr = cluster.node(victim).addr.clone();
    for p in 0..PARTITIONS {
        let leader_copy = read_partition(&client, "events", p).await;
        let replica_copy = wait_for("the restarted replica to catch up", WAIT, || async {
            let c = read_replica(&client, "events", p, &addr).await?;
            (c.len() == leader_copy.len()).then_some(c)
        })
        .await;
        assert_eq!(replica_copy, leader_copy, "node {victim}'s copy of partition {p} differs from the leader's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_acknowledged_records_when_every_node_restarts_then_topics_records_and_offsets_remain() {
    let mut cluster = common::start(3, &[]).await;
    let client = common::client(&cluster).await;
    client.create_topic("orders", PARTITIONS, 3).await.expect("create topic");
    client.create_topic("audit", 2, 3).await.expect("create topic");
    let mut acks = Acks::new();
    produce(&client, "orders", "o", 3000, &mut acks).await;
    let before = client.list_topics().await.expect("list");

    // Graceful stop of all three, then SIGKILL of all three: neither may
    // lose an acknowledged record.
    for round in ["graceful", "kill -9"] {
        for id in 1..=3 {
            if round == "graceful" {
                common::stop(&mut cluster, id).await;
            } else {
                cluster.kill(id).expect("kill");
            }
        }
        cluster.restart_all().expect("restart");
        cluster.wait_ready(CLUSTER_READY).await.expect("cluster ready");
        let client = common::client(&cluster).await;
        cluster.wait_leaders(&client, "orders", WAIT).await.expect("every partition led");
        cluster.wait_leaders(&client, "audit", WAIT).await.expect("every partition led");
        let after = client.list_topics().await.expect("list");
        let names =
            |v: &[replog_client::TopicInfo]| v.iter().map(|t| (t.name.clone(), t.partitions.len())).collect::<Vec<_>>();
        assert_eq!(names(&after), names(&before), "topics changed across a {round} restart");
        check_all_acked(&client, "orders", &acks).await;
        // Offsets continue where they stopped.
        produce(&client, "orders", round, 100, &mut acks).await;
        check_all_acked(&client, "orders", &acks).await;
    }
}

/// A write commits once a majority holds it, after its append went out, so
/// its commit index reaches the followers in a later append. The leader
/// holds that commit for the next write's append to carry (up to
/// `commit_piggyback_ms`) instead of sending an entry-less append for every
/// write; with nothing following, it still goes, and the followers serve
/// the last write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_writes_one_after_another_then_each_commit_reaches_the_followers_on_the_next_write() {
    const WRITES: usize = 60;
    // A wait far longer than any write takes here, so that the count below
    // does not depend on how busy the machine is.
    let cluster = common::start(3, &["--commit-piggyback-ms", "100"]).await;
    let client = common::client(&cluster).await;
    client.create_topic("one-by-one", 1, 3).await.expect("create topic");
    let leader = cluster.wait_leaders(&client, "one-by-one", WAIT).await.expect("led")[&0];
    let followers: Vec<u64> = cluster.ids().into_iter().filter(|&id| id != leader).collect();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    producer.send("one-by-one", None, Bytes::from_static(b"first")).await.expect("first write");

    let appends = |id: u64, kind: &str| {
        let selector = format!("replog_raft_appends_received_total{{kind=\"{kind}\"}}");
        common::metric(&cluster.node(id).metrics, &selector).unwrap_or(0.0)
    };
    let before: Vec<(f64, f64)> = followers.iter().map(|&f| (appends(f, "entries"), appends(f, "empty"))).collect();
    for i in 0..WRITES {
        producer.send("one-by-one", None, Bytes::from(format!("w{i}"))).await.expect("write");
    }
    for (&f, (entries0, empty0)) in followers.iter().zip(before) {
        let (entries, empty) = (appends(f, "entries") - entries0, appends(f, "empty") - empty0);
        eprintln!("follower {f}: {entries} appends with entries and {empty} without over {WRITES} writes");
        assert!(entries >= (WRITES / 2) as f64, "follower {f} received {entries} appends with entries");
        assert!(
            empty <= (WRITES / 6) as f64,
            "follower {f} received {empty} entry-less appends over {WRITES} writes: the commits did not ride on the \
             next write's append"
        );
    }
    // The last commit has no write to carry it, and goes on its own.
    for f in followers {
        let addr = cluster.node(f).addr.clone();
        wait_for("the follower to serve the last write", WAIT, || async {
            let c = read_replica(&client, "one-by-one", 0, &addr).await?;
            (c.len() == WRITES + 1).then_some(())
        })
        .await;
    }
}
