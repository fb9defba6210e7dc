//! The record batch format (versions 1 and 2).
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
//!   0  u8   magic: 1 (records as they are) or 2 (attributes name a codec)
//!   1  u32  crc32c of bytes [5..end), as stored (compressed, if so)
//!   5  u8   attributes: magic 1: reserved (written 0, ignored);
//!           magic 2: bits 0-2 the codec (0 none, 1 lz4, 2 zstd), bits 3-7 zero
//!   6  u32  record count
//!  10  i64  first timestamp (ms since the Unix epoch)
//!  18  i64  max timestamp
//!  26  i64  producer id (-1: none)
//!  34  i16  producer epoch (-1: none)
//!  36  i32  base sequence (-1: none)
//! records section, codec none: the records, one after another
//! records section, codec lz4 or zstd:
//!  40  u32  length of the records once decompressed
//!  44  the records, compressed: one LZ4 block (lz4) or one zstd frame (zstd)
//! record (repeated `record count` times)
//!   u32  length of the rest of this record
//!   i64  timestamp
//!   i32  key length (-1: no key), key bytes
//!   u32  value length, value bytes
//!   u16  header count, then per header:
//!        u16 name length, name (UTF-8), u32 value length, value bytes
//! ```
//!
//! Uncompressed batches are written with magic 1, byte for byte as before
//! compression existed, so they stay readable by every reader; a compressed
//! batch carries magic 2, which a reader that predates compression refuses
//! as an unsupported magic instead of misreading compressed bytes as
//! records. Readers accept both. See `docs/batch-format.md`.

use std::borrow::Cow;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Magic of a batch whose records are stored as they are (and of every
/// batch written before compression existed).
pub const MAGIC: u8 = 1;
/// Magic of a batch whose attributes byte names a codec.
pub const MAGIC_V2: u8 = 2;
pub const HEADER_LEN: usize = 40;
const CRC_START: usize = 5;
const ATTRIBUTES: usize = 5;
/// Codec bits of the attributes byte (magic 2).
const CODEC_MASK: u8 = 0x07;
/// Bytes of the uncompressed-length prefix of a compressed records section.
const LENGTH_PREFIX: usize = 4;
/// zstd level producers compress at: zstd's own default.
pub const ZSTD_LEVEL: i32 = 3;
/// The most a compressed records section may decompress to when the reader
/// sets no lower limit: 64 MiB, the largest log entry and so above any
/// batch a broker can be configured to accept. A batch declaring more is
/// refused before anything is allocated.
pub const MAX_UNCOMPRESSED_BYTES: usize = 64 << 20;
/// The smallest record: length, timestamp, key length (-1), value length
/// (0) and header count (0).
const MIN_RECORD_LEN: usize = 4 + 8 + 4 + 4 + 2;

/// How a batch's records section is compressed. Chosen by the producer per
/// batch, recorded in the batch, undone by [`decode`]; the broker stores
/// the batch as it came.
///
/// ```
/// use replog_proto::batch::Compression;
/// // As a command-line flag or a config value names it.
/// let codec: Compression = "zstd".parse().expect("none, lz4 or zstd");
/// assert_eq!((codec, codec.to_string()), (Compression::Zstd, "zstd".to_string()));
/// assert!("gzip".parse::<Compression>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    /// One LZ4 block (the LZ4 block format, no frame).
    Lz4,
    /// One zstd frame (RFC 8878), written at [`ZSTD_LEVEL`].
    Zstd,
}

impl Compression {
    /// The codec's number in the attributes byte.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
            Compression::Zstd => 2,
        }
    }

    pub fn from_id(id: u8) -> Option<Compression> {
        match id {
            0 => Some(Compression::None),
            1 => Some(Compression::Lz4),
            2 => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Compression, String> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!("unknown compression {other:?} (none, lz4 or zstd)")),
        }
    }
}

/// One record as the producer gave it.
///
/// ```
/// use bytes::Bytes;
/// use replog_proto::batch::Record;
/// let record = Record::new(Some(Bytes::from("user-42")), Bytes::from(r#"{"clicked":"buy"}"#), replog_proto::now_ms())
///     .with_header("content-type", "application/json")
///     .with_header("trace-id", "5f2c");
/// assert!(record.check_encodable().is_ok());
/// assert_eq!(record.headers[0].0, "content-type");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
    /// Application headers, in order; names need not be unique.
    pub headers: Vec<(String, Bytes)>,
}

impl Record {
    pub fn new(key: Option<Bytes>, value: Bytes, timestamp_ms: i64) -> Record {
        Record { timestamp_ms, key, value, headers: Vec::new() }
    }

    /// Adds a header (kept in order; a name may repeat).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use replog_proto::batch::Record;
    /// let r = Record::new(None, Bytes::from_static(b"v"), 0).with_header("trace-id", Bytes::from_static(b"42"));
    /// assert_eq!(r.headers, vec![("trace-id".to_string(), Bytes::from_static(b"42"))]);
    /// ```
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Record {
        self.headers.push((name.into(), value.into()));
        self
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

    /// Bytes this record takes inside a batch (uncompressed).
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
    /// How the records section is stored (always `None` for magic 1).
    pub compression: Compression,
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
    #[error("unsupported batch attributes {0:#04x} (codec bits 0-2: 0 none, 1 lz4, 2 zstd; bits 3-7 reserved)")]
    UnsupportedAttributes(u8),
    #[error("records decompress to {size} bytes, above the limit of {limit}")]
    UncompressedTooLarge { size: usize, limit: usize },
    #[error("{codec} records section does not decompress: {reason}")]
    Decompress { codec: Compression, reason: String },
}

/// What a reader accepts from a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest record, its length prefix included.
    pub max_record_bytes: usize,
    /// Largest records section once decompressed. The declared length is
    /// checked against it before anything is allocated, so a hostile batch
    /// (a decompression bomb) costs at most this much memory.
    pub max_uncompressed_bytes: usize,
}

impl Limits {
    /// No limit on records; compressed sections up to [`MAX_UNCOMPRESSED_BYTES`].
    pub const DEFAULT: Limits = Limits { max_record_bytes: usize::MAX, max_uncompressed_bytes: MAX_UNCOMPRESSED_BYTES };
}

/// Builds a batch in one buffer.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    count: u32,
    first_ts: i64,
    max_ts: i64,
    producer: ProducerInfo,
    compression: Compression,
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
        BatchBuilder {
            buf,
            count: 0,
            first_ts: 0,
            max_ts: i64::MIN,
            producer: ProducerInfo::NONE,
            compression: Compression::None,
        }
    }

    pub fn producer(mut self, producer: ProducerInfo) -> Self {
        self.producer = producer;
        self
    }

    /// Compresses the records section with `compression` when the batch is
    /// built. A batch that the codec would not make smaller is written
    /// uncompressed (magic 1).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size so far, header included, before compression.
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

    pub fn build(self) -> Bytes {
        let max_ts = if self.count == 0 { 0 } else { self.max_ts };
        let (mut buf, codec) = match compress(&self.buf[HEADER_LEN..], self.compression) {
            Some(section) => {
                let mut b = BytesMut::with_capacity(HEADER_LEN + section.len());
                b.put_slice(&self.buf[..HEADER_LEN]);
                b.put_slice(&section);
                (b, self.compression)
            }
            None => (self.buf, Compression::None),
        };
        let mut h = &mut buf[..HEADER_LEN];
        h.put_u8(if codec == Compression::None { MAGIC } else { MAGIC_V2 });
        h.put_u32(0);
        h.put_u8(codec.id());
        h.put_u32(self.count);
        h.put_i64(self.first_ts);
        h.put_i64(max_ts);
        h.put_i64(self.producer.producer_id);
        h.put_i16(self.producer.epoch);
        h.put_i32(self.producer.base_sequence);
        seal(&mut buf);
        buf.freeze()
    }
}

/// The compressed records section (uncompressed length, then the codec's
/// output), or `None` when the batch is to stay uncompressed: no codec, a
/// codec that would not make it smaller, or a section too long for the
/// length prefix.
fn compress(records: &[u8], compression: Compression) -> Option<Vec<u8>> {
    let len = u32::try_from(records.len()).ok()?;
    let mut section = Vec::with_capacity(LENGTH_PREFIX + records.len() / 2);
    section.extend_from_slice(&len.to_be_bytes());
    match compression {
        Compression::None => return None,
        Compression::Lz4 => {
            section.resize(LENGTH_PREFIX + lz4_flex::block::get_maximum_output_size(records.len()), 0);
            let n = lz4_flex::block::compress_into(records, &mut section[LENGTH_PREFIX..]).ok()?;
            section.truncate(LENGTH_PREFIX + n);
        }
        Compression::Zstd => {
            // Into the spare capacity after the length, so nothing is zeroed first.
            section.reserve(zstd::zstd_safe::compress_bound(records.len()));
            let mut out = std::io::Cursor::new(section);
            out.set_position(LENGTH_PREFIX as u64);
            zstd::bulk::Compressor::new(ZSTD_LEVEL).ok()?.compress_to_buffer(records, &mut out).ok()?;
            section = out.into_inner();
        }
    }
    (section.len() < records.len()).then_some(section)
}

/// Writes the checksum of a batch whose other bytes are final (the
/// builder does; tools and tests that edit a batch by hand call it after).
/// `buf` must be at least a header long.
pub fn seal(buf: &mut [u8]) {
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[1..5].copy_from_slice(&crc.to_be_bytes());
}

/// Encodes records as one batch.
pub fn encode(records: &[Record]) -> Bytes {
    encode_with(records, Compression::None)
}

/// Encodes records as one batch, compressed with `compression`.
pub fn encode_with(records: &[Record], compression: Compression) -> Bytes {
    let size = records.iter().map(Record::encoded_len).sum();
    let mut b = BatchBuilder::with_capacity(size).compression(compression);
    for r in records {
        b.push(r);
    }
    b.build()
}

/// A copy of a well-formed `batch` carrying `producer` instead of its own
/// producer identity, with the checksum recomputed; the records section,
/// compressed or not, is untouched. The producer uses it to resend a batch
/// under a new epoch.
pub fn with_producer(batch: &[u8], producer: ProducerInfo) -> Result<Bytes, BatchError> {
    peek_header(batch)?;
    let mut buf = BytesMut::from(batch);
    let mut h = &mut buf[26..HEADER_LEN];
    h.put_i64(producer.producer_id);
    h.put_i16(producer.epoch);
    h.put_i32(producer.base_sequence);
    seal(&mut buf);
    Ok(buf.freeze())
}

/// Reads the header without checking the checksum or the records.
pub fn peek_header(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    if batch.len() < HEADER_LEN {
        return Err(BatchError::TooShort(batch.len()));
    }
    let compression = match batch[0] {
        // Version 1 reserved the attributes byte without checking it.
        MAGIC => Compression::None,
        MAGIC_V2 => {
            let attributes = batch[ATTRIBUTES];
            (attributes & !CODEC_MASK == 0)
                .then(|| Compression::from_id(attributes & CODEC_MASK))
                .flatten()
                .ok_or(BatchError::UnsupportedAttributes(attributes))?
        }
        other => return Err(BatchError::BadMagic(other)),
    };
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
        compression,
    })
}

/// Checks a batch fully — checksum, every record's framing, the per-record
/// size limit — with [`Limits::DEFAULT`] for compressed sections. See
/// [`validate_with`].
pub fn validate(batch: &[u8], max_record_bytes: usize) -> Result<BatchHeader, BatchError> {
    validate_with(batch, Limits { max_record_bytes, ..Limits::DEFAULT })
}

/// Checks a batch fully — checksum, every record's framing, the record
/// count, the per-record size limit. Brokers call this before a batch
/// enters the log, so the log only ever holds well-formed batches. An
/// uncompressed batch is checked without allocating; a compressed one is
/// decompressed into one buffer of at most `limits.max_uncompressed_bytes`
/// (refused before allocating if it declares more), because the record
/// count that offsets are assigned by must be checked against the records.
pub fn validate_with(batch: &[u8], limits: Limits) -> Result<BatchHeader, BatchError> {
    let header = peek_header(batch)?;
    let stored = u32::from_be_bytes([batch[1], batch[2], batch[3], batch[4]]);
    if crc32c::crc32c(&batch[CRC_START..]) != stored {
        return Err(BatchError::BadCrc);
    }
    if header.record_count == 0 {
        return Err(BatchError::Empty);
    }
    let section = records_section(batch, header.compression, limits.max_uncompressed_bytes)?;
    let mut rest = &section[..];
    for index in 0..header.record_count {
        let (body, tail) = split_record(rest, index)?;
        if body.len() + 4 > limits.max_record_bytes {
            return Err(BatchError::RecordTooLarge { index, size: body.len() + 4, limit: limits.max_record_bytes });
        }
        parse_record(body, index, |_, _| {})?;
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(BatchError::Trailing(rest.len()));
    }
    Ok(header)
}

/// The records section of a batch, decompressed if need be (up to
/// `max_uncompressed_bytes`): a slice of `batch` when it is not compressed.
/// Checks the header, not the checksum or the records.
pub fn records_bytes(batch: &[u8], max_uncompressed_bytes: usize) -> Result<Cow<'_, [u8]>, BatchError> {
    let header = peek_header(batch)?;
    records_section(batch, header.compression, max_uncompressed_bytes)
}

/// The records of a batch, decompressed if need be. `batch` must be at
/// least a header long.
fn records_section(batch: &[u8], compression: Compression, limit: usize) -> Result<Cow<'_, [u8]>, BatchError> {
    let section = &batch[HEADER_LEN..];
    if compression == Compression::None {
        return Ok(Cow::Borrowed(section));
    }
    let bad = |reason: String| BatchError::Decompress { codec: compression, reason };
    if section.len() < LENGTH_PREFIX {
        return Err(bad("no uncompressed length".into()));
    }
    let (len, payload) = section.split_at(LENGTH_PREFIX);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > limit {
        return Err(BatchError::UncompressedTooLarge { size: len, limit });
    }
    let out = match compression {
        Compression::None => unreachable!("handled above"),
        Compression::Lz4 => {
            let mut out = vec![0u8; len];
            let n = lz4_flex::block::decompress_into(payload, &mut out).map_err(|e| bad(e.to_string()))?;
            out.truncate(n);
            out
        }
        Compression::Zstd => {
            // Writes into the spare capacity and fails past it: never more
            // than the declared length is allocated.
            let mut out = Vec::with_capacity(len);
            let mut d = zstd::bulk::Decompressor::new().map_err(|e| bad(e.to_string()))?;
            d.decompress_to_buffer(payload, &mut out).map_err(|e| bad(e.to_string()))?;
            out
        }
    };
    if out.len() != len {
        return Err(bad(format!("declared {len} bytes, decompressed to {}", out.len())));
    }
    Ok(Cow::Owned(out))
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

/// Decodes every record of a batch, decompressing it if need be (up to
/// [`MAX_UNCOMPRESSED_BYTES`]). See [`decode_with`].
pub fn decode(batch: &Bytes) -> Result<(BatchHeader, Vec<Record>), BatchError> {
    decode_with(batch, MAX_UNCOMPRESSED_BYTES)
}

/// Decodes every record of a batch. Keys, values and header values are
/// slices of `batch` (uncompressed) or of the one buffer it decompresses
/// into, not copies; a compressed section declaring more than
/// `max_uncompressed_bytes` is refused before anything is allocated. The
/// batch must have passed [`validate`] (the broker guarantees that for
/// everything it stores); anything else gives an error, never a panic.
pub fn decode_with(batch: &Bytes, max_uncompressed_bytes: usize) -> Result<(BatchHeader, Vec<Record>), BatchError> {
    let header = peek_header(batch)?;
    let section = match records_section(batch, header.compression, max_uncompressed_bytes)? {
        Cow::Borrowed(_) => batch.slice(HEADER_LEN..),
        Cow::Owned(v) => Bytes::from(v),
    };
    // The count comes from the input: reserve only for as many records as
    // the bytes can hold, or a 40-byte header claiming 4 billion records
    // would reserve megabytes before the first record fails to parse.
    let fits = section.len() / MIN_RECORD_LEN;
    let mut records = Vec::with_capacity((header.record_count as usize).min(fits));
    let mut pos = 0;
    for index in 0..header.record_count {
        let (body, _) = split_record(&section[pos..], index)?;
        let start = pos + 4;
        pos = start + body.len();
        let at = |r: std::ops::Range<usize>| section.slice(start + r.start..start + r.end);
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
    if pos != section.len() {
        return Err(BatchError::Trailing(section.len() - pos));
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

    /// A batch's bytes with the header field at `at` replaced and the
    /// checksum recomputed, as a hostile producer would send it.
    fn patched(batch: &[u8], at: usize, bytes: &[u8]) -> Bytes {
        let mut b = batch.to_vec();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        seal(&mut b);
        Bytes::from(b)
    }

    /// Records that compress well, so every codec keeps its output.
    fn compressible() -> Vec<Record> {
        (0..50)
            .map(|i| {
                Record::new(
                    Some(Bytes::from(format!("key-{}", i % 7))),
                    Bytes::from(format!("value {i} {}", "x".repeat(200))),
                    1_000 + i,
                )
                .with_header("trace", Bytes::from(format!("t{i}")))
            })
            .collect()
    }

    #[test]
    fn an_uncompressed_batch_is_byte_for_byte_version_1() {
        // One record, key "k", value "v", header ("h", "1"), timestamp 7,
        // no producer: the layout of docs/batch-format.md, written out.
        let r = Record::new(Some(Bytes::from_static(b"k")), Bytes::from_static(b"v"), 7)
            .with_header("h", Bytes::from_static(b"1"));
        let b = encode(&[r]);
        let mut want = vec![1u8, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        want.extend(7i64.to_be_bytes());
        want.extend(7i64.to_be_bytes());
        want.extend((-1i64).to_be_bytes());
        want.extend((-1i16).to_be_bytes());
        want.extend((-1i32).to_be_bytes());
        let body: Vec<u8> = [
            &7i64.to_be_bytes()[..],
            &1i32.to_be_bytes(),
            b"k",
            &1u32.to_be_bytes(),
            b"v",
            &1u16.to_be_bytes(),
            &1u16.to_be_bytes(),
            b"h",
            &1u32.to_be_bytes(),
            b"1",
        ]
        .concat();
        want.extend((body.len() as u32).to_be_bytes());
        want.extend(body);
        let crc = crc32c::crc32c(&want[5..]);
        want[1..5].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn compressed_batches_round_trip_and_say_their_codec() {
        let recs = compressible();
        let plain = encode(&recs);
        for codec in [Compression::Lz4, Compression::Zstd] {
            let b = encode_with(&recs, codec);
            assert_eq!(b[0], MAGIC_V2, "{codec}");
            assert_eq!(b[5], codec.id(), "{codec}");
            assert!(b.len() < plain.len() / 4, "{codec}: {} bytes, uncompressed {}", b.len(), plain.len());
            let h = validate(&b, 1 << 20).expect("valid");
            assert_eq!(h.compression, codec);
            assert_eq!(h.record_count, 50);
            assert_eq!((h.first_timestamp_ms, h.max_timestamp_ms), (1_000, 1_049));
            let (h2, back) = decode(&b).expect("decodes");
            assert_eq!(h2, h);
            assert_eq!(back, recs, "{codec}");
            assert_eq!(Compression::from_id(codec.id()), Some(codec));
            assert_eq!(codec.name().parse::<Compression>(), Ok(codec));
        }
    }

    #[test]
    fn a_batch_the_codec_would_not_shrink_is_written_uncompressed() {
        // Bytes of a counter-mode hash: nothing for either codec to find.
        let noise: Vec<u8> = (0u32..4096).flat_map(|i| crc32c::crc32c(&i.to_be_bytes()).to_be_bytes()).collect();
        let recs = vec![Record::new(None, Bytes::from(noise), 1)];
        for codec in [Compression::Lz4, Compression::Zstd] {
            let b = encode_with(&recs, codec);
            assert_eq!((b[0], b[5]), (MAGIC, 0), "{codec}");
            assert_eq!(b, encode(&recs));
        }
    }

    #[test]
    fn a_version_1_batch_with_attributes_set_still_reads_as_uncompressed() {
        // Version 1 never checked the reserved byte; what it accepted stays readable.
        let b = patched(&encode(&sample()), ATTRIBUTES, &[0x7f]);
        assert_eq!(validate(&b, 1 << 20).expect("valid").compression, Compression::None);
        assert_eq!(decode(&b).expect("decodes").1, sample());
    }

    #[test]
    fn unknown_codecs_and_reserved_bits_are_refused() {
        let b = encode_with(&compressible(), Compression::Lz4);
        for attributes in [3u8, 7, 0x08 | 1, 0x80] {
            let bad = patched(&b, ATTRIBUTES, &[attributes]);
            assert_eq!(validate(&bad, 1 << 20), Err(BatchError::UnsupportedAttributes(attributes)));
            assert_eq!(decode(&bad).map(|_| ()), Err(BatchError::UnsupportedAttributes(attributes)));
        }
        assert_eq!(validate(&patched(&b, 0, &[3]), 1 << 20), Err(BatchError::BadMagic(3)));
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_compressed_batch_is_caught() {
        for codec in [Compression::Lz4, Compression::Zstd] {
            let b = encode_with(&sample(), codec).to_vec();
            for i in 0..b.len() {
                let mut c = b.clone();
                c[i] ^= 0x10;
                assert!(validate(&c, 1 << 20).is_err(), "{codec}: flip at byte {i} went unnoticed");
            }
        }
    }

    #[test]
    fn a_truncated_or_garbled_compressed_section_is_an_error_not_a_panic() {
        for codec in [Compression::Lz4, Compression::Zstd] {
            let b = encode_with(&compressible(), codec);
            for n in HEADER_LEN..b.len() {
                let cut = patched(&b[..n], 0, &[MAGIC_V2]);
                assert!(validate(&cut, 1 << 20).is_err(), "{codec}: cut at {n}");
                assert!(decode(&cut).is_err(), "{codec}: cut at {n}");
            }
            // Garbage behind a valid checksum reaches the decompressor.
            for i in HEADER_LEN + LENGTH_PREFIX..b.len() {
                let mut g = b.to_vec();
                g[i] = g[i].wrapping_add(91);
                let g = patched(&g, 0, &[MAGIC_V2]);
                if let Ok(h) = validate(&g, 1 << 20) {
                    // Rarely the damage still decodes to well-formed records.
                    assert_eq!(decode(&g).expect("validate accepted it").1.len(), h.record_count as usize);
                }
            }
        }
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_allocating() {
        // 8 MiB of zeros compress to a few hundred bytes.
        let bomb = vec![Record::new(None, Bytes::from(vec![0u8; 8 << 20]), 1)];
        let limits = Limits { max_record_bytes: usize::MAX, max_uncompressed_bytes: 1 << 20 };
        for codec in [Compression::Lz4, Compression::Zstd] {
            let b = encode_with(&bomb, codec);
            assert!(b.len() < 64 << 10, "{codec}: {} bytes", b.len());
            let declared = (8 << 20) + 4 + 8 + 4 + 4 + 2;
            let too_large = Err(BatchError::UncompressedTooLarge { size: declared, limit: 1 << 20 });
            assert_eq!(validate_with(&b, limits), too_large, "{codec}");
            assert_eq!(decode_with(&b, 1 << 20).map(|_| ()), too_large.map(|_| ()), "{codec}");
            // A section that lies about its length, declaring little but
            // holding much, fails once the declared length is reached.
            let liar = patched(&b, HEADER_LEN, &1000u32.to_be_bytes());
            assert!(matches!(validate_with(&liar, limits), Err(BatchError::Decompress { .. })), "{codec}");
            assert!(matches!(decode(&liar), Err(BatchError::Decompress { .. })), "{codec}");
        }
    }

    #[test]
    fn a_compressed_batch_whose_count_disagrees_with_its_records_is_refused() {
        for codec in [Compression::Lz4, Compression::Zstd] {
            let b = encode_with(&compressible(), codec);
            let fewer = patched(&b, 6, &49u32.to_be_bytes());
            assert!(matches!(validate(&fewer, 1 << 20), Err(BatchError::Trailing(_))), "{codec}");
            assert!(matches!(decode(&fewer), Err(BatchError::Trailing(_))), "{codec}");
            let more = patched(&b, 6, &51u32.to_be_bytes());
            assert!(matches!(validate(&more, 1 << 20), Err(BatchError::Malformed { index: 50, .. })), "{codec}");
            assert!(decode(&more).is_err(), "{codec}");
        }
    }

    #[test]
    fn the_size_limit_applies_to_records_inside_a_compressed_batch() {
        let b = encode_with(&compressible(), Compression::Zstd);
        assert!(matches!(validate(&b, 100), Err(BatchError::RecordTooLarge { index: 0, .. })));
    }

    #[test]
    fn with_producer_changes_the_identity_and_nothing_else() {
        let b = encode_with(&compressible(), Compression::Lz4);
        let p = ProducerInfo { producer_id: 9, epoch: 2, base_sequence: 40 };
        let c = with_producer(&b, p).expect("well-formed");
        let h = validate(&c, 1 << 20).expect("valid after the rewrite");
        assert_eq!(h.producer, p);
        assert_eq!(&c[HEADER_LEN..], &b[HEADER_LEN..]);
        assert_eq!(decode(&c).unwrap().1, compressible());
    }
}
