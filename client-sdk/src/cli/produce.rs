//! `replog produce TOPIC [--key K] [--partition P] [--acks all|none]
//! [--compression none|lz4|zstd] [--header NAME=VALUE]...`: one record per
//! stdin line. With `--output json`, one line per acknowledged
//! record: `{"line":N,"partition":P,"offset":O}`, where O is null with
//! `--acks none` (no offset exists when the broker answers).
//!
//! On a topic bound to a schema subject (`schema.subject`) each line is a
//! value written as JSON text and is sent under the subject's latest
//! version, with its 5-byte prefix: JSON as it is, Avro and Protobuf
//! encoded through the schema (Protobuf: the file's first message, in its
//! JSON mapping). The broker refuses what does not validate.

use bytes::Bytes;
use clap::Args;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::Output;
use crate::producer::now_ms;
use crate::{Ack, Client, Producer, ProducerConfig, Record};

#[derive(Debug, Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// Key for every record (records with one key go to one partition).
    #[arg(long)]
    pub key: Option<String>,
    /// Send every record to this partition instead of choosing by key.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Wait for a majority (all) or not at all (none).
    #[arg(long, value_enum, default_value_t = super::bench::AcksArg::All)]
    pub acks: super::bench::AcksArg,
    /// Codec for each batch's records.
    #[arg(long, value_enum, default_value_t = super::bench::CompressionArg::None)]
    pub compression: super::bench::CompressionArg,
    /// A header on every record, NAME=VALUE; repeat for more.
    #[arg(long = "header", value_parser = parse_header)]
    pub headers: Vec<(String, Bytes)>,
}

fn parse_header(s: &str) -> Result<(String, Bytes), String> {
    let (name, value) = s.split_once('=').ok_or_else(|| format!("header {s:?} is not NAME=VALUE"))?;
    Ok((name.to_string(), Bytes::copy_from_slice(value.as_bytes())))
}

pub async fn run(client: Client, args: ProduceArgs, out: Output) -> anyhow::Result<()> {
    let cfg = ProducerConfig { acks: args.acks.into(), compression: args.compression.into(), ..Default::default() };
    let schema = match client.describe_topic(&args.topic).await {
        Ok(t) => match t.configs.get("schema.subject") {
            Some(subject) => {
                let info = client.schema_version(subject, None).await?;
                Some((info.id, crate::schema::compile(info.format, &info.schema)?))
            }
            None => None,
        },
        // The producer reports a missing topic with its code.
        Err(_) => None,
    };
    let producer = Producer::new(client, cfg);
    let key = args.key.map(Bytes::from);
    // Handles are awaited in input order by a printer task while reading
    // goes on, so a long input streams through with bounded memory.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, crate::producer::SendHandle)>(100_000);
    let printer = tokio::spawn(async move {
        let (mut ok, mut failed) = (0u64, 0u64);
        while let Some((line, h)) = rx.recv().await {
            match h.ack().await {
                Ok(ack) => {
                    ok += 1;
                    if out == Output::Json {
                        // acks=none: the broker answered before the record had
                        // an offset, so it is null rather than made up.
                        println!("{}", ack_json(line, &ack));
                    }
                }
                Err(e) => {
                    failed += 1;
                    // A user re-sending failed lines must know which ones may
                    // be in the topic already.
                    if e.is_indeterminate() {
                        eprintln!("line {line}: not acknowledged, may have been written: {e}");
                    } else {
                        eprintln!("line {line}: not acknowledged: {e}");
                    }
                }
            }
        }
        (ok, failed)
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut n = 0usize;
    let mut unsent = 0u64;
    while let Some(line) = lines.next_line().await? {
        n += 1;
        let value = match &schema {
            None => Bytes::from(line),
            Some((id, s)) => match s.encode_json_text(&line) {
                Ok(body) => {
                    let mut v = replog_schema::wire::prefix(*id).to_vec();
                    v.extend_from_slice(&body);
                    Bytes::from(v)
                }
                Err(e) => {
                    eprintln!("line {n}: not sent: {}: {e}", crate::ErrorCode::InvalidRecord);
                    unsent += 1;
                    continue;
                }
            },
        };
        let mut rec = Record::new(key.clone(), value, now_ms());
        rec.headers.clone_from(&args.headers);
        let h = producer.enqueue(&args.topic, args.partition, rec).await?;
        if tx.send((n, h)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let (ok, failed) = printer.await?;
    let failed = failed + unsent;
    if out == Output::Text {
        eprintln!("{ok} records acknowledged");
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {n} records were not acknowledged");
    }
    Ok(())
}

/// The `--output json` line for one acknowledged input line.
fn ack_json(line: usize, ack: &Ack) -> serde_json::Value {
    json!({"line": line, "partition": ack.partition, "offset": ack.offset})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_an_ack_without_offset_when_printed_as_json_then_offset_is_null() {
        let none = ack_json(7, &Ack { partition: 2, offset: None });
        assert_eq!(none, json!({"line": 7, "partition": 2, "offset": null}));
        assert!(none["offset"].is_null(), "the key is there, with null");
        let all = ack_json(1, &Ack { partition: 0, offset: Some(41) });
        assert_eq!(all, json!({"line": 1, "partition": 0, "offset": 41}));
    }
}
