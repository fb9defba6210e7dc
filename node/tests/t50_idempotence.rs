//! Invariant 3: with the idempotent producer, a retried batch is never
//! appended twice — not when the retry reaches the same leader, not after
//! that leader was killed and another took over, not after every node
//! restarted — and the retry is answered with the offset the batch got the
//! first time. Gaps in a producer's sequence are refused.

mod common;

use bytes::Bytes;
use common::{CLUSTER_READY, WAIT, wait_for};
use replog_client::{Acks, Client, ErrorCode, PartitionReader, Record};
use replog_proto::batch::{BatchBuilder, ProducerInfo};

fn batch(pid: i64, seq: i32, values: &[&str]) -> Bytes {
    let mut b = BatchBuilder::new().producer(ProducerInfo { producer_id: pid, epoch: 0, base_sequence: seq });
    for v in values {
        b.push(&Record::new(None, Bytes::copy_from_slice(v.as_bytes()), 1));
    }
    b.build()
}

async fn leader_of(client: &Client) -> u64 {
    wait_for("a leader for t/0", WAIT, || async { client.describe_topic("t").await.ok()?.partitions[0].leader }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_an_idempotent_producer_when_a_batch_is_retried_across_failover_and_restart_then_it_is_stored_once() {
    let mut cluster = common::start(3, &[]).await;
    let client = common::client(&cluster).await;
    client.create_topic("t", 1, 3).await.expect("create");
    let (pid, _) = client.init_producer().await.expect("producer id");
    let (pid2, _) = client.init_producer().await.expect("producer id");
    assert_ne!(pid, pid2, "producer ids are never handed out twice");

    let b0 = batch(pid, 0, &["a", "b", "c"]);
    let first = client.produce_batch("t", 0, b0.clone(), Acks::All).await.expect("produce");
    let again = client.produce_batch("t", 0, b0.clone(), Acks::All).await.expect("retry");
    assert_eq!(again.base_offset, first.base_offset, "a retry must get the first offset");

    let b1 = batch(pid, 3, &["d"]);
    let second = client.produce_batch("t", 0, b1.clone(), Acks::All).await.expect("produce next");
    assert_eq!(second.base_offset, first.base_offset.map(|o| o + 3));
    let gap = client.produce_batch("t", 0, batch(pid, 9, &["x"]), Acks::All).await;
    assert_eq!(gap.expect_err("a gap must be refused").code(), Some(ErrorCode::OutOfOrderSequence));

    // The leader dies; the retry goes to its successor, which must know.
    let victim = leader_of(&client).await;
    cluster.kill(victim).expect("kill");
    let client = common::client(&cluster).await;
    let after_failover = client.produce_batch("t", 0, b1.clone(), Acks::All).await.expect("retry after failover");
    assert_eq!(after_failover.base_offset, second.base_offset);

    // Every node restarts; the producer state survives on disk.
    for id in 1..=3 {
        cluster.kill(id).expect("kill");
    }
    cluster.restart_all().expect("restart");
    cluster.wait_ready(CLUSTER_READY).await.expect("cluster ready");
    let client = common::client(&cluster).await;
    leader_of(&client).await;
    let after_restart = client.produce_batch("t", 0, b0.clone(), Acks::All).await.expect("retry after restart");
    assert_eq!(after_restart.base_offset, first.base_offset);

    let values: Vec<Bytes> = PartitionReader::new(client.clone(), "t", 0, 0)
        .read_to_end()
        .await
        .expect("read")
        .into_iter()
        .map(|r| r.value)
        .collect();
    let want: Vec<Bytes> = ["a", "b", "c", "d"].iter().map(|v| Bytes::from_static(v.as_bytes())).collect();
    assert_eq!(values, want, "each batch must be stored exactly once");
}
