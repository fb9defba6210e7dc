//! The fuzz targets. Each takes raw bytes and panics if a property breaks;
//! a decoder that refuses the bytes with an error is a pass. Most targets
//! read the bytes in one of two ways, chosen by the input itself: as the
//! message on the wire, or as the recipe for a well-formed message that is
//! then corrupted ([`crate::mutate`]), so that both the first checks and
//! the ones behind them are reached.

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use prost::Message;
use replog_node::raft_net::{SnapshotChunkPayload, decode_payload, encode_payload};
use replog_node::service::raft_peer::{MAX_TERM, Terms, decode_request};
use replog_proto::batch::{self, HEADER_LEN};
use replog_proto::pb;
use replog_raft_store::TypeConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::generate;
use crate::mutate::mutate;

pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&[u8]),
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "batch",
        about: "record batch: peek_header, validate, decode agree; decoded records re-encode to the same bytes",
        run: batch_bytes,
    },
    Target {
        name: "batch_roundtrip",
        about: "record batch: encode then validate and decode gives back the records, header and producer",
        run: batch_roundtrip,
    },
    Target {
        name: "peer_append_entries",
        about: "peer payload AppendEntriesRequest (appends and heartbeats)",
        run: |d| run(d, |u| peer::<AppendEntriesRequest<TypeConfig>>(u, generate::append_entries)),
    },
    Target {
        name: "peer_vote",
        about: "peer payload VoteRequest (the Vote and PreVote RPCs carry the same type)",
        run: |d| run(d, |u| peer::<VoteRequest<TypeConfig>>(u, generate::vote_request)),
    },
    Target {
        name: "peer_snapshot_chunk",
        about: "peer payload (vote, snapshot meta, offset, data, last) of SnapshotChunk",
        run: |d| run(d, |u| peer::<SnapshotChunkPayload>(u, generate::snapshot)),
    },
    Target {
        name: "peer_transfer_leader",
        about: "peer payload TransferLeaderRequest",
        run: |d| run(d, |u| peer::<TransferLeaderRequest<TypeConfig>>(u, generate::transfer_leader)),
    },
    Target {
        name: "peer_heartbeat_batch",
        about: "peer HeartbeatBatch: the protobuf RaftBatch, then each message's AppendEntriesRequest",
        run: |d| run(d, heartbeat_batch),
    },
    Target {
        name: "peer_responses",
        about: "what the sending side decodes from a peer's answer: the four response types",
        run: |d| run(d, peer_responses),
    },
    Target {
        name: "client_requests",
        about: "every client request type from protobuf bytes; a produce request's batch through validate",
        run: |d| run(d, client_requests),
    },
];

pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Runs a structured target; running out of input bytes is not a failure.
fn run(data: &[u8], f: impl FnOnce(&mut Unstructured) -> Result<()>) {
    let _ = f(&mut Unstructured::new(data));
}

/// Everything left of the input, as the message on the wire.
fn rest<'a>(u: &mut Unstructured<'a>) -> &'a [u8] {
    u.bytes(u.len()).unwrap_or_default()
}

// --- record batches ---------------------------------------------------------

fn batch_bytes(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(mode) = u.int_in_range(0u8..=3) else { return };
    let mut bytes = if mode == 0 {
        u.take_rest().to_vec()
    } else {
        let Ok(b) = generate::batch(&mut u) else { return };
        let mut b = b.to_vec();
        let _ = mutate(&mut u, &mut b);
        b
    };
    // Corruption almost always breaks the checksum first; fixing it up
    // lets the framing checks behind it see the damage.
    if mode >= 2 {
        fix_crc(&mut bytes);
    }
    check_batch(&bytes);
}

fn fix_crc(b: &mut [u8]) {
    if b.len() >= HEADER_LEN {
        let crc = crc32c(&b[5..]);
        b[1..5].copy_from_slice(&crc.to_be_bytes());
    }
}

fn crc32c(b: &[u8]) -> u32 {
    crc32c::crc32c(b)
}

/// Most a compressed section may decompress to here: far below the
/// allocation limit, so a decompression bomb is refused, not allocated.
const MAX_UNCOMPRESSED: usize = 1 << 20;

/// Properties of the three readers on any bytes.
pub fn check_batch(b: &[u8]) {
    let bytes = Bytes::copy_from_slice(b);
    let limits = batch::Limits { max_record_bytes: usize::MAX, max_uncompressed_bytes: MAX_UNCOMPRESSED };
    let peek = batch::peek_header(b);
    let valid = batch::validate_with(b, limits);
    let decoded = batch::decode_with(&bytes, MAX_UNCOMPRESSED);
    if let Ok(h) = &valid {
        assert_eq!(peek.as_ref().ok(), Some(h), "validate and peek_header disagree on the header");
        let (h2, records) = decoded.as_ref().expect("validate accepted a batch that decode refuses");
        assert_eq!(h, h2, "validate and decode disagree on the header");
        assert_eq!(records.len() as u64, h.record_count as u64, "decode returned another record count");
        // The record section has one encoding: re-encoding the decoded
        // records gives back the same bytes (decompressed, if they were).
        let again = batch::encode(records);
        let section = batch::records_bytes(b, MAX_UNCOMPRESSED).expect("validate decompressed it");
        assert_eq!(&again[HEADER_LEN..], &section[..], "decoded records re-encode to other bytes");
        // The size limit refuses exactly the records above it.
        let largest = records.iter().map(|r| r.encoded_len()).max().unwrap_or(0);
        for limit in [largest.saturating_sub(1), largest] {
            let limited = batch::validate_with(b, batch::Limits { max_record_bytes: limit, ..limits });
            assert_eq!(limited.is_ok(), largest <= limit, "size limit {limit}, largest record {largest}: {limited:?}");
        }
    }
    // Behind a good checksum and a non-zero count, validate and decode
    // check the same framing.
    let crc_ok = b.len() >= HEADER_LEN && crc32c(&b[5..]).to_be_bytes() == b[1..5];
    if crc_ok && peek.as_ref().is_ok_and(|h| h.record_count > 0) {
        assert_eq!(valid.is_ok(), decoded.is_ok(), "validate {valid:?} but decode {:?}", decoded.as_ref().err());
    }
}

fn batch_roundtrip(data: &[u8]) {
    run(data, |u| {
        let producer = generate::producer(u)?;
        let mut records = generate::records(u)?;
        // Now and then a header name longer than its u16 length prefix:
        // the builder must refuse it, not wrap the length.
        if let Some(r) = records.first_mut().filter(|_| u.ratio(1, 16).unwrap_or(false)) {
            r.headers.push(("n".repeat(u.int_in_range(65_530..=65_540)?), Bytes::new()));
        }
        let mut builder = batch::BatchBuilder::new().producer(producer);
        let mut pushed = Vec::new();
        for r in records {
            match builder.try_push(&r) {
                Ok(()) => pushed.push(r),
                Err(e) => assert!(r.check_encodable().is_err(), "try_push refused an encodable record: {e}"),
            }
        }
        let records = pushed;
        let size = builder.size_bytes();
        let compression = generate::compression(u)?;
        let b = builder.compression(compression).build();
        assert_eq!(size, HEADER_LEN + records.iter().map(|r| r.encoded_len()).sum::<usize>());
        // Compressed only where that makes it smaller.
        assert!(b.len() <= size, "a {compression} batch of {} bytes, {size} uncompressed", b.len());
        if records.is_empty() {
            assert_eq!(batch::validate(&b, usize::MAX), Err(batch::BatchError::Empty));
            return Ok(());
        }
        let h = batch::validate(&b, usize::MAX).expect("an encoded batch validates");
        assert_eq!(h.record_count as usize, records.len());
        assert_eq!(h.producer, producer);
        assert_eq!(h.first_timestamp_ms, records[0].timestamp_ms);
        assert_eq!(Some(h.max_timestamp_ms), records.iter().map(|r| r.timestamp_ms).max());
        let (h2, back) = batch::decode(&b).expect("an encoded batch decodes");
        assert_eq!(h, h2);
        assert_eq!(back, records);
        check_batch(&b);
        Ok(())
    })
}

// --- peer payloads ----------------------------------------------------------

/// Decoding a peer payload: never a panic; whatever decodes re-encodes to
/// bytes that decode to the same value (maps and sets may normalise
/// duplicate or unsorted keys on the first pass, so the check is on the
/// second). A well-formed message round-trips exactly. The peer service's
/// own decoding (the codec plus its term check) accepts exactly what the
/// codec decodes with every term at or below [`MAX_TERM`].
fn peer<T: Serialize + DeserializeOwned + Terms>(
    u: &mut Unstructured,
    make: fn(&mut Unstructured) -> Result<T>,
) -> Result<()> {
    let bytes = if u.arbitrary()? {
        rest(u).to_vec()
    } else {
        let enc = encode_payload(&make(u)?).expect("a generated message encodes");
        let back: T = decode_payload(&enc).expect("an encoded message decodes");
        assert_eq!(encode_payload(&back).expect("re-encode"), enc, "round trip changed the message");
        let mut b = enc;
        mutate(u, &mut b)?;
        b
    };
    check_payload::<T>(&bytes);
    let plain = decode_payload::<T>(&bytes).ok();
    let served = decode_request::<T>(&bytes);
    let expected = plain.is_some_and(|v| v.terms().iter().all(|t| *t <= MAX_TERM));
    assert_eq!(served.is_ok(), expected, "the peer service's decoding disagrees: {:?}", served.err());
    Ok(())
}

fn check_payload<T: Serialize + DeserializeOwned>(bytes: &[u8]) {
    if let Ok(v) = decode_payload::<T>(bytes) {
        let once = encode_payload(&v).expect("a decoded message encodes");
        let v2: T = decode_payload(&once).expect("a re-encoded message decodes");
        assert_eq!(encode_payload(&v2).expect("re-encode"), once, "decode/encode is not stable");
    }
}

fn heartbeat_batch(u: &mut Unstructured) -> Result<()> {
    let bytes = if u.arbitrary()? {
        rest(u).to_vec()
    } else {
        let mut messages = Vec::new();
        for _ in 0..u.int_in_range(0..=4)? {
            let mut hb = generate::append_entries(u)?;
            hb.entries.clear();
            let payload = encode_payload(&hb).expect("encode");
            messages.push(pb::RaftMessage { group_id: u.arbitrary()?, payload: payload.into(), error: String::new() });
        }
        let mut b = pb::RaftBatch { messages }.encode_to_vec();
        mutate(u, &mut b)?;
        b
    };
    if let Ok(batch) = pb::RaftBatch::decode(&bytes[..]) {
        for m in &batch.messages {
            check_payload::<AppendEntriesRequest<TypeConfig>>(&m.payload);
            let _ = decode_request::<AppendEntriesRequest<TypeConfig>>(&m.payload);
        }
    }
    Ok(())
}

fn peer_responses(u: &mut Unstructured) -> Result<()> {
    let which = u.int_in_range(0..=3)?;
    let bytes = rest(u);
    match which {
        0 => check_payload::<AppendEntriesResponse<TypeConfig>>(bytes),
        1 => check_payload::<VoteResponse<TypeConfig>>(bytes),
        2 => check_payload::<SnapshotResponse<TypeConfig>>(bytes),
        _ => check_payload::<TransferLeaderResponse<TypeConfig>>(bytes),
    }
    Ok(())
}

// --- client requests --------------------------------------------------------

/// A protobuf message decodes or is refused; what decodes re-encodes and
/// decodes to an equal message.
fn check_proto<M: Message + Default + PartialEq>(bytes: &[u8]) -> Option<M> {
    let m = M::decode(bytes).ok()?;
    let again = M::decode(&m.encode_to_vec()[..]).expect("a re-encoded message decodes");
    assert!(again == m, "protobuf round trip changed the message");
    Some(m)
}

fn client_requests(u: &mut Unstructured) -> Result<()> {
    let which = u.int_in_range(0..=7)?;
    let bytes = rest(u);
    match which {
        0 => drop(check_proto::<pb::CreateTopicRequest>(bytes)),
        1 => drop(check_proto::<pb::DeleteTopicRequest>(bytes)),
        2 => drop(check_proto::<pb::MetadataRequest>(bytes)),
        3 => {
            if let Some(p) = check_proto::<pb::ProduceRequest>(bytes) {
                check_batch(&p.batch);
            }
        }
        4 => drop(check_proto::<pb::FetchRequest>(bytes)),
        5 => drop(check_proto::<pb::ClusterStatusRequest>(bytes)),
        6 => drop(check_proto::<pb::NodeInfoRequest>(bytes)),
        _ => drop(check_proto::<pb::InitProducerRequest>(bytes)),
    }
    Ok(())
}
