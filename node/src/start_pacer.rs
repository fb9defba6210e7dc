//! Elections after a start, paced.
//!
//! A node that starts opens every partition group it holds, and each group
//! times out and stands for election on its own: with thousands of groups
//! and the whole cluster starting together, every replica of every group
//! stands at once. Votes split, each election costs a round of calls to
//! every peer, and every group that wins heartbeats until it goes quiet.
//! On a node short of CPU the calls then miss their timeouts, leaders lose
//! their leases and the groups stand again: the cluster does not settle.
//!
//! So the groups a node opens at its start do not tick (their election
//! timers do not run) until released here, in this order:
//!
//! - first those whose preferred replica (the first listed) is this node,
//!   so each group has one candidate, the one the balancer would move its
//!   leadership to anyway;
//! - then the others, which by then mostly follow a leader elsewhere and
//!   only stand if their preferred replica's node is down.
//!
//! Releases are clocked by the groups settling, not by time (a
//! [`Window`]): at most [`AT_ONCE`] released groups are unsettled at any
//! moment — without a leader, or led here and still awake (a new leader
//! heartbeats its followers until the group goes quiet, which costs more
//! than its election), for at most [`Window::settle`] — and another is
//! released each time one settles. A group that already follows a leader
//! elsewhere takes no place. Nothing is released while this node's
//! runtime is congested (the pacer's own short sleep overruns by more than
//! [`CONGESTED`]): when the whole cluster starts, the peers opening their
//! groups take the CPU, and elections started then time out.
//!
//! An earlier pacer released 200 groups at a time, the next batch once the
//! one before all had leaders *or after three election timeouts*. A whole
//! cluster of 10,000 replicas per node restarting on 2 cores timed out on
//! nearly every batch: all groups were released within 90 s whether or
//! not leaders came, awake leaders' heartbeats and pre-votes timed out by
//! the hundred thousand, quiet groups woke when liveness answers came
//! late, and the cluster did not settle (3 restarts of 3 in one run).
//!
//! Groups that cannot elect (most of their replicas down) would keep the
//! window full for good, so when no released group has settled for a
//! while ([`STALL`] election timeouts, doubling each time up to
//! [`STALL_MAX`]) the window lets [`AT_ONCE`] more go, congested or not;
//! progress resets the wait. A held replica still answers votes and
//! appends (a leader elsewhere is followed at once), and a held group that
//! goes quiet stays quiet. Groups created while the node runs (new topics,
//! moves) tick from the start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use replog_raft_store::NodeId;
use tracing::info;

use crate::node::Node;
use crate::partition::Partition;

/// Most released groups unsettled at a time.
pub const AT_ONCE: usize = 200;
/// How long the window waits for a group to settle before it lets more
/// go, in maximum election timeouts; doubled after each such stall.
const STALL: u32 = 3;
/// The longest such wait.
const STALL_MAX: Duration = Duration::from_secs(30);
/// How often the released groups are looked at.
const POLL: Duration = Duration::from_millis(20);
/// A [`POLL`] sleep that overruns by more than this means the runtime is
/// congested.
const CONGESTED: Duration = Duration::from_millis(50);

/// The order groups held at a start are released in: those whose
/// preferred replica is `me` first, each part in the order given.
pub fn release_order<T>(held: Vec<(T, Option<NodeId>)>, me: NodeId) -> Vec<T> {
    let (mut first, rest): (Vec<_>, Vec<_>) = held.into_iter().partition(|(_, preferred)| *preferred == Some(me));
    first.extend(rest);
    first.into_iter().map(|(p, _)| p).collect()
}

/// A released group as the window sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// Without a leader.
    Electing,
    /// Led here and awake: heartbeating until it goes quiet.
    Awake,
    /// Led elsewhere, or led here and quiet.
    Settled,
}

/// Which held groups to release when: the pacing without the groups.
struct Window<T> {
    held: std::vec::IntoIter<T>,
    /// Released and unsettled when last looked at, with when each was
    /// first seen led here.
    unsettled: Vec<(T, Option<Instant>)>,
    size: usize,
    /// Longest a group led here counts while awake: a group that stays
    /// busy (written to) never goes quiet.
    settle: Duration,
    stall: Duration,
    base_stall: Duration,
    /// When a released group last settled (or the last stall).
    progress: Instant,
}

impl<T> Window<T> {
    fn new(held: Vec<T>, size: usize, settle: Duration, base_stall: Duration, now: Instant) -> Self {
        Window {
            held: held.into_iter(),
            unsettled: Vec::new(),
            size,
            settle,
            stall: base_stall,
            base_stall,
            progress: now,
        }
    }

    /// One look at `now`: forgets the released groups that settled, then,
    /// unless `congested`, releases (`release` returns how the group looks
    /// then) until the window is full; after a stall, [`AT_ONCE`] more
    /// whatever the window or the congestion. False once every group is
    /// released.
    fn step(
        &mut self,
        now: Instant,
        congested: bool,
        look: impl Fn(&T) -> Look,
        mut release: impl FnMut(&T) -> Look,
    ) -> bool {
        let before = self.unsettled.len();
        let settle = self.settle;
        self.unsettled.retain_mut(|(p, led)| match look(p) {
            Look::Electing => true,
            Look::Awake => now.duration_since(*led.get_or_insert(now)) < settle,
            Look::Settled => false,
        });
        if self.unsettled.len() < before {
            self.progress = now;
            self.stall = self.base_stall;
        }
        let mut room = if congested { 0 } else { self.size.saturating_sub(self.unsettled.len()) };
        // Stalled: groups that do not settle, or a node congested for good.
        if (congested || !self.unsettled.is_empty()) && now.duration_since(self.progress) >= self.stall {
            room += self.size;
            self.progress = now;
            self.stall = (self.stall * 2).min(STALL_MAX.max(self.base_stall));
        }
        while room > 0 {
            let Some(p) = self.held.next() else { return false };
            match release(&p) {
                Look::Settled => continue,
                Look::Electing => self.unsettled.push((p, None)),
                Look::Awake => self.unsettled.push((p, Some(now))),
            }
            room -= 1;
        }
        self.held.len() > 0
    }
}

/// Releases `held` (in [`release_order`]) through a [`Window`].
pub async fn run(node: Arc<Node>, held: Vec<Arc<Partition>>) {
    if held.is_empty() {
        return;
    }
    let groups = held.len();
    let started = Instant::now();
    let election = Duration::from_millis(node.config.election_timeout_max_ms);
    // A new leader here goes quiet once idle for quiesce_after since the
    // node started, its followers holding the whole log (checked about
    // twice a second), so an idle group settles about a second after its
    // election; without quiescence a leader settles once elected.
    let settle = match node.config.quiesce_after_ms {
        0 => Duration::ZERO,
        ms => Duration::from_millis(ms) + election * 2,
    };
    let me = node.id;
    let look = |p: &Arc<Partition>| {
        let m = p.raft().metrics();
        let m = m.borrow_watched();
        match m.current_leader {
            None => Look::Electing,
            Some(l) if l == me && !p.is_quiet() => Look::Awake,
            Some(_) => Look::Settled,
        }
    };
    let release = |p: &Arc<Partition>| {
        p.quiet.release(p.raft());
        look(p)
    };
    let mut window = Window::new(held, AT_ONCE, settle, election * STALL, started);
    let mut congested = false;
    while window.step(Instant::now(), congested, look, release) {
        if node.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let slept = Instant::now();
        tokio::time::sleep(POLL).await;
        congested = slept.elapsed() > POLL + CONGESTED;
    }
    info!(groups, ms = started.elapsed().as_millis() as u64, "every group opened at start may elect");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_preferring_this_node_are_released_first_each_part_in_its_order() {
        let held = vec![("a", Some(2)), ("b", Some(1)), ("c", None), ("d", Some(1)), ("e", Some(3))];
        assert_eq!(release_order(held, 1), vec!["b", "d", "a", "c", "e"]);
    }

    /// Steps a window of 2 (groups led here count for at most 500 ms while
    /// awake) at `at` ms; `awake` are led here and awake, `led` settled,
    /// the others electing. Returns (more to release, released now).
    fn step(
        w: &mut Window<u32>,
        start: Instant,
        at: u64,
        congested: bool,
        awake: &[u32],
        led: &[u32],
    ) -> (bool, Vec<u32>) {
        let look = |p: &u32| match () {
            _ if led.contains(p) => Look::Settled,
            _ if awake.contains(p) => Look::Awake,
            _ => Look::Electing,
        };
        let mut released = Vec::new();
        let more = w.step(start + Duration::from_millis(at), congested, look, |p| {
            released.push(*p);
            look(p)
        });
        (more, released)
    }

    fn window(n: u32, start: Instant) -> Window<u32> {
        Window::new((0..n).collect(), 2, Duration::from_millis(500), Duration::from_millis(100), start)
    }

    #[test]
    fn the_window_releases_one_more_group_for_each_that_settles() {
        let start = Instant::now();
        let mut w = window(7, start);
        assert_eq!(step(&mut w, start, 0, false, &[], &[]), (true, vec![0, 1]));
        assert_eq!(step(&mut w, start, 50, false, &[], &[]), (true, vec![]), "nothing more while neither has a leader");
        assert_eq!(step(&mut w, start, 60, false, &[], &[1]), (true, vec![2]));
        // A group already led elsewhere when released takes no place.
        assert_eq!(step(&mut w, start, 70, false, &[], &[1, 2, 3]), (true, vec![3, 4]));
        // Led here and awake is not settled.
        assert_eq!(step(&mut w, start, 80, false, &[0, 4], &[1, 2, 3]), (true, vec![]));
        assert_eq!(step(&mut w, start, 90, false, &[4], &[0, 1, 2, 3]), (true, vec![5]));
        assert_eq!(step(&mut w, start, 95, false, &[], &[0, 1, 2, 3, 4, 5]), (false, vec![6]), "all released");
    }

    #[test]
    fn a_group_led_here_that_stays_awake_counts_only_until_its_settle_time() {
        let start = Instant::now();
        let mut w = Window::new((0..4).collect(), 2, Duration::from_millis(500), Duration::from_secs(10), start);
        assert_eq!(step(&mut w, start, 0, false, &[0, 1], &[]), (true, vec![0, 1]));
        // The two stay awake (busy).
        assert_eq!(step(&mut w, start, 499, false, &[0, 1], &[]), (true, vec![]));
        assert_eq!(step(&mut w, start, 500, false, &[0, 1], &[]), (false, vec![2, 3]));
    }

    #[test]
    fn nothing_is_released_while_congested_but_a_stall_still_lets_more_go() {
        let start = Instant::now();
        let mut w = window(10, start);
        assert_eq!(step(&mut w, start, 0, true, &[], &[]), (true, vec![]));
        assert_eq!(step(&mut w, start, 10, false, &[], &[]), (true, vec![0, 1]));
        assert_eq!(
            step(&mut w, start, 20, true, &[], &[0]),
            (true, vec![]),
            "a place is free but the node is congested"
        );
        assert_eq!(step(&mut w, start, 30, false, &[], &[0]), (true, vec![2]));
        assert_eq!(step(&mut w, start, 130, true, &[], &[0]), (true, vec![3, 4]), "stalled: two more");
    }

    #[test]
    fn a_node_congested_for_good_still_releases_after_each_stall_when_nothing_is_unsettled() {
        let start = Instant::now();
        let mut w = window(10, start);
        assert_eq!(step(&mut w, start, 0, false, &[], &[]), (true, vec![0, 1]));
        assert_eq!(step(&mut w, start, 10, true, &[], &[0, 1]), (true, vec![]), "settled, but congested");
        assert_eq!(step(&mut w, start, 109, true, &[], &[0, 1]), (true, vec![]));
        assert_eq!(step(&mut w, start, 110, true, &[], &[0, 1]), (true, vec![2, 3]));
        assert_eq!(step(&mut w, start, 120, true, &[], &[0, 1, 2, 3]), (true, vec![]));
        assert_eq!(step(&mut w, start, 220, true, &[], &[0, 1, 2, 3]), (true, vec![4, 5]));
    }

    #[test]
    fn a_window_that_stalls_lets_more_go_and_waits_twice_as_long_the_next_time() {
        let start = Instant::now();
        let mut w = window(10, start);
        assert_eq!(step(&mut w, start, 0, false, &[], &[]), (true, vec![0, 1]));
        assert_eq!(step(&mut w, start, 99, false, &[], &[]), (true, vec![]));
        assert_eq!(step(&mut w, start, 100, false, &[], &[]), (true, vec![2, 3]), "stalled: two more");
        assert_eq!(step(&mut w, start, 299, false, &[], &[]), (true, vec![]), "the next stall is 200 ms");
        assert_eq!(step(&mut w, start, 300, false, &[], &[]), (true, vec![4, 5]));
        // A group settling resets the wait to 100 ms; the window, over-full
        // after the stalls, takes no more for it.
        assert_eq!(step(&mut w, start, 310, false, &[], &[0]), (true, vec![]));
        assert_eq!(step(&mut w, start, 410, false, &[], &[0]), (true, vec![6, 7]));
    }
}
