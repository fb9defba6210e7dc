//! The SDK's group consumer against real node processes.
//!
//! Contract checked (the delivery guarantee is at least once, with the
//! application committing after it processed a batch):
//! - three members of one group on a 6-partition topic share it evenly
//!   and consume every record exactly once while the group is stable;
//! - a member that dies without leaving loses its partitions to the others
//!   within its session timeout (plus the survivors' heartbeat interval),
//!   and exactly the records it processed after its last commit are
//!   delivered again — once; a member that closes commits and leaves, and
//!   its partitions move at once with nothing delivered twice;
//! - a rebalance moves only what must move: a member that joins takes
//!   partitions only from members above the even share, and every other
//!   member keeps the ones it had (its rebalance events say so);
//! - a member keeps consuming through a SIGKILL of a partition's leader
//!   with no error reaching the application and no record missed, and so
//!   does a Subscribe stream; cluster status shows the dead node's
//!   replicas as assigned, not 0;
//! - committed offsets survive a SIGKILL of the coordinator's node (the
//!   running member keeps consuming and committing without an error) and
//!   a SIGKILL and restart of every node;
//! - a group reset to a timestamp replays from the first record at or
//!   after it, and `seek_to_timestamp` does the same for one member;
//! - a Subscribe stream whose reader stalls holds a bounded amount of the
//!   node's reads (and memory) however far the partition grows, and loses
//!   nothing when it reads on;
//! - bad input gets its stable code: unknown group, a commit for a
//!   partition not assigned to the member, a stale generation, a reset or
//!   delete while members are active, an unknown topic.
//!
//! Each test shares one cluster across its steps: starting a debug-build
//! cluster costs more than most steps.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{CLUSTER_READY, WAIT, preferred_leader, wait_for};
use futures::StreamExt;
use replog_client::{
    AutoOffsetReset, Client, ConsumedRecord, ErrorCode, GroupConsumer, GroupConsumerConfig, OffsetCommit, Producer,
    ProducerConfig, RebalanceEvent, Record, TopicPartition,
};
use tokio::task::JoinHandle;

/// Fewer coordinator partitions than the default 16 keep a debug-build
/// three-node cluster light; placement and routing work alike.
const NODE_ARGS: &[&str] = &["--group-partitions", "3"];
/// Short sessions, so that a dead member is noticed quickly.
const SESSION: Duration = Duration::from_secs(3);
/// A dead member is expired at most one coordinator tick (250 ms) after its
/// session ran out, and the survivors hear of it on their next heartbeat
/// (the coordinator asks for one every fifth of the session). Two seconds
/// on top for a loaded 2-core machine running debug builds.
const HANDOVER_BOUND: Duration =
    Duration::from_millis(SESSION.as_millis() as u64 + SESSION.as_millis() as u64 / 5 + 250 + 2_000);
/// How long the members' polls wait, which is also how often the test sees
/// their assignment.
const POLL_WAIT: Duration = Duration::from_millis(200);

fn config(name: &str, auto_commit: bool) -> GroupConsumerConfig {
    GroupConsumerConfig {
        client_id: name.to_string(),
        session_timeout: Some(SESSION),
        auto_commit,
        auto_commit_interval: Duration::from_millis(200),
        auto_offset_reset: AutoOffsetReset::Earliest,
        poll_timeout: POLL_WAIT,
        ..Default::default()
    }
}

/// What one member handed to the application, and how much of it its
/// successful commits cover.
#[derive(Default)]
struct Log {
    records: Vec<(u32, u64)>,
    committed: usize,
    assignment: Vec<TopicPartition>,
    events: Vec<RebalanceEvent>,
}

/// A member running in a task: polls, logs, commits after each batch (while
/// `commit` is set), closes when `stop` is set. Any error fails the task.
struct Member {
    log: Arc<Mutex<Log>>,
    commit: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<replog_client::Result<()>>,
}

impl Member {
    async fn start(client: &Client, group: &str, topic: &str, name: &str) -> Member {
        let mut c = GroupConsumer::new(client.clone(), group, config(name, false));
        let (log, commit, stop) =
            (Arc::new(Mutex::new(Log::default())), Arc::new(AtomicBool::new(true)), Arc::default());
        // Listening before joining: the first assignment is an event too.
        let mut events = Box::pin(c.rebalance_events());
        tokio::spawn({
            let log = log.clone();
            async move {
                while let Some(e) = events.next().await {
                    log.lock().unwrap().events.push(e);
                }
            }
        });
        c.subscribe(&[topic]).await.expect("subscribe");
        let task = tokio::spawn({
            let (log, commit, stop): (_, _, Arc<AtomicBool>) = (log.clone(), commit.clone(), Arc::clone(&stop));
            async move {
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return c.close().await;
                    }
                    let recs = c.poll().await?;
                    {
                        let mut l = log.lock().unwrap();
                        l.records.extend(recs.iter().map(|r| (r.partition, r.offset)));
                        l.assignment = c.assignment();
                    }
                    if !recs.is_empty() && commit.load(Ordering::SeqCst) {
                        c.commit().await?;
                        let mut l = log.lock().unwrap();
                        l.committed = l.records.len();
                    }
                }
            }
        });
        Member { log, commit, stop, task }
    }

    fn assigned(&self) -> BTreeSet<u32> {
        self.log.lock().unwrap().assignment.iter().map(|tp| tp.partition).collect()
    }

    fn records(&self) -> Vec<(u32, u64)> {
        self.log.lock().unwrap().records.clone()
    }

    fn uncommitted(&self) -> Vec<(u32, u64)> {
        let l = self.log.lock().unwrap();
        l.records[l.committed..].to_vec()
    }

    /// Partitions its rebalance events say it was granted and gave up.
    fn moves(&self) -> (usize, usize, usize) {
        let l = self.log.lock().unwrap();
        let (mut granted, mut revoked, mut lost) = (0, 0, 0);
        for e in &l.events {
            match e {
                RebalanceEvent::Assigned { partitions, .. } => granted += partitions.len(),
                RebalanceEvent::Revoked { partitions, .. } => revoked += partitions.len(),
                RebalanceEvent::Lost { partitions } => lost += partitions.len(),
            }
        }
        (granted, revoked, lost)
    }

    fn check_running(&self) {
        assert!(!self.task.is_finished(), "a member stopped on its own (an error reached the application)");
    }

    /// Stops the member like a crash: no commit, no leave.
    fn crash(&self) {
        self.task.abort();
    }

    async fn close(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("member task").expect("member closed cleanly");
    }
}

/// Produces `per_partition` records to every partition; returns their offsets.
async fn produce(client: &Client, topic: &str, partitions: u32, per_partition: u64, tag: &str) -> Vec<(u32, u64)> {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut handles = Vec::new();
    for i in 0..per_partition {
        for p in 0..partitions {
            let rec = Record::new(None, Bytes::from(format!("{tag}-{p}-{i}")), replog_client::now_ms());
            handles.push(producer.enqueue(topic, Some(p), rec).await.expect("enqueue"));
        }
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.wait().await.expect("acknowledged"));
    }
    out
}

type Logs = Vec<Arc<Mutex<Log>>>;

/// How often each record was handed to some member.
fn counts(logs: &Logs) -> BTreeMap<(u32, u64), usize> {
    let mut m = BTreeMap::new();
    for log in logs {
        for r in &log.lock().unwrap().records {
            *m.entry(*r).or_default() += 1;
        }
    }
    m
}

/// Waits until the group's committed offsets reach the high watermark of
/// every partition.
async fn wait_all_committed(client: &Client, group: &str, topic: &str) {
    wait_for("the group to commit everything", WAIT, || async {
        let g = client.describe_group(group).await.ok()?;
        let t = client.describe_topic(topic).await.ok()?;
        let done = t.partitions.iter().all(|p| {
            g.offsets.iter().any(|o| o.topic == topic && o.partition == p.partition && o.offset == p.high_watermark)
        });
        done.then_some(())
    })
    .await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_group_of_three_when_members_die_leave_and_join_then_records_are_consumed_once_but_a_dead_ones_tail_and_only_what_must_move_moves()
 {
    const TOPIC: &str = "events";
    const GROUP: &str = "workers";
    const PARTITIONS: u32 = 6;
    let cluster = common::start(3, NODE_ARGS).await;
    let client = common::client(&cluster).await;
    client.create_topic(TOPIC, PARTITIONS, 3).await.expect("create topic");

    let mut members = Vec::new();
    for name in ["a", "b", "c"] {
        members.push(Member::start(&client, GROUP, TOPIC, name).await);
    }
    let logs: Logs = members.iter().map(|m| m.log.clone()).collect();
    wait_for("three members with two partitions each", WAIT, || async {
        let sets: Vec<BTreeSet<u32>> = members.iter().map(Member::assigned).collect();
        let all: BTreeSet<u32> = sets.iter().flatten().copied().collect();
        (sets.iter().all(|s| s.len() == 2) && all.len() == PARTITIONS as usize).then_some(())
    })
    .await;

    // Stable group: every record exactly once.
    let first = produce(&client, TOPIC, PARTITIONS, 100, "one").await;
    wait_all_committed(&client, GROUP, TOPIC).await;
    let c = counts(&logs);
    assert_eq!(c.keys().copied().collect::<BTreeSet<_>>(), first.iter().copied().collect(), "every record consumed");
    assert!(c.values().all(|n| *n == 1), "a record was consumed twice in a stable group");

    // The victim processes its share of the next records without committing, then dies.
    let victim = members.remove(0);
    let victim_parts = victim.assigned();
    victim.commit.store(false, Ordering::SeqCst);
    let second = produce(&client, TOPIC, PARTITIONS, 50, "two").await;
    let victim_share = second.iter().filter(|(p, _)| victim_parts.contains(p)).count();
    wait_for("the victim to process its share of the new records", WAIT, || async {
        (victim.uncommitted().len() >= victim_share).then_some(())
    })
    .await;
    let tail: BTreeSet<(u32, u64)> = victim.uncommitted().into_iter().collect();
    let died = Instant::now();
    victim.crash();
    wait_for("the survivors to own every partition", WAIT, || async {
        let all: BTreeSet<u32> = members.iter().flat_map(Member::assigned).collect();
        (all.len() == PARTITIONS as usize).then_some(())
    })
    .await;
    let handover = died.elapsed();
    eprintln!("hand-over after the member died: {handover:?} (session {SESSION:?})");
    assert!(handover <= HANDOVER_BOUND, "partitions moved after {handover:?}, bound {HANDOVER_BOUND:?}");
    wait_all_committed(&client, GROUP, TOPIC).await;
    members.iter().for_each(Member::check_running);

    let c = counts(&logs);
    let produced: BTreeSet<(u32, u64)> = first.iter().chain(&second).copied().collect();
    assert_eq!(c.keys().copied().collect::<BTreeSet<_>>(), produced, "every record consumed at least once");
    for (r, n) in &c {
        let want = if tail.contains(r) { 2 } else { 1 };
        assert_eq!(
            *n,
            want,
            "record {r:?} consumed {n} times (in the dead member's uncommitted tail: {})",
            tail.contains(r)
        );
    }
    eprintln!("redelivered after the crash: {} records, each once more", tail.len());

    // A member that closes commits, leaves, and hands over at once.
    let leaver = members.remove(0);
    let left = Instant::now();
    leaver.close().await;
    wait_for("the last member to own every partition", WAIT, || async {
        (members[0].assigned().len() == PARTITIONS as usize).then_some(())
    })
    .await;
    let moved = left.elapsed();
    eprintln!("hand-over after a member left: {moved:?}");
    assert!(moved < SESSION, "after a leave, partitions moved only after {moved:?}: the session expired instead");
    let third = produce(&client, TOPIC, PARTITIONS, 10, "three").await;
    wait_all_committed(&client, GROUP, TOPIC).await;
    let c = counts(&logs);
    for r in &third {
        assert_eq!(c.get(r), Some(&1), "record {r:?} after the leave");
    }
    let total: usize = c.values().sum();
    assert_eq!(total, first.len() + second.len() + tail.len() + third.len(), "nothing delivered again after the leave");
    members[0].check_running();

    // Two members join one after the other: each time the newcomer takes
    // only what is above the even share, and the others keep the rest.
    let mut logs = logs;
    let sole = members.remove(0);
    let before = sole.assigned();
    let (_, revoked_before, _) = sole.moves();
    let d = Member::start(&client, GROUP, TOPIC, "d").await;
    wait_for("two members with three partitions each", WAIT, || async {
        (sole.assigned().len() == 3 && d.assigned().len() == 3).then_some(())
    })
    .await;
    let sole_kept = sole.assigned();
    assert!(sole_kept.is_subset(&before), "the first member kept 3 of its own: {sole_kept:?} of {before:?}");
    let d_had = d.assigned();
    let e = Member::start(&client, GROUP, TOPIC, "e").await;
    wait_for("three members with two partitions each", WAIT, || async {
        [&sole, &d, &e].iter().all(|m| m.assigned().len() == 2).then_some(())
    })
    .await;
    assert!(sole.assigned().is_subset(&sole_kept), "the first member kept 2 of its 3");
    assert!(d.assigned().is_subset(&d_had), "the second member kept 2 of its 3");
    let (_, revoked, lost) = sole.moves();
    assert_eq!((revoked - revoked_before, lost), (4, 0), "the first member gave up 3, then 1, and lost nothing");
    assert_eq!(d.moves(), (3, 1, 0), "the second member got 3 and gave up 1");
    assert_eq!(e.moves(), (2, 0, 0), "the third member got 2");
    logs.extend([d.log.clone(), e.log.clone()]);
    let fourth = produce(&client, TOPIC, PARTITIONS, 10, "four").await;
    wait_all_committed(&client, GROUP, TOPIC).await;
    let c = counts(&logs);
    assert!(fourth.iter().all(|r| c.get(r) == Some(&1)), "records after the joins, each once");
    for m in [sole, d, e] {
        m.check_running();
        m.close().await;
    }
}

/// Produces records with timestamps `base + 10 * i` to one partition.
async fn produce_timed(client: &Client, topic: &str, partition: u32, n: u64, base: i64) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut handles = Vec::new();
    for i in 0..n {
        let rec = Record::new(None, Bytes::from(format!("t{i}")), base + 10 * i as i64);
        handles.push(producer.enqueue(topic, Some(partition), rec).await.expect("enqueue"));
    }
    for h in handles {
        h.wait().await.expect("acknowledged");
    }
}

async fn drain(c: &mut GroupConsumer, want: usize) -> Vec<ConsumedRecord> {
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.len() < want {
        assert!(Instant::now() < deadline, "got {} of {want} records", out.len());
        out.extend(c.poll().await.expect("poll"));
    }
    out
}

/// The group's committed offsets by partition.
async fn committed(client: &Client, group: &str) -> BTreeMap<u32, u64> {
    let offsets = client.committed_offsets(group, &[]).await.expect("committed offsets");
    offsets.into_iter().map(|c| (c.partition, c.offset)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_consuming_group_when_a_partition_leader_the_coordinator_and_every_node_are_killed_then_nothing_reaches_the_application_and_commits_survive()
 {
    const TOPIC: &str = "payments";
    const GROUP: &str = "settlement";
    const ROUNDS: u64 = 30;
    let mut cluster = common::start(3, NODE_ARGS).await;
    let client = common::client(&cluster).await;
    client.create_topic(TOPIC, 3, 3).await.expect("create topic");
    let (leader, _) = preferred_leader(&client, TOPIC, 0).await;
    let member = Member::start(&client, GROUP, TOPIC, "settler").await;

    // 1. Records flow while the leader of partition 0 dies.
    let producing = tokio::spawn({
        let client = client.clone();
        async move {
            let mut acked = Vec::new();
            for round in 0..ROUNDS {
                acked.extend(produce(&client, TOPIC, 3, 10, &format!("r{round}")).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        }
    });
    // Beside the group, a plain Subscribe stream of partition 0 follows the
    // failover too.
    let subscribed = Arc::new(Mutex::new(Vec::new()));
    let subscription = tokio::spawn({
        let (client, subscribed) = (client.clone(), subscribed.clone());
        async move {
            let mut sub = client.subscribe(TOPIC, 0, 0);
            loop {
                match sub.next().await {
                    Ok(recs) => subscribed.lock().unwrap().extend(recs.iter().map(|r| r.offset)),
                    Err(e) => return e,
                }
            }
        }
    });
    wait_for("the member to consume from partition 0", WAIT, || async {
        member.records().iter().any(|(p, _)| *p == 0).then_some(())
    })
    .await;
    cluster.kill(leader).expect("kill");
    eprintln!("killed node {leader}, the leader of {TOPIC}/0");
    // Cluster status counts a dead node's replicas as assigned (3 of the
    // topic, 3 of __consumer_offsets: every partition is on every node).
    let (alive, replicas) = wait_for("cluster status to show the node down", WAIT, || async {
        let s = client.cluster_status().await.ok()?;
        let n = s.nodes.iter().find(|n| n.id == leader)?;
        (!n.alive).then_some((n.alive, n.replica_count))
    })
    .await;
    assert_eq!((alive, replicas), (false, 6), "a dead node's replicas in cluster status");
    let acked = producing.await.expect("producer task");
    let want: BTreeSet<(u32, u64)> = acked.iter().copied().collect();
    wait_for("the member to consume every acknowledged record", WAIT, || async {
        member.check_running();
        let seen: BTreeSet<(u32, u64)> = member.records().into_iter().collect();
        want.is_subset(&seen).then_some(())
    })
    .await;
    member.check_running();
    // Per partition, offsets come in order without a gap.
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    let mut again = 0;
    for (p, o) in member.records() {
        let n = next.entry(p).or_insert(0);
        assert!(o <= *n, "partition {p}: offset {o} after {n}: a record was skipped");
        if o < *n {
            again += 1;
        }
        *n = (*n).max(o + 1);
    }
    eprintln!("records delivered twice across the leader's failover: {again}");
    let end0 = want.iter().filter(|(p, _)| *p == 0).map(|(_, o)| o + 1).max().unwrap_or(0);
    wait_for("the subscription to reach the end of partition 0", WAIT, || async {
        assert!(!subscription.is_finished(), "an error reached the subscription");
        (subscribed.lock().unwrap().len() as u64 >= end0).then_some(())
    })
    .await;
    subscription.abort();
    let offsets = subscribed.lock().unwrap().clone();
    assert_eq!(offsets, (0..end0).collect::<Vec<_>>(), "the subscription: every offset once, in order");
    wait_all_committed(&client, GROUP, TOPIC).await;
    cluster.restart(leader).expect("restart");
    cluster.wait_ready(CLUSTER_READY).await.expect("ready");

    // 2. SIGKILL the coordinator's node: the member goes on, and so do its commits.
    let coordinator =
        wait_for("the group's coordinator", WAIT, || async { client.find_coordinator(GROUP).await.ok()?.node_id })
            .await;
    cluster.kill(coordinator).expect("kill");
    eprintln!("killed node {coordinator}, the coordinator of {GROUP}");
    let more = produce(&client, TOPIC, 3, 100, "after").await;
    wait_all_committed(&client, GROUP, TOPIC).await;
    let moved = client.find_coordinator(GROUP).await.expect("find coordinator");
    assert_ne!(moved.node_id, Some(coordinator), "a new coordinator took over");
    member.check_running();
    let seen: BTreeSet<(u32, u64)> = member.records().into_iter().collect();
    let all: BTreeSet<(u32, u64)> = acked.iter().chain(&more).copied().collect();
    assert_eq!(seen, all, "the member consumed every record through the coordinator's failover");
    member.close().await;
    let before = committed(&client, GROUP).await;
    let ends: BTreeMap<u32, u64> = all.iter().fold(BTreeMap::new(), |mut m, (p, o)| {
        let e = m.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
        m
    });
    assert_eq!(before, ends, "committed offsets after the coordinator's failover: every record");

    // 3. SIGKILL every node and start them again on their data.
    cluster.restart(coordinator).expect("restart");
    cluster.wait_ready(CLUSTER_READY).await.expect("ready");
    cluster.kill_all().expect("kill all");
    cluster.restart_all().expect("restart all");
    cluster.wait_ready(CLUSTER_READY).await.expect("ready");
    let client = common::client(&cluster).await;
    let after_restart: BTreeMap<u32, u64> = wait_for("the group's offsets after the restart", WAIT, || async {
        let offsets = client.committed_offsets(GROUP, &[]).await.ok()?;
        Some(offsets.into_iter().map(|c| (c.partition, c.offset)).collect::<BTreeMap<_, _>>())
    })
    .await;
    assert_eq!(after_restart, before, "committed offsets after every node was SIGKILLed and restarted");

    // A new member continues exactly there.
    let fresh = Member::start(&client, GROUP, TOPIC, "settler-2").await;
    let new = produce(&client, TOPIC, 3, 20, "restarted").await;
    wait_all_committed(&client, GROUP, TOPIC).await;
    let got: BTreeSet<(u32, u64)> = fresh.records().into_iter().collect();
    assert_eq!(got, new.into_iter().collect(), "the new member starts at the committed offsets, nothing before");
    fresh.close().await;

    // 4. Replay by time. Record i of this topic has timestamp base + 10i:
    // base + 425 falls between records 42 and 43, so the first at or
    // after it is 43.
    const CLICKS: &str = "clicks";
    const REPLAY: &str = "replayers";
    client.create_topic(CLICKS, 2, 3).await.expect("create topic");
    let base = replog_client::now_ms() - 3_600_000;
    for p in 0..2 {
        produce_timed(&client, CLICKS, p, 100, base).await;
    }
    let mut c = GroupConsumer::new(client.clone(), REPLAY, config("r", false));
    c.subscribe(&[CLICKS]).await.expect("subscribe");
    drain(&mut c, 200).await;
    c.commit().await.expect("commit");
    c.close().await.expect("close");
    let at = base + 425;
    let mut offsets = Vec::new();
    for p in 0..2 {
        let o = client.list_offsets(CLICKS, p, replog_client::OffsetSpec::Timestamp(at)).await.expect("list offsets");
        assert_eq!((o.offset, o.timestamp_ms), (43, Some(base + 430)), "first record at or after the time");
        offsets.push(OffsetCommit::new(CLICKS, p, o.offset));
    }
    client.reset_offsets(REPLAY, &offsets).await.expect("reset an empty group backwards");
    let mut c = GroupConsumer::new(client.clone(), REPLAY, config("r", false));
    c.subscribe(&[CLICKS]).await.expect("subscribe");
    let replay = drain(&mut c, 2 * 57).await;
    for p in 0..2u32 {
        let offs: Vec<u64> = replay.iter().filter(|r| r.partition == p).map(|r| r.offset).collect();
        assert_eq!(offs, (43..100).collect::<Vec<_>>(), "partition {p} replays from record 43 on");
        assert!(replay.iter().filter(|r| r.partition == p).all(|r| r.timestamp_ms >= at));
    }

    // One member can do the same for itself without touching the group.
    c.seek_to_timestamp(base + 900, &[]).await.expect("seek");
    let again = drain(&mut c, 2 * 10).await;
    let offs: Vec<(u32, u64)> = again.iter().map(|r| (r.partition, r.offset)).collect();
    assert!(offs.iter().all(|(_, o)| *o >= 90), "seek_to_timestamp: {offs:?}");
    assert_eq!(offs.len(), 20, "records 90..100 of both partitions: {offs:?}");
    c.seek_to_beginning(&[]).await.expect("seek to the beginning");
    assert_eq!(drain(&mut c, 200).await.len(), 200, "seek to the beginning: everything again");
    c.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_bad_group_requests_when_sent_through_the_sdk_then_each_gets_its_stable_code() {
    const TOPIC: &str = "orders";
    const GROUP: &str = "strict";
    let cluster = common::start(1, NODE_ARGS).await;
    let client = common::client(&cluster).await;
    client.create_topic(TOPIC, 2, 1).await.expect("create topic");
    let code = |r: replog_client::Result<()>| r.expect_err("expected an error").code();

    let unknown = client.describe_group("never-used").await.map(|_| ());
    assert_eq!(code(unknown), Some(ErrorCode::UnknownGroup));
    let mut bad_topic = GroupConsumer::new(client.clone(), GROUP, config("x", false));
    assert_eq!(code(bad_topic.subscribe(&["no-such-topic"]).await), Some(ErrorCode::UnknownTopic));

    let mut a = GroupConsumer::new(client.clone(), GROUP, config("a", false));
    a.subscribe(&[TOPIC]).await.expect("subscribe a");
    let gen_a = a.generation().expect("a joined");
    let mut b = GroupConsumer::new(client.clone(), GROUP, config("b", false));
    b.subscribe(&[TOPIC]).await.expect("subscribe b");
    // A hands one partition to B.
    let deadline = Instant::now() + WAIT;
    while !(a.assignment().len() == 1 && b.assignment().len() == 1) {
        assert!(Instant::now() < deadline, "each member to own one partition");
        a.poll_for(Duration::from_millis(50)).await.expect("poll a");
        b.poll_for(Duration::from_millis(50)).await.expect("poll b");
    }
    let b_part = b.assignment()[0].clone();
    let not_mine = OffsetCommit::new(TOPIC, b_part.partition, 1);
    assert_eq!(code(a.commit_offsets(std::slice::from_ref(&not_mine)).await), Some(ErrorCode::PartitionNotAssigned));
    let a_id = a.member_id().expect("a is a member");
    let mine = OffsetCommit::new(TOPIC, a.assignment()[0].partition, 1);
    let stale = client.commit_offsets(GROUP, &a_id, gen_a, std::slice::from_ref(&mine)).await;
    assert_eq!(code(stale), Some(ErrorCode::StaleGeneration), "a commit in the generation before the hand-over");
    assert_eq!(
        code(client.commit_offsets(GROUP, "nobody-9", 99, std::slice::from_ref(&mine)).await),
        Some(ErrorCode::UnknownMember)
    );
    // The consumer's own commit is in the current generation and passes,
    // with its metadata.
    a.commit_offsets(&[mine.clone().with_metadata("checkpoint 1")]).await.expect("commit of an owned partition");
    let stored = client.committed_offsets(GROUP, &[a.assignment()[0].clone()]).await.expect("committed");
    assert_eq!(stored.iter().map(|c| (c.offset, c.metadata.as_str())).collect::<Vec<_>>(), [(1, "checkpoint 1")]);
    // Seeking a partition this member does not own is refused at once.
    assert!(a.seek(&TopicPartition::new(TOPIC, b_part.partition), 0).is_err(), "seek on a partition not owned");

    let reset = client.reset_offsets(GROUP, &[OffsetCommit::new(TOPIC, 0, 0)]).await;
    assert_eq!(code(reset), Some(ErrorCode::GroupNotEmpty));
    assert_eq!(code(client.delete_group(GROUP).await), Some(ErrorCode::GroupNotEmpty));
    let e = client.delete_group(GROUP).await.expect_err("delete refused");
    assert!(e.to_string().contains("GROUP_NOT_EMPTY(24)"), "the message names the code: {e}");

    a.close().await.expect("close a");
    b.close().await.expect("close b");
    client.reset_offsets(GROUP, &[OffsetCommit::new(TOPIC, 0, 0)]).await.expect("reset once empty");
    client.delete_group(GROUP).await.expect("delete once empty");
    assert_eq!(code(client.describe_group(GROUP).await.map(|_| ())), Some(ErrorCode::UnknownGroup));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_subscriber_that_stops_reading_when_the_partition_grows_then_the_node_stops_reading_for_it() {
    const TOPIC: &str = "firehose";
    const RECORD_BYTES: usize = 256 << 10;
    const RECORDS: usize = 128;
    /// What one stalled subscription may make the node read: the response
    /// being sent, the one queued, and what the HTTP/2 windows (a few MiB)
    /// let through — a constant, however much the partition grows.
    const STALLED_BOUND: u64 = 8 << 20;
    let cluster = common::start(1, NODE_ARGS).await;
    let client = common::client(&cluster).await;
    client.create_topic(TOPIC, 1, 1).await.expect("create topic");
    let metrics = cluster.node(1).metrics.clone();
    let read_bytes = || common::metric(&metrics, "replog_subscribe_bytes_total").unwrap_or(0.0) as u64;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    producer.send(TOPIC, None, Bytes::from_static(b"first")).await.expect("produce");

    // The stalled subscriber takes its first response, then nothing.
    let mut stalled = client.subscribe(TOPIC, 0, 0);
    assert_eq!(stalled.next().await.expect("first response").len(), 1);
    let value = Bytes::from(vec![b'x'; RECORD_BYTES]);
    let mut handles = Vec::new();
    for _ in 0..RECORDS {
        handles.push(
            producer
                .enqueue(TOPIC, Some(0), Record::new(None, value.clone(), replog_client::now_ms()))
                .await
                .expect("enqueue"),
        );
    }
    for h in handles {
        h.wait().await.expect("acknowledged");
    }
    let produced = (RECORDS * RECORD_BYTES) as u64;

    // A subscriber that reads takes all of it meanwhile: the node had the
    // data and the time to read ahead for the stalled one too.
    let mut reading = client.subscribe(TOPIC, 0, 0);
    let end = RECORDS as u64 + 1;
    let deadline = Instant::now() + WAIT;
    while reading.position() < end {
        assert!(Instant::now() < deadline, "the reading subscriber got to {} of {end}", reading.position());
        reading.next().await.expect("read");
    }
    let total = read_bytes();
    // The reading one took `produced` plus batch framing (under 1 KiB a record).
    let stalled_read = total.saturating_sub(produced + RECORDS as u64 * 1024);
    eprintln!("read for subscriptions: {total} bytes; produced {produced}; for the stalled one at most {stalled_read}");
    assert!(
        total <= produced + RECORDS as u64 * 1024 + STALLED_BOUND,
        "the node read {total} bytes for two subscribers of {produced} bytes: it read ahead for the stalled one"
    );
    assert_eq!(common::metric(&metrics, "replog_subscriptions"), Some(2.0));

    // Nothing was lost by holding back: the stalled one reads on, in order.
    let mut next = 1;
    while next < end {
        for r in stalled.next().await.expect("resume") {
            assert_eq!(r.offset, next, "in order, nothing skipped");
            next += 1;
        }
    }
    drop((stalled, reading));
    wait_for("the node to close both subscriptions", WAIT, || async {
        (common::metric(&metrics, "replog_subscriptions") == Some(0.0)).then_some(())
    })
    .await;
}
