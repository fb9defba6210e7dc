//! Queue state fails over with its partition.
//!
//! Contract checked: a consumer holds locks on events of a partition and
//! has acknowledged some of them when the partition's leader is SIGKILLed.
//! Under the new leader no acknowledged event is ever delivered again, and
//! every event that was delivered but not acknowledged is delivered again,
//! as its second delivery (the locks and their counts survived). Then the
//! killed node comes back and, leading again, agrees.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use common::WAIT;
use replog_client::{Acks, QueueConfig, QueueConsumer, Record};

const TOPIC: &str = "q-failover";
const N: u64 = 200;
const LOCK: Duration = Duration::from_secs(4);
const POLL: Duration = Duration::from_millis(500);

#[tokio::test]
async fn given_locked_and_acked_events_when_the_leader_is_killed_then_acked_never_return_and_unacked_all_do() {
    let (mut cluster, client) = common::with_topic(3, &[], TOPIC, 3).await;
    let records: Vec<Record> =
        (0..N).map(|i| Record::new(None, Bytes::from(format!("e{i}")), replog_proto::now_ms())).collect();
    for chunk in records.chunks(50) {
        client.produce_batch(TOPIC, 0, replog_proto::batch::encode(chunk), Acks::All).await.expect("produce");
    }
    let mut cfg = QueueConfig::new("failover");
    cfg.consumer_id = "first".into();
    cfg.lock = LOCK;
    cfg.auto_renew = false;
    let mut first = QueueConsumer::new(client.clone(), TOPIC, cfg).await.expect("consumer");
    let mut held = Vec::new();
    while held.len() < 100 {
        held.extend(first.receive(100 - held.len(), POLL).await.expect("receive"));
    }
    // Acknowledge every other one of the held events.
    let (acked, unacked): (Vec<_>, Vec<_>) = held.into_iter().partition(|m| m.offset % 2 == 0);
    first.ack(&acked).await.expect("ack");
    let acked: BTreeSet<u64> = acked.iter().map(|m| m.offset).collect();
    let unacked: BTreeSet<u64> = unacked.iter().map(|m| m.offset).collect();

    let (leader, _) = common::preferred_leader(&client, TOPIC, 0).await;
    cluster.kill(leader).expect("SIGKILL the leader");
    drop(first);

    // A second consumer drains the queue under the new leader.
    let mut cfg = QueueConfig::new("failover");
    cfg.consumer_id = "second".into();
    let mut second = QueueConsumer::new(client.clone(), TOPIC, cfg).await.expect("consumer");
    let mut got: BTreeMap<u64, u32> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < (N as usize - acked.len()) {
        assert!(tokio::time::Instant::now() < deadline, "only {} events came back: {got:?}", got.len());
        let msgs = second.receive(50, POLL).await.expect("receive");
        second.ack(&msgs).await.expect("ack");
        for m in msgs {
            assert!(!acked.contains(&m.offset), "acknowledged event {} delivered again", m.offset);
            assert!(got.insert(m.offset, m.delivery_count).is_none(), "event {} delivered twice", m.offset);
        }
    }
    for o in &unacked {
        assert_eq!(got.get(o), Some(&2), "unacknowledged event {o} is delivered a second time");
    }
    for o in (100..N).filter(|o| !unacked.contains(o)) {
        assert_eq!(got.get(&o), Some(&1), "event {o}");
    }
    let s = &client.queue_describe(TOPIC, "failover").await.expect("describe")[0];
    assert_eq!((s.acked, s.in_flight, s.settled_below), (N, 0, N), "{s:?}");

    // The killed node rejoins and, once it leads again, knows the same.
    cluster.restart(leader).expect("restart");
    common::preferred_leader(&client, TOPIC, 0).await;
    let s = common::wait_for("the restarted leader to describe the group", WAIT, || async {
        let s = client.queue_describe(TOPIC, "failover").await.ok()?;
        Some(s[0].clone())
    })
    .await;
    assert_eq!((s.acked, s.settled_below, s.redelivered), (N, N, unacked.len() as u64), "{s:?}");
    assert!(second.receive(10, POLL).await.expect("receive").is_empty(), "nothing left to deliver");
}
