//! The producer against real nodes: pipelined, compressed batches keep
//! send order and land once through a leader's SIGKILL; the broker stores
//! compressed batches as sent and refuses hostile ones with clear codes;
//! a full buffer fails at once or waits, as configured, and frees up when
//! the partition answers; keyless records stick to one partition for its
//! share of bytes, the partitions taking turns.
//!
//! The producer's handling of every failure interleaving (reordered
//! requests, lost answers, late landings, refusals) is driven one by one in
//! `client-sdk/src/producer/model.rs`; here the real cluster decides.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{WAIT, preferred_leader, wait_for};
use replog_client::{
    Acks, Compression, Error, ErrorCode, OnFull, PartitionReader, Producer, ProducerConfig, Record, SendHandle,
};
use replog_proto::batch;
use replog_proto::pb::FetchRequest;

fn value(i: usize) -> Bytes {
    Bytes::from(format!("record {i:06} {}", "payload ".repeat(8)))
}

fn index_of(v: &[u8]) -> usize {
    std::str::from_utf8(&v[7..13]).expect("utf8").parse().expect("index")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_pipelined_compressed_batches_when_the_leader_is_killed_then_every_acknowledged_record_is_there_once_in_send_order()
 {
    const RECORDS: usize = 20_000;
    let (mut cluster, client) = common::with_topic(3, &[], "t", 3).await;
    let cfg = ProducerConfig {
        // Small batches, so that many are in flight around the kill.
        batch_max_records: 40,
        compression: Compression::Lz4,
        ..ProducerConfig::default()
    };
    assert_eq!(cfg.max_in_flight, 5);
    let producer = Producer::new(client.clone(), cfg);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, SendHandle)>();
    let feeder = {
        let producer = producer.clone();
        tokio::spawn(async move {
            for i in 0..RECORDS {
                let h = producer.enqueue("t", Some(0), Record::new(None, value(i), i as i64)).await.expect("enqueue");
                tx.send((i, h)).expect("collector alive");
            }
        })
    };
    let mut acked: Vec<(usize, u64)> = Vec::new();
    let mut failed = Vec::new();
    let mut killed = None;
    while let Some((i, h)) = rx.recv().await {
        match h.wait().await {
            Ok((_, offset)) => acked.push((i, offset)),
            Err(e) => failed.push((i, e)),
        }
        if killed.is_none() && acked.len() == RECORDS / 3 {
            let (leader, _) = preferred_leader(&client, "t", 0).await;
            cluster.kill(leader).expect("kill");
            killed = Some(leader);
        }
    }
    feeder.await.expect("feeder");
    let killed = killed.expect("the leader was killed");
    let stats = producer.stats();
    eprintln!(
        "killed node {killed}; acked {}, failed {}, batches sent {}, resent {}, fences {}, most in flight {}",
        acked.len(),
        failed.len(),
        stats.batches_sent(),
        stats.batches_resent(),
        stats.fences(),
        stats.max_in_flight_seen()
    );
    // The client retries within its deadline (60 s here), far beyond an
    // election: nothing may fail.
    assert!(failed.is_empty(), "records failed: {:?}", &failed[..failed.len().min(5)]);
    assert!(stats.max_in_flight_seen() > 1, "batches were pipelined");
    assert!(stats.max_in_flight_seen() <= 5, "at most max_in_flight batches in flight");

    let client = common::client(&cluster).await;
    let read = PartitionReader::new(client, "t", 0, 0).read_to_end().await.expect("read");
    assert_eq!(read.len(), RECORDS, "every record exactly once");
    for (pos, r) in read.iter().enumerate() {
        assert_eq!(r.offset, pos as u64);
        assert_eq!(index_of(&r.value), pos, "offset {pos} holds another record: order or duplicates broken");
    }
    for (i, offset) in acked {
        assert_eq!(offset, i as u64, "record {i} was acknowledged at {offset}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_compressing_producer_when_records_with_headers_are_sent_then_the_broker_stores_them_compressed_and_the_reader_gets_them_back()
 {
    let (_cluster, client) = common::with_topic(1, &[], "c", 1).await;
    let mut next = 0u64;
    for codec in [Compression::Lz4, Compression::Zstd, Compression::None] {
        let producer = Producer::new(client.clone(), ProducerConfig { compression: codec, ..Default::default() });
        let records: Vec<Record> = (0..500)
            .map(|i| {
                Record::new(Some(Bytes::from(format!("key-{}", i % 10))), value(i), 1_000 + i as i64)
                    .with_header("codec", Bytes::from(codec.name()))
                    .with_header("i", Bytes::from(i.to_string()))
            })
            .collect();
        let mut handles = Vec::new();
        for r in &records {
            handles.push(producer.enqueue("c", Some(0), r.clone()).await.expect("enqueue"));
        }
        for h in handles {
            h.await.expect("acknowledged");
        }
        // What the broker holds: the batches as sent.
        let resp = client
            .fetch_raw(
                FetchRequest {
                    topic: "c".into(),
                    partition: 0,
                    offset: next,
                    max_bytes: 64 << 20,
                    max_records: 10_000,
                    max_wait_ms: 0,
                    min_bytes: 0,
                    replica_read: false,
                },
                None,
            )
            .await
            .expect("fetch");
        let (mut stored, mut plain) = (0usize, 0usize);
        for b in &resp.batches {
            let h = batch::peek_header(&b.batch).expect("header");
            assert_eq!(h.compression, codec, "the broker keeps the producer's codec");
            stored += b.batch.len();
            plain += batch::HEADER_LEN + batch::records_bytes(&b.batch, 1 << 20).expect("records").len();
        }
        eprintln!("{codec}: {} batches, {stored} bytes stored, {plain} uncompressed", resp.batches.len());
        if codec != Compression::None {
            assert!(stored * 3 < plain, "{codec}: {stored} bytes stored for {plain}");
        }
        let read = PartitionReader::new(client.clone(), "c", 0, next).read_to_end().await.expect("read");
        let back: Vec<Record> = read
            .into_iter()
            .map(|r| Record { timestamp_ms: r.timestamp_ms, key: r.key, value: r.value, headers: r.headers })
            .collect();
        assert_eq!(back, records, "{codec}: the reader gets back keys, values, timestamps and headers");
        next += records.len() as u64;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_keyless_records_when_produced_then_each_partition_takes_sticky_bytes_of_them_in_turn() {
    const PARTITIONS: usize = 6;
    let cluster = common::start(1, &[]).await;
    let client = common::client(&cluster).await;
    client.create_topic("k", PARTITIONS as u32, 1).await.expect("create topic");
    cluster.wait_leaders(&client, "k", WAIT).await.expect("every partition led");
    let sticky_bytes = 2_000;
    let producer = Producer::new(client.clone(), ProducerConfig { sticky_bytes, ..Default::default() });
    let records: Vec<Record> = (0..400).map(|i| Record::new(None, value(i), 1)).collect();
    let size = records[0].encoded_len();
    assert!(records.iter().all(|r| r.encoded_len() == size), "records of one size");
    let mut handles = Vec::new();
    for r in &records {
        handles.push(producer.enqueue("k", None, r.clone()).await.expect("enqueue"));
    }
    let mut partition_of = vec![u32::MAX; records.len()];
    for (i, h) in handles.into_iter().enumerate() {
        partition_of[i] = h.wait().await.expect("acknowledged").0;
    }
    // A partition takes records until they reach sticky_bytes, then the next.
    let run = sticky_bytes.div_ceil(size);
    let first = partition_of[0] as usize;
    let want: Vec<u32> = (0..records.len()).map(|i| ((first + i / run) % PARTITIONS) as u32).collect();
    assert_eq!(partition_of, want, "runs of {run} records of {size} bytes, partitions in turn");
    // What the partitions hold says the same, in send order.
    for p in 0..PARTITIONS as u32 {
        let read = PartitionReader::new(client.clone(), "k", p, 0).read_to_end().await.expect("read");
        let got: Vec<usize> = read.iter().map(|r| index_of(&r.value)).collect();
        let sent: Vec<usize> = (0..records.len()).filter(|&i| want[i] == p).collect();
        assert_eq!(got, sent, "partition {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_hostile_compressed_batches_when_produced_then_each_is_refused_with_its_code_and_the_node_keeps_serving()
{
    let (_cluster, client) = common::with_topic(1, &[], "h", 1).await;
    let code = |r: replog_client::Result<_>| r.expect_err("must be refused").code();
    let seal = |mut b: Vec<u8>| {
        batch::seal(&mut b);
        Bytes::from(b)
    };
    // 8 MiB of zeros: a few KiB compressed, above the 1 MiB batch limit once decompressed.
    let bomb = [Record::new(None, Bytes::from(vec![0u8; 8 << 20]), 1)];
    for codec in [Compression::Lz4, Compression::Zstd] {
        let b = batch::encode_with(&bomb, codec);
        assert!(b.len() < 64 << 10);
        assert_eq!(code(client.produce_batch("h", 0, b, Acks::All).await), Some(ErrorCode::BatchTooLarge), "{codec}");
        let good = batch::encode_with(&(0..20).map(|i| Record::new(None, value(i), 1)).collect::<Vec<_>>(), codec);
        // A record count the records do not match: offsets would be wrong.
        let mut lying = good.to_vec();
        lying[6..10].copy_from_slice(&21u32.to_be_bytes());
        assert_eq!(code(client.produce_batch("h", 0, seal(lying), Acks::All).await), Some(ErrorCode::CorruptBatch));
        // A codec that does not exist.
        let mut unknown = good.to_vec();
        unknown[5] = 5;
        assert_eq!(code(client.produce_batch("h", 0, seal(unknown), Acks::All).await), Some(ErrorCode::CorruptBatch));
        // Garbage where the compressed records should be, behind a valid checksum.
        let mut garbage = good.to_vec();
        for (i, byte) in garbage[batch::HEADER_LEN + 4..].iter_mut().enumerate() {
            *byte = (i * 131 % 251) as u8;
        }
        assert_eq!(code(client.produce_batch("h", 0, seal(garbage), Acks::All).await), Some(ErrorCode::CorruptBatch));
    }
    // Nothing was appended, and the node still takes good batches.
    let ok = client.produce_batch(
        "h",
        0,
        batch::encode_with(&[Record::new(None, value(1), 1)], Compression::Zstd),
        Acks::All,
    );
    assert_eq!(ok.await.expect("a good batch").base_offset, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_partition_that_cannot_commit_when_the_buffer_fills_then_fail_errors_at_once_block_waits_and_room_returns()
 {
    let (mut cluster, client) = common::with_topic(3, &[], "b", 3).await;
    let leader = common::strand_leader(&mut cluster, &client, "b").await;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let base = ProducerConfig { buffer_records: 10, linger: Duration::ZERO, ..ProducerConfig::default() };
    let failing = Producer::new(client.clone(), ProducerConfig { on_full: OnFull::Fail, ..base.clone() });
    let mut held = Vec::new();
    for i in 0..10 {
        held.push(failing.enqueue("b", Some(0), Record::new(None, value(i), 1)).await.expect("room for 10"));
    }
    assert_eq!(failing.stats().buffered_records(), 10);
    let t0 = Instant::now();
    let e = failing.enqueue("b", Some(0), Record::new(None, value(10), 1)).await.err().expect("buffer full");
    assert!(matches!(e, Error::BufferFull { .. }), "{e:?}");
    assert!(!e.is_indeterminate(), "a record refused by the buffer was never sent");
    assert!(t0.elapsed() < Duration::from_secs(1), "OnFull::Fail does not wait");

    let blocking = Producer::new(
        client.clone(),
        ProducerConfig { on_full: OnFull::Block { timeout: Duration::from_millis(300) }, buffer_records: 1, ..base },
    );
    let first = blocking.enqueue("b", Some(0), Record::new(None, value(100), 1)).await.expect("room for one");
    let t0 = Instant::now();
    let e = blocking.enqueue("b", Some(0), Record::new(None, value(101), 1)).await.err().expect("buffer full");
    assert!(matches!(e, Error::BufferFull { waited_ms, .. } if waited_ms >= 300), "{e:?}");
    assert!(t0.elapsed() >= Duration::from_millis(300), "OnFull::Block waits its timeout");
    // A waiter that gets room once the partition can commit again.
    let waiter = {
        let blocking = Producer::new(
            client.clone(),
            ProducerConfig { on_full: OnFull::Block { timeout: WAIT }, buffer_records: 1, ..ProducerConfig::default() },
        );
        let held = blocking.enqueue("b", Some(0), Record::new(None, value(200), 1)).await.expect("room for one");
        tokio::spawn(async move {
            let next = blocking.enqueue("b", Some(0), Record::new(None, value(201), 1)).await;
            (held, next)
        })
    };
    for f in followers {
        cluster.restart(f).expect("restart");
    }
    for h in held {
        h.await.expect("committed once the followers are back");
    }
    first.await.expect("committed");
    let (held, next) = waiter.await.expect("waiter");
    held.await.expect("committed");
    next.expect("room came back").await.expect("committed");
    wait_for("the buffer to drain", WAIT, || async { (failing.stats().buffered_records() == 0).then_some(()) }).await;
    failing.flush().await;
    failing.enqueue("b", Some(0), Record::new(None, value(300), 1)).await.expect("room again").await.expect("acked");
}
