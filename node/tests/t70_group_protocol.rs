//! The consumer-group protocol at the coordinator, spoken with the raw
//! generated client against three real nodes.
//!
//! Contract checked:
//! - the first FindCoordinator creates `__consumer_offsets`, which stays out
//!   of the topic list;
//! - members are assigned every partition exactly once, and a partition
//!   moving between members is granted to the new owner only after the old
//!   one reports it let go;
//! - commits are fenced: unknown member, stale generation, partition not
//!   assigned each get their code, and an offset never moves back;
//! - a silent member loses its partitions after its session timeout;
//! - reset and delete refuse a group with members, and a reset of an empty
//!   group moves offsets back;
//! - committed offsets survive a SIGKILL of the coordinator's node;
//! - ListOffsets finds the first record at or after a timestamp.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use common::{Cluster, WAIT, wait_for};
use replog_client::{Acks, ErrorCode, Record};
use replog_proto::batch::BatchBuilder;
use replog_proto::codes::code_of;
use replog_proto::pb::{self, replog_client::ReplogClient};
use tonic::transport::Channel;

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 4;
const GROUP: &str = "billing";
/// Short, so expiry is observed quickly.
const SESSION_MS: u32 = 3_000;

async fn conn(addr: &str) -> ReplogClient<Channel> {
    ReplogClient::connect(format!("http://{addr}")).await.expect("connect")
}

/// The coordinator's client, once FindCoordinator names one.
async fn coordinator(cluster: &Cluster) -> (u64, ReplogClient<Channel>) {
    let any = cluster.serving_addrs()[0].clone();
    let (id, addr) = wait_for("a coordinator for the group", WAIT, || async {
        let r = conn(&any).await.find_coordinator(pb::FindCoordinatorRequest { group: GROUP.into() }).await.ok()?;
        let r = r.into_inner();
        (r.node_id != 0).then_some((r.node_id, r.addr))
    })
    .await;
    (id, conn(&addr).await)
}

fn owned(a: &[pb::TopicPartitions]) -> BTreeSet<u32> {
    a.iter().filter(|t| t.topic == TOPIC).flat_map(|t| t.partitions.iter().copied()).collect()
}

fn tp(ps: &BTreeSet<u32>) -> Vec<pb::TopicPartitions> {
    vec![pb::TopicPartitions { topic: TOPIC.into(), partitions: ps.iter().copied().collect() }]
}

async fn join(c: &mut ReplogClient<Channel>, member: &str) -> pb::JoinGroupResponse {
    c.join_group(pb::JoinGroupRequest {
        group: GROUP.into(),
        member_id: member.into(),
        client_id: "test".into(),
        topics: vec![TOPIC.into()],
        strategy: pb::AssignmentStrategy::Uniform as i32,
        session_timeout_ms: SESSION_MS,
    })
    .await
    .expect("join")
    .into_inner()
}

async fn heartbeat(
    c: &mut ReplogClient<Channel>,
    member: &str,
    generation: u64,
    holding: &BTreeSet<u32>,
) -> Result<pb::GroupHeartbeatResponse, tonic::Status> {
    c.group_heartbeat(pb::GroupHeartbeatRequest {
        group: GROUP.into(),
        member_id: member.into(),
        generation,
        owned: tp(holding),
    })
    .await
    .map(|r| r.into_inner())
}

async fn commit(
    c: &mut ReplogClient<Channel>,
    member: &str,
    generation: u64,
    partition: u32,
    offset: u64,
) -> Result<(), tonic::Status> {
    c.commit_offsets(pb::CommitOffsetsRequest {
        group: GROUP.into(),
        member_id: member.into(),
        generation,
        offsets: vec![pb::OffsetCommit { topic: TOPIC.into(), partition, offset, metadata: "m".into() }],
    })
    .await
    .map(|_| ())
}

async fn committed(c: &mut ReplogClient<Channel>) -> BTreeMap<u32, u64> {
    let r = c
        .fetch_offsets(pb::FetchOffsetsRequest { group: GROUP.into(), partitions: vec![] })
        .await
        .expect("fetch offsets");
    r.into_inner().offsets.into_iter().map(|o| (o.partition, o.offset)).collect()
}

fn code(r: Result<impl std::fmt::Debug, tonic::Status>) -> ErrorCode {
    code_of(&r.expect_err("expected an error")).expect("a replog code")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_group_when_members_come_and_go_then_the_coordinator_assigns_fences_and_keeps_offsets() {
    let mut cluster = common::start(3, &[]).await;
    let client = common::client(&cluster).await;
    client.create_topic(TOPIC, PARTITIONS, 3).await.expect("create topic");
    let (coord_id, mut c) = coordinator(&cluster).await;
    let topics: Vec<String> = client.list_topics().await.expect("list").into_iter().map(|t| t.name).collect();
    assert_eq!(topics, vec![TOPIC.to_string()], "the internal topic must stay out of the topic list");

    // One member takes every partition.
    let a = join(&mut c, "").await;
    assert_eq!(owned(&a.assignment), (0..PARTITIONS).collect());
    let a_id = a.member_id.clone();
    let mut a_holds = owned(&a.assignment);

    // A second member joins: it gets nothing that A still holds...
    let b = join(&mut c, "").await;
    let b_id = b.member_id.clone();
    assert!(owned(&b.assignment).is_empty(), "B was granted partitions A still holds: {:?}", b.assignment);
    // ...A learns its smaller assignment and lets go...
    let ha = heartbeat(&mut c, &a_id, a.generation, &a_holds).await.expect("heartbeat A");
    a_holds = owned(&ha.assignment);
    assert_eq!(a_holds.len(), (PARTITIONS / 2) as usize);
    heartbeat(&mut c, &a_id, ha.generation, &a_holds).await.expect("heartbeat A");
    // ...and only then B gets the rest.
    let hb = heartbeat(&mut c, &b_id, b.generation, &BTreeSet::new()).await.expect("heartbeat B");
    let b_holds = owned(&hb.assignment);
    assert_eq!(a_holds.len() + b_holds.len(), PARTITIONS as usize);
    assert!(a_holds.is_disjoint(&b_holds), "A {a_holds:?} and B {b_holds:?} share a partition");
    let generation = hb.generation;

    // Commits are fenced.
    let pa = *a_holds.iter().next().expect("A holds a partition");
    let pb_ = *b_holds.iter().next().expect("B holds a partition");
    commit(&mut c, &a_id, generation, pa, 10).await.expect("A commits its own partition");
    assert_eq!(code(commit(&mut c, &a_id, generation, pb_, 10).await), ErrorCode::PartitionNotAssigned);
    assert_eq!(code(commit(&mut c, "nobody-1", generation, pa, 10).await), ErrorCode::UnknownMember);
    assert_eq!(code(commit(&mut c, &b_id, 0, pb_, 10).await), ErrorCode::StaleGeneration);
    // An offset never moves back through a commit.
    commit(&mut c, &a_id, generation, pa, 4).await.expect("a late, lower commit is accepted");
    assert_eq!(committed(&mut c).await.get(&pa), Some(&10));
    // Reset and delete refuse a group with members.
    let reset = |p, offset| pb::ResetOffsetsRequest {
        group: GROUP.into(),
        offsets: vec![pb::OffsetCommit { topic: TOPIC.into(), partition: p, offset, metadata: String::new() }],
    };
    assert_eq!(code(c.reset_offsets(reset(pa, 0)).await), ErrorCode::GroupNotEmpty);
    assert_eq!(code(c.delete_group(pb::DeleteGroupRequest { group: GROUP.into() }).await), ErrorCode::GroupNotEmpty);
    let other = c.find_coordinator(pb::FindCoordinatorRequest { group: "never-used".into() }).await.expect("find");
    let mut other = conn(&other.into_inner().addr).await;
    let unknown = other.describe_group(pb::DescribeGroupRequest { group: "never-used".into() }).await;
    assert_eq!(code(unknown), ErrorCode::UnknownGroup);

    // B goes silent: after its session timeout A gets everything.
    let all = wait_for("A to get B's partitions after B's session timed out", WAIT, || {
        let (mut c, a_id, a_holds) = (c.clone(), a_id.clone(), a_holds.clone());
        async move {
            let h = heartbeat(&mut c, &a_id, 0, &a_holds).await.ok()?;
            (owned(&h.assignment).len() == PARTITIONS as usize).then_some(h)
        }
    })
    .await;
    assert_eq!(code(heartbeat(&mut c, &b_id, generation, &b_holds).await), ErrorCode::UnknownMember);
    commit(&mut c, &a_id, all.generation, pb_, 7).await.expect("A commits B's old partition");

    // Committed offsets survive a SIGKILL of the coordinator's node.
    cluster.kill(coord_id).expect("kill");
    let new_addr = wait_for("a new coordinator", WAIT, || async {
        let any = cluster.serving_addrs()[0].clone();
        let r = conn(&any).await.find_coordinator(pb::FindCoordinatorRequest { group: GROUP.into() }).await.ok()?;
        let r = r.into_inner();
        (r.node_id != 0 && r.node_id != coord_id).then_some(r.addr)
    })
    .await;
    let mut c2 = conn(&new_addr).await;
    let offsets = wait_for("the new coordinator to serve the offsets", WAIT, || {
        let mut c2 = c2.clone();
        async move {
            let r = c2.fetch_offsets(pb::FetchOffsetsRequest { group: GROUP.into(), partitions: vec![] }).await.ok()?;
            Some(r.into_inner().offsets.into_iter().map(|o| (o.partition, o.offset)).collect::<BTreeMap<_, _>>())
        }
    })
    .await;
    assert_eq!(offsets.get(&pa), Some(&10));
    assert_eq!(offsets.get(&pb_), Some(&7));

    // A leaves; the empty group can be reset backwards, then deleted.
    c2.leave_group(pb::LeaveGroupRequest { group: GROUP.into(), member_id: a_id.clone() }).await.expect("leave");
    c2.reset_offsets(reset(pa, 1)).await.expect("reset of an empty group");
    assert_eq!(committed(&mut c2).await.get(&pa), Some(&1));
    c2.delete_group(pb::DeleteGroupRequest { group: GROUP.into() }).await.expect("delete");
    assert_eq!(
        code(c2.describe_group(pb::DescribeGroupRequest { group: GROUP.into() }).await),
        ErrorCode::UnknownGroup
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_records_with_timestamps_when_listing_offsets_by_time_then_the_first_at_or_after_is_found() {
    let (_cluster, client) = common::with_topic(1, &[], "times", 1).await;
    for (i, ts) in [[100, 300], [200, 500]].iter().enumerate() {
        let mut b = BatchBuilder::new();
        for t in ts {
            b.push(&Record::new(None, Bytes::from(format!("r{i}-{t}")), *t));
        }
        client.produce_batch("times", 0, b.build(), Acks::All).await.expect("produce");
    }
    let addr = client.node_addr(1).expect("node 1");
    let mut c = conn(&addr).await;
    let at = |ts| pb::ListOffsetsRequest {
        topic: "times".into(),
        partition: 0,
        spec: pb::OffsetSpec::Timestamp as i32,
        timestamp_ms: ts,
    };
    let expect = [(0, 0), (150, 1), (300, 1), (301, 3), (501, 4)];
    for (ts, want) in expect {
        let r = c.list_offsets(at(ts)).await.expect("list offsets").into_inner();
        assert_eq!(r.offset, want, "first record at or after {ts}");
    }
    let latest = pb::ListOffsetsRequest { spec: pb::OffsetSpec::Latest as i32, ..at(0) };
    assert_eq!(c.list_offsets(latest).await.expect("latest").into_inner().offset, 4);
}
