//! Waits that end within tens of microseconds of their instant.
//!
//! tokio's timer fires a deadline only at its next millisecond tick, so a
//! wait of 2 ms lasts 2–3 ms. A producer's linger is such a wait, and the
//! extra millisecond is latency its first record pays; the bench's open
//! loop pacing records at their intended instants is another (on Linux
//! the bench paces on a timerfd of each load task's own instead, which
//! saves this thread's wake-up per instant). Here one
//! thread per process keeps the instants asked for in a heap and sleeps
//! until the earliest (the OS's timed wait: tens of microseconds late, not
//! a millisecond), then wakes its waiter.
//!
//! A wait costs the clock thread a wake when it is asked for and one when
//! it ends, so callers ask once per batch or per pacing step, not per
//! record. Every wait also arms tokio's timer a millisecond past the
//! instant: it ends the wait if the clock thread cannot, and it is what a
//! runtime with a paused clock (tests) advances to.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

type Ask = (Instant, oneshot::Sender<()>);

/// Waits until `at` (tokio's instant, so that a paused clock advances it):
/// on time to within the OS's timer slack when the runtime's clock is
/// real, at most a millisecond after `at` in any case.
pub(crate) async fn sleep_until(at: tokio::time::Instant) {
    wait(at, Duration::from_millis(1)).await;
}

/// What ended a wait.
#[derive(Debug, PartialEq)]
enum Woken {
    /// Nothing to wait for: the instant had come.
    Past,
    Clock,
    /// tokio's timer, `fallback` after the instant.
    Fallback,
}

async fn wait(at: tokio::time::Instant, fallback: Duration) -> Woken {
    if at <= tokio::time::Instant::now() {
        return Woken::Past;
    }
    let (wake, woken) = oneshot::channel();
    let coarse = tokio::time::sleep_until(at + fallback);
    if clock().send((at.into_std(), wake)).is_err() {
        coarse.await;
        return Woken::Fallback;
    }
    tokio::select! {
        biased;
        Ok(()) = woken => Woken::Clock,
        _ = coarse => Woken::Fallback,
    }
}

/// The process's clock thread, started on first use.
fn clock() -> &'static mpsc::Sender<Ask> {
    static CLOCK: OnceLock<mpsc::Sender<Ask>> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let (asks, rx) = mpsc::channel::<Ask>();
        // If the thread cannot start, the sender's receiver is gone and
        // every wait falls back to tokio's timer.
        let _ = std::thread::Builder::new().name("replog-clock".into()).spawn(move || run(rx));
        asks
    })
}

/// One waiter: woken at `at`; `seq` keeps equal instants in asking order.
struct Entry {
    at: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The waits not yet due, earliest first.
struct Waits {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    /// Size at which waits given up are dropped from the heap.
    prune_at: usize,
}

/// The heap is not pruned below this size.
const PRUNE_MIN: usize = 1024;

impl Waits {
    fn new() -> Waits {
        Waits { heap: BinaryHeap::new(), seq: 0, prune_at: PRUNE_MIN }
    }

    fn push(&mut self, (at, wake): Ask) {
        // A waiter that gave up (its batch filled first) needs no wake.
        if wake.is_closed() {
            return;
        }
        self.seq += 1;
        self.heap.push(Reverse(Entry { at, seq: self.seq, wake }));
        // Waits given up stay until their instant: with a long linger and
        // batches that fill first, that is many. Drop them once the heap
        // has doubled since the last time, so the work stays amortised.
        if self.heap.len() >= self.prune_at {
            self.heap.retain(|Reverse(e)| !e.wake.is_closed());
            self.prune_at = (self.heap.len() * 2).max(PRUNE_MIN);
        }
    }

    /// Wakes the waits due at `now`; the next instant, if any.
    fn wake_due(&mut self, now: Instant) -> Option<Instant> {
        while self.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            let Reverse(e) = self.heap.pop().expect("peeked");
            let _ = e.wake.send(());
        }
        self.heap.peek().map(|Reverse(e)| e.at)
    }
}

fn run(asks: mpsc::Receiver<Ask>) {
    let mut waits = Waits::new();
    loop {
        let now = Instant::now();
        let ask = match waits.wake_due(now) {
            Some(next) => match asks.recv_timeout(next - now) {
                Ok(a) => a,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            },
            None => match asks.recv() {
                Ok(a) => a,
                Err(_) => return,
            },
        };
        waits.push(ask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_clock_thread_ends_each_wait_at_or_after_its_instant_in_any_asking_order() {
        let start = tokio::time::Instant::now();
        // Asked out of order and concurrently; the fallback is far off, so
        // only the clock thread ends these waits, and they end in the order
        // of their instants (50 ms apart), not of asking.
        let order = std::sync::Mutex::new(Vec::new());
        let offsets = [200u64, 50, 150, 0, 100];
        let waits = offsets.map(|ms| {
            let order = &order;
            async move {
                let at = start + Duration::from_millis(50 + ms);
                let woken = wait(at, Duration::from_secs(30)).await;
                order.lock().unwrap().push(ms);
                (woken, tokio::time::Instant::now() >= at)
            }
        });
        let [a, b, c, d, e] = waits;
        let ends = <[_; 5]>::from(tokio::join!(a, b, c, d, e));
        assert!(ends.iter().all(|e| *e == (Woken::Clock, true)), "{offsets:?} ms: {ends:?}");
        assert_eq!(*order.lock().unwrap(), [0, 50, 100, 150, 200]);
        assert_eq!(wait(start, Duration::from_secs(30)).await, Woken::Past);
    }

    #[test]
    fn waits_given_up_leave_the_heap_once_it_has_doubled() {
        let mut waits = Waits::new();
        let later = Instant::now() + Duration::from_secs(3600);
        // Five waits kept, thousands given up (their receivers dropped).
        let kept: Vec<_> = (0..5)
            .map(|_| {
                let (wake, woken) = oneshot::channel();
                waits.push((later, wake));
                woken
            })
            .collect();
        for _ in 0..5000 {
            let (wake, woken) = oneshot::channel();
            waits.push((later, wake));
            drop(woken);
        }
        assert!(waits.heap.len() < PRUNE_MIN, "{} waits held, 5 of them live", waits.heap.len());
        // The live ones are still woken at their instant.
        assert_eq!(waits.wake_due(later), None);
        for mut w in kept {
            assert_eq!(w.try_recv(), Ok(()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_paused_clock_the_wait_ends_when_the_clock_is_advanced_past_it() {
        let start = tokio::time::Instant::now();
        assert_eq!(wait(start + Duration::from_secs(30), Duration::from_millis(1)).await, Woken::Fallback);
        assert!(tokio::time::Instant::now() >= start + Duration::from_secs(30));
    }
}
