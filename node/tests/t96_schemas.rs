//! Schemas against three real nodes. For each format — JSON Schema, Avro,
//! Protobuf — a subject takes v1 and a compatible v2 and refuses an
//! incompatible v3 under BACKWARD; on a topic bound to the subject a valid
//! record is accepted, an invalid one is refused by the SDK before sending
//! and, sent raw past the SDK, by the broker (naming the record's index,
//! nothing of its batch appended), and a typed consumer decodes records of
//! v1 and v2. The registry survives a SIGKILL of the controller leader and
//! a restart of every node, and the binding keeps validating afterwards.
//! Bad input gets stable codes: malformed schema text, a schema over the
//! size limit, unknown ids and subjects, a record far over the size limit.
//!
//! One cluster serves every case.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, WAIT, wait_for};
use replog_client::schema::{
    AvroCodec, Codec, Format, JsonCodec, ProtobufCodec, SchemaRegistry, Serializer, TypedConsumer, TypedProducer, wire,
};
use replog_client::{
    AutoOffsetReset, Client, Error, ErrorCode, GroupConsumer, GroupConsumerConfig, OffsetSpec, Producer, ProducerConfig,
};
use replog_proto::batch::{self, Record};
use replog_proto::pb;
use serde::{Deserialize, Serialize};

const JSON_V1: &str = r#"{"type":"object","properties":{"id":{"type":"integer"},"name":{"type":"string","minLength":1}},"required":["id","name"],"additionalProperties":false}"#;
const JSON_V2: &str = r#"{"type":"object","properties":{"id":{"type":"integer"},"name":{"type":"string","minLength":1},"email":{"type":"string"}},"required":["id","name"],"additionalProperties":false}"#;
const JSON_V3: &str = r#"{"type":"object","properties":{"id":{"type":"integer"},"name":{"type":"string","minLength":1},"email":{"type":"string"},"age":{"type":"integer"}},"required":["id","name","age"],"additionalProperties":false}"#;

const AVRO_V1: &str = r#"{"type":"record","name":"User","namespace":"t","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"}]}"#;
const AVRO_V2: &str = r#"{"type":"record","name":"User","namespace":"t","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"email","type":["null","string"],"default":null}]}"#;
const AVRO_V3: &str = r#"{"type":"record","name":"User","namespace":"t","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"email","type":["null","string"],"default":null},{"name":"age","type":"int"}]}"#;

const PROTO_V1: &str = "syntax = \"proto3\"; package t; message User { int64 id = 1; string name = 2; }";
const PROTO_V2: &str =
    "syntax = \"proto3\"; package t; message User { int64 id = 1; string name = 2; string email = 3; }";
const PROTO_V3: &str = "syntax = \"proto3\"; package t; message User { int64 id = 1; double name = 2; }";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UserV1 {
    id: i64,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UserV2 {
    id: i64,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
}

/// Fits no version of the Avro schema: `id` is a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct NotAUser {
    id: String,
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PUserV1 {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(string, tag = "2")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PUserV2 {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(string, tag = "3")]
    email: String,
}

/// Writes field 2 as a varint where the schema has a string.
#[derive(Clone, PartialEq, prost::Message)]
struct PNotAUser {
    #[prost(int64, tag = "2")]
    name: i64,
}

fn code(e: &Error) -> Option<ErrorCode> {
    e.code()
}

async fn high_watermark(client: &Client, topic: &str) -> u64 {
    client.list_offsets(topic, 0, OffsetSpec::Latest).await.expect("offsets").offset
}

fn raw_batch(values: Vec<Vec<u8>>) -> Bytes {
    let records: Vec<Record> =
        values.into_iter().map(|v| Record::new(None, Bytes::from(v), replog_client::now_ms())).collect();
    batch::encode(&records)
}

fn framed(id: u32, body: &[u8]) -> Vec<u8> {
    let mut v = wire::prefix(id).to_vec();
    v.extend_from_slice(body);
    v
}

/// The three schemas of a format and what to send under them.
struct Case<C1: Codec, C2: Codec, Bad: Codec> {
    name: &'static str,
    format: Format,
    v3: &'static str,
    v1: fn() -> C1,
    v2: fn() -> C2,
    bad_codec: fn() -> Bad,
    ones: [C1::Value; 2],
    twos: [C2::Value; 2],
    bad: Bad::Value,
    /// A payload (after the prefix) that does not decode under v1.
    raw_invalid: &'static [u8],
    /// What the v2 reader makes of `ones` and `twos`, in order.
    expect: Vec<C2::Value>,
}

/// v1, v2, v3 on a subject; valid, invalid and raw-invalid records on a
/// bound topic; a typed consumer reading both versions.
async fn run_case<C1: Codec, C2: Codec, Bad: Codec>(client: &Client, case: Case<C1, C2, Bad>)
where
    C2::Value: std::fmt::Debug + PartialEq,
{
    let subject = format!("{}-user", case.name);
    let topic = format!("{}-users", case.name);
    let (v1, v2) = ((case.v1)(), (case.v2)());
    let r1 = client.register_schema(&subject, case.format, v1.schema()).await.expect("v1");
    let r2 = client.register_schema(&subject, case.format, v2.schema()).await.expect("v2");
    assert_eq!((r1.version, r2.version, r1.created, r2.created), (1, 2, true, true), "{}", case.name);
    let again = client.register_schema(&subject, case.format, v1.schema()).await.expect("v1 again");
    assert_eq!((again.id, again.version, again.created), (r1.id, 1, false), "{}: v1 is found, not added", case.name);
    let check = client.check_schema(&subject, case.format, case.v3).await.expect("check v3");
    assert!(!check.compatible && check.compatibility == "BACKWARD", "{}: {check:?}", case.name);
    let e = client.register_schema(&subject, case.format, case.v3).await.expect_err("v3 is incompatible");
    assert_eq!(code(&e), Some(ErrorCode::IncompatibleSchema), "{}: {e}", case.name);
    assert!(e.to_string().contains("version 2"), "{}: the error names the version: {e}", case.name);
    let listed = client.list_schemas(Some(&subject)).await.expect("list");
    assert_eq!(listed[0].versions, vec![(1, r1.id), (2, r2.id)], "{}", case.name);

    client.create_topic_with(&topic, 1, 3, &[("schema.subject", &subject)]).await.expect("bound topic");
    let registry = SchemaRegistry::new(client.clone());
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let p1 = TypedProducer::new(producer.clone(), registry.clone(), &subject, v1).expect("p1");
    let p2 = TypedProducer::new(producer.clone(), registry.clone(), &subject, v2).expect("p2");
    for v in &case.ones {
        p1.send(&topic, None, v).await.expect("a valid v1 record");
    }
    for v in &case.twos {
        p2.send(&topic, None, v).await.expect("a valid v2 record");
    }
    let hw = high_watermark(client, &topic).await;
    assert_eq!(hw, 4, "{}", case.name);

    // Refused by the SDK before sending.
    let bad = TypedProducer::new(producer.clone(), registry.clone(), &subject, (case.bad_codec)()).expect("bad");
    let e = bad.send(&topic, None, &case.bad).await.expect_err("invalid value");
    assert_eq!(code(&e), Some(ErrorCode::InvalidRecord), "{}: {e}", case.name);
    // Refused by the broker: a valid record, then one that does not decode.
    let good = p1.serializer().serialize(&case.ones[0]).await.expect("serialize");
    let batch = raw_batch(vec![good.to_vec(), framed(r1.id, case.raw_invalid)]);
    let e = client.produce_batch(&topic, 0, batch, pb::Acks::All).await.expect_err("raw invalid");
    assert_eq!(code(&e), Some(ErrorCode::InvalidRecord), "{}: {e}", case.name);
    assert!(e.to_string().contains("record 1:"), "{}: the error names the index: {e}", case.name);
    assert_eq!(high_watermark(client, &topic).await, hw, "{}: nothing of a refused batch is appended", case.name);

    // A consumer reading with v2 decodes both versions.
    let cfg = GroupConsumerConfig { auto_offset_reset: AutoOffsetReset::Earliest, ..Default::default() };
    let group = GroupConsumer::new(client.clone(), &format!("{}-readers", case.name), cfg);
    let mut consumer = TypedConsumer::new(group, registry, &subject, (case.v2)()).expect("consumer");
    consumer.consumer().subscribe(&[topic.as_str()]).await.expect("subscribe");
    let mut got = Vec::new();
    while got.len() < 4 {
        for (r, v) in consumer.poll().await.expect("poll") {
            got.push(v.unwrap_or_else(|e| panic!("{}: offset {} does not decode: {e}", case.name, r.offset)));
        }
    }
    assert_eq!(got, case.expect, "{}", case.name);
    consumer.into_inner().close().await.expect("close");
}

async fn formats(client: &Client) {
    let u1 = |id, n: &str| UserV1 { id, name: n.into() };
    let u2 = |id, n: &str, e: Option<&str>| UserV2 { id, name: n.into(), email: e.map(Into::into) };
    run_case(
        client,
        Case {
            name: "json",
            format: Format::Json,
            v3: JSON_V3,
            v1: || JsonCodec::<UserV1>::new(JSON_V1),
            v2: || JsonCodec::<UserV2>::new(JSON_V2),
            bad_codec: || JsonCodec::<UserV1>::new(JSON_V1),
            ones: [u1(1, "ann"), u1(2, "bob")],
            twos: [u2(3, "cy", Some("cy@x")), u2(4, "di", None)],
            bad: u1(5, ""),
            raw_invalid: br#"{"id":"seven","name":"x"}"#,
            expect: vec![u2(1, "ann", None), u2(2, "bob", None), u2(3, "cy", Some("cy@x")), u2(4, "di", None)],
        },
    )
    .await;
    run_case(
        client,
        Case {
            name: "avro",
            format: Format::Avro,
            v3: AVRO_V3,
            v1: || AvroCodec::<UserV1>::new(AVRO_V1),
            v2: || AvroCodec::<UserV2>::new(AVRO_V2),
            bad_codec: || AvroCodec::<NotAUser>::new(AVRO_V1),
            ones: [u1(1, "ann"), u1(2, "bob")],
            twos: [u2(3, "cy", Some("cy@x")), u2(4, "di", None)],
            bad: NotAUser { id: "seven".into(), name: "x".into() },
            // id 1, then a string whose length runs past the end.
            raw_invalid: &[0x02, 0x10, b'a'],
            expect: vec![u2(1, "ann", None), u2(2, "bob", None), u2(3, "cy", Some("cy@x")), u2(4, "di", None)],
        },
    )
    .await;
    let p1 = |id, n: &str| PUserV1 { id, name: n.into() };
    let p2 = |id, n: &str, e: &str| PUserV2 { id, name: n.into(), email: e.into() };
    run_case(
        client,
        Case {
            name: "protobuf",
            format: Format::Protobuf,
            v3: PROTO_V3,
            v1: || ProtobufCodec::<PUserV1>::new(PROTO_V1, "t.User"),
            v2: || ProtobufCodec::<PUserV2>::new(PROTO_V2, "t.User"),
            bad_codec: || ProtobufCodec::<PNotAUser>::new(PROTO_V1, "t.User"),
            ones: [p1(1, "ann"), p1(2, "bob")],
            twos: [p2(3, "cy", "cy@x"), p2(4, "di", "")],
            bad: PNotAUser { name: 7 },
            // Message [0], then field 2 (a string) whose length runs past the end.
            raw_invalid: &[0x00, 0x12, 0x09, b'x'],
            expect: vec![p2(1, "ann", ""), p2(2, "bob", ""), p2(3, "cy", "cy@x"), p2(4, "di", "")],
        },
    )
    .await;
}

async fn bad_input(client: &Client) {
    for (format, text) in
        [(Format::Json, "{\"type\":"), (Format::Avro, "{\"type\":\"record\"}"), (Format::Protobuf, "message {")]
    {
        let e = client.register_schema("bad", format, text).await.expect_err("malformed");
        assert_eq!(code(&e), Some(ErrorCode::InvalidSchema), "{format}: {e}");
    }
    let huge = format!("{{\"description\":\"{}\"}}", "x".repeat(1 << 20));
    let e = client.register_schema("bad", Format::Json, &huge).await.expect_err("too large");
    assert_eq!(code(&e), Some(ErrorCode::SchemaTooLarge), "{e}");
    assert!(client.list_schemas(Some("bad")).await.is_err_and(|e| e.code() == Some(ErrorCode::UnknownSubject)));
    let e = client.schema_by_id(999_999).await.expect_err("unknown id");
    assert_eq!(code(&e), Some(ErrorCode::UnknownSchemaId), "{e}");
    let e = client.schema_version("json-user", Some(9)).await.expect_err("unknown version");
    assert_eq!(code(&e), Some(ErrorCode::UnknownSubject), "{e}");
    let e = client.create_topic_with("unbound", 1, 3, &[("schema.subject", "nope")]).await.expect_err("no subject");
    assert_eq!(code(&e), Some(ErrorCode::InvalidConfig), "{e}");

    let hw = high_watermark(client, "json-users").await;
    let json_v1 = client.schema_version("json-user", Some(1)).await.expect("json v1").id;
    let good = framed(json_v1, br#"{"id":9,"name":"z"}"#);
    let avro_id = client.schema_version("avro-user", Some(1)).await.expect("avro v1").id;
    for (values, want, index) in [
        (vec![good.clone(), framed(999_999, b"{}")], ErrorCode::UnknownSchemaId, "record 1"),
        (vec![framed(avro_id, &[2, 2, b'a'])], ErrorCode::SchemaNotInSubject, "record 0"),
        (vec![good.clone(), good.clone(), b"{\"id\":1}".to_vec()], ErrorCode::InvalidRecord, "record 2"),
    ] {
        let e = client.produce_batch("json-users", 0, raw_batch(values), pb::Acks::All).await.expect_err("refused");
        assert_eq!(code(&e), Some(want), "{e}");
        assert!(e.to_string().contains(index), "{e}");
    }
    // Far over the record size limit (1 MiB): refused before any decoding.
    let mut big = framed(json_v1, b"{\"id\":1,\"name\":\"");
    big.resize(3 << 20, b'a');
    let e = client.produce_batch("json-users", 0, raw_batch(vec![big]), pb::Acks::All).await.expect_err("too big");
    assert!(matches!(code(&e), Some(ErrorCode::BatchTooLarge | ErrorCode::RecordTooLarge)), "{e}");
    assert_eq!(high_watermark(client, "json-users").await, hw, "nothing refused was appended");
    // A bound subject's last version cannot go; an unbound one can.
    let e = client.delete_schema("json-user", None).await.expect_err("bound");
    assert_eq!(code(&e), Some(ErrorCode::InvalidRequest), "{e}");
}

/// The registry as listed, and every schema by id.
async fn registry_state(client: &Client) -> Vec<(String, Vec<(u32, u32)>, Vec<String>)> {
    let mut out = Vec::new();
    for s in client.list_schemas(None).await.expect("list") {
        let mut texts = Vec::new();
        for (_, id) in &s.versions {
            texts.push(client.schema_by_id(*id).await.expect("by id").schema);
        }
        out.push((s.subject, s.versions, texts));
    }
    out
}

async fn survives_failures(cluster: &mut Cluster) {
    let client = common::client(cluster).await;
    let before = registry_state(&client).await;
    assert_eq!(before.len(), 3, "{before:?}");

    let leader = cluster.controller_leader().await.expect("a controller leader");
    cluster.kill(leader).expect("SIGKILL the controller leader");
    wait_for("a new controller leader", WAIT, || async { cluster.controller_agreed().await.filter(|l| *l != leader) })
        .await;
    let client = common::client(cluster).await;
    assert_eq!(registry_state(&client).await, before, "after the controller leader's SIGKILL");
    let r = client.register_schema("after-kill", Format::Json, "{\"type\":\"object\"}").await.expect("register");
    cluster.restart(leader).expect("restart");

    cluster.kill_all().expect("SIGKILL every node");
    cluster.restart_all().expect("restart every node");
    cluster.wait_ready(WAIT).await.expect("ready again");
    let client = common::client(cluster).await;
    let mut after = registry_state(&client).await;
    let added = after.iter().position(|s| s.0 == "after-kill").expect("registered after the kill");
    assert_eq!(after.remove(added).1, vec![(1, r.id)]);
    assert_eq!(after, before, "after a restart of every node");

    // The binding still validates, with schemas compiled afresh.
    let registry = SchemaRegistry::new(client.clone());
    let s = Serializer::new(registry, "json-user", JsonCodec::<UserV1>::new(JSON_V1)).expect("serializer");
    let good = s.serialize(&UserV1 { id: 10, name: "eve".into() }).await.expect("serialize");
    let id = s.schema_id().await.expect("id");
    let e = tokio::time::timeout(Duration::from_secs(90), async {
        client.produce_batch("json-users", 0, raw_batch(vec![framed(id, b"[]")]), pb::Acks::All).await
    })
    .await
    .expect("in time")
    .expect_err("invalid");
    assert_eq!(code(&e), Some(ErrorCode::InvalidRecord), "{e}");
    client.produce_batch("json-users", 0, raw_batch(vec![good.to_vec()]), pb::Acks::All).await.expect("valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_subjects_in_three_formats_when_records_are_produced_then_the_broker_enforces_them() {
    let mut cluster = common::start(3, &[]).await;
    let client = common::client(&cluster).await;
    formats(&client).await;
    bad_input(&client).await;
    survives_failures(&mut cluster).await;
}
