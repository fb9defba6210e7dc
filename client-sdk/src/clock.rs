//! Waits that end within tens of microseconds of their instant.
//!
//! tokio's timer fires a deadline only at its next millisecond tick, so a
//! wait of 2 ms lasts 2–3 ms. A producer's linger is such a wait, and the
//! extra millisecond is latency its first record pays; the bench's open
//! loop pacing records at their intended instants is another. Here one
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

fn run(asks: mpsc::Receiver<Ask>) {
    let mut heap: BinaryHeap<Reverse<Entry>> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            let Reverse(e) = heap.pop().expect("peeked");
            let _ = e.wake.send(());
        }
        let ask = match heap.peek() {
            Some(Reverse(e)) => match asks.recv_timeout(e.at - now) {
                Ok(a) => a,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            },
            None => match asks.recv() {
                Ok(a) => a,
                Err(_) => return,
            },
        };
        // A waiter that gave up (its batch filled first) needs no wake.
        if !ask.1.is_closed() {
            seq += 1;
            heap.push(Reverse(Entry { at: ask.0, seq, wake: ask.1 }));
        }
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

    #[tokio::test(start_paused = true)]
    async fn on_a_paused_clock_the_wait_ends_when_the_clock_is_advanced_past_it() {
        let start = tokio::time::Instant::now();
        assert_eq!(wait(start + Duration::from_secs(30), Duration::from_millis(1)).await, Woken::Fallback);
        assert!(tokio::time::Instant::now() >= start + Duration::from_secs(30));
    }
}
