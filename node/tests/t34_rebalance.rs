//! Moves held to a byte rate, and a cluster that balances itself — one
//! cluster for all of it, each step on what the previous one left.
//!
//! Contract checked:
//! 1. **Throttled moves.** With the cluster setting `move.throttle` at a
//!    small rate, moving a partition that holds a few MiB sends the new
//!    replica at least that many bytes under the throttle, waits on it
//!    (the leader's `replog_move_throttle_*` counters), and the move still
//!    completes. Unknown settings and bad values are refused with
//!    INVALID_CONFIG (28) and change nothing.
//! 2. **Automatic balance.** A node that joins a running cluster is given
//!    replicas and comes to lead partitions without anyone running
//!    `cluster balance`, never more than `balance.max_moves` moves at a
//!    time, ending within one of even; a producer running meanwhile sees
//!    no error.
//!    With rack labels (two racks, the joined node in one of them), every
//!    partition spans both racks at creation and after balancing.
//! 3. **A restarted node leads again**: how long it stays without
//!    leadership after its restart is printed (measured, not asserted).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use common::{Cluster, ClusterOptions, WAIT, wait_for};
use replog_client::{Client, ErrorCode, PartitionReader, Producer, ProducerConfig};

const BULK: &str = "bulk";
const EVENTS: &str = "events";
const EVENT_PARTITIONS: u32 = 6;
/// Records of 64 KiB in the partition the throttled move copies: 4 MiB.
const BULK_RECORDS: usize = 64;
const BULK_RECORD_BYTES: usize = 64 << 10;
/// The move throttle of step 1: the 4 MiB take about 4 s.
const SMALL_THROTTLE: &str = "1MiB";
/// Automatic balancing's default `balance_max_moves`.
const MAX_MOVES: usize = 2;

/// What the background producer saw.
#[derive(Default)]
struct Seen {
    acks: Mutex<HashMap<String, (u32, u64)>>,
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
}

fn spawn_producer(client: &Client, seen: &Arc<Seen>) -> tokio::task::JoinHandle<()> {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let seen = seen.clone();
    tokio::spawn(async move {
        let mut i = 0u64;
        while !seen.stop.load(Ordering::Relaxed) {
            let value = format!("e{i}");
            match producer.send(EVENTS, Some(Bytes::from(format!("k{}", i % 17))), Bytes::from(value.clone())).await {
                Ok(at) => drop(seen.acks.lock().unwrap().insert(value, at)),
                Err(e) => seen.errors.lock().unwrap().push(format!("{value}: {e}")),
            }
            i += 1;
        }
    })
}

fn no_errors(seen: &Seen, phase: &str) {
    let errors = seen.errors.lock().unwrap();
    assert!(errors.is_empty(), "{phase}: {} errors reached the producer, first: {:?}", errors.len(), errors.first());
}

fn code<T: std::fmt::Debug>(r: replog_client::Result<T>) -> ErrorCode {
    let e = r.expect_err("the request must be refused");
    e.code().unwrap_or_else(|| panic!("no code in {e}"))
}

fn metric(cluster: &Cluster, id: u64, name: &str) -> f64 {
    common::metric(&cluster.node(id).metrics, name).unwrap_or(0.0)
}

/// Replicas and current leaders per node, over every topic (`None` when
/// the answering node does not know a topic yet: a node that just joined).
async fn spread(client: &Client) -> Option<(BTreeMap<u64, usize>, BTreeMap<u64, usize>)> {
    let (mut replicas, mut leaders) = (BTreeMap::new(), BTreeMap::new());
    for topic in [BULK, EVENTS] {
        let t = client.describe_topic(topic).await.ok()?;
        for p in &t.partitions {
            for r in &p.replicas {
                *replicas.entry(*r).or_insert(0) += 1;
            }
            if let Some(l) = p.leader {
                *leaders.entry(l).or_insert(0) += 1;
            }
        }
    }
    Some((replicas, leaders))
}

fn within_one(counts: &BTreeMap<u64, usize>, nodes: &[u64]) -> bool {
    let v: Vec<usize> = nodes.iter().map(|n| counts.get(n).copied().unwrap_or(0)).collect();
    v.iter().max().unwrap() - v.iter().min().unwrap() <= 1
}

/// Partitions of `topics` that node `id` leads.
async fn leads(client: &Client, topics: &[&str], id: u64) -> Option<usize> {
    let mut n = 0;
    for topic in topics {
        let t = client.describe_topic(topic).await.ok()?;
        n += t.partitions.iter().filter(|p| p.leader == Some(id)).count();
    }
    Some(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_throttle_and_a_joining_node_when_partitions_move_then_moves_are_held_to_the_rate_and_the_cluster_balances_itself()
 {
    let began = Instant::now();
    let step = |what: &str| eprintln!("[{:>6} ms] {what}", began.elapsed().as_millis());
    // Two racks: a = {1, 3}, b = {2, and 4 once it joins}.
    let racks: BTreeMap<u64, &str> = BTreeMap::from([(1, "a"), (2, "b"), (3, "a"), (4, "b")]);
    let node_args = racks.iter().map(|(id, r)| (*id, vec!["--rack".to_string(), r.to_string()])).collect();
    let opts = ClusterOptions { node_args, ..common::options(&[]) };
    let mut cluster = Cluster::start(3, opts).await.expect("start the cluster");
    let client = common::client(&cluster).await;
    wait_for("the racks to be recorded", WAIT, || async {
        let s = client.cluster_status().await.ok()?;
        s.nodes.iter().all(|n| n.rack == racks[&n.id]).then_some(())
    })
    .await;

    // --- 1. A throttled move.
    step("throttled move");
    assert_eq!(code(client.cluster_config(&[("move.throttel", "1")]).await), ErrorCode::InvalidConfig);
    assert_eq!(code(client.cluster_config(&[("balance.max_moves", "0")]).await), ErrorCode::InvalidConfig);
    assert_eq!(
        code(client.cluster_config(&[("move.throttle", "1MiB"), ("balance.auto", "perhaps")]).await),
        ErrorCode::InvalidConfig
    );
    client.cluster_config(&[("balance.auto", "")]).await.expect("clearing a setting never set");
    let settings = client.cluster_config(&[]).await.expect("read settings");
    assert!(settings.iter().all(|s| s.value.is_empty()), "refusals change nothing: {settings:?}");

    client.create_topic(BULK, 1, 1).await.expect("create topic");
    let (leader, replicas) = common::preferred_leader(&client, BULK, 0).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..BULK_RECORDS {
        let value = Bytes::from(vec![b'a' + (i % 26) as u8; BULK_RECORD_BYTES]);
        producer.send(BULK, None, value).await.expect("produce");
    }
    let set = client.cluster_config(&[("move.throttle", SMALL_THROTTLE)]).await.expect("set the throttle");
    assert!(set.iter().any(|s| s.key == "move.throttle" && s.value == "1048576"), "{set:?}");
    let (bytes0, waits0) = (
        metric(&cluster, leader, "replog_move_throttled_bytes_total"),
        metric(&cluster, leader, "replog_move_throttle_waits_total"),
    );
    let newcomer = cluster.ids().into_iter().find(|n| !replicas.contains(n)).expect("a node without the partition");
    let target = vec![leader, newcomer];
    let moved = client.move_partition(BULK, 0, &target, false).await.expect("move").expect("a move");
    let moving = Instant::now();
    wait_for("the throttled move to finish", WAIT, || async {
        client.moves_done(std::slice::from_ref(&moved)).await.ok()?.then_some(())
    })
    .await;
    let took = moving.elapsed();
    let bytes = metric(&cluster, leader, "replog_move_throttled_bytes_total") - bytes0;
    let waits = metric(&cluster, leader, "replog_move_throttle_waits_total") - waits0;
    let waited = metric(&cluster, leader, "replog_move_throttle_wait_seconds_total");
    eprintln!("moved {bytes} bytes at {SMALL_THROTTLE}/s in {took:?}; {waits} sends waited {waited:.2} s in all");
    assert!(bytes >= (BULK_RECORDS * BULK_RECORD_BYTES) as f64, "the new replica got the log under the throttle");
    assert!(waits >= 1.0, "the throttle held sends back");
    let copy = PartitionReader::new(client.clone(), BULK, 0, 0).read_to_end().await.expect("read");
    assert_eq!(copy.len(), BULK_RECORDS, "every record is there after the move");
    client.cluster_config(&[("move.throttle", "")]).await.expect("clear the throttle");

    // --- 2. A node joins; the cluster balances itself under produce.
    step("join and automatic balance");
    client.create_topic(EVENTS, EVENT_PARTITIONS, 2).await.expect("create topic");
    cluster.wait_leaders(&client, EVENTS, WAIT).await.expect("leaders");
    let seen = Arc::new(Seen::default());
    let producing = spawn_producer(&client, &seen);
    wait_for("produce to start", WAIT, || async { (seen.acks.lock().unwrap().len() >= 20).then_some(()) }).await;
    cluster.join(4).expect("join");
    let most_moves = AtomicUsize::new(0);
    wait_for("node 4 to hold replicas and lead a partition", WAIT, || async {
        let under_way = client.move_status().await.ok()?.moves.len();
        most_moves.fetch_max(under_way, Ordering::Relaxed);
        let (replicas, _) = spread(&client).await?;
        (replicas.get(&4).copied().unwrap_or(0) > 0 && leads(&client, &[BULK, EVENTS], 4).await? > 0).then_some(())
    })
    .await;
    step("node 4 leads");
    let nodes = [1, 2, 3, 4];
    wait_for("replicas and leaders within one of even, no move left", WAIT, || async {
        let under_way = client.move_status().await.ok()?.moves.len();
        most_moves.fetch_max(under_way, Ordering::Relaxed);
        let (replicas, leaders) = spread(&client).await?;
        (under_way == 0 && within_one(&replicas, &nodes) && within_one(&leaders, &nodes)).then_some(())
    })
    .await;
    step("balanced");
    let t = client.describe_topic(EVENTS).await.expect("describe");
    for p in &t.partitions {
        let spans: std::collections::BTreeSet<&str> = p.replicas.iter().map(|r| racks[r]).collect();
        assert_eq!(spans.len(), 2, "partition {} on {:?} spans both racks", p.partition, p.replicas);
    }
    let s = client.cluster_status().await.expect("status");
    assert!(s.nodes.iter().any(|n| n.id == 4 && n.rack == "b"), "the joined node's rack is recorded");
    let most = most_moves.load(Ordering::Relaxed);
    eprintln!("spread {:?}; at most {most} moves seen under way at once", spread(&client).await);
    assert!(most <= MAX_MOVES, "automatic balancing keeps at most {MAX_MOVES} moves under way, saw {most}");
    no_errors(&seen, "automatic balance");

    // --- 3. A node restarts: how long until it leads again.
    let id = 4;
    let had = leads(&client, &[BULK, EVENTS], id).await.unwrap_or(0);
    step(&format!("restart node {id} (it led {had} partitions)"));
    common::stop(&mut cluster, id).await;
    cluster.restart(id).expect("restart");
    let restarted = Instant::now();
    // Asked of the node itself: what others report can be a probe old.
    wait_for("the restarted node to lead again", WAIT, || async {
        (metric(&cluster, id, "replog_raft_leaders") >= 1.0).then_some(())
    })
    .await;
    let without = restarted.elapsed();
    step(&format!("node {id} leads again"));
    eprintln!("node {id} led nothing for {without:?} after its process started again (it led {had} before)");
    let acked = seen.acks.lock().unwrap().len();
    wait_for("produce to go on", WAIT, || async { (seen.acks.lock().unwrap().len() >= acked + 20).then_some(()) })
        .await;

    seen.stop.store(true, Ordering::Relaxed);
    producing.await.expect("producer task");
    no_errors(&seen, "the end");
    let acks = seen.acks.lock().unwrap().clone();
    let mut found = HashMap::new();
    for p in 0..EVENT_PARTITIONS {
        for r in PartitionReader::new(client.clone(), EVENTS, p, 0).read_to_end().await.expect("read") {
            found.insert(String::from_utf8(r.value.to_vec()).expect("utf8"), (p, r.offset));
        }
    }
    for (v, at) in &acks {
        assert_eq!(found.get(v), Some(at), "acknowledged {v} is not at {at:?}");
    }
    step(&format!("{} acknowledged records all read back", acks.len()));
}

/// A node back from a restart takes no writes until it has caught up with
/// the controller, so the balancer gives it no leadership before then (it
/// would refuse every produce); once it has, the partitions it is preferred
/// for come back to it. The catch-up is held back by a fault switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_restarted_node_not_yet_caught_up_with_the_controller_then_it_is_given_leadership_only_once_it_has() {
    const TOPIC: &str = "back";
    let mut opts = common::options(&[]);
    opts.env.push(("REPLOG_FAULT_CATCH_UP_DELAY_MS".into(), "3000".into()));
    let mut cluster = Cluster::start(3, opts).await.expect("start the cluster");
    let client = common::client(&cluster).await;
    client.create_topic(TOPIC, EVENT_PARTITIONS, 3).await.expect("create topic");
    let preferred = wait_for("every partition led by its preferred replica", WAIT, || async {
        let t = client.describe_topic(TOPIC).await.ok()?;
        t.partitions
            .iter()
            .all(|p| p.leader.is_some() && p.leader == p.replicas.first().copied())
            .then(|| t.partitions.iter().filter(|p| p.replicas.first() == Some(&3)).count())
    })
    .await;
    assert!(preferred > 0, "node 3 is the preferred replica of some partition");
    cluster.kill(3).expect("kill node 3");
    wait_for("node 3's partitions led elsewhere", WAIT, || async {
        (leads(&client, &[TOPIC], 3).await? == 0).then_some(())
    })
    .await;

    cluster.restart(3).expect("restart node 3");
    let t0 = Instant::now();
    let addr = cluster.node(3).addr.clone();
    let mut looks = 0;
    loop {
        // Leadership first, then the catch-up: catching up never goes back,
        // so "not yet" after a look that found node 3 leading means it led
        // before it had caught up.
        let led = leads(&client, &[TOPIC], 3).await;
        let caught_up = match replog_testkit::probe::connect(&addr, None).await {
            Some(mut c) => c.node_info(replog_proto::pb::NodeInfoRequest {}).await.ok().map(|r| r.into_inner()),
            None => None,
        }
        .map(|i| i.controller_caught_up);
        if caught_up == Some(true) {
            break;
        }
        assert!(
            led.unwrap_or(0) == 0,
            "node 3 leads {led:?} partitions {:?} after its restart, before it caught up with the controller",
            t0.elapsed()
        );
        looks += 1;
        assert!(t0.elapsed() < WAIT, "node 3 did not catch up within {WAIT:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(looks >= 10, "the held-back catch-up was watched for a while ({looks} looks)");
    let caught_up_after = t0.elapsed();
    wait_for("node 3 to lead its preferred partitions again", WAIT, || async {
        (leads(&client, &[TOPIC], 3).await? == preferred).then_some(())
    })
    .await;
    println!(
        "node 3 caught up {caught_up_after:?} after its restart and led its {preferred} partitions again {:?} after it",
        t0.elapsed()
    );
}
