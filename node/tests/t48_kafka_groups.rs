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
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PARTITIONS: u32 = 6;
/// Records produced to each partition before the first consumers start
/// (a retried produce on a busy machine may land twice, so the test reads
/// each partition's end rather than assuming this many).
const RECORDS: u64 = 10;
const TOPIC: &str = "kg-orders";
/// How long one kcat run may take.
const KCAT_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn given_kafka_group_members_then_they_share_partitions_with_each_other_and_with_sdk_members() {
    let Some(python) = common::ensure_python() else { return };
    let Some(()) = common::ensure_kcat() else { return };
    let started = Instant::now();
    let cluster = common::Cluster::start(3, common::ClusterOptions { kafka: true, ..common::options(&[]) })
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
    let mut a = PyMember::start(python, bootstrap, group, "a");
    let mut b = PyMember::start(python, bootstrap, group, "b");
    let (x, y) = wait_for("two Kafka members splitting six partitions", WAIT, || async {
        let (x, y) = (a.assignment()?, b.assignment()?);
        split(&[x.clone(), y.clone()]).then_some((x, y))
    })
    .await;
    println!("two members: a {x:?}, b {y:?}");
    let revokes_before = a.count("revoked") + b.count("revoked");

    let mut c = PyMember::start(python, bootstrap, group, "c");
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
    let d = PyMember::start(python, bootstrap, group, "d");
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
    let out = kcat(&["-b", bootstrap, "-G", "kg-kcat", "-o", "beginning", "-e", "-q", "-f", "%p %o\\n", TOPIC]).await;
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
    let k = PyMember::start(python, bootstrap, group, "kafka");
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
    let ja = a.join(group, "", 7).await;
    assert_eq!(ja.error_code, 0, "{ja:?}");
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
    let joining = tokio::spawn(async move {
        let r = b.join("kg-raw", "", 5).await;
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

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
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
        r.groups
            .into_iter()
            .map(|g| {
                assert_eq!(g.error_code, 0, "{g:?}");
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
            .collect()
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
    fn start(python: &Path, bootstrap: &str, group: &str, name: &str) -> PyMember {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/group_consumer.py");
        let mut child = Command::new(python)
            .arg(script)
            .args([bootstrap, group, TOPIC, name])
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

    /// Whether, since its last assignment, the member received the last
    /// record (`ends` has each partition's end) of every partition it holds.
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
