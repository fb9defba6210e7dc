//! The record batch format (version 1).
//!
//! A producer encodes a batch once; the broker validates it, stores the bytes
//! unchanged as one Raft entry, and returns them unchanged from fetch. Offsets
//! are not in the batch: the partition assigns the batch a base offset when the
//! entry is applied, and record `i` has offset `base + i`.
//!
//! All integers are big-endian.
//!
//! ```text
//! header (40 bytes)
//!   0  u8   magic = 1
//!   1  u32  crc32c of bytes [5..end)
//!   5  u8   attributes (reserved, 0)
//!   6  u32  record count
//!  10  i64  first timestamp (ms since the Unix epoch)
//!  18  i64  max timestamp
//!  26  i64  producer id (-1: none)
//!  34  i16  producer epoch (-1: none)
//!  36  i32  base sequence (-1: none)
//! record (repeated `record count` times)
//!   u32  length of the rest of this record
//!   i64  timestamp
//!   i32  key length (-1: no key), key bytes
//!   u32  value length, value bytes
//!   u16  header count, then per header:
//!        u16 name length, name (UTF-8), u32 value length, value bytes
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const MAGIC: u8 = 1;
pub const HEADER_LEN: usize = 40;
const CRC_START: usize = 5;
/// The smallest record: length, timestamp, key length (-1), value length
/// (0) and header count (0).
const MIN_RECORD_LEN: usize = 4 + 8 + 4 + 4 + 2;

/// One record as the producer gave it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
}

impl Record {
    pub fn new(key: Option<Bytes>, value: Bytes, timestamp_ms: i64) -> Record {
        Record { timestamp_ms, key, value, headers: Vec::new() }
    }

    /// Checks that every field fits its length prefix in the batch format
    /// (key below 2 GiB, value and header values below 4 GiB, header names
    /// below 64 KiB, at most 65,535 headers, the whole record below 4 GiB).
    pub fn check_encodable(&self) -> Result<(), BatchError> {
        let too_long = |field, len: usize, max: usize| {
            if len > max { Err(BatchError::FieldTooLong { field, len, max }) } else { Ok(()) }
        };
        too_long("key", self.key.as_ref().map_or(0, |k| k.len()), i32::MAX as usize)?;
        too_long("value", self.value.len(), u32::MAX as usize)?;
        too_long("header count", self.headers.len(), u16::MAX as usize)?;
        for (name, value) in &self.headers {
            too_long("header name", name.len(), u16::MAX as usize)?;
            too_long("header value", value.len(), u32::MAX as usize)?;
        }
        too_long("record", self.encoded_len() - 4, u32::MAX as usize)
    }

    /// Bytes this record takes inside a batch.
    pub fn encoded_len(&self) -> usize {
        4 + 8
            + 4
            + self.key.as_ref().map_or(0, |k| k.len())
            + 4
            + self.value.len()
            + 2
            + self.headers.iter().map(|(k, v)| 2 + k.len() + 4 + v.len()).sum::<usize>()
    }
}

/// Idempotent-producer identity carried by a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerInfo {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
}

impl ProducerInfo {
    pub const NONE: ProducerInfo = ProducerInfo { producer_id: -1, epoch: -1, base_sequence: -1 };
}

/// The decoded fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub record_count: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer: ProducerInfo,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch is {0} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort(usize),
    #[error("unsupported batch magic {0}")]
    BadMagic(u8),
    #[error("batch checksum mismatch")]
    BadCrc,
    #[error("batch holds no records")]
    Empty,
    #[error("record {index} is malformed: {reason}")]
    Malformed { index: u32, reason: &'static str },
    #[error("record {index} is {size} bytes, above the limit of {limit}")]
    RecordTooLarge { index: u32, size: usize, limit: usize },
    #[error("{0} trailing bytes after the last record")]
    Trailing(usize),
    #[error("record field {field} is {len} bytes, above the format's maximum of {max}")]
    FieldTooLong { field: &'static str, len: usize, max: usize },
}

/// Builds a batch in one buffer.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    count: u32,
    first_ts: i64,
    max_ts: i64,
    producer: ProducerInfo,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    pub fn new() -> BatchBuilder {
        Self::with_capacity(4096)
    }

    pub fn with_capacity(bytes: usize) -> BatchBuilder {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + bytes);
        buf.resize(HEADER_LEN, 0);
        BatchBuilder { buf, count: 0, first_ts: 0, max_ts: i64::MIN, producer: ProducerInfo::NONE }
    }

    pub fn producer(mut self, producer: ProducerInfo) -> Self {
        self.producer = producer;
        self
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size so far, header included.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Appends a record whose fields fit the format
    /// ([`Record::check_encodable`]), or refuses it and leaves the batch as
    /// it was.
    pub fn try_push(&mut self, r: &Record) -> Result<(), BatchError> {
        r.check_encodable()?;
        self.push(r);
        Ok(())
    }

    /// Appends a record. The caller guarantees that its fields fit the
    /// format (see [`BatchBuilder::try_push`]); a field that does not is
    /// written with a wrapped length prefix and the broker refuses the
    /// batch as corrupt.
    pub fn push(&mut self, r: &Record) {
        if self.count == 0 {
            self.first_ts = r.timestamp_ms;
        }
        self.max_ts = self.max_ts.max(r.timestamp_ms);
        let body = r.encoded_len() - 4;
        self.buf.reserve(body + 4);
        self.buf.put_u32(body as u32);
        self.buf.put_i64(r.timestamp_ms);
        match &r.key {
            Some(k) => {
                self.buf.put_i32(k.len() as i32);
                self.buf.put_slice(k);
            }
            None => self.buf.put_i32(-1),
        }
        self.buf.put_u32(r.value.len() as u32);
        self.buf.put_slice(&r.value);
        self.buf.put_u16(r.headers.len() as u16);
        for (k, v) in &r.headers {
            self.buf.put_u16(k.len() as u16);
            self.buf.put_slice(k.as_bytes());
            self.buf.put_u32(v.len() as u32);
            self.buf.put_slice(v);
        }
        self.count += 1;
    }

    pub fn build(mut self) -> Bytes {
        let max_ts = if self.count == 0 { 0 } else { self.max_ts };
        let mut h = &mut self.buf[..HEADER_LEN];
        h.put_u8(MAGIC);
        h.put_u32(0);
        h.put_u8(0);
        h.put_u32(self.count);
        h.put_i64(self.first_ts);
        h.put_i64(max_ts);
        h.put_i64(self.producer.producer_id);
        h.put_i16(self.producer.epoch);
        h.put_i32(self.producer.base_sequence);
        let crc = crc32c::crc32c(&self.buf[CRC_START..]);
        self.buf[1..5].copy_from_slice(&crc.to_be_bytes());
        self.buf.freeze()
    }
}

/// Encodes records as one batch.
pub fn encode(records: &[Record]) -> Bytes {
    let size = records.iter().map(Record::encoded_len).sum();
    let mut b = BatchBuilder::with_capacity(size);
    for r in records {
        b.push(r);
    }
    b.build()
}

/// Reads the header without checking the checksum or the records.
pub fn peek_header(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    if batch.len() < HEADER_LEN {
        return Err(BatchError::TooShort(batch.len()));
    }
    if batch[0] != MAGIC {
        return Err(BatchError::BadMagic(batch[0]));
    }
    let mut h = &batch[6..HEADER_LEN];
    let record_count = h.get_u32();
    let first_timestamp_ms = h.get_i64();
    let max_timestamp_ms = h.get_i64();
    let producer_id = h.get_i64();
    let epoch = h.get_i16();
    let base_sequence = h.get_i32();
    Ok(BatchHeader {
        record_count,
        first_timestamp_ms,
        max_timestamp_ms,
        producer: ProducerInfo { producer_id, epoch, base_sequence },
    })
}

/// Checks a batch fully — checksum, every record's framing, the per-record
/// size limit — without allocating. Brokers call this before a batch enters
/// the log, so the log only ever holds well-formed batches.
pub fn validate(batch: &[u8], max_record_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = peek_header(batch)?;
    let stored = u32::from_be_bytes([batch[1], batch[2], batch[3], batch[4]]);
    if crc32c::crc32c(&batch[CRC_START..]) != stored {
        return Err(BatchError::BadCrc);
    }
    if header.record_count == 0 {
        return Err(BatchError::Empty);
    }
    let mut rest = &batch[HEADER_LEN..];
    for index in 0..header.record_count {
        let (body, tail) = split_record(rest, index)?;
        if body.len() + 4 > max_record_bytes {
            return Err(BatchError::RecordTooLarge { index, size: body.len() + 4, limit: max_record_bytes });
        }
        parse_record(body, index, |_, _| {})?;
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(BatchError::Trailing(rest.len()));
    }
    Ok(header)
}

fn split_record(buf: &[u8], index: u32) -> Result<(&[u8], &[u8]), BatchError> {
    let bad = |reason| BatchError::Malformed { index, reason };
    if buf.len() < 4 {
        return Err(bad("truncated length"));
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let buf = &buf[4..];
    if buf.len() < len {
        return Err(bad("length past end of batch"));
    }
    Ok(buf.split_at(len))
}

/// Where the fields of one record body lie, as byte ranges of the body.
struct RecordLayout {
    timestamp_ms: i64,
    key: Option<std::ops::Range<usize>>,
    value: std::ops::Range<usize>,
}

/// Parses one record body — the one place the record layout is read. Each
/// header's (name, value) ranges go to `on_header`; validation passes a
/// no-op and allocates nothing, decoding collects them.
fn parse_record(
    b: &[u8],
    index: u32,
    mut on_header: impl FnMut(std::ops::Range<usize>, std::ops::Range<usize>),
) -> Result<RecordLayout, BatchError> {
    let bad = |reason| BatchError::Malformed { index, reason };
    let mut pos = 0usize;
    let mut take = |n: usize, what: &'static str| -> Result<std::ops::Range<usize>, BatchError> {
        let end = pos.checked_add(n).filter(|e| *e <= b.len()).ok_or(bad(what))?;
        let r = pos..end;
        pos = end;
        Ok(r)
    };
    let be = |r: std::ops::Range<usize>| &b[r];
    let timestamp_ms = i64::from_be_bytes(be(take(8, "truncated timestamp")?).try_into().unwrap_or_default());
    let klen = i32::from_be_bytes(be(take(4, "truncated key length")?).try_into().unwrap_or_default());
    let key = match klen {
        -1 => None,
        k if k >= 0 => Some(take(k as usize, "key past end of record")?),
        _ => return Err(bad("negative key length")),
    };
    let vlen = u32::from_be_bytes(be(take(4, "truncated value length")?).try_into().unwrap_or_default());
    let value = take(vlen as usize, "value past end of record")?;
    let hcount = u16::from_be_bytes(be(take(2, "truncated header count")?).try_into().unwrap_or_default());
    for _ in 0..hcount {
        let nlen = u16::from_be_bytes(be(take(2, "truncated header name length")?).try_into().unwrap_or_default());
        let name = take(nlen as usize, "header name past end")?;
        std::str::from_utf8(&b[name.clone()]).map_err(|_| bad("header name is not UTF-8"))?;
        let hvlen = u32::from_be_bytes(be(take(4, "truncated header value length")?).try_into().unwrap_or_default());
        let hvalue = take(hvlen as usize, "header value past end")?;
        on_header(name, hvalue);
    }
    if pos != b.len() {
        return Err(bad("bytes left after headers"));
    }
    Ok(RecordLayout { timestamp_ms, key, value })
}

/// Decodes every record of a batch. Keys, values and header values are
/// slices of `batch`, not copies. The batch must have passed [`validate`]
/// (the broker guarantees that for everything it stores); anything else
/// gives an error, never a panic.
pub fn decode(batch: &Bytes) -> Result<(BatchHeader, Vec<Record>), BatchError> {
    let header = peek_header(batch)?;
    // The count comes from the input: reserve only for as many records as
    // the bytes can hold, or a 40-byte header claiming 4 billion records
    // would reserve megabytes before the first record fails to parse.
    let fits = (batch.len() - HEADER_LEN) / MIN_RECORD_LEN;
    let mut records = Vec::with_capacity((header.record_count as usize).min(fits));
    let mut pos = HEADER_LEN;
    for index in 0..header.record_count {
        let (body, _) = split_record(&batch[pos..], index)?;
        let start = pos + 4;
        pos = start + body.len();
        let at = |r: std::ops::Range<usize>| batch.slice(start + r.start..start + r.end);
        let mut headers = Vec::new();
        let layout = parse_record(body, index, |name, value| {
            headers.push((String::from_utf8_lossy(&body[name]).into_owned(), at(value)));
        })?;
        records.push(Record {
            timestamp_ms: layout.timestamp_ms,
            key: layout.key.map(at),
            value: at(layout.value),
            headers,
        });
    }
    if pos != batch.len() {
        return Err(BatchError::Trailing(batch.len() - pos));
    }
    Ok((header, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::new(Some(Bytes::from_static(b"k1")), Bytes::from_static(b"hello"), 1000),
            Record::new(None, Bytes::new(), 1002),
            Record {
                timestamp_ms: 999,
                key: Some(Bytes::new()),
                value: Bytes::from(vec![7u8; 300]),
                headers: vec![("trace".into(), Bytes::from_static(b"abc")), ("e".into(), Bytes::new())],
            },
        ]
    }

    #[test]
    fn encode_validate_decode_round_trip() {
        let recs = sample();
        let b = encode(&recs);
        let h = validate(&b, 1 << 20).expect("valid");
        assert_eq!(h.record_count, 3);
        assert_eq!(h.first_timestamp_ms, 1000);
        assert_eq!(h.max_timestamp_ms, 1002);
        assert_eq!(h.producer, ProducerInfo::NONE);
        let (h2, back) = decode(&b).unwrap();
        assert_eq!(h, h2);
        assert_eq!(back, recs);
    }

    #[test]
    fn a_flipped_bit_anywhere_is_caught() {
        let b = encode(&sample()).to_vec();
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(validate(&c, 1 << 20).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let b = encode(&sample());
        for n in 0..b.len() {
            assert!(validate(&b[..n], 1 << 20).is_err());
            let _ = decode(&b.slice(..n));
        }
    }

    #[test]
    fn oversized_record_is_reported_with_its_index() {
        let b = encode(&sample());
        match validate(&b, 100) {
            Err(BatchError::RecordTooLarge { index: 2, .. }) => {}
            other => panic!("expected RecordTooLarge at 2, got {other:?}"),
        }
    }

    #[test]
    fn a_record_count_beyond_the_bytes_is_an_error() {
        let mut b = encode(&sample()).to_vec();
        b[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
        let b = Bytes::from(b);
        assert!(decode(&b).is_err());
        assert!(matches!(validate(&b, 1 << 20), Err(BatchError::BadCrc)));
        // The smallest record is what the capacity bound assumes.
        assert_eq!(Record::new(None, Bytes::new(), 0).encoded_len(), MIN_RECORD_LEN);
    }

    #[test]
    fn a_field_too_long_for_its_length_prefix_is_refused_by_try_push() {
        let mut r = Record::new(None, Bytes::new(), 1);
        r.headers.push(("n".repeat(65_536), Bytes::new()));
        let mut b = BatchBuilder::new();
        assert_eq!(b.try_push(&r), Err(BatchError::FieldTooLong { field: "header name", len: 65_536, max: 65_535 }));
        assert!(b.is_empty());
        r.headers[0].0.pop();
        b.try_push(&r).expect("65,535 bytes fit");
        validate(&b.build(), 1 << 20).expect("valid");
    }

    #[test]
    fn empty_batch_is_rejected() {
        let b = encode(&[]);
        assert_eq!(validate(&b, 1 << 20), Err(BatchError::Empty));
    }
}
