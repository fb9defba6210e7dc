//! What converting Kafka batches at the edge costs (docs/kafka.md,
//! "Storage"), in this process (no cluster): a produced Kafka RecordBatch
//! v2 of 1,000 records of ~200 bytes with a key and two headers becomes a
//! replog batch (decoded, CRC checked, re-encoded; per codec), and a stored
//! replog batch goes back out as a Kafka batch for a fetch. Both run on the
//! partition leader for every Kafka produce and fetch.
//!
//! ```text
//! cargo run --release -p replog-node --example kafka_convert_cost [ROUNDS]
//! ```

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};
use replog_node::kafka::records::{plain_record, to_kafka, to_replog};

const RECORDS: usize = 1_000;
const VALUE_BYTES: usize = 200;

fn kafka_batch(compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..RECORDS)
        .map(|i| {
            let mut headers = IndexMap::new();
            headers.insert(StrBytes::from_static_str("trace"), Some(Bytes::from(format!("t-{i:08}"))));
            headers.insert(StrBytes::from_static_str("source"), Some(Bytes::from_static(b"bench")));
            let mut value = format!("{{\"id\":{i},\"pad\":\"").into_bytes();
            value.resize(VALUE_BYTES - 2, b'x');
            value.extend_from_slice(b"\"}");
            plain_record(
                i as i64,
                1_700_000_000_000 + i as i64,
                Some(Bytes::from(format!("key-{i}"))),
                Some(Bytes::from(value)),
                headers,
            )
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(&mut out, &records, &RecordEncodeOptions { version: 2, compression }).expect("encode");
    out.freeze()
}

fn main() -> Result<(), String> {
    let rounds: u32 = std::env::args().nth(1).map_or(Ok(200), |n| n.parse()).map_err(|e| format!("{e}"))?;
    for (name, c) in [("none", Compression::None), ("gzip", Compression::Gzip), ("zstd", Compression::Zstd)] {
        let kafka = kafka_batch(c);
        let stored = to_replog(&kafka, 64 << 20).map_err(|e| e.message)?;
        let t0 = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(to_replog(std::hint::black_box(&kafka), 64 << 20).map_err(|e| e.message)?);
        }
        let produce_ns = t0.elapsed().as_nanos() as f64 / f64::from(rounds) / RECORDS as f64;
        let t0 = Instant::now();
        let mut out = BytesMut::new();
        for _ in 0..rounds {
            out.clear();
            to_kafka(0, std::hint::black_box(&stored), 64 << 20, &mut out).map_err(|e| e.to_string())?;
        }
        let fetch_ns = t0.elapsed().as_nanos() as f64 / f64::from(rounds) / RECORDS as f64;
        println!(
            "{{\"codec\":\"{name}\",\"kafka_batch_bytes\":{},\"stored_batch_bytes\":{},\"produce_ns_per_record\":{produce_ns:.0},\"fetch_ns_per_record\":{fetch_ns:.0}}}",
            kafka.len(),
            stored.len(),
        );
    }
    Ok(())
}
