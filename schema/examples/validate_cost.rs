//! What validating one record costs, per format, in this process (no
//! cluster): the same ~200-byte user event validated again and again
//! against a compiled schema, as a partition leader does for every record
//! of a schema-bound topic.
//!
//! ```text
//! cargo run --release -p replog-schema --example validate_cost [ROUNDS]
//! ```

use std::time::Instant;

use replog_schema::{Format, Schema};

const JSON: &str = r#"{"type":"object","properties":{"id":{"type":"integer","minimum":0},"user":{"type":"string","maxLength":64},"action":{"enum":["view","cart","checkout","refund"]},"amount":{"type":"number","minimum":0},"pad":{"type":"string"}},"required":["id","user","action","amount"],"additionalProperties":false}"#;
const AVRO: &str = r#"{"type":"record","name":"E","fields":[{"name":"id","type":"long"},{"name":"user","type":"string"},{"name":"action","type":{"type":"enum","name":"A","symbols":["view","cart","checkout","refund"]}},{"name":"amount","type":"double"},{"name":"pad","type":"string"}]}"#;
const PROTO: &str = "syntax = \"proto3\"; message E { uint64 id = 1; string user = 2; string action = 3; double amount = 4; string pad = 5; }";
const EVENT: &str = r#"{"id":123456789,"user":"user-4242","action":"checkout","amount":125.5,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;
const PROTO_EVENT: &str = r#"{"id":"123456789","user":"user-4242","action":"checkout","amount":125.5,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;

fn main() -> Result<(), String> {
    let rounds: u32 = std::env::args().nth(1).map_or(Ok(200_000), |n| n.parse()).map_err(|e| format!("{e}"))?;
    for (format, text, event) in
        [(Format::Json, JSON, EVENT), (Format::Avro, AVRO, EVENT), (Format::Protobuf, PROTO, PROTO_EVENT)]
    {
        let s = Schema::parse(format, text).map_err(|e| e.to_string())?;
        let body = s.encode_json_text(event)?;
        s.validate(&body)?;
        let t0 = Instant::now();
        for _ in 0..rounds {
            s.validate(std::hint::black_box(&body))?;
        }
        let ns = t0.elapsed().as_nanos() as f64 / f64::from(rounds);
        println!(
            "{{\"format\":\"{format}\",\"payload_bytes\":{},\"ns_per_record\":{:.0},\"records_per_sec_per_core\":{:.0}}}",
            body.len(),
            ns,
            1e9 / ns
        );
    }
    Ok(())
}
