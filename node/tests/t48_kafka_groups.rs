//! Kafka consumer groups on replog's groups (docs/kafka.md, "Consumer
//! groups"), against three real nodes sharing one cluster for every case:
//!
//! 1. confluent-kafka consumers (node/tests/kafka/group_consumer.py, one
//!    child process each, reporting JSON lines): two in one group on six
//!    partitions get disjoint assignments covering all; a third joins and
//!    the others go through a rebalance; closing it hands its partitions
//!    to the two; after `commit()` the offsets are what OffsetFetch and the
//!    SDK read, and a new member resumes there.
//! 2. `kcat -G` consumes the same topic as a group and commits.
//! 3. One SDK member and one Kafka member in a group split the partitions.
//! 4. The protocol on raw sockets: NOT_COORDINATOR at another node,
//!    ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS when a
//!    second member joins, one generation for both after the round, disjoint
//!    assignments, a commit of a partition another member holds refused,
//!    batched FindCoordinator, OffsetFetch and LeaveGroup.
//! 5. The group coordinator's node is SIGKILLed while two confluent-kafka
//!    members consume a topic being written to and commit: FindCoordinator
//!    names another node, OffsetFetch there still has every offset
//!    committed before the kill, the members keep consuming and committing,
//!    a rebalance at the new coordinator resumes each partition at its
//!    committed offset, and every record of the log is consumed. The node
//!    is restarted afterwards.
//!
//! kcat and a Python with confluent-kafka are installed by
//! ops/ensure-kcat.sh and ops/ensure-confluent-kafka.sh when missing (the
//! test is skipped where they cannot be, except under CI).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::{WAIT, wait_for};
use kafka_protocol::messages::consumer_protocol_assignment::ConsumerProtocolAssignment;
use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use replog_client::{GroupConsumer, GroupConsumerConfig, OffsetSpec, Record, TopicPartition};
use replog_node::coordinator::GROUPS_TOPIC;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PARTITIONS: u32 = 6;
/// Records produced to each partition before the first consumers start
/// (a retried produce on a busy machine may land twice, so the test reads
/// each partition's end rather than assuming this many).
const RECORDS: u64 = 10;
const TOPIC: &str = "kg-orders";
/// The topic of the coordinator's SIGKILL, written to throughout.
const FAILOVER_TOPIC: &str = "kg-failover";
/// How long one kcat run may take.
const KCAT_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn given_kafka_group_members_then_they_share_partitions_with_each_other_and_with_sdk_members() {
    let Some(python) = common::ensure_python() else { return };
    let Some(()) = common::ensure_kcat() else { return };
    let started = Instant::now();
    let mut cluster = common::Cluster::start(3, common::ClusterOptions { kafka: true, ..common::options(&[]) })
        .await
        .expect("start the cluster");
    let client = common::client(&cluster).await;
    let brokers: Vec<String> = cluster.ids().iter().map(|id| cluster.node(*id).kafka.clone()).collect();
    let bootstrap = brokers.join(",");
    for topic in [TOPIC, "kg-raw"] {
        client.create_topic(topic, PARTITIONS, 3).await.expect("create topic");
    }
    for p in 0..PARTITIONS {
        produce(&client, p, 0..RECORDS).await;
    }

    python_members_rebalance_and_resume_at_commits(&python, &bootstrap, &brokers, &client).await;
    kcat_consumes_as_a_group(&bootstrap, &client).await;
    an_sdk_member_and_a_kafka_member_split_the_partitions(&python, &bootstrap, &client).await;
    the_protocol_answers_its_errors(&brokers, &client).await;
    // Last: it SIGKILLs a node (and restarts it).
    let failover = Instant::now();
    consumers_survive_a_sigkill_of_the_coordinators_node(&python, &mut cluster, &client).await;
    println!("the coordinator's SIGKILL case took {:.1} s", failover.elapsed().as_secs_f64());
    println!("t48 took {:.1} s", started.elapsed().as_secs_f64());
}

async fn produce(client: &replog_client::Client, partition: u32, offsets: std::ops::Range<u64>) {
    let records: Vec<Record> = offsets
        .map(|i| Record::new(Some(Bytes::from(format!("k{i}"))), Bytes::from(format!("v{partition}-{i}")), 0))
        .collect();
    let batch = replog_proto::batch::encode_with(&records, replog_proto::batch::Compression::None);
    client.produce_batch(TOPIC, partition, batch, replog_proto::pb::Acks::All).await.expect("produce");
}

/// Every partition's high watermark.
async fn ends(client: &replog_client::Client) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    for p in 0..PARTITIONS {
        let o = client.list_offsets(TOPIC, p, OffsetSpec::Latest).await.expect("list offsets");
        out.insert(p as i32, o.offset as i64);
    }
    out
}

fn all_partitions() -> BTreeSet<i32> {
    (0..PARTITIONS as i32).collect()
}

/// Whether `sets` are non-empty, pairwise disjoint and cover every partition.
fn split(sets: &[BTreeSet<i32>]) -> bool {
    let total: usize = sets.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    sets.iter().all(|s| !s.is_empty()) && total == union.len() && union == all_partitions()
}

async fn python_members_rebalance_and_resume_at_commits(
    python: &Path,
    bootstrap: &str,
    brokers: &[String],
    client: &replog_client::Client,
) {
    let group = "kg-py";
    let mut a = PyMember::start(python, bootstrap, group, TOPIC, "a");
    let mut b = PyMember::start(python, bootstrap, group, TOPIC, "b");
    let (x, y) = wait_for("two Kafka members splitting six partitions", WAIT, || async {
        let (x, y) = (a.assignment()?, b.assignment()?);
        split(&[x.clone(), y.clone()]).then_some((x, y))
    })
    .await;
    println!("two members: a {x:?}, b {y:?}");
    let revokes_before = a.count("revoked") + b.count("revoked");

    let mut c = PyMember::start(python, bootstrap, group, TOPIC, "c");
    wait_for("three Kafka members splitting six partitions", WAIT, || async {
        split(&[a.assignment()?, b.assignment()?, c.assignment()?]).then_some(())
    })
    .await;
    assert!(a.count("revoked") + b.count("revoked") > revokes_before, "the third member's join rebalanced the others");
    let described = client.describe_group(group).await.expect("describe");
    let clients: BTreeSet<&str> = described.members.iter().map(|m| m.client_id.as_str()).collect();
    assert_eq!(clients, ["a", "b", "c"].into(), "replog group describe lists the Kafka members: {described:?}");

    c.send("close");
    wait_for("the third member closed", WAIT, || async { (c.count("closed") > 0).then_some(()) }).await;
    wait_for("two members holding all six partitions again", WAIT, || async {
        split(&[a.assignment()?, b.assignment()?]).then_some(())
    })
    .await;

    // Each consumes its partitions to the end, then commits.
    let want = ends(client).await;
    wait_for("every record consumed by the current owner", WAIT, || async {
        [&a, &b].iter().all(|m| m.consumed_to_end(&want)).then_some(())
    })
    .await;
    a.send("commit");
    b.send("commit");
    let committed = wait_for("both commits", WAIT, || async {
        let (ca, cb) = (a.last("committed")?, b.last("committed")?);
        let mut all = BTreeMap::new();
        for c in [ca, cb] {
            for (p, o) in c["offsets"].as_object()? {
                all.insert(p.parse::<i32>().ok()?, o.as_i64()?);
            }
        }
        Some(all)
    })
    .await;
    assert_eq!(committed, want, "each member committed the end of its partitions");
    // The same offsets through OffsetFetch (v1 and v8) and the SDK.
    let coordinator = find_coordinator(&brokers[0], group).await;
    let mut raw = Raw::connect(&coordinator).await;
    let fetched = raw.offset_fetch_v8(&[group], TOPIC).await;
    assert_eq!(fetched[group], want.iter().map(|(p, o)| (*p, (*o, String::new()))).collect());
    let v1: OffsetFetchResponse = raw
        .group_call(
            ApiKey::OffsetFetch,
            1,
            &OffsetFetchRequest::default().with_group_id(GroupId(s(group))).with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s(TOPIC)))
                    .with_partition_indexes(vec![0, 5]),
            ])),
            |r: &OffsetFetchResponse| r.topics[0].partitions[0].error_code,
        )
        .await;
    let v1: Vec<i64> = v1.topics[0].partitions.iter().map(|p| p.committed_offset).collect();
    assert_eq!(v1, vec![want[&0], want[&5]]);
    let tps: Vec<TopicPartition> = (0..PARTITIONS).map(|p| TopicPartition::new(TOPIC, p)).collect();
    let sdk = client.committed_offsets(group, &tps).await.expect("committed offsets");
    let read: BTreeMap<i32, i64> = sdk.iter().map(|c| (c.partition as i32, c.offset as i64)).collect();
    assert_eq!(read, want, "the SDK reads the Kafka commits");

    a.send("close");
    b.send("close");
    wait_for("both closed", WAIT, || async { (a.count("closed") + b.count("closed") == 2).then_some(()) }).await;
    for p in 0..PARTITIONS {
        produce(client, p, RECORDS..RECORDS + 1).await;
    }
    let d = PyMember::start(python, bootstrap, group, TOPIC, "d");
    let got = wait_for("a new member reading every partition", WAIT, || async {
        let r = d.records();
        (r.iter().map(|(p, _)| *p).collect::<BTreeSet<_>>() == all_partitions()).then_some(r)
    })
    .await;
    let firsts: BTreeMap<i32, i64> = got.iter().fold(BTreeMap::new(), |mut m, (p, o)| {
        m.entry(*p).or_insert(*o);
        m
    });
    assert_eq!(firsts, want, "the new member resumed at the commits");
}

async fn kcat_consumes_as_a_group(bootstrap: &str, client: &replog_client::Client) {
    // -E: a fetch error (REQUEST_TIMED_OUT on a busy machine) is retried,
    // where kcat would stop reading by default.
    let out =
        kcat(&["-b", bootstrap, "-G", "kg-kcat", "-E", "-o", "beginning", "-e", "-q", "-f", "%p %o\\n", TOPIC]).await;
    let seen: BTreeSet<(u32, u64)> = out
        .lines()
        .filter_map(|l| {
            let (p, o) = l.split_once(' ')?;
            Some((p.parse().ok()?, o.parse().ok()?))
        })
        .collect();
    let end = ends(client).await;
    let want: BTreeSet<(u32, u64)> =
        end.iter().flat_map(|(p, e)| (0..*e as u64).map(move |o| (*p as u32, o))).collect();
    assert_eq!(seen, want, "kcat -G read every record of every partition");
    // kcat commits as it goes and on leaving.
    let tps: Vec<TopicPartition> = (0..PARTITIONS).map(|p| TopicPartition::new(TOPIC, p)).collect();
    wait_for("kcat's commits", WAIT, || async {
        let c = client.committed_offsets("kg-kcat", &tps).await.ok()?;
        let read: BTreeMap<i32, i64> = c.iter().map(|c| (c.partition as i32, c.offset as i64)).collect();
        (read == end).then_some(())
    })
    .await;
}

async fn an_sdk_member_and_a_kafka_member_split_the_partitions(
    python: &Path,
    bootstrap: &str,
    client: &replog_client::Client,
) {
    let group = "kg-mixed";
    let mut sdk = GroupConsumer::new(
        client.clone(),
        group,
        GroupConsumerConfig { client_id: "sdk".into(), ..Default::default() },
    );
    sdk.subscribe(&[TOPIC]).await.expect("subscribe");
    let held: Arc<Mutex<BTreeSet<i32>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (held, stop) = (held.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sdk.poll_for(Duration::from_millis(100)).await.expect("poll");
                *held.lock().unwrap() = sdk.assignment().iter().map(|tp| tp.partition as i32).collect();
            }
            sdk.close().await.expect("close");
        })
    };
    wait_for("the SDK member holding every partition alone", WAIT, || async {
        (*held.lock().unwrap() == all_partitions()).then_some(())
    })
    .await;
    let k = PyMember::start(python, bootstrap, group, TOPIC, "kafka");
    let (x, y) = wait_for("the SDK and the Kafka member splitting the partitions", WAIT, || async {
        let (x, y) = (held.lock().unwrap().clone(), k.assignment()?);
        split(&[x.clone(), y.clone()]).then_some((x, y))
    })
    .await;
    println!("mixed group: sdk {x:?}, kafka {y:?}");
    let described = client.describe_group(group).await.expect("describe");
    let clients: BTreeSet<&str> = described.members.iter().map(|m| m.client_id.as_str()).collect();
    assert_eq!(clients, ["kafka", "sdk"].into(), "{described:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    poller.await.expect("the SDK member");
}

async fn the_protocol_answers_its_errors(brokers: &[String], client: &replog_client::Client) {
    let group = "kg-raw";
    let coordinator = find_coordinator(&brokers[0], group).await;
    // v4: several keys at once.
    let mut any = Raw::connect(&brokers[1]).await;
    let v4: FindCoordinatorResponse = any
        .call(
            ApiKey::FindCoordinator,
            4,
            &FindCoordinatorRequest::default().with_coordinator_keys(vec![s(group), s("kg-py")]),
        )
        .await;
    assert_eq!(v4.coordinators.len(), 2);
    assert!(v4.coordinators.iter().all(|c| c.error_code == 0 && c.port > 0), "{v4:?}");
    let elsewhere = brokers.iter().find(|b| **b != coordinator).expect("another node");
    let mut other = Raw::connect(elsewhere).await;
    let r = other.join(group, "", 7).await;
    assert_eq!(r.error_code, 16, "NOT_COORDINATOR at another node");

    let mut a = Raw::connect(&coordinator).await;
    // KIP-394: a first join at v4 or later gets its member id first and
    // joins again with it; an id never handed out is refused.
    let first = a.join(group, "", 7).await;
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED: {first:?}");
    assert!(!first.member_id.is_empty(), "the id comes with it");
    assert_eq!(a.join(group, "made-up", 7).await.error_code, 25, "UNKNOWN_MEMBER_ID");
    let ja = a.join(group, &first.member_id, 7).await;
    assert_eq!(ja.error_code, 0, "{ja:?}");
    assert_eq!(ja.member_id, first.member_id, "the member is the id handed out");
    let (ma, ga) = (ja.member_id.to_string(), ja.generation_id);
    assert_eq!(ja.leader, ja.member_id, "alone, it leads");
    assert_eq!(ja.members.len(), 1, "the leader gets the members' metadata");
    assert_eq!(a.sync(group, &ma, ga).await, (0, all_partitions()));
    assert_eq!(a.heartbeat(group, &ma, ga).await, 0);
    assert_eq!(a.heartbeat(group, &ma, ga + 5).await, 22, "ILLEGAL_GENERATION");
    assert_eq!(a.heartbeat(group, "nobody", ga).await, 25, "UNKNOWN_MEMBER_ID");
    assert_eq!(a.commit(group, &ma, ga, 0, 3).await, 0);
    assert_eq!(a.commit(group, &ma, ga + 7, 0, 4).await, 22, "ILLEGAL_GENERATION");
    assert_eq!(a.commit(group, "nobody", ga, 0, 4).await, 25, "UNKNOWN_MEMBER_ID");
    let fetched = a.offset_fetch_v8(&[group, "kg-never"], "kg-raw").await;
    assert_eq!(fetched[group][&0], (3, "meta".to_string()));
    assert_eq!(fetched[group][&1].0, -1, "none committed");
    assert_eq!(fetched["kg-never"][&0].0, -1, "a group that never was");

    // A second member: its JoinGroup waits for the first to rejoin, which
    // its heartbeat tells it to.
    let mut b = Raw::connect(&coordinator).await;
    // (Before v4 a first join is answered at once, with an id of the
    // coordinator's making.)
    let joining = tokio::spawn(async move {
        let r = b.join("kg-raw", "", 3).await;
        (b, r)
    });
    wait_for("REBALANCE_IN_PROGRESS for the first member", WAIT, || async {
        let mut probe = Raw::connect(&coordinator).await;
        (probe.heartbeat(group, &ma, ga).await == 27).then_some(())
    })
    .await;
    let ja2 = a.join(group, &ma, 7).await;
    let (mut b, jb) = tokio::time::timeout(WAIT, joining).await.expect("the second join answered").unwrap();
    assert_eq!((ja2.error_code, jb.error_code), (0, 0));
    assert_eq!(ja2.generation_id, jb.generation_id, "one generation for the round");
    assert!(ja2.generation_id > ga);
    let g = ja2.generation_id;
    let mb = jb.member_id.to_string();
    let leader_members = if ja2.leader == ja2.member_id { ja2.members.len() } else { jb.members.len() };
    assert_eq!(leader_members, 2);
    let (ea, pa) = a.sync(group, &ma, g).await;
    let (eb, pb) = b.sync(group, &mb, g).await;
    assert_eq!((ea, eb), (0, 0));
    assert!(split(&[pa.clone(), pb.clone()]), "disjoint and covering: {pa:?} {pb:?}");
    assert_eq!(a.heartbeat(group, &ma, ga).await, 22, "a generation the member has left behind");
    let theirs = *pb.iter().next().unwrap();
    assert_eq!(a.commit(group, &ma, g, theirs, 9).await, 22, "a partition the other member holds");
    let mine = *pa.iter().next().unwrap();
    assert_eq!(a.commit(group, &ma, g, mine, 9).await, 0);

    // v4: several members at once, each answered.
    let left: LeaveGroupResponse = a
        .call(
            ApiKey::LeaveGroup,
            4,
            &LeaveGroupRequest::default().with_group_id(GroupId(s(group))).with_members(vec![
                leave_group_request::MemberIdentity::default().with_member_id(s(&ma)),
                leave_group_request::MemberIdentity::default().with_member_id(s("nobody")),
            ]),
        )
        .await;
    let codes: Vec<i16> = left.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, vec![0, 25]);
    assert_eq!(b.heartbeat(group, &mb, g).await, 27, "the leave rebalances the other member");
    let left: LeaveGroupResponse = b
        .call(
            ApiKey::LeaveGroup,
            0,
            &LeaveGroupRequest::default().with_group_id(GroupId(s(group))).with_member_id(s(&mb)),
        )
        .await;
    assert_eq!(left.error_code, 0);
    let described = client.describe_group(group).await.expect("describe");
    assert!(described.members.is_empty(), "{described:?}");
    let at = |p: i32| described.offsets.iter().find(|o| o.partition as i32 == p).map(|o| o.offset);
    assert_eq!(at(mine), Some(9));
    assert_eq!(at(0), Some(if mine == 0 { 9 } else { 3 }), "the first commit, unless the second was on its partition");
}

/// Case 5: SIGKILL the node that coordinates a group of Kafka consumers
/// (the leader of the group's `__consumer_offsets` partition) while they
/// consume a topic being written to, and commit. Kafka consumers are
/// at-least-once: what they consumed but did not commit may be read again,
/// but nothing committed may be lost and no record skipped.
async fn consumers_survive_a_sigkill_of_the_coordinators_node(
    python: &Path,
    cluster: &mut common::Cluster,
    client: &replog_client::Client,
) {
    let group = "kg-failover";
    let kafka: BTreeMap<u64, String> = cluster.ids().iter().map(|id| (*id, cluster.node(*id).kafka.clone())).collect();
    let bootstrap = kafka.values().cloned().collect::<Vec<_>>().join(",");
    // Created here, so that its partitions add nothing to the earlier cases'
    // load.
    client.create_topic(FAILOVER_TOPIC, PARTITIONS, 3).await.expect("create topic");
    // Leaders where the balancer keeps them, so that what is found here
    // still holds at the kill.
    let mut data_leaders = BTreeMap::new();
    for p in 0..PARTITIONS {
        data_leaders.insert(p as i32, common::preferred_leader(client, FAILOVER_TOPIC, p).await.0);
    }
    let offsets_partition = client.find_coordinator(group).await.expect("find the coordinator").partition;
    let (doomed, _) = common::preferred_leader(client, GROUPS_TOPIC, offsets_partition).await;
    for addr in kafka.values() {
        wait_for("every node's FindCoordinator naming the preferred leader", WAIT, || async {
            (ask_coordinator(addr, group).await? == (0, doomed as i32)).then_some(())
        })
        .await;
    }
    let led: Vec<i32> = data_leaders.iter().filter(|(_, l)| **l == doomed).map(|(p, _)| *p).collect();
    println!("coordinator: node {doomed} (__consumer_offsets/{offsets_partition}); data leaders {data_leaders:?}");
    // Otherwise the kill would only cost the group its coordinator, and
    // the consumers' fetches would never notice.
    assert!(!led.is_empty(), "node {doomed} leads partitions of {FAILOVER_TOPIC} too: {data_leaders:?}");

    let producer = Producer::start(client);
    let mut a = PyMember::start(python, &bootstrap, group, FAILOVER_TOPIC, "fa");
    let mut b = PyMember::start(python, &bootstrap, group, FAILOVER_TOPIC, "fb");
    wait_for("two members splitting the partitions, each consuming all it holds", WAIT, || async {
        (split(&[a.assignment()?, b.assignment()?]) && a.consumes_all_it_holds() && b.consumes_all_it_holds())
            .then_some(())
    })
    .await;
    let before = commit_all(&mut [&mut a, &mut b]).await;
    assert_eq!(before.keys().copied().collect::<BTreeSet<_>>(), all_partitions(), "a commit of every partition");
    let (at, fetched) = committed(&kafka, &[doomed], group).await;
    assert_eq!(at, doomed);
    assert_eq!(fetched, before, "OffsetFetch at the coordinator has the commits");
    // Consuming goes on past the commits: what is read from here to the
    // kill is uncommitted.
    consumed_past(&[&a, &b], &before).await;

    producer.killed.store(true, std::sync::atomic::Ordering::SeqCst);
    let revokes = a.count("revoked") + b.count("revoked");
    cluster.kill(doomed).expect("SIGKILL the coordinator's node");
    let killed = Instant::now();
    let survivors: Vec<u64> = kafka.keys().copied().filter(|id| *id != doomed).collect();
    assert_eq!(cluster.serving(), survivors, "only the coordinator's node is down");
    assert!(a.running() && b.running(), "the consumers run on");
    println!("node {doomed} SIGKILLed (it led {FAILOVER_TOPIC} partitions {led:?})");

    // FindCoordinator names another node, at every node still up.
    let next = wait_for("every node still up naming another coordinator", WAIT, || async {
        let mut named = BTreeSet::new();
        for id in &survivors {
            let (code, node) = ask_coordinator(&kafka[id], group).await?;
            named.insert((code == 0 && node != doomed as i32).then_some(node as u64)?);
        }
        (named.len() == 1).then(|| named.pop_first()).flatten()
    })
    .await;
    println!("node {next} coordinates {:.1} s after the kill", killed.elapsed().as_secs_f64());
    // Nothing committed before the kill is lost.
    let (_, fetched) = committed(&kafka, &survivors, group).await;
    for (p, o) in &before {
        assert!(fetched[p] >= *o, "partition {p}: committed {o} before the kill, {} after: {fetched:?}", fetched[p]);
    }

    // The members go on: they hold every partition between them and
    // consume what was written after the kill, on every partition.
    let after_kill = wait_for("a write after the kill acknowledged on every partition", WAIT, || async {
        let ends = producer.acked_after_kill();
        (ends.len() == PARTITIONS as usize).then_some(ends)
    })
    .await;
    wait_for("the members consuming writes made after the kill, holding every partition", WAIT, || async {
        let got: BTreeSet<(i32, i64)> = [&a, &b].iter().flat_map(|m| m.records()).collect();
        let all = after_kill.iter().all(|(p, last)| got.contains(&(*p, *last)));
        (all && split(&[a.assignment()?, b.assignment()?])).then_some(())
    })
    .await;
    println!(
        "the members consumed writes made after the kill {:.1} s after it ({} revocations since)",
        killed.elapsed().as_secs_f64(),
        a.count("revoked") + b.count("revoked") - revokes
    );
    // They commit at the new coordinator.
    let after = commit_all(&mut [&mut a, &mut b]).await;
    let (at, fetched) = committed(&kafka, &survivors, group).await;
    assert_ne!(at, doomed);
    assert_eq!(fetched, after, "OffsetFetch at the new coordinator has the new commits");
    for (p, o) in &before {
        assert!(after[p] >= *o, "partition {p}: {o} committed before the kill, then {}", after[p]);
    }
    consumed_past(&[&a, &b], &after).await;
    let acked = producer.stop().await;

    // A rebalance at the new coordinator: b leaves, and a resumes every
    // partition at its committed offset, reading again what the two
    // consumed since (one more record each, so that there is something to
    // read even where everything was committed).
    b.send("close");
    wait_for("b closed", WAIT, || async { (b.count("closed") > 0).then_some(()) }).await;
    let end = one_more_each(client, b"last").await;
    wait_for("a holding every partition and consuming to the end", WAIT, || async {
        (a.assignment()? == all_partitions() && a.consumed_to_end(&end)).then_some(())
    })
    .await;
    // a resumes every partition exactly at its committed offset. (A start
    // below it was once seen: the new leader of a partition the dead node
    // had led answered a fetch at the committed offset with a high
    // watermark it had not yet caught up to, OFFSET_OUT_OF_RANGE, and the
    // client reset to the earliest offset. A leader that has not applied
    // an entry of its own term now catches up before it answers, and the
    // start has been exact in every run since.)
    let firsts = a.first_offsets_since_assigned();
    assert_eq!(firsts.keys().copied().collect::<BTreeSet<_>>(), all_partitions());
    for (p, c) in &after {
        assert_eq!(firsts[p], *c, "partition {p}: a started at {}, not at its committed offset {c}", firsts[p]);
    }
    let reread: BTreeSet<(i32, i64)> =
        b.records().into_iter().chain(a.records_before_last_assignment()).filter(|(p, o)| *o >= after[p]).collect();
    println!("a resumed at {after:?}, reading again the {} records consumed past them", reread.len());

    // No gap: every record in the log was consumed by the group, among
    // them every acknowledged one.
    let got: BTreeSet<(i32, i64)> = [&a, &b].iter().flat_map(|m| m.records()).collect();
    for (p, e) in &end {
        let missing: Vec<i64> = (0..*e).filter(|o| !got.contains(&(*p, *o))).collect();
        assert!(missing.is_empty(), "partition {p}: offsets never consumed: {missing:?}");
    }
    for (p, base, n) in &acked {
        assert!(base + n <= end[p], "acknowledged {p}@{base}+{n} is in the log, which ends at {}", end[p]);
    }
    let errors = a.count("error") + b.count("error");
    println!("{} acknowledged writes; {errors} errors the consumers reported and went on from", acked.len());

    // The killed node comes back, and the balancer hands the group's
    // partition back to it, its preferred replica: the group moves once
    // more, to a coordinator with nothing of it in memory, and a commits
    // there.
    let restarted = Instant::now();
    cluster.restart(doomed).expect("restart the killed node");
    cluster.wait_ready(WAIT).await.expect("the cluster with the node back");
    common::preferred_leader(client, GROUPS_TOPIC, offsets_partition).await;
    for addr in kafka.values() {
        wait_for("FindCoordinator naming the restarted node again", WAIT, || async {
            (ask_coordinator(addr, group).await? == (0, doomed as i32)).then_some(())
        })
        .await;
    }
    let end = one_more_each(client, b"back").await;
    let to_end = replog_testkit::wait::poll_until("a consuming to the end", WAIT, || async {
        a.consumed_to_end(&end).then_some(())
    })
    .await;
    if let Err(e) = to_end {
        panic!(
            "{e:#}: the ends are {end:?}; a's last offset per partition since its last assignment: {:?}, its last events: {:?}",
            a.last_offsets_since_assigned(),
            a.last_events(8)
        );
    }
    assert_eq!(commit_all(&mut [&mut a]).await, end, "a commits at the restarted coordinator");
    let (at, fetched) = committed(&kafka, &[doomed], group).await;
    assert_eq!((at, fetched), (doomed, end), "OffsetFetch at the restarted coordinator");
    println!("node {doomed} coordinates again {:.1} s after its restart", restarted.elapsed().as_secs_f64());
    a.send("close");
    wait_for("a closed", WAIT, || async { (a.count("closed") > 0).then_some(()) }).await;
}

/// The offsets of `group` committed on [`FAILOVER_TOPIC`], by OffsetFetch
/// at the coordinator FindCoordinator names at `ask` (the first of them),
/// asked again should the coordinator have moved in between: (the
/// coordinator, partition → offset).
async fn committed(kafka: &BTreeMap<u64, String>, ask: &[u64], group: &str) -> (u64, BTreeMap<i32, i64>) {
    wait_for("OffsetFetch at the coordinator", WAIT, || async {
        let (code, node) = ask_coordinator(&kafka[&ask[0]], group).await?;
        let addr = kafka.get(&u64::try_from(node).ok()?).filter(|_| code == 0)?;
        let mut raw = Raw { s: TcpStream::connect(addr).await.ok()?, next: 1 };
        let r = raw.try_offset_fetch_v8(&[group], FAILOVER_TOPIC).await.ok()?;
        Some((node as u64, r[group].iter().map(|(p, (o, _))| (*p, *o)).collect()))
    })
    .await
}

/// Waits until `members` between them received, on each partition of
/// `offsets`, a record five past its offset there.
async fn consumed_past(members: &[&PyMember], offsets: &BTreeMap<i32, i64>) {
    wait_for("the members consuming past their commits", WAIT, || async {
        let mut got: BTreeMap<i32, i64> = BTreeMap::new();
        for (p, o) in members.iter().flat_map(|m| m.records()) {
            let e = got.entry(p).or_insert(o);
            *e = (*e).max(o);
        }
        offsets.iter().all(|(p, o)| got.get(p).is_some_and(|g| *g >= o + 5)).then_some(())
    })
    .await;
}

/// Commits every member's position (the members' `commit` command), asking
/// again after an error (a coordinator moving); the offsets committed.
async fn commit_all(members: &mut [&mut PyMember]) -> BTreeMap<i32, i64> {
    let mut all = BTreeMap::new();
    for m in members.iter_mut() {
        let deadline = Instant::now() + WAIT;
        loop {
            let (done, failed) = (m.count("committed"), m.commit_errors());
            m.send("commit");
            let member: &PyMember = m;
            wait_for("a commit's answer", WAIT, || async {
                (member.count("committed") > done || member.commit_errors() > failed).then_some(())
            })
            .await;
            if m.count("committed") > done {
                let c = m.last("committed").expect("a commit");
                for (p, o) in c["offsets"].as_object().expect("offsets") {
                    all.insert(p.parse::<i32>().expect("a partition"), o.as_i64().expect("an offset"));
                }
                break;
            }
            assert!(Instant::now() < deadline, "a commit succeeds in time");
        }
    }
    all
}

/// A write of [`Producer`]'s that was acknowledged: `(partition, base
/// offset, records, sent after the kill)`.
type Acked = (i32, i64, i64, bool);

/// Writes batches of five records to each partition of
/// [`FAILOVER_TOPIC`] in turn through the SDK (acks=all), until stopped,
/// noting what was acknowledged.
struct Producer {
    /// Set at the kill: writes sent from then on count as after it.
    killed: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Producer {
    fn start(client: &replog_client::Client) -> Producer {
        let killed: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let stop: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
        let task = {
            let (client, killed, stop, acked) = (client.clone(), killed.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let p = (i % PARTITIONS as u64) as u32;
                    i += 1;
                    let after = killed.load(std::sync::atomic::Ordering::SeqCst);
                    let records: Vec<Record> =
                        (0..5).map(|j| Record::new(None, Bytes::from(format!("f{i}-{j}")), 0)).collect();
                    let batch = replog_proto::batch::encode_with(&records, replog_proto::batch::Compression::None);
                    match client.produce_batch(FAILOVER_TOPIC, p, batch, replog_proto::pb::Acks::All).await {
                        Ok(r) => {
                            let base = r.base_offset.expect("acks=all has an offset") as i64;
                            acked.lock().unwrap().push((p as i32, base, 5, after));
                        }
                        // Not acknowledged, so not expected anywhere.
                        Err(e) => println!("a write to {FAILOVER_TOPIC}/{p} failed: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Producer { killed, stop, acked, task }
    }

    /// The last offset of each partition acknowledged for a write sent
    /// after the kill.
    fn acked_after_kill(&self) -> BTreeMap<i32, i64> {
        let mut out = BTreeMap::new();
        for (p, base, n, after) in self.acked.lock().unwrap().iter() {
            if *after {
                let e = out.entry(*p).or_insert(0);
                *e = (*e).max(base + n - 1);
            }
        }
        out
    }

    /// Stops writing; `(partition, base offset, records)` of every write
    /// acknowledged.
    async fn stop(self) -> Vec<(i32, i64, i64)> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.expect("the producer");
        self.acked.lock().unwrap().iter().map(|(p, b, n, _)| (*p, *b, *n)).collect()
    }
}

/// One more record (`value`) on every partition of the failover topic, each
/// acknowledged; returns each partition's end offset after it.
async fn one_more_each(client: &replog_client::Client, value: &'static [u8]) -> BTreeMap<i32, i64> {
    let mut end = BTreeMap::new();
    for p in 0..PARTITIONS {
        let r = vec![Record::new(None, Bytes::from_static(value), 0)];
        let batch = replog_proto::batch::encode_with(&r, replog_proto::batch::Compression::None);
        client.produce_batch(FAILOVER_TOPIC, p, batch, replog_proto::pb::Acks::All).await.expect("produce");
        let o = client.list_offsets(FAILOVER_TOPIC, p, OffsetSpec::Latest).await.expect("list offsets");
        end.insert(p as i32, o.offset as i64);
    }
    end
}

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

/// FindCoordinator v3 for `group` at `addr`: (error code, node id);
/// `None` where nothing listens.
async fn ask_coordinator(addr: &str, group: &str) -> Option<(i16, i32)> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let mut raw = Raw { s: stream, next: 1 };
    let req = FindCoordinatorRequest::default().with_key(s(group));
    let r: FindCoordinatorResponse = raw.call(ApiKey::FindCoordinator, 3, &req).await;
    Some((r.error_code, r.node_id.0))
}

/// The coordinator's Kafka address for `group`, asked at `addr` (FindCoordinator v3).
async fn find_coordinator(addr: &str, group: &str) -> String {
    wait_for("a coordinator", WAIT, || async {
        let mut raw = Raw::connect(addr).await;
        let req = FindCoordinatorRequest::default().with_key(s(group));
        let r: FindCoordinatorResponse = raw.call(ApiKey::FindCoordinator, 3, &req).await;
        (r.error_code == 0).then(|| format!("{}:{}", r.host, r.port))
    })
    .await
}

/// A Kafka connection on a raw socket.
struct Raw {
    s: TcpStream,
    next: i32,
}

impl Raw {
    async fn connect(addr: &str) -> Raw {
        Raw { s: TcpStream::connect(addr).await.expect("connect"), next: 1 }
    }

    async fn call<Req: Encodable, Resp: Decodable>(&mut self, key: ApiKey, version: i16, req: &Req) -> Resp {
        self.next += 1;
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.next)
            .with_client_id(Some(s("t48")))
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        req.encode(&mut buf, version).unwrap();
        let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&buf);
        self.s.write_all(&frame).await.expect("send");
        let mut len = [0u8; 4];
        tokio::time::timeout(WAIT, self.s.read_exact(&mut len)).await.expect("an answer in time").expect("an answer");
        let mut body = vec![0; i32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut body).await.expect("the answer");
        let mut body = Bytes::from(body);
        let h = ResponseHeader::decode(&mut body, key.response_header_version(version)).unwrap();
        assert_eq!(h.correlation_id, self.next);
        Resp::decode(&mut body, version).unwrap()
    }

    /// [`Raw::call`] again while the coordinator answers
    /// COORDINATOR_LOAD_IN_PROGRESS (`code` reads the answer's error code),
    /// as a client does: on a busy machine its lease can lapse for longer
    /// than it waits (docs/kafka.md). A short pause between tries.
    async fn group_call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
        code: impl Fn(&Resp) -> i16,
    ) -> Resp {
        let deadline = Instant::now() + WAIT;
        loop {
            let r: Resp = self.call(key, version, req).await;
            if code(&r) != 14 || Instant::now() > deadline {
                return r;
            }
            println!("{key:?}: COORDINATOR_LOAD_IN_PROGRESS, asking again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn join(&mut self, group: &str, member: &str, version: i16) -> JoinGroupResponse {
        let mut meta = BytesMut::new();
        meta.put_i16(0);
        ConsumerProtocolSubscription::default().with_topics(vec![s("kg-raw")]).encode(&mut meta, 0).unwrap();
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(30_000)
            .with_member_id(s(member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(meta.freeze()),
            ]);
        self.group_call(ApiKey::JoinGroup, version, &req, |r: &JoinGroupResponse| r.error_code).await
    }

    async fn sync(&mut self, group: &str, member: &str, generation: i32) -> (i16, BTreeSet<i32>) {
        let req = SyncGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id(generation)
            .with_member_id(s(member))
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")));
        let r: SyncGroupResponse =
            self.group_call(ApiKey::SyncGroup, 5, &req, |r: &SyncGroupResponse| r.error_code).await;
        if r.error_code != 0 {
            return (r.error_code, BTreeSet::new());
        }
        let mut a = r.assignment;
        assert_eq!(a.get_i16(), 0);
        let a = ConsumerProtocolAssignment::decode(&mut a, 0).unwrap();
        (0, a.assigned_partitions.iter().flat_map(|t| t.partitions.iter().copied()).collect())
    }

    async fn heartbeat(&mut self, group: &str, member: &str, generation: i32) -> i16 {
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id(generation)
            .with_member_id(s(member));
        self.group_call(ApiKey::Heartbeat, 4, &req, |r: &HeartbeatResponse| r.error_code).await.error_code
    }

    async fn commit(&mut self, group: &str, member: &str, generation: i32, partition: i32, offset: i64) -> i16 {
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(s(member))
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("kg-raw")))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(partition)
                            .with_committed_offset(offset)
                            .with_committed_metadata(Some(s("meta"))),
                    ]),
            ]);
        let r: OffsetCommitResponse = self
            .group_call(ApiKey::OffsetCommit, 8, &req, |r: &OffsetCommitResponse| r.topics[0].partitions[0].error_code)
            .await;
        r.topics[0].partitions[0].error_code
    }

    /// OffsetFetch v8 of every partition of `topic` for each group:
    /// `group → partition → (offset, metadata)`.
    async fn offset_fetch_v8(
        &mut self,
        groups: &[&str],
        topic: &str,
    ) -> BTreeMap<String, BTreeMap<i32, (i64, String)>> {
        match self.try_offset_fetch_v8(groups, topic).await {
            Ok(r) => r,
            Err((group, code)) => panic!("OffsetFetch of {group}: error {code}"),
        }
    }

    /// [`Raw::offset_fetch_v8`], or the first group's error:
    /// `(group, error code)`.
    async fn try_offset_fetch_v8(
        &mut self,
        groups: &[&str],
        topic: &str,
    ) -> Result<BTreeMap<String, BTreeMap<i32, (i64, String)>>, (String, i16)> {
        let req = OffsetFetchRequest::default().with_groups(
            groups
                .iter()
                .map(|g| {
                    offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(GroupId(s(g))).with_topics(
                        Some(vec![
                            offset_fetch_request::OffsetFetchRequestTopics::default()
                                .with_name(TopicName(s(topic)))
                                .with_partition_indexes((0..PARTITIONS as i32).collect()),
                        ]),
                    )
                })
                .collect(),
        );
        let r: OffsetFetchResponse = self
            .group_call(ApiKey::OffsetFetch, 8, &req, |r: &OffsetFetchResponse| {
                r.groups.iter().map(|g| g.error_code).find(|c| *c != 0).unwrap_or(0)
            })
            .await;
        if let Some(g) = r.groups.iter().find(|g| g.error_code != 0) {
            return Err((g.group_id.0.to_string(), g.error_code));
        }
        Ok(r.groups
            .into_iter()
            .map(|g| {
                let parts = g
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .map(|p| {
                        (
                            p.partition_index,
                            (p.committed_offset, p.metadata.as_ref().map(|m| m.to_string()).unwrap_or_default()),
                        )
                    })
                    .collect();
                (g.group_id.0.to_string(), parts)
            })
            .collect())
    }
}

/// One confluent-kafka consumer (node/tests/kafka/group_consumer.py) as a
/// child process; its JSON lines collected as they come.
struct PyMember {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Arc<Mutex<Vec<Value>>>,
}

impl PyMember {
    fn start(python: &Path, bootstrap: &str, group: &str, topic: &str, name: &str) -> PyMember {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/group_consumer.py");
        let mut child = Command::new(python)
            .arg(script)
            .args([bootstrap, group, topic, name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python consumer");
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let stdout = child.stdout.take().unwrap();
        let sink = events.clone();
        let name = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if v["event"] != "record" {
                            println!("{name}: {line}");
                        }
                        sink.lock().unwrap().push(v);
                    }
                    Err(_) => println!("{name} (not JSON): {line}"),
                }
            }
        });
        PyMember { stdin: child.stdin.take(), child, events }
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin.as_mut().expect("stdin"), "{command}").expect("command");
    }

    fn count(&self, event: &str) -> usize {
        self.events.lock().unwrap().iter().filter(|e| e["event"] == event).count()
    }

    fn last(&self, event: &str) -> Option<Value> {
        self.events.lock().unwrap().iter().rev().find(|e| e["event"] == event).cloned()
    }

    /// What the member holds now (eager: the last assignment, until a
    /// revocation); `None` before its first assignment.
    fn assignment(&self) -> Option<BTreeSet<i32>> {
        let mut held = None;
        for e in self.events.lock().unwrap().iter() {
            match e["event"].as_str() {
                Some("assigned") => {
                    held =
                        Some(e["partitions"].as_array()?.iter().filter_map(|p| p.as_i64()).map(|p| p as i32).collect())
                }
                Some("revoked") | Some("closed") => held = None,
                _ => {}
            }
        }
        held
    }

    /// `(partition, offset)` of every record received, in order.
    fn records(&self) -> Vec<(i32, i64)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "record")
            .filter_map(|e| Some((e["partition"].as_i64()? as i32, e["offset"].as_i64()?)))
            .collect()
    }

    /// Commits that failed (the consumer went on).
    fn commit_errors(&self) -> usize {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| e["event"] == "error" && e["error"].as_str().is_some_and(|m| m.starts_with("commit:")))
            .count()
    }

    /// `(partition, offset)` of every record received before the member's
    /// last assignment.
    fn records_before_last_assignment(&self) -> Vec<(i32, i64)> {
        let events = self.events.lock().unwrap();
        let to = events.iter().rposition(|e| e["event"] == "assigned").unwrap_or(0);
        events[..to]
            .iter()
            .filter(|e| e["event"] == "record")
            .filter_map(|e| Some((e["partition"].as_i64()? as i32, e["offset"].as_i64()?)))
            .collect()
    }

    /// Whether the child process still runs.
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Whether, since its last assignment, the member received a record of
    /// every partition it holds.
    fn consumes_all_it_holds(&self) -> bool {
        let Some(held) = self.assignment() else { return false };
        let firsts = self.first_offsets_since_assigned();
        !held.is_empty() && held.iter().all(|p| firsts.contains_key(p))
    }

    /// The offset of the first record of each partition received since the
    /// member's last assignment: where it started reading.
    fn first_offsets_since_assigned(&self) -> BTreeMap<i32, i64> {
        let events = self.events.lock().unwrap();
        let from = events.iter().rposition(|e| e["event"] == "assigned").unwrap_or(events.len());
        let mut out = BTreeMap::new();
        for e in &events[from..] {
            if e["event"] == "record"
                && let (Some(p), Some(o)) = (e["partition"].as_i64(), e["offset"].as_i64())
            {
                out.entry(p as i32).or_insert(o);
            }
        }
        out
    }

    /// Whether, since its last assignment, the member received the last
    /// record (`ends` has each partition's end) of every partition it holds.
    /// The last offset received per partition since the last assignment.
    fn last_offsets_since_assigned(&self) -> BTreeMap<i32, i64> {
        let events = self.events.lock().unwrap();
        let from = events.iter().rposition(|e| e["event"] == "assigned").unwrap_or(0);
        events[from..]
            .iter()
            .filter(|e| e["event"] == "record")
            .filter_map(|e| Some((e["partition"].as_i64()? as i32, e["offset"].as_i64()?)))
            .collect()
    }

    /// The last `n` events other than records.
    fn last_events(&self, n: usize) -> Vec<Value> {
        let events = self.events.lock().unwrap();
        let mut tail: Vec<Value> = events.iter().rev().filter(|e| e["event"] != "record").take(n).cloned().collect();
        tail.reverse();
        tail
    }

    fn consumed_to_end(&self, ends: &BTreeMap<i32, i64>) -> bool {
        let events = self.events.lock().unwrap();
        let Some(from) = events.iter().rposition(|e| e["event"] == "assigned") else { return false };
        let held: BTreeSet<i64> =
            events[from]["partitions"].as_array().into_iter().flatten().filter_map(|p| p.as_i64()).collect();
        let got: BTreeSet<i64> = events[from..]
            .iter()
            .filter(|e| {
                let p = e["partition"].as_i64().map(|p| p as i32);
                e["event"] == "record" && p.and_then(|p| ends.get(&p)).map(|end| end - 1) == e["offset"].as_i64()
            })
            .filter_map(|e| e["partition"].as_i64())
            .collect();
        !held.is_empty() && held.is_subset(&got)
    }
}

impl Drop for PyMember {
    fn drop(&mut self) {
        // Closing stdin asks it to close; a member still running after
        // that is killed (by its own PID).
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs kcat with `args` within [`KCAT_LIMIT`]; its stdout. Errors kcat
/// reports and goes on from (a fetch answered REQUEST_TIMED_OUT on a busy
/// machine, which the client retries) make its exit status 1 without
/// ending the run, so what it read is judged, not its status; a run that
/// timed out or ended on a fatal error fails.
async fn kcat(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg(KCAT_LIMIT.as_secs().to_string())
            .arg("kcat")
            .args(&args)
            .output()
            .expect("run kcat")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.is_empty() {
        println!("kcat: {stderr}");
    }
    assert!(matches!(out.status.code(), Some(0 | 1)) && !stderr.contains("FATAL"), "kcat failed: {stderr}");
    String::from_utf8(out.stdout).expect("utf-8")
}
