//! Queue groups against three real nodes (one cluster for every case, each
//! case on a topic of its own).
//!
//! Contract checked:
//! - three consumers of one queue group on one partition receive disjoint
//!   events, and every event is acknowledged exactly once overall;
//! - events a consumer took and never settled (it died) go to the other
//!   consumers once its lock expires, counted as redelivered;
//! - an event never settled goes to the dead-letter topic after
//!   `max_deliveries`, and a rejected one at once, each with its origin
//!   topic, partition, offset, delivery count and reason in headers;
//! - bad input gets its code (unknown queue group, event not held, lock
//!   expired, invalid settings, reset past the end), and so does every
//!   request of a seeded burst of hostile queue requests; the node keeps
//!   serving.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, WAIT, wait_for};
use replog_client::{Acks, Client, ErrorCode, PartitionReader, QueueConfig, QueueConsumer, QueueMessage, Record};
use replog_proto::codes::code_of;
use replog_proto::pb::{self, replog_client::ReplogClient};
use tonic::transport::Channel;

/// Long enough that no lock of a healthy consumer expires in these tests.
const LONG_LOCK: Duration = Duration::from_secs(60);
/// Short, so an abandoned lock expires quickly.
const SHORT_LOCK: Duration = Duration::from_millis(1500);
const POLL: Duration = Duration::from_millis(500);

async fn produce(client: &Client, topic: &str, values: impl IntoIterator<Item = String>) {
    let records: Vec<Record> =
        values.into_iter().map(|v| Record::new(None, Bytes::from(v), replog_proto::now_ms())).collect();
    for chunk in records.chunks(100) {
        client.produce_batch(topic, 0, replog_proto::batch::encode(chunk), Acks::All).await.expect("produce");
    }
}

fn config(group: &str, id: &str, lock: Duration) -> QueueConfig {
    let mut c = QueueConfig::new(group);
    c.consumer_id = id.to_string();
    c.lock = lock;
    c
}

async fn topic(client: &Client, name: &str) {
    client.create_topic(name, 1, 3).await.expect("create topic");
    common::preferred_leader(client, name, 0).await;
}

#[tokio::test]
async fn queue_groups_deliver_redeliver_dead_letter_and_refuse_bad_input() {
    let cluster = common::start(3, &[]).await;
    let client = common::client(&cluster).await;
    three_consumers_ack_every_event_exactly_once(&cluster, &client).await;
    a_dead_consumers_events_go_to_the_others_after_its_lock_expires(&client).await;
    poison_and_rejected_events_land_in_the_dead_letter_topic_with_their_origin(&client).await;
    bad_input_gets_its_code_and_the_node_keeps_serving(&cluster, &client).await;
}

async fn three_consumers_ack_every_event_exactly_once(cluster: &Cluster, client: &Client) {
    const TOPIC: &str = "q-three";
    const N: u64 = 600;
    topic(client, TOPIC).await;
    produce(client, TOPIC, (0..N).map(|i| format!("event-{i}"))).await;
    // offset → consumers whose ack of it succeeded without it being settled already.
    let acked: Arc<Mutex<BTreeMap<u64, Vec<String>>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in ["c1", "c2", "c3"] {
        let (client, acked) = (client.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut q = QueueConsumer::new(client, TOPIC, config("three", c, LONG_LOCK)).await.expect("consumer");
            let mut received = Vec::new();
            while acked.lock().unwrap().len() < N as usize {
                let msgs = q.receive(25, POLL).await.expect("receive");
                for m in &msgs {
                    assert_eq!(m.value, Bytes::from(format!("event-{}", m.offset)), "the event at its offset");
                    assert_eq!(m.delivery_count, 1, "no lock expired, so nothing is redelivered");
                }
                if msgs.is_empty() {
                    continue;
                }
                let offsets: Vec<u64> = msgs.iter().map(|m| m.offset).collect();
                let again = q.ack_offsets(0, offsets.clone()).await.expect("ack");
                assert!(again.is_empty(), "{c}: events settled before its own ack: {again:?}");
                let mut a = acked.lock().unwrap();
                for o in offsets {
                    a.entry(o).or_default().push(c.to_string());
                }
                received.extend(msgs.iter().map(|m| m.offset));
            }
            received
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(tokio::time::timeout(WAIT, t).await.expect("consumers finish").expect("consumer task"));
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.keys().copied().collect::<Vec<_>>(), (0..N).collect::<Vec<_>>(), "every event acknowledged");
    for (o, who) in &acked {
        assert_eq!(who.len(), 1, "event {o} acknowledged by {who:?}");
    }
    assert_eq!(all.len(), N as usize, "each event received once overall");
    let stats = client.queue_describe(TOPIC, "three").await.expect("describe");
    assert_eq!((stats[0].acked, stats[0].in_flight, stats[0].redelivered), (N, 0, 0), "{stats:?}");
    assert_eq!(stats[0].settled_below, N);
    // The partition's leader exports the same state, and only the leader.
    let exported = |selector: String| {
        let per_node: Vec<f64> =
            cluster.ids().iter().filter_map(|&id| common::metric(&cluster.node(id).metrics, &selector)).collect();
        assert!(per_node.len() <= 1, "{selector}: exported by {} nodes", per_node.len());
        per_node.first().copied()
    };
    let labels = format!("group=\"three\",topic=\"{TOPIC}\"");
    for (family, want) in [
        (format!("replog_queue_events{{{labels},outcome=\"acked\"}}"), N),
        (format!("replog_queue_events{{{labels},outcome=\"delivered\"}}"), N),
        (format!("replog_queue_events{{{labels},outcome=\"redelivered\"}}"), 0),
        (format!("replog_queue_in_flight{{{labels}}}"), 0),
        (format!("replog_queue_backlog_records{{{labels}}}"), 0),
    ] {
        assert_eq!(exported(family.clone()), Some(want as f64), "{family}");
    }
}

async fn a_dead_consumers_events_go_to_the_others_after_its_lock_expires(client: &Client) {
    const TOPIC: &str = "q-dead";
    const N: u64 = 40;
    topic(client, TOPIC).await;
    produce(client, TOPIC, (0..N).map(|i| format!("job-{i}"))).await;
    let mut doomed = config("workers", "doomed", SHORT_LOCK);
    doomed.auto_renew = false;
    let mut d = QueueConsumer::new(client.clone(), TOPIC, doomed).await.expect("consumer");
    let taken: BTreeSet<u64> = d.receive(15, POLL).await.expect("receive").iter().map(|m| m.offset).collect();
    assert_eq!(taken, (0..15).collect(), "the lowest offsets first");
    // It dies holding them: no ack, no release, no renewal.
    drop(d);
    let mut e = QueueConsumer::new(client.clone(), TOPIC, config("workers", "e", LONG_LOCK)).await.unwrap();
    let mut f = QueueConsumer::new(client.clone(), TOPIC, config("workers", "f", LONG_LOCK)).await.unwrap();
    let mut got: BTreeMap<u64, u32> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < N as usize {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {N} events acknowledged", got.len());
        for q in [&mut e, &mut f] {
            let msgs = q.receive(10, POLL).await.expect("receive");
            q.ack(&msgs).await.expect("ack");
            for m in msgs {
                assert!(got.insert(m.offset, m.delivery_count).is_none(), "event {} delivered twice", m.offset);
            }
        }
    }
    for o in 0..N {
        let want = if taken.contains(&o) { 2 } else { 1 };
        assert_eq!(got[&o], want, "delivery count of event {o}");
    }
    let s = &client.queue_describe(TOPIC, "workers").await.expect("describe")[0];
    assert_eq!((s.acked, s.redelivered, s.in_flight), (N, taken.len() as u64, 0), "{s:?}");
}

async fn dead_letters(client: &Client, topic: &str, n: usize) -> Vec<replog_client::ConsumedRecord> {
    wait_for("the dead letters", WAIT, || async {
        let mut r = PartitionReader::new(client.clone(), topic, 0, 0);
        let got = r.poll().await.ok()?;
        (got.len() >= n).then_some(got)
    })
    .await
}

fn header(r: &replog_client::ConsumedRecord, name: &str) -> String {
    let v = r.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default();
    String::from_utf8_lossy(&v).into_owned()
}

async fn poison_and_rejected_events_land_in_the_dead_letter_topic_with_their_origin(client: &Client) {
    const TOPIC: &str = "q-poison";
    const MAX_DELIVERIES: u32 = 3;
    topic(client, TOPIC).await;
    produce(client, TOPIC, ["fine-0", "poison", "fine-2", "malformed", "fine-4"].map(String::from)).await;
    let mut cfg = config("handlers", "h", LONG_LOCK);
    cfg.max_deliveries = Some(MAX_DELIVERIES);
    let mut q = QueueConsumer::new(client.clone(), TOPIC, cfg).await.unwrap();
    let mut poison_deliveries = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = client.queue_describe(TOPIC, "handlers").await.ok().map(|s| s[0].clone());
        if s.as_ref().is_some_and(|s| s.acked == 3 && s.dead_lettered == 2) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not settled: {s:?}");
        let msgs: Vec<QueueMessage> = q.receive(10, POLL).await.expect("receive");
        for m in msgs {
            match &m.value[..] {
                // Processing it always fails: it goes back, until it is dead-lettered.
                b"poison" => {
                    poison_deliveries += 1;
                    assert_eq!(m.delivery_count, poison_deliveries);
                    q.release(&[m]).await.expect("release");
                }
                b"malformed" => q.reject(&[m], "cannot parse").await.expect("reject"),
                _ => q.ack(&[m]).await.expect("ack"),
            }
        }
    }
    assert_eq!(poison_deliveries, MAX_DELIVERIES, "delivered max_deliveries times, never more");
    let letters = dead_letters(client, "q-poison.dlq", 2).await;
    assert_eq!(letters.len(), 2, "each dead letter written once here: {letters:?}");
    let by_offset: BTreeMap<String, _> = letters.iter().map(|r| (header(r, "replog-dlq-offset"), r)).collect();
    let poison = by_offset["1"];
    assert_eq!(poison.value, Bytes::from_static(b"poison"));
    assert_eq!(header(poison, "replog-dlq-topic"), TOPIC);
    assert_eq!(header(poison, "replog-dlq-partition"), "0");
    assert_eq!(header(poison, "replog-dlq-group"), "handlers");
    assert_eq!(header(poison, "replog-dlq-delivery-count"), MAX_DELIVERIES.to_string());
    assert!(header(poison, "replog-dlq-reason").contains("delivered 3 times"), "{poison:?}");
    let rejected = by_offset["3"];
    assert_eq!(rejected.value, Bytes::from_static(b"malformed"));
    assert_eq!(header(rejected, "replog-dlq-delivery-count"), "1");
    assert!(header(rejected, "replog-dlq-reason").contains("cannot parse"), "{rejected:?}");
    // Nothing comes back from the queue afterwards.
    assert!(q.receive(10, POLL).await.expect("receive").is_empty());
}

async fn conn(addr: &str) -> ReplogClient<Channel> {
    ReplogClient::connect(format!("http://{addr}")).await.expect("connect")
}

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> ErrorCode {
    let s = r.expect_err("the request must fail");
    code_of(&s).unwrap_or_else(|| panic!("no code in {s:?}"))
}

async fn bad_input_gets_its_code_and_the_node_keeps_serving(cluster: &Cluster, client: &Client) {
    const TOPIC: &str = "q-bad";
    topic(client, TOPIC).await;
    produce(client, TOPIC, (0..10).map(|i| format!("e{i}"))).await;
    let leader = cluster.leader_of(TOPIC, 0).await.expect("leader");
    let mut c = conn(&cluster.addrs()[&leader]).await;
    let receive = |consumer: &str, max: u32, lock_ms: u32| pb::QueueReceiveRequest {
        topic: TOPIC.into(),
        partition: 0,
        group: "g".into(),
        consumer: consumer.into(),
        max_messages: max,
        max_wait_ms: 0,
        lock_ms,
        max_deliveries: 0,
        dead_letter_topic: String::new(),
    };
    let events = |group: &str, consumer: &str, offsets: Vec<u64>| pb::QueueEventsRequest {
        topic: TOPIC.into(),
        partition: 0,
        group: group.into(),
        consumer: consumer.into(),
        offsets,
        lock_ms: 0,
        reason: String::new(),
    };
    // Before any receive, the group does not exist.
    assert_eq!(code(c.queue_ack(events("g", "a", vec![0])).await), ErrorCode::UnknownQueueGroup);
    let describe = pb::QueueDescribeRequest { topic: TOPIC.into(), partition: 0, group: "g".into() };
    assert_eq!(code(c.queue_describe(describe.clone()).await), ErrorCode::UnknownQueueGroup);
    // Invalid settings.
    assert_eq!(code(c.queue_receive(receive("a", 1, 50)).await), ErrorCode::InvalidRequest);
    assert_eq!(code(c.queue_receive(receive("a", 5000, 0)).await), ErrorCode::InvalidRequest);
    assert_eq!(code(c.queue_receive(receive("", 1, 0)).await), ErrorCode::InvalidRequest);
    let mut bad_group = receive("a", 1, 0);
    bad_group.group = String::new();
    assert_eq!(code(c.queue_receive(bad_group).await), ErrorCode::InvalidRequest);
    let mut bad_dlq = receive("a", 1, 0);
    bad_dlq.dead_letter_topic = TOPIC.into();
    assert_eq!(code(c.queue_receive(bad_dlq).await), ErrorCode::InvalidRequest);
    let mut internal = receive("a", 1, 0);
    internal.topic = "__consumer_offsets".into();
    assert_eq!(code(c.queue_receive(internal).await), ErrorCode::InvalidRequest);
    // `a` holds 0 and 1 for 60 s, `b` holds 2 for 200 ms.
    let a = c.queue_receive(receive("a", 2, 60_000)).await.expect("receive").into_inner();
    assert_eq!(a.messages.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![0, 1]);
    let b = c.queue_receive(receive("b", 1, 200)).await.expect("receive").into_inner();
    assert_eq!(b.messages[0].offset, 2);
    // Not held: another consumer's event, one never delivered, none at all.
    assert_eq!(code(c.queue_ack(events("g", "b", vec![0])).await), ErrorCode::QueueEventNotHeld);
    assert_eq!(code(c.queue_ack(events("g", "a", vec![5])).await), ErrorCode::QueueEventNotHeld);
    assert_eq!(code(c.queue_ack(events("g", "a", vec![1, 7])).await), ErrorCode::QueueEventNotHeld);
    assert_eq!(code(c.queue_release(events("g", "b", vec![1])).await), ErrorCode::QueueEventNotHeld);
    assert_eq!(code(c.queue_ack(events("g", "a", vec![])).await), ErrorCode::InvalidRequest);
    // All or none: offset 1 is still held by `a` after the refused ack above.
    c.queue_ack(events("g", "a", vec![1])).await.expect("ack of an event held");
    // `b`'s lock runs out (the describe shows it gone), then its ack and renew are refused.
    wait_for("b's lock to expire", WAIT, || {
        let mut c = c.clone();
        let d = describe.clone();
        async move {
            let s = c.queue_describe(d).await.ok()?.into_inner();
            (!s.consumers.iter().any(|x| x.consumer == "b")).then_some(())
        }
    })
    .await;
    assert_eq!(code(c.queue_ack(events("g", "b", vec![2])).await), ErrorCode::QueueLockExpired);
    assert_eq!(code(c.queue_renew(events("g", "b", vec![2])).await), ErrorCode::QueueLockExpired);
    let reset = |offset| pb::QueueResetRequest { topic: TOPIC.into(), partition: 0, group: "g".into(), offset };
    assert_eq!(code(c.queue_reset(reset(11)).await), ErrorCode::OffsetOutOfRange);
    // A follower answers NOT_LEADER with the leader's address.
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    let mut f = conn(&cluster.addrs()[&follower]).await;
    assert_eq!(code(f.queue_receive(receive("a", 1, 0)).await), ErrorCode::NotLeader);
    // The node still serves: `c` takes the expired event 2 (second delivery) and more.
    let r = c.queue_receive(receive("c", 3, 0)).await.expect("receive").into_inner();
    let got: Vec<(u64, u32)> = r.messages.iter().map(|m| (m.offset, m.delivery_count)).collect();
    assert_eq!(got, vec![(2, 2), (3, 1), (4, 1)]);
    // A reset redelivers from offset 5 and drops every lock.
    c.queue_reset(reset(5)).await.expect("reset");
    // Event 3 was skipped by the reset: it counts as settled, so an ack changes nothing.
    let again = c.queue_ack(events("g", "c", vec![3])).await.expect("ack").into_inner();
    assert_eq!(again.already_settled, vec![3]);
    assert_eq!(code(c.queue_ack(events("g", "c", vec![6])).await), ErrorCode::QueueEventNotHeld);
    let r = c.queue_receive(receive("c", 1, 0)).await.expect("receive").into_inner();
    assert_eq!(r.messages[0].offset, 5);
    hostile_burst(&mut c).await;
    // Still serving, with group `g` as it was.
    c.queue_ack(events("g", "c", vec![5])).await.expect("ack after the burst");
    let r = c.queue_receive(receive("c", 1, 0)).await.expect("receive after the burst").into_inner();
    assert_eq!(r.messages[0].offset, 6);
}

/// Random queue requests with edge values (names, ids, offsets, limits):
/// each is answered, with success or a code, never a broken connection.
async fn hostile_burst(c: &mut ReplogClient<Channel>) {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("QUEUE_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("hostile queue burst seed {seed} (QUEUE_FUZZ_SEED to repeat)");
    let mut rng = StdRng::seed_from_u64(seed);
    let names = ["", "h", "\u{0}", "x\ny", &"n".repeat(250), &"é".repeat(200), "__consumer_offsets", "q-bad", "nope"];
    let name = |rng: &mut StdRng| names[rng.gen_range(0..names.len())].to_string();
    let edge_u32 = |rng: &mut StdRng| [0, 1, 99, 100, 1000, 1001, 3_600_000, 3_600_001, u32::MAX][rng.gen_range(0..9)];
    for i in 0..300 {
        let topic = if rng.gen_bool(0.7) { "q-bad".to_string() } else { name(&mut rng) };
        let partition = if rng.gen_bool(0.9) { 0 } else { rng.r#gen() };
        let group = loop {
            // Group `g` is the one the test goes on with.
            let g = name(&mut rng);
            if g != "g" {
                break g;
            }
        };
        let offsets: Vec<u64> = match rng.gen_range(0..4) {
            0 => Vec::new(),
            1 => (0..rng.gen_range(1..20)).map(|_| rng.gen_range(0..15)).collect(),
            2 => vec![u64::MAX, 0, u64::MAX],
            _ => (0..10_001).collect(),
        };
        let ev = pb::QueueEventsRequest {
            topic: topic.clone(),
            partition,
            group: group.clone(),
            consumer: name(&mut rng),
            offsets,
            lock_ms: edge_u32(&mut rng),
            reason: "r".repeat(rng.gen_range(0..2000)),
        };
        let r = match rng.gen_range(0..7) {
            0 => c
                .queue_receive(pb::QueueReceiveRequest {
                    topic,
                    partition,
                    group,
                    consumer: name(&mut rng),
                    max_messages: edge_u32(&mut rng),
                    max_wait_ms: edge_u32(&mut rng).min(200),
                    lock_ms: edge_u32(&mut rng),
                    max_deliveries: edge_u32(&mut rng),
                    dead_letter_topic: name(&mut rng),
                })
                .await
                .map(|_| ()),
            1 => c.queue_ack(ev).await.map(|_| ()),
            2 => c.queue_release(ev).await.map(|_| ()),
            3 => c.queue_reject(ev).await.map(|_| ()),
            4 => c.queue_renew(ev).await.map(|_| ()),
            5 => c.queue_describe(pb::QueueDescribeRequest { topic, partition, group }).await.map(|_| ()),
            _ => {
                c.queue_reset(pb::QueueResetRequest { topic, partition, group, offset: rng.r#gen() }).await.map(|_| ())
            }
        };
        if let Err(s) = r {
            assert!(code_of(&s).is_some(), "request {i} of seed {seed}: an answer without a code: {s:?}");
        }
    }
}
