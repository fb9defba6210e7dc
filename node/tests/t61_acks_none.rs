//! acks=none, end to end:
//!
//! - No made-up offsets. The broker answers before the batch is in the log,
//!   so the answer carries no offset, the SDK reports none (`Ack::offset` is
//!   `None`, and `SendHandle::wait`, which promises an offset, refuses), and
//!   the records still land, at offsets that only a read tells.
//! - Bounded waits. A leader that has lost its majority can never commit,
//!   so an acks=none write there would wait forever; each waits at most the
//!   produce timeout, so the leader's acks=none slots, once all taken, come
//!   free again instead of refusing every later acks=none write for good.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{WAIT, wait_for};
use replog_client::{Acks, ErrorCode, PartitionReader, Producer, ProducerConfig, Record};
use replog_proto::batch;
use replog_proto::codes::CODE_KEY;
use replog_proto::pb::{self, replog_client::ReplogClient};

/// Produce timeout the saturating requests ask for, which caps how long the
/// leader waits for each of its acks=none writes. The node's own cap (10 s
/// by default) is the same; the leader's 1024 slots must all be taken within
/// it, which even a loaded debug build does many times over.
const ACKS_NONE_WAIT: Duration = Duration::from_secs(10);
/// How long after saturation an acks=none write must be accepted again:
/// the produce timeout, with room for a slow debug build.
const SLOTS_FREE_WITHIN: Duration = Duration::from_secs(30);
/// More acks=none writes than a node holds slots for (1024), so that a
/// refusal must come if slots are held.
const SATURATING_WRITES: usize = 4096;
/// A leader that hears from no majority refuses new writes once its lease
/// (the longest election timeout) runs out; only writes it accepted before
/// can wait forever. The lease is made long enough to take every slot with
/// such writes even on a loaded machine, and to outlast the wait for a slot
/// to come free after them (the produce timeout, then `SLOTS_FREE_WITHIN`).
const LONG_LEASE: [&str; 2] = ["--election-timeout-max-ms", "60000"];
/// Pause between attempts while waiting for a slot.
const POLL: Duration = Duration::from_millis(50);
/// Concurrent senders while saturating.
const SENDERS: usize = 16;

fn one(value: &str) -> Bytes {
    batch::encode(&[Record::new(None, Bytes::copy_from_slice(value.as_bytes()), 1)])
}

/// An acks=none produce of one record to `t`/0 that lets the leader wait
/// [`ACKS_NONE_WAIT`] for its commit.
fn acks_none(value: &str) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: "t".into(),
        partition: 0,
        batch: one(value),
        acks: pb::Acks::None as i32,
        timeout_ms: ACKS_NONE_WAIT.as_millis() as u32,
    }
}

/// The replog error code a status carries.
fn code_of(status: &tonic::Status) -> Option<ErrorCode> {
    let v = status.metadata().get(CODE_KEY)?.to_str().ok()?;
    ErrorCode::from_u16(v.parse().ok()?)
}

/// The last lines of a node's log, for failure messages.
fn tail(log: &std::path::Path) -> String {
    replog_testkit::log_tail(log, 40)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_acks_none_when_records_are_sent_then_no_offset_is_reported_and_the_records_land() {
    let (_cluster, client) = common::with_topic(3, &[], "t", 3).await;
    // An acks=all record first, so that a made-up offset 0 could not pass
    // for a real one.
    let first = client.produce_batch("t", 0, one("all-0"), Acks::All).await.expect("acks=all");
    assert_eq!(first.base_offset, Some(0));

    let raw = client.produce_batch("t", 0, one("none-0"), Acks::None).await.expect("acks=none");
    assert_eq!(raw.base_offset, None, "acks=none must not report an offset: {raw:?}");

    let producer = Producer::new(client.clone(), ProducerConfig { acks: Acks::None, ..Default::default() });
    let mut acks = Vec::new();
    for i in 1..=3 {
        let h = producer.enqueue("t", Some(0), Record::new(None, Bytes::from(format!("none-{i}")), 1)).await;
        acks.push(h.expect("enqueue").ack().await.expect("sent"));
    }
    assert!(acks.iter().all(|a| a.partition == 0 && a.offset.is_none()), "no made-up offsets: {acks:?}");
    let h = producer.enqueue("t", Some(0), Record::new(None, Bytes::from_static(b"none-4"), 1)).await;
    let e = h.expect("enqueue").wait().await.expect_err("wait promises an offset that acks=none does not have");
    assert!(matches!(e, replog_client::Error::InvalidArgument(_)), "{e:?}");

    // They land all the same, each once, in order.
    let want: Vec<String> = ["all-0", "none-0", "none-1", "none-2", "none-3", "none-4"].map(String::from).to_vec();
    let got = wait_for("the acks=none records to be readable", WAIT, || async {
        let recs = PartitionReader::new(client.clone(), "t", 0, 0).read_to_end().await.ok()?;
        let values: Vec<String> = recs.iter().map(|r| String::from_utf8_lossy(&r.value).into_owned()).collect();
        (values.len() >= want.len()).then_some(values)
    })
    .await;
    assert_eq!(got, want);
}

/// The same promise through the API that predates `Ack`: a `send` (which
/// waits for an offset) of an acks=none record used to return an offset the
/// broker never gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_acks_none_when_waited_for_an_offset_then_none_is_made_up() {
    let (_cluster, client) = common::with_topic(1, &[], "t", 1).await;
    client.produce_batch("t", 0, one("first"), Acks::All).await.expect("acks=all");
    let producer = Producer::new(client.clone(), ProducerConfig { acks: Acks::None, ..Default::default() });
    let r = producer.send("t", None, Bytes::from_static(b"second")).await;
    assert!(r.is_err(), "acks=none has no offset to report, got {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_leader_without_majority_when_acks_none_slots_fill_up_then_they_come_free_after_the_timeout() {
    let (mut cluster, admin) = common::with_topic(3, &LONG_LEASE, "t", 3).await;
    // The leader keeps leading but can commit nothing any more.
    let leader = common::strand_leader(&mut cluster, &admin, "t").await;
    // Straight to the leader with the generated client: what is checked is
    // the node's answer to each request, without the SDK's routing and
    // retries around it.
    let addr = cluster.node(leader).addr.clone();
    let conn = ReplogClient::connect(format!("http://{addr}")).await.expect("connect to the leader");
    let log = cluster.node(leader).log.clone();

    // Take every acks=none slot of the leader.
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (mut conn, log, stop) = (conn.clone(), log.clone(), stop.clone());
            tokio::spawn(async move {
                for i in 0..SATURATING_WRITES / SENDERS {
                    if stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    match conn.produce(acks_none(&format!("{s}-{i}"))).await {
                        Ok(_) => {}
                        Err(st) if code_of(&st) == Some(ErrorCode::Unavailable) => {
                            stop.store(true, Ordering::Relaxed);
                            return true;
                        }
                        Err(st) => panic!("acks=none write {s}-{i}: {st:?}\n--- leader log ---\n{}", tail(&log)),
                    }
                }
                false
            })
        })
        .collect();
    let mut refused = false;
    for s in senders {
        refused |= s.await.expect("sender");
    }
    assert!(
        refused,
        "{SATURATING_WRITES} acks=none writes never filled the leader's slots; the test proves nothing\n\
         --- leader log ---\n{}",
        tail(&log)
    );

    // Each write waits at most the produce timeout, so slots come free.
    let mut conn = conn;
    let deadline = Instant::now() + SLOTS_FREE_WITHIN;
    loop {
        match conn.produce(acks_none("later")).await {
            Ok(_) => break,
            Err(st) => assert!(
                Instant::now() < deadline,
                "no acks=none write accepted within {SLOTS_FREE_WITHIN:?} of saturation; last refusal: {st:?}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}
