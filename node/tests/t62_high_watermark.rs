//! The high watermark a client is told is the partition leader's, whichever
//! node it asks: a follower that is still catching up answers `Metadata`
//! with the leader's high watermark, not its own lagging one (a consumer
//! that starts "at the end" would otherwise start in the past, and
//! `topic describe` would under-report). And a fetch at the high watermark
//! without a wait answers from a leader that has caught up to the commit
//! index.
//!
//! The follower is made to lag for real: it is killed, many entries are
//! written without it, and it is restarted; while it replays them from the
//! leader, it is asked again and again. Each observation counts only if the
//! follower's own high watermark, read right after, was still behind (so it
//! was behind during the `Metadata` call too), and the follower had heard
//! from the leader's node by then.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{WAIT, preferred_leader};
use replog_client::{Acks, Client, Record};
use replog_proto::batch;
use replog_proto::pb::{self, replog_client::ReplogClient};

/// Entries written while the follower is down: enough that its catch-up
/// (at most 64 entries per append, each append flushed to disk) takes many
/// round trips, so that it can be asked while it lags.
const ENTRIES_MISSED: usize = 2_000;
/// Size of each entry's one record: makes each catch-up append heavier.
const RECORD_BYTES: usize = 16 << 10;
/// Concurrent writers while the follower is down.
const WRITERS: usize = 32;
/// Pause between two rounds of questions to the follower.
const POLL: Duration = Duration::from_millis(5);

fn one(i: usize) -> Bytes {
    let mut value = vec![b'x'; RECORD_BYTES];
    value[..8].copy_from_slice(&(i as u64).to_be_bytes());
    batch::encode(&[Record::new(None, Bytes::from(value), 1)])
}

/// The partition's high watermark in `node`'s answer to `Metadata`, and
/// the leader it names (0: none known).
async fn metadata_hw(c: &mut ReplogClient<tonic::transport::Channel>) -> Option<(u64, u64)> {
    let r = c.metadata(pb::MetadataRequest { topics: vec!["t".into()] }).await.ok()?.into_inner();
    let p = r.topics.first()?.partitions.first()?.clone();
    Some((p.high_watermark, p.leader))
}

/// The node's own high watermark for `group` (its replica's applied state).
async fn own_hw(c: &mut ReplogClient<tonic::transport::Channel>, group: u64) -> Option<u64> {
    let r = c.node_info(pb::NodeInfoRequest {}).await.ok()?.into_inner();
    r.groups.iter().find(|g| g.group_id == group).map(|g| g.high_watermark)
}

/// Whether `node` has heard from `peer` lately (its prober holds `peer`'s
/// report then).
async fn sees_alive(c: &mut ReplogClient<tonic::transport::Channel>, peer: u64) -> bool {
    match c.cluster_status(pb::ClusterStatusRequest {}).await {
        Ok(r) => r.into_inner().nodes.iter().any(|n| n.id == peer && n.alive),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_follower_catching_up_when_asked_for_metadata_then_it_reports_the_leaders_high_watermark() {
    let mut cluster = common::start(3, &[]).await;
    let client = common::client(&cluster).await;
    client.create_topic("t", 1, 3).await.expect("create");
    let (leader, replicas) = preferred_leader(&client, "t", 0).await;
    let group_id = group_of(&cluster.node(leader).addr).await;
    let follower = replicas[1];

    cluster.kill(follower).expect("kill");
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            for i in (w..ENTRIES_MISSED).step_by(WRITERS) {
                client.produce_batch("t", 0, one(i), Acks::All).await.expect("produce without the follower");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    // Every write was acknowledged, so each is applied at the leader.
    let final_hw = ENTRIES_MISSED as u64;

    cluster.restart(follower).expect("restart");
    let addr = format!("http://{}", cluster.node(follower).addr);
    let connected_by = Instant::now() + WAIT;
    let mut f = loop {
        if let Ok(c) = ReplogClient::connect(addr.clone()).await {
            break c;
        }
        assert!(Instant::now() < connected_by, "the restarted follower did not accept a connection within {WAIT:?}");
        tokio::time::sleep(POLL).await;
    };
    let deadline = Instant::now() + WAIT;
    let (mut lagging_seen, mut wrong) = (0u32, Vec::new());
    loop {
        let alive = sees_alive(&mut f, leader).await;
        let answer = metadata_hw(&mut f).await;
        let own = own_hw(&mut f, group_id).await;
        if let (true, Some((hw, named_leader)), Some(own)) = (alive, answer, own) {
            if own == final_hw {
                break;
            }
            if named_leader == leader {
                lagging_seen += 1;
                if hw != final_hw {
                    wrong.push((own, hw));
                }
            }
        }
        assert!(Instant::now() < deadline, "the follower did not catch up within {WAIT:?}");
        tokio::time::sleep(POLL).await;
    }
    eprintln!("asked the follower {lagging_seen} times while it lagged");
    assert!(lagging_seen > 0, "the follower caught up before it could be asked while lagging; the test proves nothing");
    assert!(
        wrong.is_empty(),
        "a lagging follower reported its own high watermark instead of the leader's {final_hw} \
         ((own, reported) pairs): {wrong:?}"
    );
}

/// The Raft group of `t`/0, from the leader's metadata.
async fn group_of(leader_addr: &str) -> u64 {
    let mut c = ReplogClient::connect(format!("http://{leader_addr}")).await.expect("connect to the leader");
    let r = c.metadata(pb::MetadataRequest { topics: vec!["t".into()] }).await.expect("metadata").into_inner();
    r.topics[0].partitions[0].group_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_fetch_at_the_high_watermark_without_a_wait_then_it_answers_at_once_with_nothing_new() {
    let cluster = common::start(3, &[]).await;
    let client: Client = common::client(&cluster).await;
    client.create_topic("t", 1, 3).await.expect("create");
    preferred_leader(&client, "t", 0).await;
    for i in 0..3 {
        client.produce_batch("t", 0, one(i), Acks::All).await.expect("produce");
    }
    let req = pb::FetchRequest {
        topic: "t".into(),
        partition: 0,
        offset: 3,
        max_bytes: 0,
        max_records: 0,
        max_wait_ms: 0,
        replica_read: false,
        min_bytes: 0,
    };
    let r = client.fetch_raw(req, None).await.expect("fetch at the high watermark");
    assert!(r.batches.is_empty(), "nothing lies at or past the high watermark");
    assert_eq!(r.high_watermark, 3);
}
