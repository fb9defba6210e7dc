//! Unmodified Kafka clients on replog's Kafka listener (docs/kafka.md),
//! against three real nodes sharing one cluster for every case:
//!
//! 1. `kcat -L` lists three brokers and a leader for every partition.
//! 2. `kcat -P` sends 1,000 keyed messages with headers — uncompressed,
//!    gzip and zstd, a topic each — and `kcat -C -o beginning -e` reads
//!    exactly those back: each key once, its value and headers intact,
//!    offsets 0, 1, 2, … in every partition.
//! 3. One log, two protocols: what kcat produced the SDK's
//!    `PartitionReader` reads at the same offsets with the same keys,
//!    values and headers, and a record the SDK produced kcat reads.
//! 4. Bad input on a raw socket: ApiVersions v99 gets UNSUPPORTED_VERSION
//!    with the versions served; Metadata v99, API key 9999 and a
//!    0x7fffffff length close the connection; a Produce whose batch fails
//!    its CRC gets CORRUPT_MESSAGE and nothing is appended. Afterwards
//!    every node still answers ApiVersions on its Kafka port and gRPC on
//!    its client port.
//!
//! kcat is Debian's package, installed by ops/ensure-kcat.sh when missing
//! (the test is skipped where it cannot be, except under CI).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{WAIT, wait_for};
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData};
use kafka_protocol::messages::produce_response::ProduceResponse;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};
use replog_client::{PartitionReader, Record};
use replog_node::kafka::records::plain_record;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Messages kcat sends per codec.
const MESSAGES: usize = 1_000;
/// Partitions of every topic.
const PARTITIONS: u32 = 3;
/// How long one kcat run may take (debug nodes on a busy 2-core machine).
const KCAT_LIMIT: Duration = Duration::from_secs(60);
/// How long a closed connection may take to show its end.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn given_kafka_clients_then_they_list_produce_and_consume_and_bad_input_closes_only_its_connection() {
    let Some(()) = common::ensure_kcat() else { return };
    let cluster = common::Cluster::start(3, common::ClusterOptions { kafka: true, ..common::options(&[]) })
        .await
        .expect("start the cluster");
    let client = common::client(&cluster).await;
    let brokers: Vec<String> = cluster.ids().iter().map(|id| cluster.node(*id).kafka.clone()).collect();
    let bootstrap = brokers.join(",");
    for topic in ["kcat-none", "kcat-gzip", "kcat-zstd", "sdk-made", "crc"] {
        client.create_topic(topic, PARTITIONS, 3).await.expect("create topic");
    }

    lists_three_brokers_and_a_leader_per_partition(&bootstrap).await;
    let dir = tempfile::tempdir().unwrap();
    for codec in ["none", "gzip", "zstd"] {
        let topic = format!("kcat-{codec}");
        let consumed = produce_and_consume_with_kcat(&bootstrap, &topic, codec, dir.path()).await;
        read_by_the_sdk(&client, &topic, &consumed).await;
    }
    sdk_records_are_read_by_kcat(&client, &bootstrap).await;
    bad_input_closes_the_connection(&cluster, &client, &brokers).await;
    for (id, addr) in cluster.ids().iter().zip(&brokers) {
        let versions = api_versions(addr, 3).await.unwrap_or_else(|| panic!("node {id} answers ApiVersions"));
        assert_eq!(versions.error_code, 0);
    }
    client.cluster_status().await.expect("every node still answers gRPC");
    for id in cluster.ids() {
        let mut c = replog_proto::pb::replog_client::ReplogClient::connect(format!("http://{}", cluster.node(id).addr))
            .await
            .expect("connect");
        c.node_info(replog_proto::pb::NodeInfoRequest {}).await.unwrap_or_else(|e| panic!("node {id}: {e}"));
    }
}

/// Runs kcat with `args` (and `stdin`), within [`KCAT_LIMIT`]; its stdout.
/// Errors kcat reports and goes on from (a fetch answered
/// REQUEST_TIMED_OUT on a busy machine, which the client retries; readers
/// pass `-E`, without which kcat stops at the first) make its exit status 1
/// without ending the run, so what it printed is judged; a run that timed
/// out or ended on a fatal error fails.
async fn kcat(args: &[&str], stdin: Option<Vec<u8>>) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let run = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("timeout")
            .arg(KCAT_LIMIT.as_secs().to_string())
            .arg("kcat")
            .args(&args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kcat");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(&input).expect("kcat stdin");
        }
        let out = child.wait_with_output().expect("kcat output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(0 | 1)) && !stderr.contains("FATAL"),
            "kcat {args:?} failed ({}): {stderr}",
            out.status,
        );
        if !stderr.is_empty() {
            println!("kcat {args:?}: {stderr}");
        }
        String::from_utf8(out.stdout).expect("kcat prints UTF-8")
    });
    run.await.expect("kcat task")
}

async fn lists_three_brokers_and_a_leader_per_partition(bootstrap: &str) {
    // Each node learns the others' Kafka addresses from their probe
    // answers, and partitions elect their leaders: both within moments.
    let meta = wait_for("kcat -L to show 3 brokers and every leader", WAIT, || async {
        let out = kcat(&["-b", bootstrap, "-L", "-J"], None).await;
        let meta: Value = serde_json::from_str(&out).expect("kcat -L -J prints JSON");
        let brokers = meta["brokers"].as_array()?.len();
        let led = meta["topics"]
            .as_array()?
            .iter()
            .flat_map(|t| t["partitions"].as_array().cloned().unwrap_or_default())
            .all(|p| p["leader"].as_i64().is_some_and(|l| (1..=3).contains(&l)));
        (brokers == 3 && led).then_some(meta)
    })
    .await;
    let topics = meta["topics"].as_array().unwrap();
    assert_eq!(topics.len(), 5, "{meta}");
    for t in topics {
        let parts = t["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), PARTITIONS as usize, "{t}");
        for p in parts {
            assert_eq!(p["replicas"].as_array().unwrap().len(), 3, "{p}");
            assert_eq!(p["isrs"].as_array().unwrap().len(), 3, "{p}");
        }
    }
}

/// One message as kcat's JSON envelope shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Consumed {
    partition: u32,
    offset: u64,
    key: String,
    value: String,
    headers: Vec<(String, String)>,
}

fn parse_envelopes(out: &str) -> Vec<Consumed> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let m: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("kcat -J line ({e}): {l}"));
            let headers = m["headers"].as_array().cloned().unwrap_or_default();
            Consumed {
                partition: m["partition"].as_u64().unwrap() as u32,
                offset: m["offset"].as_u64().unwrap(),
                key: m["key"].as_str().unwrap_or_default().to_string(),
                value: m["payload"].as_str().unwrap_or_default().to_string(),
                headers: headers
                    .chunks(2)
                    .map(|h| (h[0].as_str().unwrap().to_string(), h[1].as_str().unwrap_or_default().to_string()))
                    .collect(),
            }
        })
        .collect()
}

async fn produce_and_consume_with_kcat(bootstrap: &str, topic: &str, codec: &str, dir: &Path) -> Vec<Consumed> {
    let input: String = (0..MESSAGES).map(|i| format!("key-{i}\tvalue-{i}-{codec}\n")).collect();
    let file = dir.join(format!("{topic}.txt"));
    std::fs::write(&file, &input).unwrap();
    let file = file.to_str().unwrap().to_string();
    kcat(
        &[
            "-b",
            bootstrap,
            "-P",
            // A batch retried after a timeout (a busy machine) is stored
            // once, as the test reads back exactly what was sent.
            "-X",
            "enable.idempotence=true",
            "-t",
            topic,
            "-K",
            "\t",
            "-z",
            codec,
            "-H",
            &format!("codec={codec}"),
            "-H",
            "source=kcat",
            "-l",
            &file,
        ],
        None,
    )
    .await;
    let out = kcat(&["-b", bootstrap, "-C", "-E", "-t", topic, "-o", "beginning", "-e", "-J"], None).await;
    let consumed = parse_envelopes(&out);
    assert_eq!(consumed.len(), MESSAGES, "{topic}: every message once, nothing else");
    let keys: BTreeSet<&str> = consumed.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys.len(), MESSAGES, "{topic}: no key twice");
    let mut per_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for c in &consumed {
        let i: usize = c.key.strip_prefix("key-").unwrap().parse().unwrap();
        assert!(i < MESSAGES, "{c:?}");
        assert_eq!(c.value, format!("value-{i}-{codec}"), "{topic}");
        assert_eq!(
            c.headers,
            vec![("codec".to_string(), codec.to_string()), ("source".to_string(), "kcat".to_string())],
            "{topic}: {c:?}"
        );
        per_partition.entry(c.partition).or_default().push(c.offset);
    }
    assert_eq!(per_partition.len(), PARTITIONS as usize, "{topic}: keys spread over every partition");
    for (p, offsets) in &per_partition {
        let want: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(offsets, &want, "{topic}/{p}: offsets in order, none missing");
    }
    consumed
}

/// The SDK reads what kcat produced: the same records at the same offsets.
async fn read_by_the_sdk(client: &replog_client::Client, topic: &str, consumed: &[Consumed]) {
    for p in 0..PARTITIONS {
        let mut reader = PartitionReader::new(client.clone(), topic, p, 0);
        let records = reader.read_to_end().await.expect("read");
        let want: Vec<&Consumed> = consumed.iter().filter(|c| c.partition == p).collect();
        assert_eq!(records.len(), want.len(), "{topic}/{p}");
        for (r, c) in records.iter().zip(want) {
            assert_eq!(r.offset, c.offset);
            assert_eq!(r.key.as_deref(), Some(c.key.as_bytes()));
            assert_eq!(r.value, c.value.as_bytes());
            let headers: Vec<(String, String)> =
                r.headers.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect();
            assert_eq!(headers, c.headers, "{topic}/{p}@{}", r.offset);
        }
    }
}

/// kcat reads what the SDK produced.
async fn sdk_records_are_read_by_kcat(client: &replog_client::Client, bootstrap: &str) {
    let records: Vec<Record> = (0..10)
        .map(|i| {
            Record::new(
                Some(Bytes::from(format!("sdk-key-{i}"))),
                Bytes::from(format!("sdk-value-{i}")),
                1_700_000_000_000,
            )
            .with_header("origin", "sdk")
            .with_header("n", i.to_string())
        })
        .collect();
    let batch = replog_proto::batch::encode_with(&records, replog_proto::batch::Compression::Zstd);
    let r = client.produce_batch("sdk-made", 1, batch, replog_proto::pb::Acks::All).await.expect("produce");
    assert_eq!(r.base_offset, Some(0));
    let out =
        kcat(&["-b", bootstrap, "-C", "-E", "-t", "sdk-made", "-p", "1", "-o", "beginning", "-e", "-J"], None).await;
    let consumed = parse_envelopes(&out);
    assert_eq!(consumed.len(), 10);
    for (i, c) in consumed.iter().enumerate() {
        assert_eq!((c.partition, c.offset), (1, i as u64));
        assert_eq!(c.key, format!("sdk-key-{i}"));
        assert_eq!(c.value, format!("sdk-value-{i}"));
        assert_eq!(c.headers, vec![("origin".into(), "sdk".into()), ("n".into(), i.to_string())]);
    }
    let ts = kcat(
        &["-b", bootstrap, "-C", "-E", "-t", "sdk-made", "-p", "1", "-o", "beginning", "-c", "1", "-f", "%T"],
        None,
    )
    .await;
    assert_eq!(ts.trim(), "1700000000000", "the record's timestamp reaches Kafka clients");
}

// --- raw socket ---------------------------------------------------------

/// A request frame: length, header at `key`'s header version, body.
fn frame(key: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("t47")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

/// The next response frame's body, or `None` once the node closed the
/// connection.
async fn read_response(s: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    tokio::time::timeout(CLOSE_LIMIT, s.read_exact(&mut len)).await.expect("an answer or a close").ok()?;
    let mut body = vec![0; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.ok()?;
    Some(Bytes::from(body))
}

/// Whether the node closes the connection after `bytes`, answering nothing.
async fn closes_after(addr: &str, bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("send");
    let mut buf = [0u8; 1];
    // A clean end of stream, or a reset: either way, closed.
    matches!(tokio::time::timeout(CLOSE_LIMIT, s.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

/// ApiVersions at `version` on a fresh connection.
async fn api_versions(addr: &str, version: i16) -> Option<ApiVersionsResponse> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = kafka_protocol::messages::ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("t47"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    // Above the highest version the codec knows, the v3 body stands in.
    let body_version = version.min(3);
    let mut f = frame(ApiKey::ApiVersions, body_version, 11, &req);
    f[6..8].copy_from_slice(&version.to_be_bytes());
    s.write_all(&f).await.ok()?;
    let mut body = read_response(&mut s).await?;
    // The response header of ApiVersions is always v0; an answer to an
    // unsupported version is a v0 body (KIP-511).
    let h = ResponseHeader::decode(&mut body, 0).ok()?;
    assert_eq!(h.correlation_id, 11);
    let answered_at = if (0..=3).contains(&version) { version } else { 0 };
    ApiVersionsResponse::decode(&mut body, answered_at).ok()
}

async fn bad_input_closes_the_connection(
    cluster: &common::Cluster,
    client: &replog_client::Client,
    brokers: &[String],
) {
    let addr = &brokers[0];
    let v = api_versions(addr, 99).await.expect("ApiVersions v99 is answered");
    assert_eq!(v.error_code, 35, "UNSUPPORTED_VERSION");
    let keys: BTreeMap<i16, (i16, i16)> =
        v.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
    assert_eq!(keys.get(&18), Some(&(0, 3)), "ApiVersions 0–3 listed: {keys:?}");
    assert_eq!(keys.get(&3), Some(&(0, 12)), "Metadata 0–12 listed: {keys:?}");
    let served: BTreeMap<i16, (i16, i16)> =
        replog_node::kafka::versions::APIS.iter().map(|(k, lo, hi)| (*k as i16, (*lo, *hi))).collect();
    assert_eq!(keys, served, "only what is served");

    let metadata = kafka_protocol::messages::MetadataRequest::default();
    let mut m99 = frame(ApiKey::Metadata, 12, 1, &metadata);
    m99[6..8].copy_from_slice(&99i16.to_be_bytes());
    assert!(closes_after(addr, &m99).await, "Metadata v99 closes the connection");
    let mut k9999 = frame(ApiKey::Metadata, 1, 1, &metadata);
    k9999[4..6].copy_from_slice(&9999i16.to_be_bytes());
    assert!(closes_after(addr, &k9999).await, "API key 9999 closes the connection");
    // The length alone: the node must not wait for (or make room for) 2 GiB.
    assert!(closes_after(addr, &0x7fff_ffffi32.to_be_bytes()).await, "a 0x7fffffff length closes the connection");
    let closed =
        common::metric(&cluster.node(cluster.ids()[0]).metrics, "replog_kafka_requests_total{result=\"closed\"}");
    assert!(closed.is_some_and(|n| n >= 3.0), "each close is counted: {closed:?}");

    // A Produce whose batch fails its CRC: CORRUPT_MESSAGE, nothing appended.
    let leader = common::preferred_leader(client, "crc", 0).await.0;
    let leader_addr = &cluster.node(leader).kafka;
    let mut batch = BytesMut::new();
    let record = plain_record(
        0,
        1_700_000_000_000,
        Some(Bytes::from_static(b"k")),
        Some(Bytes::from_static(b"value")),
        Default::default(),
    );
    RecordBatchEncoder::encode(
        &mut batch,
        [&record],
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .unwrap();
    let last = batch.len() - 1;
    batch[last] ^= 0x40;
    let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default().with_name(TopicName(StrBytes::from_static_str("crc"))).with_partition_data(vec![
            PartitionProduceData::default().with_index(0).with_records(Some(batch.freeze())),
        ]),
    ]);
    let mut s = TcpStream::connect(leader_addr).await.expect("connect");
    s.write_all(&frame(ApiKey::Produce, 9, 5, &produce)).await.unwrap();
    let mut body = read_response(&mut s).await.expect("a Produce answer");
    let h = ResponseHeader::decode(&mut body, ApiKey::Produce.response_header_version(9)).unwrap();
    assert_eq!(h.correlation_id, 5);
    let r = ProduceResponse::decode(&mut body, 9).unwrap();
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 2, "CORRUPT_MESSAGE: {p:?}");
    let offsets = client.list_offsets("crc", 0, replog_client::OffsetSpec::Latest).await.expect("offsets");
    assert_eq!(offsets.offset, 0, "nothing appended");
}
