//! `bench e2e`: records produced at a fixed rate (or as fast as possible)
//! while one Subscribe stream per partition reads them; each record's
//! latency runs from its intended send time, written into its first 8
//! bytes (microseconds since the run's start), until its consumer has it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::watch;

use super::{BenchArgs, ensure_topic, extend, load, progress, report, values};
use crate::{Client, Producer};

/// Consumers stop this long after the producers did if records are missing.
const DRAIN: Duration = Duration::from_secs(15);

pub async fn run(client: Client, a: BenchArgs) -> anyhow::Result<()> {
    a.check()?;
    if a.record_size < 8 {
        anyhow::bail!("bench e2e needs --record-size of at least 8 (the send time is in the value)");
    }
    let topic = ensure_topic(&client, &a).await?;
    let info = client.describe_topic(&topic).await?;
    let producer = Producer::new(client.clone(), a.producer_config()?);
    let pool = Arc::new(values(a.payload, a.record_size - 8, 4096));
    let start = Instant::now();
    let value: load::ValueFn = Arc::new(move |j, intended: Instant| {
        let rest = &pool[(j as usize * 7) % pool.len()];
        let mut v = BytesMut::with_capacity(8 + rest.len());
        v.put_u64_le(intended.saturating_duration_since(start).as_micros() as u64);
        v.put_slice(rest);
        v.freeze()
    });
    // Per partition, how many records the consumers must see; set once
    // the producers are done.
    let (targets_tx, targets_rx) = watch::channel::<Option<Vec<u64>>>(None);
    let mut consumers = Vec::new();
    for p in &info.partitions {
        let sub = client.subscribe(&topic, p.partition, p.high_watermark);
        let mut targets = targets_rx.clone();
        let partition = p.partition as usize;
        consumers.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(sub.into_stream());
            let mut h = load::histogram();
            let mut n = 0u64;
            let mut drain_until: Option<tokio::time::Instant> = None;
            loop {
                if let Some(t) = targets.borrow().as_ref() {
                    if n >= t[partition] {
                        break;
                    }
                    drain_until.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN);
                }
                let far = tokio::time::Instant::now() + Duration::from_secs(3600);
                tokio::select! {
                    m = stream.next() => {
                        let recs = match m {
                            Some(r) => r?,
                            None => break,
                        };
                        let now = start.elapsed().as_micros() as u64;
                        for r in recs {
                            if r.value.len() >= 8 {
                                let sent = u64::from_le_bytes(r.value[..8].try_into().expect("8 bytes"));
                                let _ = h.record(now.saturating_sub(sent).max(1));
                            }
                            n += 1;
                        }
                    }
                    _ = targets.changed() => {}
                    _ = tokio::time::sleep_until(drain_until.unwrap_or(far)) => break,
                }
            }
            anyhow::Ok((h, n))
        }));
    }
    let spec = a.load_spec(&topic);
    let pb = progress(spec.records, "e2e");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let load = tokio::spawn(load::run(producer, spec, value, Some(tx), pb.clone()));
    let mut acked = vec![0u64; info.partitions.len()];
    while let Some(o) = rx.recv().await {
        if o.ok {
            acked[o.partition as usize] += 1;
        }
    }
    let r = load.await??;
    let _ = targets_tx.send(Some(acked.clone()));
    let mut hist = load::histogram();
    let mut consumed = 0u64;
    for c in consumers {
        let (h, n) = c.await??;
        hist.add(&h)?;
        consumed += n;
    }
    pb.finish_and_clear();
    let elapsed = start.elapsed();
    let mut extra = a.settings(&topic);
    extend(
        &mut extra,
        json!({"produced": r.acked, "offered": r.offered, "errors": r.errors, "first_error": r.first_error,
               "consumed": consumed, "latency": "intended send time to consumer",
               "produce_p50_ms": r.hist.value_at_quantile(0.5) as f64 / 1000.0,
               "produce_p99_ms": r.hist.value_at_quantile(0.99) as f64 / 1000.0}),
    );
    report("e2e", consumed, consumed * a.record_size as u64, elapsed, &hist, extra);
    if r.errors > 0 {
        anyhow::bail!("{} records were not acknowledged", r.errors);
    }
    if consumed < r.acked {
        anyhow::bail!("{} acknowledged records were not consumed within {DRAIN:?}", r.acked - consumed);
    }
    Ok(())
}
