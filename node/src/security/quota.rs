//! Per-principal byte-rate quotas (`produce_quota_bytes_per_sec`,
//! `fetch_quota_bytes_per_sec`), held to as Kafka's are: a request is
//! served, and its answer held back for as long as its principal is over
//! the rate, so a client that sends too much slows down by itself instead
//! of getting errors to retry.
//!
//! Each principal has a virtual clock, `free_at`: charging `n` bytes moves
//! it `n / rate` seconds on from `max(free_at, now - BURST)`; the answer
//! waits until `free_at`. Up to [`BURST`] of unused rate is saved, so short
//! bursts pass unhindered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How much unused rate a principal may save up.
const BURST: Duration = Duration::from_secs(1);
/// Longest an answer is held back (the rest of the debt stays).
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// Principals remembered; past it, those within their rate are forgotten.
const MAX_PRINCIPALS: usize = 10_000;

pub struct Quota {
    bytes_per_sec: u64,
    free_at: Mutex<HashMap<String, Instant>>,
}

impl Quota {
    /// `bytes_per_sec` 0: no quota.
    pub fn new(bytes_per_sec: u64) -> Quota {
        Quota { bytes_per_sec, free_at: Mutex::default() }
    }

    /// Charges `bytes` to `principal`; returns how long its answer waits.
    pub fn charge(&self, principal: &str, bytes: u64) -> Duration {
        if self.bytes_per_sec == 0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        let mut m = self.free_at.lock().expect("quota lock");
        if m.len() >= MAX_PRINCIPALS {
            m.retain(|_, t| *t > now);
        }
        let floor = now.checked_sub(BURST).unwrap_or(now);
        let t = m.entry(principal.to_string()).or_insert(floor);
        *t = (*t).max(floor) + cost;
        t.saturating_duration_since(now).min(MAX_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_rate_then_a_burst_passes_and_what_follows_waits_in_proportion() {
        let q = Quota::new(1000);
        assert_eq!(q.charge("a", 900), Duration::ZERO, "within the saved second");
        let d = q.charge("a", 1100);
        assert!(d > Duration::from_millis(900) && d <= Duration::from_millis(1000), "{d:?}");
        assert_eq!(q.charge("b", 500), Duration::ZERO, "principals are apart");
        assert!(q.charge("a", 1_000_000) <= MAX_DELAY);
        assert_eq!(Quota::new(0).charge("a", u64::MAX), Duration::ZERO);
    }
}
