//! The offered load of `bench produce|e2e|failover`: K producer tasks, each
//! either open-loop at a fixed rate or closed-loop as fast as the producer
//! takes records, and the outcome of every record.
//!
//! Open loop: record *j* of a task has an intended send time, `start +
//! j / rate`, fixed before the run; it is enqueued at that time or, if the
//! producer was blocked, as soon as it can be, and its latency counts from
//! the intended time. A broker that stalls therefore shows the stall in
//! every record scheduled during it, not only in the one that waited
//! (no coordinated omission). Closed loop: the intended time is when the
//! task asked to enqueue the record.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::sync::mpsc;

use crate::producer::now_ms;
use crate::{Producer, Record};

/// What to offer.
#[derive(Clone)]
pub struct LoadSpec {
    pub topic: String,
    pub partitions: u32,
    pub producers: u32,
    /// Records per second over all tasks; `None`: closed loop.
    pub rate: Option<f64>,
    /// Records to offer in all (split evenly over the tasks).
    pub records: u64,
    /// Stop offering after this long, even if records remain.
    pub duration: Option<Duration>,
    /// Leave each record's partition to the producer instead of naming
    /// the partitions in turn.
    pub keyless: bool,
}

/// The answer for one record.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub partition: u32,
    /// When the record was meant to be sent.
    pub intended: Instant,
    /// When its acknowledgement (or failure) arrived.
    pub done: Instant,
    pub ok: bool,
}

/// Builds the value of a record from its intended send time (e2e writes
/// the time into the value).
pub type ValueFn = Arc<dyn Fn(u64, Instant) -> Bytes + Send + Sync>;

/// Sums of a load run.
pub struct LoadResult {
    /// Latency from intended send time to acknowledgement, microseconds.
    pub hist: Histogram<u64>,
    /// With a rate: from each record's intended send time until the
    /// producer took it (its `enqueue` returned), microseconds. This is the
    /// load generator's own lateness, and it is inside `hist`.
    pub send_delay: Histogram<u64>,
    pub acked: u64,
    pub errors: u64,
    /// Records offered (enqueued or refused at enqueue).
    pub offered: u64,
    /// From the start to the last answer.
    pub elapsed: Duration,
    /// First error seen, for the report.
    pub first_error: Option<String>,
}

impl LoadResult {
    fn empty() -> LoadResult {
        LoadResult {
            hist: histogram(),
            send_delay: histogram(),
            acked: 0,
            errors: 0,
            offered: 0,
            elapsed: Duration::ZERO,
            first_error: None,
        }
    }
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds")
}

/// Runs the load. Every outcome goes to `outcomes` as well when given
/// (failover and e2e want more than the sums).
pub async fn run(
    producer: Producer,
    spec: LoadSpec,
    value: ValueFn,
    outcomes: Option<mpsc::UnboundedSender<Outcome>>,
    progress: ProgressBar,
) -> anyhow::Result<LoadResult> {
    let start = Instant::now();
    let k = spec.producers.max(1) as u64;
    let offered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..k {
        let n = spec.records / k + u64::from(task < spec.records % k);
        let rate = spec.rate.map(|r| r / k as f64);
        let (producer, spec, value, outcomes, progress, offered) =
            (producer.clone(), spec.clone(), value.clone(), outcomes.clone(), progress.clone(), offered.clone());
        tasks.push(tokio::spawn(async move {
            one_task(producer, spec, task, n, rate, start, value, outcomes, progress, offered).await
        }));
    }
    let mut out = LoadResult::empty();
    let mut last = start;
    for t in tasks {
        let r = t.await??;
        out.hist.add(&r.hist)?;
        out.send_delay.add(&r.send_delay)?;
        out.acked += r.acked;
        out.errors += r.errors;
        out.first_error = out.first_error.or(r.first_error);
        last = last.max(start + r.elapsed);
    }
    out.offered = offered.load(Ordering::Relaxed);
    out.elapsed = last - start;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn one_task(
    producer: Producer,
    spec: LoadSpec,
    task: u64,
    n: u64,
    rate: Option<f64>,
    start: Instant,
    value: ValueFn,
    outcomes: Option<mpsc::UnboundedSender<Outcome>>,
    progress: ProgressBar,
    offered: Arc<AtomicU64>,
) -> anyhow::Result<LoadResult> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, crate::SendHandle)>();
    let bar = progress.clone();
    // The collector waits for answers in whatever order they come, so a
    // slow partition does not delay the timing of a fast one.
    let collector = tokio::spawn(async move {
        let mut r = LoadResult::empty();
        let mut pending = FuturesUnordered::new();
        let mut open = true;
        let mut last = start;
        while open || !pending.is_empty() {
            tokio::select! {
                biased;
                Some((partition, intended, res)) = pending.next(), if !pending.is_empty() => {
                    let done = Instant::now();
                    last = done;
                    let ok = match res {
                        Ok(_) => {
                            r.acked += 1;
                            let _ = r.hist.record(done.saturating_duration_since(intended).as_micros().max(1) as u64);
                            true
                        }
                        Err(e) => {
                            r.errors += 1;
                            r.first_error.get_or_insert_with(|| format!("{e}"));
                            false
                        }
                    };
                    bar.inc(1);
                    if let Some(o) = &outcomes {
                        let _ = o.send(Outcome { partition, intended, done, ok });
                    }
                }
                m = rx.recv(), if open => match m {
                    Some((intended, handle)) => {
                        let partition = handle.partition();
                        pending.push(async move { (partition, intended, handle.ack().await) });
                    }
                    None => open = false,
                },
            }
        }
        r.elapsed = last - start;
        r
    });
    let partitions = spec.partitions.max(1);
    let deadline = spec.duration.map(|d| start + d);
    let mut refused = 0u64;
    let mut first_refusal = None;
    let mut j = 0u64;
    let mut send_delay = histogram();
    // The instant the last pacing wait was for: the next is at least a
    // step after it, not after the (later) moment the task woke, so the
    // lateness of one wake is not carried into every wake after it.
    let mut woke_for: Option<Instant> = None;
    let pacer = Pacer::new();
    // The run ends with the first record intended at or after the deadline,
    // never with the clock: a task that wakes late still offers every record
    // due before the deadline, timed from when it was due.
    'offer: while j < n {
        let now = Instant::now();
        // Records due by now (open loop), or the next one (closed loop).
        let due = match rate {
            Some(r) => (((now - start).as_secs_f64() * r) as u64 + 1).min(n),
            None => j + 1,
        };
        while j < due {
            let intended = match rate {
                Some(r) => start + Duration::from_secs_f64(j as f64 / r),
                // Closed loop: one record per pass, offered now.
                None => now,
            };
            if deadline.is_some_and(|d| intended >= d) {
                break 'offer;
            }
            // Round-robin over partitions, staggered per task, unless the
            // producer picks.
            let partition = (!spec.keyless).then_some(((j + task) % partitions as u64) as u32);
            let rec = Record::new(None, value(j, intended), now_ms());
            offered.fetch_add(1, Ordering::Relaxed);
            match producer.enqueue(&spec.topic, partition, rec).await {
                Ok(handle) => {
                    if rate.is_some() {
                        let _ =
                            send_delay.record(Instant::now().saturating_duration_since(intended).as_micros() as u64);
                    }
                    let _ = tx.send((intended, handle));
                }
                Err(e) => {
                    refused += 1;
                    first_refusal.get_or_insert_with(|| format!("{e}"));
                    progress.inc(1);
                }
            }
            j += 1;
        }
        if let Some(r) = rate
            && j < n
        {
            let next = start + Duration::from_secs_f64(j as f64 / r);
            let at = woke_for.map_or(next, |w| next.max(w + PACING_STEP));
            woke_for = Some(at);
            pacer.sleep_until(at).await;
        }
    }
    drop(tx);
    let mut r = collector.await?;
    r.send_delay = send_delay;
    r.errors += refused;
    r.first_error = r.first_error.or(first_refusal);
    Ok(r)
}

/// Waits for a load task's pacing instants. On Linux the task has a timer
/// file descriptor of its own, watched by the runtime's reactor, so the
/// worker that runs the task wakes at the instant with no other thread in
/// between. The SDK's clock thread (elsewhere, or if the descriptor cannot
/// be had) costs a second wake-up per instant: at 10,000 records/s it took
/// 11,000 context switches and 0.14 of a core a second from the machine
/// the brokers run on.
struct Pacer {
    #[cfg(target_os = "linux")]
    timer: Option<tokio::io::unix::AsyncFd<timer::Timer>>,
}

impl Pacer {
    fn new() -> Pacer {
        Pacer {
            #[cfg(target_os = "linux")]
            timer: timer::Timer::new().ok().and_then(|t| {
                // SAFETY: a Timer owns its timerfd from creation to drop,
                // and `as_raw_fd` always gives that one descriptor.
                unsafe { tokio::io::unix::AsyncFd::register_with_interest(t, tokio::io::Interest::READABLE) }.ok()
            }),
        }
    }

    async fn sleep_until(&self, at: Instant) {
        let now = Instant::now();
        if at <= now {
            return;
        }
        #[cfg(target_os = "linux")]
        if let Some(t) = &self.timer
            && t.get_ref().arm(at - now).is_ok()
            && t.async_io(tokio::io::Interest::READABLE, |t| t.expired()).await.is_ok()
        {
            return;
        }
        crate::clock::sleep_until(at.into()).await;
    }
}

#[cfg(target_os = "linux")]
mod timer {
    use std::io;
    use std::os::fd::{AsFd, AsRawFd, RawFd};
    use std::time::Duration;

    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

    /// A one-shot monotonic timerfd that never blocks.
    pub struct Timer(TimerFd);

    impl Timer {
        pub fn new() -> io::Result<Timer> {
            let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
            Ok(Timer(TimerFd::new(ClockId::CLOCK_MONOTONIC, flags)?))
        }

        /// Fires once, `after` from now.
        pub fn arm(&self, after: Duration) -> io::Result<()> {
            let after = after.max(Duration::from_nanos(1)); // zero disarms
            Ok(self.0.set(Expiration::OneShot(TimeSpec::from_duration(after)), TimerSetTimeFlags::empty())?)
        }

        /// Ok once it fired; `WouldBlock` before.
        pub fn expired(&self) -> io::Result<()> {
            Ok(self.0.wait()?)
        }
    }

    impl AsRawFd for Timer {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_fd().as_raw_fd()
        }
    }
}

/// The shortest step of a load task's pacing. Up to 5,000 records/s per
/// task the task wakes for each record at its intended instant; above, it
/// wakes every step and offers the records due, so a record goes at most
/// this much late while the wakes stay at 5,000/s per task, CPU the
/// brokers it measures would otherwise lose.
const PACING_STEP: Duration = Duration::from_micros(200);

#[cfg(test)]
mod tests {
    use super::*;

    /// Each wait ends at or after its instant, whatever the order of the
    /// instants and whether one is already past; on Linux by the task's
    /// own timer.
    #[tokio::test]
    async fn the_pacer_ends_each_wait_at_or_after_its_instant() {
        let pacer = Pacer::new();
        #[cfg(target_os = "linux")]
        assert!(pacer.timer.is_some(), "a timerfd for the pacer");
        for offset_us in [300u64, 100, 2_000, 0, 50, 700] {
            let at = Instant::now() + Duration::from_micros(offset_us);
            pacer.sleep_until(at).await;
            assert!(Instant::now() >= at, "woke before the instant {offset_us} µs on");
        }
        // An instant already past: no wait, and the timer still serves.
        pacer.sleep_until(Instant::now() - Duration::from_millis(5)).await;
        let at = Instant::now() + Duration::from_micros(200);
        pacer.sleep_until(at).await;
        assert!(Instant::now() >= at);
    }
}
