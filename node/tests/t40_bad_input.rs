//! Bad input gets a clear error with a stable code, and the node keeps
//! running with nothing lost: unknown topic, partition out of range,
//! replication factor above the live nodes, oversized record and batch,
//! invalid topic name, corrupt batch, out-of-range offset, and raw garbage
//! on the gRPC and metrics ports.

mod common;

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use replog_client::{Acks, Client, ErrorCode, PartitionReader, Record};
use replog_proto::batch;
use replog_proto::pb;

fn code_of<T: std::fmt::Debug>(r: Result<T, replog_client::Error>) -> ErrorCode {
    let e = r.expect_err("expected an error");
    e.code().unwrap_or_else(|| panic!("no broker code in {e:?}"))
}

fn one(value: &[u8]) -> Bytes {
    batch::encode(&[Record::new(None, Bytes::copy_from_slice(value), 1)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_bad_requests_when_sent_then_each_gets_its_code_and_the_cluster_keeps_working() {
    // Small limits so that "too large" is cheap to reach.
    let cluster = common::start(3, &["--max-record-bytes", "1000", "--max-batch-bytes", "4000"]).await;
    let client: Client = common::client(&cluster).await;
    client.create_topic("t", 2, 3).await.expect("create");
    let first = client.produce_batch("t", 0, one(b"before"), Acks::All).await.expect("produce");

    // Topic administration.
    assert_eq!(code_of(client.create_topic("t", 1, 1).await), ErrorCode::TopicAlreadyExists);
    assert_eq!(code_of(client.create_topic("too-many-replicas", 1, 4).await), ErrorCode::InvalidReplicationFactor);
    for bad in ["", "a b", "../etc", "ü"] {
        assert_eq!(code_of(client.create_topic(bad, 1, 1).await), ErrorCode::InvalidTopicName, "name {bad:?}");
    }
    assert_eq!(code_of(client.create_topic("zero", 0, 1).await), ErrorCode::InvalidPartitions);
    assert_eq!(code_of(client.delete_topic("nope").await), ErrorCode::UnknownTopic);

    // Produce.
    assert_eq!(code_of(client.produce_batch("nope", 0, one(b"x"), Acks::All).await), ErrorCode::UnknownTopic);
    assert_eq!(code_of(client.produce_batch("t", 7, one(b"x"), Acks::All).await), ErrorCode::UnknownPartition);
    assert_eq!(code_of(client.produce_batch("t", 0, one(&[1u8; 2000]), Acks::All).await), ErrorCode::RecordTooLarge);
    let big: Vec<Record> = (0..10).map(|_| Record::new(None, Bytes::from(vec![2u8; 900]), 1)).collect();
    assert_eq!(code_of(client.produce_batch("t", 0, batch::encode(&big), Acks::All).await), ErrorCode::BatchTooLarge);
    let mut corrupt = one(b"hello").to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(code_of(client.produce_batch("t", 0, Bytes::from(corrupt), Acks::All).await), ErrorCode::CorruptBatch);
    assert_eq!(
        code_of(client.produce_batch("t", 0, Bytes::from_static(b"garbage"), Acks::All).await),
        ErrorCode::CorruptBatch
    );
    assert_eq!(code_of(client.produce_batch("t", 0, batch::encode(&[]), Acks::All).await), ErrorCode::CorruptBatch);

    // Fetch.
    let fetch = |offset| pb::FetchRequest {
        topic: "t".into(),
        partition: 0,
        offset,
        max_bytes: 0,
        max_records: 0,
        max_wait_ms: 0,
        replica_read: false,
        min_bytes: 0,
    };
    assert_eq!(code_of(client.fetch_raw(fetch(1_000_000), None).await), ErrorCode::OffsetOutOfRange);
    let mut unknown = fetch(0);
    unknown.topic = "nope".into();
    assert_eq!(code_of(client.fetch_raw(unknown, None).await), ErrorCode::UnknownTopic);

    // Garbage on the ports: not HTTP/2, not HTTP.
    for addr in
        cluster.ids().into_iter().flat_map(|id| [cluster.node(id).addr.clone(), cluster.node(id).metrics.clone()])
    {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.set_write_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let _ = s.write_all(b"\x00\xff\x13garbage that is not a protocol\r\n\r\n\x16\x03\x01");
    }

    // Everyone is still up, and nothing was lost or added.
    let status = client.cluster_status().await.expect("status");
    assert!(status.nodes.iter().all(|n| n.alive), "a node went down: {status:?}");
    let then = client.produce_batch("t", 0, one(b"after"), Acks::All).await.expect("produce after");
    assert_eq!(then.base_offset, first.base_offset.map(|o| o + 1), "a refused batch took an offset");
    let recs = PartitionReader::new(client.clone(), "t", 0, 0).read_to_end().await.expect("read");
    let values: Vec<_> = recs.iter().map(|r| r.value.clone()).collect();
    assert_eq!(values, vec![Bytes::from_static(b"before"), Bytes::from_static(b"after")]);
}
