//! Running a cluster under continuous produce: nodes join, a partition
//! moves while its leader is SIGKILLed, the cluster is balanced, a node is
//! decommissioned, and every node is restarted one at a time.
//!
//! Contract checked: no acknowledged record is lost or moved and no error
//! reaches the producing application (the SDK retries NOT_LEADER and
//! UNAVAILABLE within its deadline); a move survives the SIGKILL of the
//! partition's leader midway and completes; after a balance, replicas and
//! leaders per node are within one of even; bad membership requests get
//! their stable codes (29–32, 34) and change nothing. The longest wait for one
//! acknowledgement during the rolling restart is printed (measured, never
//! asserted: timing belongs to benchmarks).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, WAIT, wait_for};
use replog_client::{Client, ErrorCode, PartitionReader, Producer, ProducerConfig};

const TOPIC: &str = "fleet";
/// Waits for an acknowledgement longer than this are listed at the end.
const LONG_WAIT: Duration = Duration::from_millis(200);

/// What the background producers saw.
#[derive(Default)]
struct Seen {
    /// value → (partition, offset) of every acknowledged record.
    acks: Mutex<HashMap<String, (u32, u64)>>,
    /// Errors that reached the application.
    errors: Mutex<Vec<String>>,
    /// Longest send-to-acknowledgement wait since the last reset, in µs.
    max_wait_us: AtomicU64,
    /// Waits of over [`LONG_WAIT`]: (ms since the test began, when the send
    /// began; the wait; the partition), to tell which step they belong to.
    long_waits: Mutex<Vec<(u128, Duration, u32)>>,
    began: Mutex<Option<Instant>>,
    stop: AtomicBool,
}

/// `writers` tasks, each sending one record at a time and waiting for its
/// acknowledgement (acks=all), so that each wait is a stall as the
/// application sees it.
fn spawn_producers(client: &Client, writers: usize, seen: &Arc<Seen>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let producer = Producer::new(client.clone(), ProducerConfig::default());
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                while !seen.stop.load(Ordering::Relaxed) {
                    let value = format!("w{w}-{i}");
                    let key = Bytes::from(format!("k{}", i % 31));
                    let t = Instant::now();
                    match producer.send(TOPIC, Some(key), Bytes::from(value.clone())).await {
                        Ok(at) => {
                            let waited = t.elapsed();
                            seen.max_wait_us.fetch_max(waited.as_micros() as u64, Ordering::Relaxed);
                            if waited > LONG_WAIT {
                                let began = seen.began.lock().unwrap().expect("set before producing");
                                let since = t.duration_since(began).as_millis();
                                seen.long_waits.lock().unwrap().push((since, waited, at.0));
                            }
                            seen.acks.lock().unwrap().insert(value, at);
                        }
                        Err(e) => seen.errors.lock().unwrap().push(format!("{value}: {e}")),
                    }
                    i += 1;
                }
            })
        })
        .collect()
}

fn no_errors(seen: &Seen, phase: &str) {
    let errors = seen.errors.lock().unwrap();
    assert!(errors.is_empty(), "{phase}: {} errors reached the producer, first: {:?}", errors.len(), errors.first());
}

/// Produces until at least `n` more records are acknowledged.
async fn progress(seen: &Seen, n: usize, phase: &str) {
    let start = seen.acks.lock().unwrap().len();
    wait_for(&format!("{n} more acknowledged records ({phase})"), WAIT, || async {
        (seen.acks.lock().unwrap().len() >= start + n).then_some(())
    })
    .await;
    no_errors(seen, phase);
}

/// The stable code of a failed SDK call.
fn code<T: std::fmt::Debug>(r: replog_client::Result<T>) -> ErrorCode {
    let e = r.expect_err("the request must be refused");
    e.code().unwrap_or_else(|| panic!("no code in {e}"))
}

/// Whether `/ready` on `metrics` answers 200 (the node has caught up).
fn ready(metrics: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(metrics) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(format!("GET /ready HTTP/1.0\r\nHost: {metrics}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200")
}

/// Replicas and current leaders per node over the topic's partitions.
async fn spread(client: &Client) -> (BTreeMap<u64, usize>, BTreeMap<u64, usize>) {
    let t = client.describe_topic(TOPIC).await.expect("describe");
    let (mut replicas, mut leaders) = (BTreeMap::new(), BTreeMap::new());
    for p in &t.partitions {
        for r in &p.replicas {
            *replicas.entry(*r).or_insert(0) += 1;
        }
        if let Some(l) = p.leader {
            *leaders.entry(l).or_insert(0) += 1;
        }
    }
    (replicas, leaders)
}

/// Every node of `nodes` holds a count within one of the others.
fn within_one(counts: &BTreeMap<u64, usize>, nodes: &[u64]) -> bool {
    let v: Vec<usize> = nodes.iter().map(|n| counts.get(n).copied().unwrap_or(0)).collect();
    v.iter().max().unwrap() - v.iter().min().unwrap() <= 1
}

/// Every acknowledged value is at its acknowledged place, exactly once.
async fn check_all_acked(client: &Client, partitions: u32, seen: &Seen) {
    let acks = seen.acks.lock().unwrap().clone();
    let mut found: HashMap<String, (u32, u64)> = HashMap::new();
    for p in 0..partitions {
        let recs = PartitionReader::new(client.clone(), TOPIC, p, 0).read_to_end().await.expect("read");
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "offsets of partition {p} are contiguous from 0");
            let v = String::from_utf8(r.value.to_vec()).expect("utf8");
            assert!(found.insert(v.clone(), (p, r.offset)).is_none(), "{v} appears twice");
        }
    }
    for (v, at) in &acks {
        assert_eq!(found.get(v), Some(at), "acknowledged {v} is not at {at:?}");
    }
    eprintln!("{} acknowledged records all read back at their offsets", acks.len());
}

/// Waits until node `id` runs and has caught up.
async fn wait_caught_up(cluster: &Cluster, id: u64) {
    let metrics = cluster.node(id).metrics.clone();
    wait_for(&format!("node {id} to catch up (/ready)"), WAIT, || {
        let m = metrics.clone();
        async move { tokio::task::spawn_blocking(move || ready(&m)).await.ok()?.then_some(()) }
    })
    .await;
}

struct Flow {
    partitions: u32,
    writers: usize,
    /// Records acknowledged between steps.
    per_step: usize,
}

async fn run(flow: Flow) {
    let mut cluster = common::start(3, &[]).await;
    let client = common::client(&cluster).await;
    // This flow balances by hand (t34 covers automatic balancing).
    client.cluster_config(&[("balance.auto", "false")]).await.expect("automatic balancing off");
    client.create_topic(TOPIC, flow.partitions, 3).await.expect("create topic");
    cluster.wait_leaders(&client, TOPIC, WAIT).await.expect("leaders");

    // Bad input on the first three nodes, before any load.
    assert_eq!(code(client.move_partition(TOPIC, 0, &[1, 2, 9], false).await), ErrorCode::UnknownNode);
    assert_eq!(code(client.move_partition(TOPIC, 0, &[1, 2], false).await), ErrorCode::BelowReplicationFactor);
    assert_eq!(code(client.move_partition(TOPIC, 0, &[1, 1, 2], false).await), ErrorCode::InvalidReplicaSet);
    assert_eq!(code(client.move_partition(TOPIC, 0, &[], false).await), ErrorCode::InvalidReplicaSet);
    assert_eq!(code(client.move_partition("nope", 0, &[1, 2, 3], false).await), ErrorCode::UnknownTopic);
    assert_eq!(code(client.decommission_node(9).await), ErrorCode::UnknownNode);
    // Every other node already holds every partition.
    assert_eq!(code(client.decommission_node(1).await), ErrorCode::NotEnoughNodes);
    // (CONTROLLER_QUORUM, 33: unit tests of decommission::controller_without.)
    assert!(client.move_status().await.expect("status").decommissioning.is_empty(), "refusals change nothing");

    let seen = Arc::new(Seen::default());
    let began = Instant::now();
    *seen.began.lock().unwrap() = Some(began);
    let step = |what: &str| eprintln!("[{:>6} ms] {what}", began.elapsed().as_millis());
    let producers = spawn_producers(&client, flow.writers, &seen);
    progress(&seen, flow.per_step, "warm-up").await;

    step("join");
    // Grow: two nodes join and take no replica until asked.
    for id in [4, 5] {
        cluster.join(id).expect("join");
    }
    wait_for("nodes 4 and 5 to join", WAIT, || async {
        let s = client.cluster_status().await.ok()?;
        let joined = s.nodes.iter().filter(|n| n.id >= 4 && n.alive).count();
        (joined == 2).then_some(())
    })
    .await;
    progress(&seen, flow.per_step, "join").await;

    step("move with a SIGKILL");
    // A move whose leader is SIGKILLed at once: it completes under the
    // next leader. A different move of the same partition meanwhile is
    // refused. The partition is one the controller leader does not lead,
    // so that the refusal is answered before the move can finish.
    let controller = cluster.controller_leader().await.expect("controller leader");
    let t = client.describe_topic(TOPIC).await.expect("describe");
    let p = t.partitions.iter().find(|p| p.leader.is_some_and(|l| l != controller)).expect("a partition");
    let (partition, victim) = (p.partition, p.leader.expect("leader"));
    let target: Vec<u64> = p.replicas.iter().copied().filter(|r| *r != victim).chain([4]).collect();
    client.move_partition(TOPIC, partition, &target, false).await.expect("move").expect("a move");
    cluster.kill(victim).expect("kill the partition leader");
    let other: Vec<u64> = target.iter().map(|r| if *r == 4 { 5 } else { *r }).collect();
    assert_eq!(code(client.move_partition(TOPIC, partition, &other, false).await), ErrorCode::MoveInProgress);
    let moved = replog_client::membership::PartitionMove {
        topic: TOPIC.into(),
        partition,
        to: target.clone(),
        ..Default::default()
    };
    wait_for("the move to finish under a new leader", WAIT, || async {
        client.moves_done(std::slice::from_ref(&moved)).await.ok()?.then_some(())
    })
    .await;
    cluster.restart(victim).expect("restart");
    wait_caught_up(&cluster, victim).await;
    progress(&seen, flow.per_step, "move with the leader killed").await;

    step("balance");
    // Balance: within one of even, replicas and (once the leader balancer
    // has moved them) leaders.
    let nodes = [1, 2, 3, 4, 5];
    let before = spread(&client).await.0;
    let plan = client.balance_cluster(true).await.expect("dry run");
    assert!(!plan.is_empty(), "two new nodes need replicas");
    assert_eq!(client.move_status().await.expect("status").moves.len(), 0, "a dry run moves nothing");
    assert_eq!(spread(&client).await.0, before, "a dry run moves nothing");
    let moves = client.balance_cluster(false).await.expect("balance");
    wait_for("the balance moves to finish", WAIT, || async { client.moves_done(&moves).await.ok()?.then_some(()) })
        .await;
    // Awaited, not asserted at once: the node answering may apply the last
    // FinishMove a moment after the one that said the moves were done.
    wait_for("replicas within one of even", WAIT, || async {
        let (replicas, _) = spread(&client).await;
        within_one(&replicas, &nodes).then_some(())
    })
    .await;
    wait_for("leaders within one of even", WAIT, || async {
        let (_, leaders) = spread(&client).await;
        within_one(&leaders, &nodes).then_some(())
    })
    .await;
    progress(&seen, flow.per_step, "balance").await;

    step("decommission");
    // Decommission node 1, a controller voter: a joined node takes its
    // vote, its replicas move, and it leaves.
    client.decommission_node(1).await.expect("decommission");
    wait_for("node 1 to leave the cluster", WAIT, || async { client.node_removed(1).await.ok()?.then_some(()) }).await;
    common::stop(&mut cluster, 1).await;
    let t = client.describe_topic(TOPIC).await.expect("describe");
    assert!(t.partitions.iter().all(|p| !p.replicas.contains(&1)), "node 1 holds nothing");
    progress(&seen, flow.per_step, "decommission").await;

    step("controller voters");
    // The controller's voters change directly: bad asks are refused and
    // change nothing; a voter is replaced by the node that is still a
    // learner, and the controller keeps serving through the roll below.
    let (voters, learners) = client.controller_voters(&[], &[]).await.expect("voters");
    assert_eq!((voters.len(), learners.len()), (3, 1), "voters {voters:?}, learners {learners:?}");
    assert_eq!(code(client.controller_voters(&[9], &[]).await), ErrorCode::UnknownNode);
    assert_eq!(code(client.controller_voters(&[], &voters).await), ErrorCode::ControllerQuorum);
    let (old, new) = (voters[0], learners[0]);
    let (after, learners) = client.controller_voters(&[new], &[old]).await.expect("replace a voter");
    assert!(after.contains(&new) && !after.contains(&old) && after.len() == 3, "voters {after:?}");
    assert!(learners.contains(&old), "the old voter stays a learner: {learners:?}");
    progress(&seen, flow.per_step, "controller voters").await;

    // Roll: each node stops gracefully (handing its leaderships over),
    // restarts and catches up before the next.
    seen.max_wait_us.store(0, Ordering::Relaxed);
    let rolled = Instant::now();
    for id in [2, 3, 4, 5] {
        step(&format!("roll: stopping node {id}"));
        common::stop(&mut cluster, id).await;
        step(&format!("roll: node {id} stopped"));
        cluster.restart(id).expect("restart");
        wait_caught_up(&cluster, id).await;
        step(&format!("roll: node {id} caught up"));
        progress(&seen, flow.per_step / 4 + 1, "roll").await;
    }
    let stall = Duration::from_micros(seen.max_wait_us.load(Ordering::Relaxed));
    eprintln!("rolling restart of 4 nodes took {:?}; longest producer wait for an ack: {stall:?}", rolled.elapsed());

    seen.stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.expect("producer task");
    }
    no_errors(&seen, "the end");
    for (at, waited, p) in seen.long_waits.lock().unwrap().iter() {
        eprintln!("[{at:>6} ms] a send to partition {p} waited {waited:?}");
    }
    check_all_acked(&client, flow.partitions, &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_continuous_produce_when_nodes_join_move_balance_leave_and_roll_then_no_acknowledged_record_is_lost() {
    run(Flow { partitions: 6, writers: 2, per_step: 20 }).await;
}

/// `make membership`: the same with more partitions, writers and records
/// between steps (run it on a quiet machine, ideally with --release).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long: run with make membership"]
async fn long_membership_flow() {
    run(Flow { partitions: 16, writers: 8, per_step: 2000 }).await;
}

/// A fresh cluster forms its controller at once even where an operator chose
/// long election timeouts (long leases). The node that initializes the
/// controller campaigns as it starts, here before its peers listen, and
/// without a kick its next campaign would wait a random election timeout,
/// here at least 30 s.
#[tokio::test]
async fn given_long_election_timeouts_when_the_first_node_starts_alone_then_the_controller_forms_once_the_others_do() {
    let mut opts = common::options(&["--election-timeout-min-ms", "30000", "--election-timeout-max-ms", "60000"]);
    opts.ready_timeout = Duration::from_secs(10);
    let mut cluster = Cluster::prepare(3, opts).expect("prepare the cluster");
    cluster.restart(1).expect("start node 1");
    // Its first campaign has failed: the peers it asked were not listening.
    wait_for("node 1 campaigning alone", WAIT, || async {
        cluster.log(1).contains("while requesting vote").then_some(())
    })
    .await;
    // Then the others one by one, each once the one before listens (a node
    // that campaigned too would vote for itself and refuse the next).
    for id in [2, 3] {
        cluster.restart(id).expect("start the node");
        wait_for(&format!("node {id} listening"), WAIT, || async {
            cluster.log(id).contains("listening peer=").then_some(())
        })
        .await;
    }
    let leader = cluster.wait_ready(Duration::from_secs(10)).await.expect("a controller leader well before 30 s");
    println!("controller leader: node {leader}");
}
