//! A burst of generated hostile input against a real 3-node cluster, after
//! which the cluster serves as before with nothing acknowledged lost.
//!
//! The burst (seeded; the seed is printed, `REPLOG_HOSTILE_SEED` replays it)
//! mixes:
//! - well-formed client requests with hostile fields: names that are empty,
//!   huge, non-ASCII or reserved; partitions, replication factors, offsets
//!   and limits at the edges of their integer types; unknown enum values;
//!   batches that are corrupt, lie about their record count, carry random
//!   producer ids, or are too large — each must get a replog error code
//!   (or succeed, if it is in fact valid);
//! - arbitrary bytes as the body of every client RPC (on the client port)
//!   and peer RPC (on the peer port), which the
//!   node must refuse with a gRPC status;
//! - peer envelopes with unknown groups and, for real groups, payloads the
//!   peer codec must refuse;
//! - raw garbage on both ports: not HTTP/2, an HTTP/2 preface followed by
//!   garbage frames, a frame header announcing a huge frame.
//!
//! Then: every node process is still running and alive in cluster status,
//! every record acknowledged before or during the burst is at its offset
//! with its value, and a normal produce and fetch work.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use common::{CLUSTER_READY, WAIT};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use replog_client::{Acks, Client, PartitionReader, Record};
use replog_node::raft_net::encode_payload;
use replog_proto::batch::{self, ProducerInfo};
use replog_proto::codes::{CODE_KEY, ErrorCode};
use replog_proto::pb;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// How long the burst runs: enough for hundreds of requests of each kind on
/// a busy 2-core machine, short enough for `make test`.
const BURST: Duration = Duration::from_secs(20);
/// Per request: long polls and slow creates are cut off by the client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const TOPIC: &str = "t";
/// A few election timeouts (750–1500 ms) with margin for a busy machine.
const ELECTION_AFTER_HOSTILE_TERMS: Duration = Duration::from_secs(15);
const MAX_RECORD_BYTES: usize = 1000;
const MAX_BATCH_BYTES: usize = 4000;

const CLIENT_METHODS: &[&str] = &[
    "/replog.v1.Replog/CreateTopic",
    "/replog.v1.Replog/DeleteTopic",
    "/replog.v1.Replog/Metadata",
    "/replog.v1.Replog/Produce",
    "/replog.v1.Replog/Fetch",
    "/replog.v1.Replog/ClusterStatus",
    "/replog.v1.Replog/NodeInfo",
    "/replog.v1.Replog/InitProducer",
    "/replog.v1.Replog/AlterTopicConfig",
    "/replog.v1.Replog/GroupFloors",
];
const PEER_METHODS: &[&str] = &[
    "/replog.v1.RaftPeer/AppendEntries",
    "/replog.v1.RaftPeer/Vote",
    "/replog.v1.RaftPeer/PreVote",
    "/replog.v1.RaftPeer/SnapshotChunk",
    "/replog.v1.RaftPeer/TransferLeader",
    "/replog.v1.RaftPeer/HeartbeatBatch",
];

/// The peer-service address of the node whose client address is `addr`.
fn peer_addr(addr: &str) -> String {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    format!("{host}:{}", port.parse::<u16>().expect("port") + replog_testkit::cluster::PEER_PORT_OFFSET)
}

/// Sends and receives message bodies as raw bytes, so that anything can be
/// put on the wire as a gRPC message.
#[derive(Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// One gRPC call with a raw body; `Err` is the status (or a local timeout).
async fn call(ch: &Channel, method: &'static str, body: Bytes) -> Result<Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(body);
    req.set_timeout(REQUEST_TIMEOUT);
    let fut = grpc.unary(req, PathAndQuery::from_static(method), RawCodec);
    match tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(1), fut).await {
        Ok(r) => r.map(|r| r.into_inner()),
        Err(_) => Err(tonic::Status::deadline_exceeded("local timeout")),
    }
}

fn code_of(s: &tonic::Status) -> Option<ErrorCode> {
    let v = s.metadata().get(CODE_KEY)?.to_str().ok()?.parse().ok()?;
    ErrorCode::from_u16(v)
}

/// The client cut the call off: not an answer. (A node's own TIMEOUT
/// carries its code.)
fn cut_off(s: &tonic::Status) -> bool {
    code_of(s).is_none() && matches!(s.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled)
}

fn nasty_name(rng: &mut StdRng) -> String {
    match rng.gen_range(0..10) {
        0 => String::new(),
        1 => "x".repeat(rng.gen_range(250..20_000)),
        2 => "..".into(),
        3 => "ü\u{0}/\\ \u{202e}".into(),
        4 => "../../etc/passwd".into(),
        5 => TOPIC.into(),
        6 => format!("hostile-{}", rng.gen_range(0..4)),
        7 => String::from_utf8_lossy(&random_bytes(rng, 64)).into_owned(),
        8 => "a".repeat(249),
        _ => format!("no-such-{}", rng.next_u32()),
    }
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let mut b = vec![0u8; rng.gen_range(0..=max)];
    rng.fill_bytes(&mut b);
    b
}

fn edge_u32(rng: &mut StdRng) -> u32 {
    *[0, 1, 2, 3, 4, 1024, 1025, i32::MAX as u32, u32::MAX, rng.next_u32()].get(rng.gen_range(0..10)).unwrap_or(&0)
}

fn edge_u64(rng: &mut StdRng) -> u64 {
    *[0, 1, 2, 100, i64::MAX as u64, u64::MAX - 1, u64::MAX, rng.next_u64()].get(rng.gen_range(0..8)).unwrap_or(&0)
}

/// A batch that may be fine, corrupt, lying, or too large.
fn hostile_batch(rng: &mut StdRng) -> Bytes {
    let records: Vec<Record> = (0..rng.gen_range(0..6))
        .map(|i| {
            let max = if rng.gen_bool(0.1) { 2000 } else { 100 };
            let value = random_bytes(rng, max);
            let mut r = Record::new(Some(Bytes::from(format!("k{i}"))), Bytes::from(value), rng.r#gen());
            if rng.gen_bool(0.2) {
                r.headers.push(("h".into(), Bytes::from(random_bytes(rng, 50))));
            }
            r
        })
        .collect();
    let producer = if rng.gen_bool(0.5) {
        ProducerInfo::NONE
    } else {
        ProducerInfo { producer_id: rng.gen_range(-2..1000), epoch: rng.r#gen(), base_sequence: rng.r#gen() }
    };
    let mut b = batch::BatchBuilder::new().producer(producer);
    for r in &records {
        b.push(r);
    }
    let mut bytes = b.build().to_vec();
    match rng.gen_range(0..8) {
        // Valid as built.
        0..=2 => {}
        3 => {
            if !bytes.is_empty() {
                let i = rng.gen_range(0..bytes.len());
                bytes[i] ^= 1 << rng.gen_range(0..8);
            }
        }
        // Lies about the record count, with a checksum that matches.
        4 => {
            bytes[6..10].copy_from_slice(&edge_u32(rng).to_be_bytes());
            let crc = crc(&bytes);
            bytes[1..5].copy_from_slice(&crc.to_be_bytes());
        }
        5 => bytes.truncate(rng.gen_range(0..bytes.len())),
        6 => bytes = random_bytes(rng, 300),
        // Above the batch limit.
        _ => bytes.extend(std::iter::repeat_n(0u8, MAX_BATCH_BYTES)),
    }
    Bytes::from(bytes)
}

fn crc(b: &[u8]) -> u32 {
    // The batch's CRC-32C over bytes [5..): rebuilt the slow way rather than
    // exposing the batch module's internals to tests.
    let mut crc = !0u32;
    for &byte in &b[5..] {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

/// One generated client request: the method and its encoded body.
fn hostile_client_request(rng: &mut StdRng) -> (usize, Vec<u8>) {
    use prost::Message;
    let m = rng.gen_range(0..CLIENT_METHODS.len());
    let body = match m {
        0 => pb::CreateTopicRequest {
            name: nasty_name(rng),
            // Valid counts stay small: a thousand-partition topic is a valid
            // request, and on a 2-core machine its groups would starve the
            // rest of the test.
            partitions: *[0, 1, 2, 1025, i32::MAX as u32, u32::MAX].get(rng.gen_range(0..6)).unwrap_or(&0),
            replication_factor: edge_u32(rng),
            configs: nasty_configs(rng),
        }
        .encode_to_vec(),
        1 => {
            let mut name = nasty_name(rng);
            if name == TOPIC {
                name = "hostile-0".into();
            }
            pb::DeleteTopicRequest { name }.encode_to_vec()
        }
        2 => pb::MetadataRequest { topics: (0..rng.gen_range(0..300)).map(|_| nasty_name(rng)).collect() }
            .encode_to_vec(),
        3 => {
            let name = if rng.gen_bool(0.7) { TOPIC.to_string() } else { nasty_name(rng) };
            pb::ProduceRequest {
                topic: name,
                partition: if rng.gen_bool(0.7) { rng.gen_range(0..2) } else { edge_u32(rng) },
                batch: hostile_batch(rng),
                acks: *[0, 1, 2, -1, i32::MAX].get(rng.gen_range(0..5)).unwrap_or(&0),
                timeout_ms: edge_u32(rng),
            }
            .encode_to_vec()
        }
        4 => pb::FetchRequest {
            topic: if rng.gen_bool(0.7) { TOPIC.to_string() } else { nasty_name(rng) },
            partition: if rng.gen_bool(0.7) { rng.gen_range(0..2) } else { edge_u32(rng) },
            offset: edge_u64(rng),
            max_bytes: edge_u32(rng),
            max_records: edge_u32(rng),
            max_wait_ms: edge_u32(rng),
            replica_read: rng.r#gen(),
            min_bytes: edge_u32(rng),
        }
        .encode_to_vec(),
        5 => pb::ClusterStatusRequest {}.encode_to_vec(),
        6 => pb::NodeInfoRequest {}.encode_to_vec(),
        7 => pb::InitProducerRequest {}.encode_to_vec(),
        8 => pb::AlterTopicConfigRequest {
            // Never the checked topic: a valid retention rule would release
            // what the test reads back at the end.
            name: {
                let mut name = nasty_name(rng);
                if name == TOPIC {
                    name = "hostile-0".into();
                }
                name
            },
            set: nasty_configs(rng),
            delete: (0..rng.gen_range(0..3)).map(|_| nasty_name(rng)).collect(),
        }
        .encode_to_vec(),
        _ => pb::GroupFloorsRequest { partition: edge_u32(rng) }.encode_to_vec(),
    };
    (m, body)
}

/// Topic settings: known keys with values in and out of range, and junk.
fn nasty_configs(rng: &mut StdRng) -> std::collections::HashMap<String, String> {
    let keys = ["retention.ms", "retention.bytes", "retention.consumed"];
    let values = ["0", "-1", "-2", "86400000000", "9007199254740993", "true", "yes", "", "\u{0}"];
    (0..rng.gen_range(0..4))
        .map(|_| {
            let k = if rng.gen_bool(0.8) { keys[rng.gen_range(0..keys.len())].to_string() } else { nasty_name(rng) };
            (k, values[rng.gen_range(0..values.len())].to_string())
        })
        .collect()
}

/// Everything acknowledged, by partition and offset.
type Acked = BTreeMap<(u32, u64), Bytes>;

fn note_acked(acked: &mut Acked, partition: u32, base: u64, batch: &Bytes) {
    if let Ok((_, records)) = batch::decode(batch) {
        for (i, r) in records.into_iter().enumerate() {
            acked.insert((partition, base + i as u64), r.value);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_burst_of_hostile_input_when_it_ends_then_every_node_serves_with_nothing_lost() {
    let seed = std::env::var("REPLOG_HOSTILE_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(rand::random);
    println!("hostile input seed: {seed:#x} (replay with REPLOG_HOSTILE_SEED={seed:#x})");
    let mut rng = StdRng::seed_from_u64(seed);

    let max_record = MAX_RECORD_BYTES.to_string();
    let max_batch = MAX_BATCH_BYTES.to_string();
    let mut cluster = common::start(3, &["--max-record-bytes", &max_record, "--max-batch-bytes", &max_batch]).await;
    let client: Client = common::client(&cluster).await;
    let addrs: Vec<String> = cluster.addrs().into_values().collect();
    client.create_topic(TOPIC, 2, 3).await.expect("create");

    let mut acked = Acked::new();
    for i in 0..20u32 {
        let p = i % 2;
        let b = batch::encode(&[Record::new(None, Bytes::from(format!("before-{i}")), 1)]);
        let r = client.produce_batch(TOPIC, p, b.clone(), Acks::All).await.expect("produce before");
        note_acked(&mut acked, p, r.base_offset.expect("acks=all answers an offset"), &b);
    }
    let channels: Vec<Channel> = cluster
        .addrs()
        .values()
        .map(|a| Channel::from_shared(format!("http://{a}")).expect("uri").connect_lazy())
        .collect();
    // The peer service has its own port; the client port serves none of it.
    let peer_addrs: Vec<String> = addrs.iter().map(|a| peer_addr(a)).collect();
    let peer_channels: Vec<Channel> =
        peer_addrs.iter().map(|a| Channel::from_shared(format!("http://{a}")).expect("uri").connect_lazy()).collect();
    let groups: Vec<u64> = {
        use prost::Message;
        let req = pb::MetadataRequest { topics: vec![TOPIC.into()] }.encode_to_vec();
        let reply = call(&channels[0], CLIENT_METHODS[2], Bytes::from(req)).await.expect("metadata");
        let md = pb::MetadataResponse::decode(reply).expect("metadata reply");
        md.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.group_id)).collect()
    };
    assert_eq!(groups.len(), 2);

    // Regression: an error message echoing a huge field went out as an
    // HTTP/2 header above the client's limit, and the client got a stream
    // reset (PROTOCOL_ERROR) instead of the error code.
    {
        use prost::Message;
        let huge = "x".repeat(20_000);
        let fetch = pb::FetchRequest { topic: huge.clone(), ..Default::default() }.encode_to_vec();
        let s = call(&channels[0], CLIENT_METHODS[4], Bytes::from(fetch)).await.expect_err("unknown topic");
        assert_eq!(code_of(&s), Some(ErrorCode::UnknownTopic), "{s:?}");
        let create =
            pb::CreateTopicRequest { name: huge, partitions: 1, replication_factor: 1, configs: Default::default() }
                .encode_to_vec();
        let s = call(&channels[1], CLIENT_METHODS[0], Bytes::from(create)).await.expect_err("bad name");
        assert_eq!(code_of(&s), Some(ErrorCode::InvalidTopicName), "{s:?}");
    }

    let (mut sent, mut coded, mut refused_bodies, mut ok) = (0u64, 0u64, 0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < BURST {
        let node = rng.gen_range(0..channels.len());
        let ch = &channels[node];
        sent += 1;
        match rng.gen_range(0..10) {
            // Well-formed client requests with hostile fields.
            0..=5 => {
                let (m, body) = hostile_client_request(&mut rng);
                let produce = (m == 3).then(|| {
                    use prost::Message;
                    pb::ProduceRequest::decode(&body[..]).expect("own encoding")
                });
                match call(ch, CLIENT_METHODS[m], Bytes::from(body)).await {
                    Ok(reply) => {
                        ok += 1;
                        if let Some(p) = produce {
                            use prost::Message;
                            let r = pb::ProduceResponse::decode(reply).expect("produce reply");
                            // acks=none answers before the offset is known.
                            if p.acks != pb::Acks::None as i32 && p.topic == TOPIC {
                                note_acked(
                                    &mut acked,
                                    p.partition,
                                    r.base_offset.expect("acks=all answers an offset"),
                                    &p.batch,
                                );
                            }
                        }
                    }
                    Err(s) if cut_off(&s) => {}
                    Err(s) => {
                        assert!(
                            code_of(&s).is_some(),
                            "{} answered without a replog code: {s:?} (seed {seed:#x})",
                            CLIENT_METHODS[m]
                        );
                        coded += 1;
                    }
                }
            }
            // Arbitrary bytes as the body of any RPC.
            6 | 7 => {
                let all: Vec<&'static str> = CLIENT_METHODS.iter().chain(PEER_METHODS).copied().collect();
                let method = all[rng.gen_range(0..all.len())];
                let body = random_bytes(&mut rng, 2048);
                let ch = if PEER_METHODS.contains(&method) { &peer_channels[node] } else { ch };
                match call(ch, method, Bytes::from(body)).await {
                    Ok(_) => ok += 1,
                    Err(_) => refused_bodies += 1,
                }
            }
            // Peer envelopes: unknown groups, or real groups with payloads
            // the codec must refuse.
            _ => {
                use prost::Message;
                let known = rng.gen_bool(0.5);
                let group_id =
                    if known { groups[rng.gen_range(0..groups.len())] } else { 1_000_000 + rng.gen_range(0..1000) };
                // At least 64 bytes of noise: longer than any vote or
                // transfer request, and no append's entry count survives it.
                let mut payload = encode_payload(&(rng.next_u64(), rng.next_u64())).expect("encode");
                payload.extend(random_bytes(&mut rng, 512));
                payload.extend(std::iter::repeat_n(0xffu8, 64));
                let msg = pb::RaftMessage { group_id, payload: payload.into(), error: String::new() };
                let (method, body) = if rng.gen_bool(0.3) {
                    (PEER_METHODS[5], pb::RaftBatch { messages: vec![msg; rng.gen_range(1..50)] }.encode_to_vec())
                } else {
                    (PEER_METHODS[rng.gen_range(0..5)], msg.encode_to_vec())
                };
                match call(&peer_channels[node], method, Bytes::from(body)).await {
                    Ok(reply) => {
                        let errors: Vec<String> = if method == PEER_METHODS[5] {
                            pb::RaftBatch::decode(reply)
                                .expect("batch reply")
                                .messages
                                .into_iter()
                                .map(|m| m.error)
                                .collect()
                        } else {
                            vec![pb::RaftMessage::decode(reply).expect("peer reply").error]
                        };
                        assert!(
                            errors.iter().all(|e| !e.is_empty()),
                            "a garbage peer payload was accepted by {method} (seed {seed:#x})"
                        );
                        coded += 1;
                    }
                    Err(s) if cut_off(&s) => {}
                    Err(s) => panic!("{method} failed instead of answering with an error: {s:?} (seed {seed:#x})"),
                }
            }
        }
        // Now and then, raw garbage on the port.
        if rng.gen_bool(0.02) {
            let addr = if rng.gen_bool(0.5) { &addrs[rng.gen_range(0..3)] } else { &peer_addrs[rng.gen_range(0..3)] };
            let mut garbage = match rng.gen_range(0..3) {
                0 => random_bytes(&mut rng, 4096),
                // The HTTP/2 preface, then garbage frames.
                1 => [&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], &random_bytes(&mut rng, 1024)].concat(),
                // A frame header announcing a 16 MiB DATA frame, then little.
                _ => {
                    [&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], &[0xff, 0xff, 0xff, 0x00, 0x00, 0, 0, 0, 1][..]].concat()
                }
            };
            garbage.truncate(8192);
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = s.write_all(&garbage);
            }
        }
    }
    println!(
        "hostile input: {sent} requests in {:.1}s: {ok} answered, {coded} refused with a code, {refused_bodies} bodies refused",
        start.elapsed().as_secs_f64()
    );
    assert!(coded > 0 && refused_bodies > 0, "the burst reached no error path");

    // Every node process is still running and alive.
    let exited = cluster.exited();
    assert!(exited.is_empty(), "nodes exited during the burst: {exited:?} (seed {seed:#x})");
    assert_eq!(cluster.serving().len(), 3, "every node runs");
    // Liveness comes from the prober, which may have missed a round while
    // the burst kept the machine busy.
    common::wait_for("every node alive in cluster status", WAIT, || {
        let client = client.clone();
        async move { client.cluster_status().await.ok().filter(|s| s.nodes.iter().all(|n| n.alive)) }
    })
    .await;

    // A normal produce and fetch work, and everything acknowledged is there.
    for p in 0..2u32 {
        let b = batch::encode(&[Record::new(None, Bytes::from(format!("after-{p}")), 1)]);
        let r = client.produce_batch(TOPIC, p, b.clone(), Acks::All).await.expect("produce after the burst");
        note_acked(&mut acked, p, r.base_offset.expect("acks=all answers an offset"), &b);
    }
    for p in 0..2u32 {
        let recs = PartitionReader::new(client.clone(), TOPIC, p, 0).read_to_end().await.expect("read");
        let by_offset: BTreeMap<u64, Bytes> = recs.into_iter().map(|r| (r.offset, r.value)).collect();
        for ((q, offset), value) in acked.range((p, 0)..(p + 1, 0)) {
            assert_eq!(
                by_offset.get(offset),
                Some(value),
                "partition {q} offset {offset}: acknowledged record lost or changed (seed {seed:#x})"
            );
        }
        // Offsets are dense: nothing refused took one.
        let offsets: Vec<u64> = by_offset.keys().copied().collect();
        assert_eq!(offsets, (0..offsets.len() as u64).collect::<Vec<_>>(), "partition {p} has holes");
    }
}

/// Terms near the top of u64: openraft computes the next term as `term + 1`,
/// so a node that took such a term from a message could never hold another
/// election (overflow). Peers refuse them; the cluster keeps electing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_votes_and_appends_with_terms_near_overflow_when_sent_then_refused_and_the_cluster_keeps_working() {
    use openraft::raft::{AppendEntriesRequest, VoteRequest};
    use openraft::vote::RaftLeaderId;
    use prost::Message;
    use replog_raft_store::{LogId, TypeConfig, Vote};
    type LeaderId = openraft::type_config::alias::LeaderIdOf<TypeConfig>;

    let mut cluster = common::start(3, &[]).await;
    let client: Client = common::client(&cluster).await;
    client.create_topic(TOPIC, 1, 3).await.expect("create");
    let b = batch::encode(&[Record::new(None, Bytes::from_static(b"before"), 1)]);
    let first = client.produce_batch(TOPIC, 0, b, Acks::All).await.expect("produce before");
    let channels: Vec<Channel> = cluster
        .addrs()
        .values()
        .map(|a| Channel::from_shared(format!("http://{}", peer_addr(a))).expect("uri").connect_lazy())
        .collect();

    let top = LogId::new(LeaderId::new(u64::MAX, 9).to_committed(), u64::MAX);
    let mut vote = VoteRequest::<TypeConfig>::new(Vote::new(u64::MAX, 9), Some(top));
    vote.leadership_transfer = true;
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(u64::MAX - 1, 9),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    // Every group of every node: the controller and the partition.
    for ch in &channels {
        for group in [0u64, 1] {
            for (method, payload) in [
                (PEER_METHODS[1], encode_payload(&vote).expect("encode")),
                (PEER_METHODS[2], encode_payload(&vote).expect("encode")),
                (PEER_METHODS[0], encode_payload(&append).expect("encode")),
            ] {
                let body = pb::RaftMessage { group_id: group, payload: payload.into(), error: String::new() };
                let reply = call(ch, method, Bytes::from(body.encode_to_vec())).await.expect("peer answer");
                let reply = pb::RaftMessage::decode(reply).expect("reply");
                assert!(!reply.error.is_empty(), "{method} for group {group} accepted term {}", u64::MAX);
            }
        }
    }

    // Leadership changes still work: stop the leader of everything it leads
    // and let the others elect, then produce and read.
    let leader = common::wait_for("a controller leader", ELECTION_AFTER_HOSTILE_TERMS, || {
        let client = client.clone();
        async move { client.cluster_status().await.ok().map(|s| s.controller_leader).filter(|l| *l != 0) }
    })
    .await;
    common::stop(&mut cluster, leader).await;
    let client = common::client(&cluster).await;
    let b = batch::encode(&[Record::new(None, Bytes::from_static(b"after"), 1)]);
    let then = client.produce_batch(TOPIC, 0, b, Acks::All).await.expect("produce after a new election");
    assert_eq!(then.base_offset, first.base_offset.map(|o| o + 1));
    cluster.restart(leader).expect("restart");
    cluster.wait_ready(CLUSTER_READY).await.expect("cluster ready");
}
