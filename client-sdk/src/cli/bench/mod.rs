//! `replog bench produce|consume|e2e|failover`: throughput and latency
//! against a live cluster, ending with one JSON line whatever `--output`
//! says (records, seconds, records_per_sec, mb_per_sec, p50_ms, p99_ms,
//! p999_ms, max_ms, and per mode more). A progress bar goes to standard
//! error when it is a terminal.
//!
//! `produce`, `e2e` and `failover` offer load the same way ([`load`]):
//! with `--rate R` at a fixed R records/s, latency counted from each
//! record's intended send time (no coordinated omission), and `produce`
//! also reports the load generator's own lateness inside that latency
//! (`send_delay_p50_ms`, `send_delay_p99_ms`, `send_delay_max_ms`: from
//! the intended time until the producer took the record); without it as
//! fast as the producer takes records. `--duration S` bounds the offer in
//! time (with `--rate`, R × S records). `produce` takes `--max-in-flight W`
//! (batches per partition), `--linger-ms`, `--compression` and `--payload`.
//! `e2e` times each record from its intended send time until a Subscribe
//! stream hands it to the consumer. `failover` runs a fault command
//! against the leader of partition 0 part-way through (SIGKILL or
//! isolation) and reports, per partition that node led, how long after the
//! fault writes were acknowledged again ([`failover`]).
//!
//! `bench consume` reads with one plain partition reader per partition by
//! default; `--group G` reads as one member of consumer group G instead
//! (joining, committing as it goes), and `--subscribe` with one Subscribe
//! stream per partition — the same data, so the modes compare directly.
//!
//! `--payload json` sends JSON events framed with the id of the bench's
//! JSON Schema (subject `bench-event`, registered on first use); with
//! `--validate` the topic is bound to that subject, so the brokers decode
//! and validate every record. The same records with and without
//! `--validate` measure what validation costs.

mod e2e;
mod failover;
mod load;

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::json;

use crate::{
    Acks, AutoOffsetReset, Client, Compression, FetchOptions, GroupConsumer, GroupConsumerConfig, PartitionInfo,
    PartitionReader, Producer, ProducerConfig,
};

/// `bench consume --group` stops when no record came for this long.
const GROUP_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    All,
    None,
}

impl From<AcksArg> for Acks {
    fn from(a: AcksArg) -> Acks {
        match a {
            AcksArg::All => Acks::All,
            AcksArg::None => Acks::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    None,
    Lz4,
    Zstd,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Compression {
        match c {
            CompressionArg::None => Compression::None,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// How a load run spreads records over partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Partitioner {
    /// Each record names its partition, the partitions in turn: every
    /// partition gets the same count at the same pace (what `failover`
    /// needs, since it times each partition).
    Spread,
    /// Records carry no key and name no partition, so the producer picks
    /// (sticky partitioning), as for an application's keyless events.
    Keyless,
}

/// What record values hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Payload {
    /// One byte repeated: the best case for compression.
    Fill,
    /// Log-like lines (words, numbers, ids), different in every record:
    /// compresses about as application events do.
    Text,
    /// Random bytes: compression finds nothing.
    Random,
    /// JSON events (id, user, action, amount, padding) with the 5-byte
    /// schema prefix of subject `bench-event`.
    Json,
}

/// The subject of `--payload json`.
pub const BENCH_SUBJECT: &str = "bench-event";
/// The JSON Schema of `--payload json` values.
const BENCH_SCHEMA: &str = r#"{"type":"object","properties":{"id":{"type":"integer","minimum":0},"user":{"type":"string","maxLength":64},"action":{"enum":["view","cart","checkout","refund"]},"amount":{"type":"number","minimum":0},"pad":{"type":"string"}},"required":["id","user","action","amount"],"additionalProperties":false}"#;

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Produce records; latency until each is acknowledged.
    Produce(BenchArgs),
    /// Read what a produce run wrote.
    Consume(BenchArgs),
    /// Produce and consume at once; latency from each record's intended
    /// send time until a consumer has it.
    E2e(BenchArgs),
    /// Produce under a leader fault; how long each partition of the
    /// faulted leader took to acknowledge writes again.
    Failover(failover::FailoverArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Topic to use; created (or reused) if absent. Default: bench-<size>-<partitions>.
    #[arg(long)]
    pub topic: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    #[arg(long, default_value_t = 6)]
    pub partitions: u32,
    #[arg(long, default_value_t = 3)]
    pub replication_factor: u32,
    /// Concurrent producer tasks.
    #[arg(long, default_value_t = 4)]
    pub producers: u32,
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    pub acks: AcksArg,
    /// consume: as one member of this consumer group (use a new name per
    /// run: a group starts at its committed offsets, else at the earliest).
    #[arg(long)]
    pub group: Option<String>,
    /// consume: with one Subscribe stream per partition.
    #[arg(long, conflicts_with = "group")]
    pub subscribe: bool,
    /// Batches in flight per partition (1-5 with acks=all; acks=none sends one at a time).
    #[arg(long, default_value_t = crate::producer::MAX_IN_FLIGHT_IDEMPOTENT)]
    pub max_in_flight: usize,
    /// Codec for each batch's records.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
    /// What the record values hold.
    #[arg(long, value_enum, default_value_t = Payload::Fill)]
    pub payload: Payload,
    /// Offered load in records/s over all producers (open loop: latency
    /// from each record's intended send time). Without it, closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds to offer load for; with --rate, rate × duration records
    /// (instead of --records).
    #[arg(long)]
    pub duration: Option<f64>,
    /// How records are spread over partitions.
    #[arg(long, value_enum, default_value_t = Partitioner::Spread)]
    pub partitioner: Partitioner,
    /// How long a partition's batch waits for more records (ms).
    #[arg(long, default_value_t = crate::producer::DEFAULT_LINGER.as_millis() as u64)]
    pub linger_ms: u64,
    /// With `--partitioner keyless`: KiB of records that go to one
    /// partition before the next takes over.
    #[arg(long, default_value_t = crate::producer::DEFAULT_STICKY_BYTES as u64 >> 10)]
    pub sticky_kib: u64,
    /// produce: bind a new topic to the `--payload json` subject, so every
    /// record is validated by the brokers.
    #[arg(long, requires = "payload")]
    pub validate: bool,
}

/// Record values of `size` bytes for `payload`, drawn from a fixed seed.
fn values(payload: Payload, size: usize, count: usize) -> Vec<Bytes> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    const WORDS: &[&str] = &[
        "GET",
        "POST",
        "user",
        "order",
        "cart",
        "checkout",
        "item",
        "status",
        "ok",
        "error",
        "timeout",
        "region",
        "eu-west",
        "us-east",
        "session",
        "latency_ms",
        "bytes",
        "retry",
        "cache",
        "hit",
        "miss",
        "payment",
    ];
    (0..count)
        .map(|_| {
            let v: Vec<u8> = match payload {
                Payload::Fill => vec![b'x'; size],
                Payload::Random => (0..size).map(|_| rng.r#gen()).collect(),
                Payload::Json => {
                    let actions = ["view", "cart", "checkout", "refund"];
                    let mut v = json!({
                        "id": rng.gen_range(0..1_000_000_000u64),
                        "user": format!("user-{}", rng.gen_range(0..100_000)),
                        "action": actions[rng.gen_range(0..actions.len())],
                        "amount": rng.gen_range(0..100_000) as f64 / 100.0,
                    });
                    let len = v.to_string().len() + r#","pad":"""#.len();
                    v["pad"] = json!("x".repeat(size.saturating_sub(len + 5)));
                    v.to_string().into_bytes()
                }
                Payload::Text => {
                    let mut s = String::with_capacity(size + 32);
                    while s.len() < size {
                        match rng.gen_range(0..4) {
                            0 => s.push_str(&format!(
                                "{}={} ",
                                WORDS[rng.gen_range(0..WORDS.len())],
                                rng.gen_range(0..100_000)
                            )),
                            1 => s.push_str(&format!("id={:016x} ", rng.r#gen::<u64>())),
                            _ => {
                                s.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
                                s.push(' ');
                            }
                        }
                    }
                    s.truncate(size);
                    s.into_bytes()
                }
            };
            Bytes::from(v)
        })
        .collect()
}

pub async fn run(client: Client, cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Produce(a) => produce(client, a).await,
        BenchCmd::Consume(a) => consume(client, a).await,
        BenchCmd::E2e(a) => e2e::run(client, a).await,
        BenchCmd::Failover(a) => failover::run(client, a).await,
    }
}

async fn ensure_topic(client: &Client, a: &BenchArgs) -> anyhow::Result<String> {
    let name = a.topic.clone().unwrap_or_else(|| format!("bench-{}-{}", a.record_size, a.partitions));
    if client.describe_topic(&name).await.is_err() {
        let bind: &[(&str, &str)] = if a.validate { &[("schema.subject", BENCH_SUBJECT)] } else { &[] };
        client.create_topic_with(&name, a.partitions, a.replication_factor, bind).await?;
    }
    Ok(name)
}

fn report(kind: &str, records: u64, bytes: u64, elapsed: Duration, h: &Histogram<u64>, extra: serde_json::Value) {
    let secs = elapsed.as_secs_f64();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut v = json!({
        "bench": kind,
        "records": records,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "records_per_sec": (records as f64 / secs).round(),
        "mb_per_sec": ((bytes as f64 / secs / 1e6) * 100.0).round() / 100.0,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": h.max() as f64 / 1000.0,
    });
    extend(&mut v, extra);
    println!("{v}");
}

impl BenchArgs {
    /// Checks the load flags against each other.
    fn check(&self) -> anyhow::Result<()> {
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0)
        {
            anyhow::bail!("--rate must be a positive number of records per second");
        }
        if let Some(d) = self.duration
            && !(d.is_finite() && d > 0.0)
        {
            anyhow::bail!("--duration must be a positive number of seconds");
        }
        if self.producers == 0 {
            anyhow::bail!("--producers must be at least 1");
        }
        Ok(())
    }

    fn producer_config(&self) -> anyhow::Result<ProducerConfig> {
        let cfg = ProducerConfig {
            acks: self.acks.into(),
            max_in_flight: self.max_in_flight,
            compression: self.compression.into(),
            linger: Duration::from_millis(self.linger_ms),
            sticky_bytes: (self.sticky_kib << 10) as usize,
            ..Default::default()
        };
        cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(cfg)
    }

    fn load_spec(&self, topic: &str) -> load::LoadSpec {
        let duration = self.duration.map(Duration::from_secs_f64);
        let records = match (self.rate, duration) {
            (Some(r), Some(d)) => (r * d.as_secs_f64()).round() as u64,
            _ => self.records,
        };
        load::LoadSpec {
            topic: topic.to_string(),
            partitions: self.partitions,
            producers: self.producers,
            rate: self.rate,
            records,
            duration,
            keyless: self.partitioner == Partitioner::Keyless,
        }
    }

    /// The settings every load mode reports.
    fn settings(&self, topic: &str) -> serde_json::Value {
        json!({"topic": topic, "record_size": self.record_size, "partitions": self.partitions,
               "replication_factor": self.replication_factor,
               "producers": self.producers, "acks": format!("{:?}", self.acks).to_lowercase(),
               "max_in_flight": self.max_in_flight, "linger_ms": self.linger_ms, "sticky_kib": self.sticky_kib,
               "compression": Compression::from(self.compression).name(),
               "payload": format!("{:?}", self.payload).to_lowercase(),
               "partitioner": format!("{:?}", self.partitioner).to_lowercase(),
               "rate": self.rate, "duration_s": self.duration,
               "latency_from": if self.rate.is_some() { "intended send time" } else { "enqueue" }})
    }
}

/// A progress bar of `len` records on standard error, drawn only when it
/// is a terminal.
fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
    ) {
        pb.set_style(style);
    }
    pb.set_prefix(what.to_string());
    pb
}

/// Merges `extra`'s fields into `v`.
fn extend(v: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
}

async fn produce(client: Client, a: BenchArgs) -> anyhow::Result<()> {
    a.check()?;
    anyhow::ensure!(!a.validate || a.payload == Payload::Json, "--validate takes --payload json");
    let mut pool = values(a.payload, a.record_size, 4096);
    if a.payload == Payload::Json {
        let id = client.register_schema(BENCH_SUBJECT, replog_schema::Format::Json, BENCH_SCHEMA).await?.id;
        for v in &mut pool {
            let mut framed = replog_schema::wire::prefix(id).to_vec();
            framed.extend_from_slice(v);
            *v = Bytes::from(framed);
        }
    }
    let topic = ensure_topic(&client, &a).await?;
    let producer = Producer::new(client.clone(), a.producer_config()?);
    // A pool of distinct values, reused round-robin.
    let pool = std::sync::Arc::new(pool);
    let value: load::ValueFn = std::sync::Arc::new(move |j, _| pool[(j as usize * 7) % pool.len()].clone());
    let spec = a.load_spec(&topic);
    let pb = progress(spec.records, "produce");
    let r = load::run(producer.clone(), spec.clone(), value, None, pb.clone()).await?;
    pb.finish_and_clear();
    let mut extra = a.settings(&topic);
    extend(
        &mut extra,
        json!({"validate": a.validate, "offered": r.offered, "errors": r.errors, "first_error": r.first_error,
               "batches_sent": producer.stats().batches_sent(), "batches_resent": producer.stats().batches_resent()}),
    );
    if a.rate.is_some() {
        let ms = |q: f64| r.send_delay.value_at_quantile(q) as f64 / 1000.0;
        extend(
            &mut extra,
            json!({"send_delay_p50_ms": ms(0.5), "send_delay_p99_ms": ms(0.99),
                   "send_delay_max_ms": r.send_delay.max() as f64 / 1000.0}),
        );
    }
    report("produce", r.acked, r.acked * a.record_size as u64, r.elapsed, &r.hist, extra);
    if r.errors > 0 {
        anyhow::bail!("{} records were not acknowledged", r.errors);
    }
    Ok(())
}

/// How many records of each partition a consume run reads: all of them
/// if the topic holds no more than `records` (a produce run's topic, spread
/// evenly or keyless), else an even share of `records` from each.
fn read_counts(partitions: &[PartitionInfo], records: u64) -> Vec<u64> {
    let held: Vec<u64> = partitions.iter().map(|p| p.high_watermark.saturating_sub(p.log_start_offset)).collect();
    if held.iter().sum::<u64>() <= records {
        return held;
    }
    let per = records.div_ceil(partitions.len().max(1) as u64);
    held.into_iter().map(|h| h.min(per)).collect()
}

async fn consume(client: Client, a: BenchArgs) -> anyhow::Result<()> {
    if let Some(group) = a.group.clone() {
        return consume_group(client, a, &group).await;
    }
    let topic = ensure_topic(&client, &a).await?;
    let info = client.describe_topic(&topic).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (p, n) in info.partitions.iter().zip(read_counts(&info.partitions, a.records)) {
        let end = p.log_start_offset + n;
        let mut reader = PartitionReader::new(client.clone(), &topic, p.partition, p.log_start_offset)
            .with_options(FetchOptions { max_wait_ms: 0, ..Default::default() });
        if a.subscribe {
            let mut sub = client.subscribe(&topic, p.partition, p.log_start_offset);
            tasks.push(tokio::spawn(async move {
                let mut h: Histogram<u64> = Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
                let (mut n, mut bytes) = (0u64, 0u64);
                while sub.position() < end {
                    let t0 = Instant::now();
                    let recs = sub.next().await?;
                    let _ = h.record(t0.elapsed().as_micros() as u64);
                    n += recs.len() as u64;
                    bytes += recs.iter().map(|r| r.value.len() as u64).sum::<u64>();
                }
                anyhow::Ok((h, n, bytes))
            }));
            continue;
        }
        tasks.push(tokio::spawn(async move {
            let mut h: Histogram<u64> = Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
            let (mut n, mut bytes) = (0u64, 0u64);
            while reader.position() < end {
                let t0 = Instant::now();
                let recs = reader.poll().await?;
                let _ = h.record(t0.elapsed().as_micros() as u64);
                n += recs.len() as u64;
                bytes += recs.iter().map(|r| r.value.len() as u64).sum::<u64>();
            }
            anyhow::Ok((h, n, bytes))
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut n, mut bytes) = (0, 0);
    for t in tasks {
        let (h, c, b) = t.await??;
        hist.add(h)?;
        n += c;
        bytes += b;
    }
    let mode = if a.subscribe { "subscribe" } else { "partition-reader" };
    let latency = if a.subscribe { "per response" } else { "per fetch" };
    report("consume", n, bytes, start.elapsed(), &hist, json!({"topic": topic, "mode": mode, "latency": latency}));
    Ok(())
}

/// `bench consume --group G`: one group member reads what the plain
/// readers would (up to `--records`), timed from before it joins.
async fn consume_group(client: Client, a: BenchArgs, group: &str) -> anyhow::Result<()> {
    let topic = ensure_topic(&client, &a).await?;
    let info = client.describe_topic(&topic).await?;
    let want: u64 = read_counts(&info.partitions, a.records).iter().sum::<u64>().min(a.records);
    let cfg = GroupConsumerConfig { auto_offset_reset: AutoOffsetReset::Earliest, ..Default::default() };
    let start = Instant::now();
    let mut consumer = GroupConsumer::new(client, group, cfg);
    consumer.subscribe(&[&topic]).await?;
    let joined_ms = start.elapsed().as_millis() as u64;
    let mut h: Histogram<u64> = Histogram::new_with_bounds(1, 600_000_000, 3)?;
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut last = Instant::now();
    while n < want && last.elapsed() < GROUP_IDLE {
        let t0 = Instant::now();
        let recs = consumer.poll().await?;
        let _ = h.record(t0.elapsed().as_micros() as u64);
        if !recs.is_empty() {
            last = Instant::now();
        }
        n += recs.len() as u64;
        bytes += recs.iter().map(|r| r.value.len() as u64).sum::<u64>();
    }
    let elapsed = start.elapsed();
    consumer.close().await?;
    report(
        "consume",
        n,
        bytes,
        elapsed,
        &h,
        json!({"topic": topic, "mode": "group", "group": group, "join_ms": joined_ms, "latency": "per poll"}),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(counts: &[u64]) -> Vec<PartitionInfo> {
        let p = |(i, &n): (usize, &u64)| PartitionInfo {
            partition: i as u32,
            leader: Some(1),
            replicas: vec![1],
            log_start_offset: 10,
            high_watermark: 10 + n,
        };
        counts.iter().enumerate().map(p).collect()
    }

    #[test]
    fn a_consume_run_reads_all_of_a_topic_within_its_count_else_an_even_share_of_each_partition() {
        // Keyless records: uneven partitions, the whole topic is the run.
        assert_eq!(read_counts(&held(&[400, 0, 350, 250]), 1_000), vec![400, 0, 350, 250]);
        // More than the run wrote: at most a quarter of the count from each.
        assert_eq!(read_counts(&held(&[400, 100, 350, 300]), 1_000), vec![250, 100, 250, 250]);
    }
}
