//! The move throttle: a byte-rate limit on what this node sends to the
//! replicas a partition move is bringing in, so that copying a partition to
//! a new node does not take the disk and network produce traffic needs.
//!
//! **What is throttled.** Appends carrying entries and snapshot chunks sent
//! from a partition's leader to a node the partition is moving to, while
//! that node is still a learner of the group (before the joint
//! configuration makes it a voter). The mover ([`crate::mover`]) names
//! these (group, node) pairs at every tick from each moving group's
//! membership ([`MoveThrottle::set_catching_up`]). Replication to voters,
//! heartbeats and the controller group are never throttled: they are what
//! produce waits for.
//!
//! **The rate** is per node, over all its moving groups together: the
//! node's `move_throttle_bytes_per_sec`, unless the cluster setting
//! `move.throttle` (`replog cluster config set`) overrides it for every
//! node at run time. 0 is unlimited. A token bucket (GCRA, `governor`)
//! holding at most one second of the rate: a send waits until the bucket
//! has its bytes, taken a second's worth at a time so that a batch larger
//! than the bucket still passes.
//!
//! A move then takes at least (partition bytes / rate); since a learner is
//! promoted only once it is within `CATCH_UP_SLACK` entries of the leader,
//! the rate must exceed the partition's produce rate or the move waits
//! until it does.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use prometheus::{Counter, IntCounter};
use replog_raft_store::{GroupId, NodeId};

/// Counters of the throttle (registered in [`crate::metrics::Metrics`]).
#[derive(Clone)]
pub struct ThrottleMetrics {
    /// Bytes sent to catching-up replicas while a rate was set.
    pub bytes: IntCounter,
    /// Sends that had to wait for the bucket.
    pub waits: IntCounter,
    /// Time those sends waited.
    pub wait_seconds: Counter,
}

pub struct MoveThrottle {
    limiter: Mutex<Option<(u64, Arc<DefaultDirectRateLimiter>)>>,
    catching_up: RwLock<HashSet<(GroupId, NodeId)>>,
    metrics: ThrottleMetrics,
}

impl MoveThrottle {
    /// A throttle at `bytes_per_sec` (0: unlimited).
    pub fn new(bytes_per_sec: u64, metrics: ThrottleMetrics) -> MoveThrottle {
        let t = MoveThrottle { limiter: Mutex::new(None), catching_up: RwLock::default(), metrics };
        t.set_rate(bytes_per_sec);
        t
    }

    /// The current rate in bytes per second (0: unlimited).
    pub fn rate(&self) -> u64 {
        self.limiter.lock().expect("throttle lock").as_ref().map_or(0, |(r, _)| *r)
    }

    /// Sets the rate; a send already waiting finishes at the old one.
    pub fn set_rate(&self, bytes_per_sec: u64) {
        let mut l = self.limiter.lock().expect("throttle lock");
        if l.as_ref().map_or(0, |(r, _)| *r) == bytes_per_sec {
            return;
        }
        *l = NonZeroU32::new(bytes_per_sec.min(u32::MAX as u64) as u32)
            .map(|per_sec| (per_sec.get() as u64, Arc::new(RateLimiter::direct(Quota::per_second(per_sec)))));
    }

    /// The (group, node) pairs whose sends are throttled from now on: the
    /// learners of the moves this node leads.
    pub fn set_catching_up(&self, pairs: HashSet<(GroupId, NodeId)>) {
        let mut c = self.catching_up.write().expect("throttle lock");
        if *c != pairs {
            *c = pairs;
        }
    }

    /// Whether sends of `group` to `node` are throttled.
    pub fn applies(&self, group: GroupId, node: NodeId) -> bool {
        self.catching_up.read().expect("throttle lock").contains(&(group, node))
    }

    /// Waits until `bytes` may go to `node` for `group`: at once unless
    /// that pair is catching up and a rate is set.
    pub async fn take(&self, group: GroupId, node: NodeId, bytes: usize) {
        if bytes == 0 || !self.applies(group, node) {
            return;
        }
        let Some((rate, limiter)) = self.limiter.lock().expect("throttle lock").clone() else {
            return;
        };
        self.metrics.bytes.inc_by(bytes as u64);
        let started = Instant::now();
        let mut waited = false;
        let mut left = bytes as u64;
        while left > 0 {
            let n = left.min(rate);
            left -= n;
            let n = NonZeroU32::new(n as u32).expect("n > 0");
            if limiter.check_n(n).is_ok_and(|r| r.is_ok()) {
                continue;
            }
            waited = true;
            // n <= the burst (one second of the rate), so this cannot fail.
            let _ = limiter.until_n_ready(n).await;
        }
        if waited {
            self.metrics.waits.inc();
            self.metrics.wait_seconds.inc_by(started.elapsed().as_secs_f64());
        }
    }
}

/// Parses a byte rate: a number of bytes per second, with an optional
/// `K`/`KiB`, `M`/`MiB` or `G`/`GiB` suffix (powers of 1024).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a byte rate (like 52428800 or 50MiB)"))?;
    let mul: u64 = match unit.trim().to_ascii_lowercase().trim_end_matches("/s").trim_end_matches('b') {
        "" => 1,
        "k" | "ki" => 1 << 10,
        "m" | "mi" => 1 << 20,
        "g" | "gi" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit (bytes, KiB, MiB or GiB)")),
    };
    n.checked_mul(mul).ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> ThrottleMetrics {
        ThrottleMetrics {
            bytes: IntCounter::new("b", "b").unwrap(),
            waits: IntCounter::new("w", "w").unwrap(),
            wait_seconds: Counter::new("s", "s").unwrap(),
        }
    }

    #[test]
    fn rates_parse_with_units() {
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("1048576"), Ok(1 << 20));
        assert_eq!(parse_rate("50MiB"), Ok(50 << 20));
        assert_eq!(parse_rate("512k"), Ok(512 << 10));
        assert_eq!(parse_rate("2 GiB/s"), Ok(2 << 30));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5 parsecs").is_err());
        assert!(parse_rate("99999999999999999999").is_err());
    }

    #[tokio::test]
    async fn given_a_rate_when_a_catching_up_pair_sends_past_the_bucket_then_it_waits_and_others_do_not() {
        let m = metrics();
        let t = MoveThrottle::new(100_000, m.clone());
        t.set_catching_up(HashSet::from([(7, 4)]));
        let started = Instant::now();
        t.take(7, 5, 10_000_000).await; // not catching up: free
        t.take(8, 4, 10_000_000).await;
        assert_eq!(m.bytes.get(), 0);
        t.take(7, 4, 100_000).await; // the full bucket
        t.take(7, 4, 50_000).await; // half a second more
        assert!(started.elapsed().as_millis() >= 400, "{:?}", started.elapsed());
        assert_eq!((m.bytes.get(), m.waits.get()), (150_000, 1));
        t.set_rate(0);
        t.take(7, 4, 10_000_000).await;
        assert_eq!(m.bytes.get(), 150_000, "unlimited: not counted");
    }
}
