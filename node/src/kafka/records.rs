//! Kafka record batches (RecordBatch v2) ↔ replog batches, converted at the
//! edge (docs/kafka.md, "Storage"): a produced Kafka batch becomes one
//! replog batch holding the same records — keys, values, headers and
//! timestamps — and a fetched replog batch goes out as one Kafka batch with
//! the offsets the partition gave it.
//!
//! The conversion loses what replog's format has no place for: a null
//! value or header value reads back empty, and headers of one record that
//! share a name keep only the last (the codec's record holds headers in a
//! map).
//!
//! An idempotent producer's identity — producer id, epoch and the base
//! sequence of the batch — goes into the replog batch header, where the
//! SDK's idempotent producer puts its own: the partition's state machine
//! checks both alike (one sequence state per partition, whichever protocol
//! produced). Producer ids come from the same controller counter for both,
//! so they never collide. A request carries one batch per partition for
//! such a producer (as Kafka requires from v3 on); several are refused.
//!
//! Decompression is replog's own, bounded: a Kafka batch's records section
//! never decompresses past the produce limit, so a small compressed frame
//! cannot make the node allocate gigabytes.

use std::io::Read;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as KCompression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};
use replog_proto::batch::{self, BatchBuilder, Compression, ProducerInfo, Record};

/// Why a produced batch is refused, as a Kafka error code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: i16,
    pub message: String,
}

impl Refused {
    fn new(e: kafka_protocol::ResponseError, message: impl Into<String>) -> Refused {
        Refused { code: e.code(), message: message.into() }
    }
}

/// Offset of the magic byte in a RecordBatch v2 header.
const MAGIC_OFFSET: usize = 16;

/// The records of every Kafka batch in `data` (a produce request's records
/// for one partition) as one replog batch, compressed with the codec of the
/// first Kafka batch where replog has it (lz4, zstd; gzip and snappy are
/// stored as zstd). `max_uncompressed` bounds the records once decompressed,
/// all batches together.
pub fn to_replog(data: &Bytes, max_uncompressed: usize) -> Result<Bytes, Refused> {
    use kafka_protocol::ResponseError as K;
    let now = replog_proto::now_ms();
    let mut buf = data.clone();
    let mut records = Vec::new();
    let mut codec = None;
    let mut budget = max_uncompressed;
    let mut producer = ProducerInfo::NONE;
    let mut batches = 0usize;
    while !buf.is_empty() {
        match buf.get(MAGIC_OFFSET) {
            Some(2) => {}
            Some(m) => {
                return Err(Refused::new(
                    K::UnsupportedForMessageFormat,
                    format!("record batch magic {m}: only RecordBatch v2 (magic 2) is served"),
                ));
            }
            None => return Err(Refused::new(K::CorruptMessage, "truncated record batch")),
        }
        let decompress = |b: &mut Bytes, c: KCompression| decompress(b, c, budget);
        let set = RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(decompress))
            .map_err(|e| Refused::new(K::CorruptMessage, format!("record batch refused: {e:#}")))?;
        codec.get_or_insert(set.compression);
        batches += 1;
        if let Some(first) = set.records.first() {
            if batches == 1 {
                producer = ProducerInfo {
                    producer_id: first.producer_id,
                    epoch: first.producer_epoch,
                    base_sequence: first.sequence,
                };
            }
            if batches > 1 && (producer.producer_id >= 0 || first.producer_id >= 0) {
                return Err(Refused::new(
                    K::InvalidRecord,
                    "an idempotent producer sends one record batch per partition in a request",
                ));
            }
        }
        for r in set.records {
            if r.control || r.transactional {
                return Err(Refused::new(K::InvalidRecord, "transactional and control batches are not served"));
            }
            let used = r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len);
            budget = budget.saturating_sub(used);
            let timestamp_ms = match r.timestamp_type {
                TimestampType::LogAppend => now,
                TimestampType::Creation => r.timestamp,
            };
            records.push(Record {
                timestamp_ms,
                key: r.key,
                value: r.value.unwrap_or_default(),
                headers: r.headers.into_iter().map(|(k, v)| (k.to_string(), v.unwrap_or_default())).collect(),
            });
        }
    }
    if records.is_empty() {
        return Err(Refused::new(K::CorruptMessage, "no records"));
    }
    let compression = match codec {
        Some(KCompression::None) | None => Compression::None,
        Some(KCompression::Lz4) => Compression::Lz4,
        Some(_) => Compression::Zstd,
    };
    let size = records.iter().map(Record::encoded_len).sum();
    if producer.producer_id < 0 {
        producer = ProducerInfo::NONE;
    }
    let mut b = BatchBuilder::with_capacity(size).compression(compression).producer(producer);
    for r in &records {
        b.try_push(r).map_err(|e| Refused::new(K::InvalidRecord, e.to_string()))?;
    }
    Ok(b.build())
}

/// Decompresses a records section, refusing one that would exceed `limit`.
fn decompress(b: &mut Bytes, c: KCompression, limit: usize) -> anyhow::Result<Bytes> {
    fn bounded(r: impl Read, limit: usize) -> anyhow::Result<Bytes> {
        let mut out = Vec::new();
        r.take(limit as u64 + 1).read_to_end(&mut out)?;
        anyhow::ensure!(out.len() <= limit, "records decompress to more than {limit} bytes");
        Ok(Bytes::from(out))
    }
    let data = std::mem::take(b);
    match c {
        KCompression::None => Ok(data),
        KCompression::Gzip => bounded(flate2::read::MultiGzDecoder::new(&data[..]), limit),
        KCompression::Zstd => bounded(zstd::stream::read::Decoder::new(&data[..])?, limit),
        KCompression::Lz4 => bounded(lz4::Decoder::new(&data[..])?, limit),
        KCompression::Snappy => {
            // Snappy blocks declare their length: the sum is checked before
            // the codec's own decoder (Kafka's xerial framing) runs.
            anyhow::ensure!(snappy_len(&data)? <= limit, "records decompress to more than {limit} bytes");
            use kafka_protocol::compression::Decompressor;
            let mut data = data;
            kafka_protocol::compression::Snappy::decompress(&mut data, |d: &mut Bytes| Ok(d.clone()))
        }
    }
}

/// What a snappy records section decompresses to, from its declared
/// lengths: xerial framing (a 16-byte magic header, then blocks of a u32
/// length and raw snappy) or one raw snappy block.
fn snappy_len(data: &[u8]) -> anyhow::Result<usize> {
    const XERIAL: &[u8] = b"\x82SNAPPY\x00";
    if !data.starts_with(XERIAL) {
        return Ok(snap::raw::decompress_len(data)?);
    }
    let mut rest = data.get(16..).ok_or_else(|| anyhow::anyhow!("truncated snappy header"))?;
    let mut total = 0usize;
    while !rest.is_empty() {
        anyhow::ensure!(rest.len() >= 4, "truncated snappy block length");
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let block = rest.get(4..4 + n).ok_or_else(|| anyhow::anyhow!("truncated snappy block"))?;
        total = total.saturating_add(snap::raw::decompress_len(block)?);
        rest = &rest[4 + n..];
    }
    Ok(total)
}

/// A stored replog batch as one uncompressed Kafka RecordBatch v2 whose
/// records carry offsets `base_offset..`.
pub fn to_kafka(base_offset: u64, stored: &Bytes, max_uncompressed: usize, out: &mut BytesMut) -> anyhow::Result<()> {
    let (_, records) = batch::decode_with(stored, max_uncompressed)?;
    let records: Vec<KRecord> = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut headers = IndexMap::with_capacity(r.headers.len());
            for (k, v) in r.headers {
                headers.insert(StrBytes::from_string(k), Some(v));
            }
            plain_record((base_offset + i as u64) as i64, r.timestamp_ms, r.key, Some(r.value), headers)
        })
        .collect();
    RecordBatchEncoder::encode(out, &records, &RecordEncodeOptions { version: 2, compression: KCompression::None })
}

/// A plain Kafka record (no producer id, no transaction) at `offset`. Its
/// sequence is `offset - 1`: the encoder starts a new batch where offset
/// minus sequence changes, so records made with consecutive offsets encode
/// as one batch, with base sequence -1.
pub fn plain_record(
    offset: i64,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: IndexMap<StrBytes, Option<Bytes>>,
) -> KRecord {
    KRecord {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: (offset - 1) as i32,
        timestamp,
        key,
        value,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka_batch(compression: KCompression, n: usize) -> Bytes {
        let records: Vec<KRecord> = (0..n)
            .map(|i| {
                let mut headers = IndexMap::new();
                headers.insert(StrBytes::from_static_str("h"), Some(Bytes::from(format!("v{i}"))));
                plain_record(
                    i as i64,
                    1_700_000_000_000 + i as i64,
                    Some(Bytes::from(format!("k{i}"))),
                    Some(Bytes::from(vec![b'x'; 100])),
                    headers,
                )
            })
            .collect();
        let mut out = BytesMut::new();
        RecordBatchEncoder::encode(&mut out, &records, &RecordEncodeOptions { version: 2, compression }).unwrap();
        out.freeze()
    }

    #[test]
    fn given_kafka_batches_in_every_codec_then_replog_gets_the_same_records_and_they_go_back_out() {
        for c in [KCompression::None, KCompression::Gzip, KCompression::Snappy, KCompression::Lz4, KCompression::Zstd] {
            let stored = to_replog(&kafka_batch(c, 50), 1 << 20).unwrap_or_else(|e| panic!("{c:?}: {e:?}"));
            let (h, records) = batch::decode(&stored).unwrap();
            assert_eq!(h.record_count, 50, "{c:?}");
            assert_eq!(records[7].key.as_deref(), Some(&b"k7"[..]));
            assert_eq!(records[7].headers, vec![("h".to_string(), Bytes::from("v7"))]);
            assert_eq!(records[7].timestamp_ms, 1_700_000_000_007);
            let mut out = BytesMut::new();
            to_kafka(1000, &stored, 1 << 20, &mut out).unwrap();
            let back = RecordBatchDecoder::decode(&mut out.freeze()).unwrap();
            assert_eq!(back.records.len(), 50);
            assert_eq!(back.records[7].offset, 1007);
            assert_eq!(back.records[7].key.as_deref(), Some(&b"k7"[..]));
            assert_eq!(
                back.records[7].headers.get(&StrBytes::from_static_str("h")).cloned().flatten(),
                Some(Bytes::from("v7"))
            );
        }
    }

    #[test]
    fn given_several_kafka_batches_for_one_partition_then_they_become_one_replog_batch_in_order() {
        let mut two = kafka_batch(KCompression::Gzip, 3).to_vec();
        two.extend_from_slice(&kafka_batch(KCompression::None, 2));
        let (h, records) = batch::decode(&to_replog(&Bytes::from(two), 1 << 20).unwrap()).unwrap();
        assert_eq!(h.record_count, 5);
        let keys: Vec<_> = records.iter().map(|r| r.key.clone().unwrap()).collect();
        assert_eq!(keys, ["k0", "k1", "k2", "k0", "k1"]);
        assert_eq!(h.compression, Compression::Zstd, "gzip is stored as zstd");
    }

    /// A batch of an idempotent producer: `n` records from sequence `seq`.
    fn idempotent_batch(producer_id: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
        let records: Vec<KRecord> = (0..n)
            .map(|i| KRecord {
                producer_id,
                producer_epoch: epoch,
                sequence: seq + i as i32,
                ..plain_record(i as i64, 1_700_000_000_000, None, Some(Bytes::from("v")), IndexMap::new())
            })
            .collect();
        let mut out = BytesMut::new();
        let options = RecordEncodeOptions { version: 2, compression: KCompression::Zstd };
        RecordBatchEncoder::encode(&mut out, &records, &options).unwrap();
        out.freeze()
    }

    #[test]
    fn given_an_idempotent_batch_then_the_replog_batch_carries_its_producer_id_epoch_and_base_sequence() {
        let stored = to_replog(&idempotent_batch(42, 3, 100, 7), 1 << 20).unwrap();
        let (h, records) = batch::decode(&stored).unwrap();
        assert_eq!(h.producer, ProducerInfo { producer_id: 42, epoch: 3, base_sequence: 100 });
        assert_eq!(records.len(), 7);
        // Without a producer id, none is stored.
        let plain = to_replog(&kafka_batch(KCompression::None, 2), 1 << 20).unwrap();
        assert_eq!(batch::decode(&plain).unwrap().0.producer, ProducerInfo::NONE);
    }

    #[test]
    fn given_two_batches_of_an_idempotent_producer_in_one_request_then_they_are_refused() {
        let mut two = idempotent_batch(42, 0, 0, 2).to_vec();
        two.extend_from_slice(&idempotent_batch(42, 0, 2, 2));
        let e = to_replog(&Bytes::from(two), 1 << 20).unwrap_err();
        assert_eq!(e.code, 87, "INVALID_RECORD: {e:?}");
        let mut mixed = kafka_batch(KCompression::None, 2).to_vec();
        mixed.extend_from_slice(&idempotent_batch(42, 0, 0, 2));
        assert_eq!(to_replog(&Bytes::from(mixed), 1 << 20).unwrap_err().code, 87);
    }

    #[test]
    fn given_a_flipped_bit_or_an_old_magic_then_the_batch_is_refused() {
        let good = kafka_batch(KCompression::None, 3);
        let mut bad = good.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(to_replog(&Bytes::from(bad), 1 << 20).unwrap_err().code, 2, "CORRUPT_MESSAGE");
        let mut old = good.to_vec();
        old[MAGIC_OFFSET] = 1;
        assert_eq!(to_replog(&Bytes::from(old), 1 << 20).unwrap_err().code, 43);
        assert_eq!(to_replog(&Bytes::from_static(&[0; 10]), 1 << 20).unwrap_err().code, 2);
    }

    #[test]
    fn given_a_compressed_batch_larger_than_the_limit_once_decompressed_then_it_is_refused() {
        for c in [KCompression::Gzip, KCompression::Snappy, KCompression::Lz4, KCompression::Zstd] {
            let e = to_replog(&kafka_batch(c, 1000), 10_000).unwrap_err();
            assert_eq!(e.code, 2, "{c:?}: {e:?}");
            assert!(e.message.contains("more than"), "{c:?}: {}", e.message);
        }
    }
}
