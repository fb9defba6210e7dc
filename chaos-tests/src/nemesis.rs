//! The nemesis: faults applied to a running cluster on a schedule drawn
//! from a seed, each one healed before the next begins.
//!
//! A schedule ([`schedule`]) alternates quiet windows (2–4 s: the cluster
//! recovers under load) and fault windows (a few seconds, one fault kind
//! each) until the run's duration is used up. It is a pure function of the
//! seed, the enabled faults and the duration, so a seed reproduces the same
//! kinds, timings and random choices. Which node a choice lands on ("the
//! leader of partition 3") is looked up in the live cluster when the fault
//! starts, so it may differ between two runs of one seed.
//!
//! The faults ([`Fault`], names as in `CHAOS_FAULTS`):
//!
//! | name | what | heal |
//! |---|---|---|
//! | `kill` | SIGKILL the leader of a partition, a follower, or a random node | restart it on its data |
//! | `pause` | SIGSTOP the leader of a partition or a random node | SIGCONT |
//! | `partition-leader` | isolate (packet drops both ways) the leader of a partition or the controller leader | flush the rules |
//! | `partition-split` | a minority and a majority that cannot reach each other | flush |
//! | `partition-bridge` | two sides that cannot talk, and one node that talks to both | flush |
//! | `partition-oneway` | packets from A to B dropped, B to A pass (A: a leader towards everyone, or a random pair) | flush |
//! | `kill-all` | SIGKILL every node at once, writes in flight | restart them all |
//! | `netem` | delay, jitter and loss on every node-to-node link | remove the qdisc and rules |
//! | `power-fail` | power loss of one node (chosen as for `kill`): SIGKILL, then its disk drops every write it had not fsync'd | restart it on what is left |
//! | `power-fail-all` | power loss of every node at once, writes in flight | restart them all |
//! | `move` | move a partition of the topic: one replica replaced by a node outside its set (more nodes than replicas needed); half the time its leader, a quarter of the time the joining node, is SIGKILLed within a second of the start | restart what was killed; the move completes or rolls back on its own |
//!
//! SIGKILL alone leaves the kernel's page cache intact, so it never shows a
//! missing fsync; the power faults do, because every node's data directory
//! is then a `replog-faultfs` mount (see [`replog_testkit::disk`]) that holds
//! unsynced writes in memory until told to lose them.
//!
//! [`Nemesis::heal_all`] undoes everything (network, paused and killed
//! nodes); the runner calls it before the final reads. Every fault is
//! logged as a [`NemesisEvent`] with times on the history's clock, so an
//! anomaly can be matched with what was happening when its write was sent.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, bail};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use replog_client::ClientConfig;
use replog_testkit::Cluster;
use serde::Serialize;

use crate::history::Recorder;
use crate::net::Net;
use crate::workload::Counters;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    Kill,
    Pause,
    PartitionLeader,
    PartitionSplit,
    PartitionBridge,
    PartitionOneway,
    KillAll,
    Netem,
    PowerFail,
    PowerFailAll,
    Move,
}

impl Fault {
    pub const ALL: [Fault; 11] = [
        Fault::Kill,
        Fault::Pause,
        Fault::PartitionLeader,
        Fault::PartitionSplit,
        Fault::PartitionBridge,
        Fault::PartitionOneway,
        Fault::KillAll,
        Fault::Netem,
        Fault::PowerFail,
        Fault::PowerFailAll,
        Fault::Move,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::PartitionLeader => "partition-leader",
            Fault::PartitionSplit => "partition-split",
            Fault::PartitionBridge => "partition-bridge",
            Fault::PartitionOneway => "partition-oneway",
            Fault::KillAll => "kill-all",
            Fault::Netem => "netem",
            Fault::PowerFail => "power-fail",
            Fault::PowerFailAll => "power-fail-all",
            Fault::Move => "move",
        }
    }

    /// Whether the fault needs the nodes' data directories on faultfs
    /// mounts (root, `/dev/fuse`).
    pub fn needs_faultfs(self) -> bool {
        matches!(self, Fault::PowerFail | Fault::PowerFailAll)
    }

    /// Whether the fault needs [`Net`] (root, iptables, tc).
    pub fn needs_net(self) -> bool {
        matches!(
            self,
            Fault::PartitionLeader
                | Fault::PartitionSplit
                | Fault::PartitionBridge
                | Fault::PartitionOneway
                | Fault::Netem
        )
    }

    /// Parses a `CHAOS_FAULTS` list: comma-separated names, `all` for every
    /// fault, `partition` for the four partition faults. Empty means all.
    pub fn parse_list(s: &str) -> Result<Vec<Fault>> {
        let mut out = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let add: Vec<Fault> = match name {
                "all" => Fault::ALL.to_vec(),
                "partition" => {
                    vec![Fault::PartitionLeader, Fault::PartitionSplit, Fault::PartitionBridge, Fault::PartitionOneway]
                }
                _ => match Fault::ALL.iter().find(|f| f.name() == name) {
                    Some(f) => vec![*f],
                    None => bail!(
                        "unknown fault {name:?}; known: all, partition, {}",
                        Fault::ALL.map(Fault::name).join(", ")
                    ),
                },
            };
            for f in add {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        if out.is_empty() {
            out = Fault::ALL.to_vec();
        }
        Ok(out)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One fault window of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    /// When the fault starts, from the start of the schedule.
    pub start: Duration,
    /// How long it lasts before it is healed.
    pub duration: Duration,
    pub fault: Fault,
    /// Seed for this window's own choices (which mode, which node).
    pub choice: u64,
}

/// Quiet time between faults.
const QUIET_MS: std::ops::Range<u64> = 2000..4000;
/// Fault duration, by kind.
fn fault_ms(f: Fault) -> std::ops::Range<u64> {
    match f {
        // Down time of the whole cluster; recovery happens in the quiet
        // window after it.
        Fault::KillAll | Fault::PowerFailAll => 500..2500,
        _ => 3000..7000,
    }
}

/// The fault windows for `total` seconds of workload, drawn from `seed`.
/// The last window ends at least one quiet window before `total`.
pub fn schedule(seed: u64, faults: &[Fault], total: Duration) -> Vec<Window> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    if faults.is_empty() {
        return out;
    }
    let total_ms = total.as_millis() as u64;
    let mut t = rng.gen_range(QUIET_MS);
    loop {
        let fault = *faults.choose(&mut rng).expect("not empty");
        let dur = rng.gen_range(fault_ms(fault));
        let choice = rng.r#gen::<u64>();
        if t + dur + QUIET_MS.start > total_ms {
            break;
        }
        out.push(Window { start: Duration::from_millis(t), duration: Duration::from_millis(dur), fault, choice });
        t += dur + rng.gen_range(QUIET_MS);
    }
    out
}

/// What the nemesis did: one line of its log.
#[derive(Debug, Clone, Serialize)]
pub struct NemesisEvent {
    pub fault: Fault,
    /// What exactly, e.g. "kill leader of chaos/3: node 2".
    pub detail: String,
    /// On the history's clock ([`Recorder::now_us`]).
    pub start_us: u64,
    pub end_us: u64,
}

impl fmt::Display for NemesisEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:7.2}s–{:7.2}s {:<17} {}",
            self.start_us as f64 / 1e6,
            self.end_us as f64 / 1e6,
            self.fault.name(),
            self.detail
        )
    }
}

/// What must be undone.
enum Active {
    Killed(Vec<u64>),
    Paused(Vec<u64>),
    Net,
    Nothing,
}

/// Applies and heals faults on one cluster.
pub struct Nemesis {
    net: Option<Net>,
    topic: String,
    partitions: u32,
    clock: Recorder,
    events: Vec<NemesisEvent>,
    /// Nodes that exited on their own (crashes), with when and how.
    pub crashes: Vec<String>,
    counters: Option<Arc<Counters>>,
}

impl Nemesis {
    /// `net` is required if any scheduled fault needs it. `clock` is the
    /// run's recorder, for timestamps comparable with the history.
    pub fn new(net: Option<Net>, topic: &str, partitions: u32, clock: Recorder) -> Nemesis {
        Nemesis {
            net,
            topic: topic.to_string(),
            partitions,
            clock,
            events: Vec::new(),
            crashes: Vec::new(),
            counters: None,
        }
    }

    /// Names the number of sends in flight in the log of every kill, to
    /// show that writes were under way when the nodes died.
    pub fn with_counters(mut self, counters: Arc<Counters>) -> Nemesis {
        self.counters = Some(counters);
        self
    }

    /// Waits (at most 2 s) until at least one send is outstanding, so that
    /// a kill lands while writes are in flight.
    async fn await_in_flight(&self) {
        let Some(c) = &self.counters else { return };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while c.in_flight.load(Ordering::Relaxed) == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn in_flight(&self) -> String {
        match &self.counters {
            Some(c) => format!(" ({} sends in flight)", c.in_flight.load(Ordering::Relaxed)),
            None => String::new(),
        }
    }

    pub fn events(&self) -> &[NemesisEvent] {
        &self.events
    }

    fn net(&self) -> Result<&Net> {
        match &self.net {
            Some(n) => Ok(n),
            None => bail!("this fault needs network control (root); none was set up"),
        }
    }

    /// Runs `windows`; `t0` is the instant the schedule's offsets count from.
    /// Returns when the last window is healed.
    pub async fn run(&mut self, cluster: &mut Cluster, windows: &[Window], t0: tokio::time::Instant) -> Result<()> {
        for w in windows {
            tokio::time::sleep_until(t0 + w.start).await;
            self.note_crashes(cluster);
            let start_us = self.clock.now_us();
            let (active, detail) = self.apply(cluster, w).await?;
            tokio::time::sleep(w.duration).await;
            self.note_crashes(cluster);
            self.undo(cluster, active)?;
            let event = NemesisEvent { fault: w.fault, detail, start_us, end_us: self.clock.now_us() };
            eprintln!("chaos:   {event}");
            self.events.push(event);
        }
        Ok(())
    }

    fn note_crashes(&mut self, cluster: &mut Cluster) {
        for (id, status) in cluster.exited() {
            let msg = format!(
                "node {id} exited on its own ({status}) at {:.2}s; restarting it",
                self.clock.now_us() as f64 / 1e6
            );
            eprintln!("chaos:   CRASH {msg}");
            self.crashes.push(msg);
            let _ = cluster.restart(id);
        }
    }

    /// Undoes every fault: heals the network, resumes paused nodes and
    /// restarts stopped ones.
    pub fn heal_all(&mut self, cluster: &mut Cluster) -> Result<()> {
        self.note_crashes(cluster);
        if let Some(net) = &self.net {
            net.heal()?;
        }
        for id in cluster.ids() {
            if cluster.is_paused(id) {
                cluster.resume(id)?;
            }
        }
        cluster.restart_all()
    }

    fn undo(&mut self, cluster: &mut Cluster, active: Active) -> Result<()> {
        match active {
            Active::Killed(ids) => {
                for id in ids {
                    if !cluster.is_running(id) {
                        cluster.restart(id)?;
                    }
                }
            }
            Active::Paused(ids) => {
                for id in ids {
                    cluster.resume(id)?;
                }
            }
            Active::Net => self.net()?.heal()?,
            Active::Nothing => {}
        }
        Ok(())
    }

    /// The leader of a random partition (or, one time in four when
    /// `controller` is allowed, of the controller), else a random node.
    async fn some_leader(&self, cluster: &Cluster, rng: &mut StdRng, controller: bool) -> (u64, String) {
        if controller && rng.gen_ratio(1, 4) {
            if let Some(l) = cluster.controller_leader().await {
                return (l, format!("controller leader node {l}"));
            }
        } else {
            let p = rng.gen_range(0..self.partitions);
            if let Some(l) = cluster.leader_of(&self.topic, p).await {
                return (l, format!("leader of {}/{p} node {l}", self.topic));
            }
        }
        let id = *cluster.ids().choose(rng).expect("nodes");
        (id, format!("node {id} (no leader known)"))
    }

    /// The node a process fault (`kill`, `power-fail`) hits: the leader of a
    /// partition or the controller, a follower of a partition, or a random
    /// node, one time in three each.
    async fn process_target(&self, cluster: &Cluster, rng: &mut StdRng) -> (u64, String) {
        let ids = cluster.ids();
        match rng.gen_range(0..3) {
            0 => self.some_leader(cluster, rng, true).await,
            1 => {
                let (l, what) = self.some_leader(cluster, rng, false).await;
                let others: Vec<u64> = ids.iter().copied().filter(|i| *i != l).collect();
                let f = *others.choose(rng).expect("n > 1");
                (f, format!("follower node {f} (not the {what})"))
            }
            _ => {
                let id = *ids.choose(rng).expect("nodes");
                (id, format!("random node {id}"))
            }
        }
    }

    async fn apply(&mut self, cluster: &mut Cluster, w: &Window) -> Result<(Active, String)> {
        let mut rng = StdRng::seed_from_u64(w.choice);
        let ids = cluster.ids();
        let random = |rng: &mut StdRng| *ids.choose(rng).expect("nodes");
        Ok(match w.fault {
            Fault::Kill => {
                let (id, what) = self.process_target(cluster, &mut rng).await;
                self.await_in_flight().await;
                let in_flight = self.in_flight();
                cluster.kill(id)?;
                (Active::Killed(vec![id]), format!("SIGKILL {what}{in_flight}; restart after"))
            }
            Fault::PowerFail => {
                let (id, what) = self.process_target(cluster, &mut rng).await;
                self.await_in_flight().await;
                let in_flight = self.in_flight();
                let lost = cluster.power_fail(id)?;
                (
                    Active::Killed(vec![id]),
                    format!("power failure of {what}{in_flight}: {}; restart after", describe_loss(&lost)),
                )
            }
            Fault::PowerFailAll => {
                self.await_in_flight().await;
                let in_flight = self.in_flight();
                let lost = cluster.power_fail_all()?;
                let per_node: Vec<String> =
                    lost.iter().map(|(id, r)| format!("node {id} {}", describe_loss(r))).collect();
                (
                    Active::Killed(ids.clone()),
                    format!(
                        "power failure of all nodes {ids:?} at once{in_flight}: {}; restart all after",
                        per_node.join(", ")
                    ),
                )
            }
            Fault::Pause => {
                let (id, what) = if rng.gen_bool(0.5) {
                    self.some_leader(cluster, &mut rng, true).await
                } else {
                    let id = random(&mut rng);
                    (id, format!("random node {id}"))
                };
                cluster.pause(id)?;
                (Active::Paused(vec![id]), format!("SIGSTOP {what}"))
            }
            Fault::PartitionLeader => {
                let (id, what) = self.some_leader(cluster, &mut rng, true).await;
                self.net()?.isolate(id)?;
                (Active::Net, format!("isolate {what}"))
            }
            Fault::PartitionSplit => {
                let mut s = ids.clone();
                s.shuffle(&mut rng);
                let minority = s[..(s.len() - 1) / 2].to_vec();
                let majority = s[(s.len() - 1) / 2..].to_vec();
                self.net()?.partition(&[minority.clone(), majority.clone()])?;
                (Active::Net, format!("split minority {minority:?} | majority {majority:?}"))
            }
            Fault::PartitionBridge => {
                let mut s = ids.clone();
                s.shuffle(&mut rng);
                let half = s.len() / 2;
                let (left, bridge, right) = (s[..half].to_vec(), s[half], s[half + 1..].to_vec());
                self.net()?.bridge(&left, bridge, &right)?;
                (Active::Net, format!("bridge {left:?} <-> {bridge} <-> {right:?}"))
            }
            Fault::PartitionOneway => {
                let detail = if rng.gen_bool(0.5) {
                    let (l, what) = self.some_leader(cluster, &mut rng, true).await;
                    for other in ids.iter().filter(|i| **i != l) {
                        self.net()?.drop_oneway(l, *other)?;
                    }
                    format!("drop packets from {what} to every other node (one way)")
                } else {
                    let mut s = ids.clone();
                    s.shuffle(&mut rng);
                    self.net()?.drop_oneway(s[0], s[1])?;
                    format!("drop packets {} -> {} (one way)", s[0], s[1])
                };
                (Active::Net, detail)
            }
            Fault::KillAll => {
                self.await_in_flight().await;
                let in_flight = self.in_flight();
                cluster.kill_all()?;
                (
                    Active::Killed(ids.clone()),
                    format!("SIGKILL all nodes {ids:?} at once{in_flight}; restart all after"),
                )
            }
            Fault::Move => self.move_partition(cluster, &mut rng).await?,
            Fault::Netem => {
                let delay = rng.gen_range(20..150);
                let loss = rng.gen_range(2..15) as f64;
                let net = self.net.as_mut().ok_or_else(|| anyhow::anyhow!("netem needs network control (root)"))?;
                let mode = net.netem(delay, delay / 4, loss)?;
                (Active::Net, format!("{mode} on every node link"))
            }
        })
    }
}

impl Nemesis {
    /// The `move` fault: replaces one replica of a random partition by a
    /// node outside its set (the leader's one time in two), then SIGKILLs,
    /// within a second, the partition's leader (one time in two) or the
    /// joining node (one time in four), so that the membership change runs
    /// into a crash. Refusals and errors of the move request are logged,
    /// not failures: the move may meet an earlier one still under way.
    async fn move_partition(&mut self, cluster: &mut Cluster, rng: &mut StdRng) -> Result<(Active, String)> {
        let p = rng.gen_range(0..self.partitions);
        let config = ClientConfig {
            request_timeout: Duration::from_secs(2),
            retry_deadline: Duration::from_secs(4),
            ..ClientConfig::default()
        };
        let admin = match cluster.client(config).await {
            Ok(c) => c,
            Err(e) => return Ok((Active::Nothing, format!("no move of {}/{p}: connect: {e:#}", self.topic))),
        };
        let info = match admin.describe_topic(&self.topic).await {
            Ok(t) => t,
            Err(e) => return Ok((Active::Nothing, format!("no move of {}/{p}: metadata: {e}", self.topic))),
        };
        let Some(part) = info.partitions.iter().find(|x| x.partition == p) else {
            bail!("{} has no partition {p}", self.topic);
        };
        let outside: Vec<u64> = cluster.ids().into_iter().filter(|i| !part.replicas.contains(i)).collect();
        let Some(&joining) = outside.choose(rng) else {
            return Ok((Active::Nothing, format!("no move of {}/{p}: every node holds a replica", self.topic)));
        };
        let leaving = match part.leader {
            Some(l) if rng.gen_bool(0.5) => l,
            _ => *part.replicas.choose(rng).expect("replicas"),
        };
        let to: Vec<u64> = part.replicas.iter().map(|r| if *r == leaving { joining } else { *r }).collect();
        let what = format!("{}/{p} {:?} -> {to:?}", self.topic, part.replicas);
        let started = match admin.move_partition(&self.topic, p, &to, false).await {
            Ok(_) => "started".to_string(),
            Err(e) => format!("refused: {e}"),
        };
        let victim = match rng.gen_range(0..4) {
            0 | 1 => cluster.leader_of(&self.topic, p).await.map(|l| (l, format!("its leader node {l}"))),
            2 => Some((joining, format!("the joining node {joining}"))),
            _ => None,
        };
        let Some((id, who)) = victim.filter(|(id, _)| cluster.is_running(*id)) else {
            return Ok((Active::Nothing, format!("move {what} ({started})")));
        };
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..1000))).await;
        let in_flight = self.in_flight();
        cluster.kill(id)?;
        Ok((Active::Killed(vec![id]), format!("move {what} ({started}), then SIGKILL {who}{in_flight}; restart after")))
    }
}

/// What a power failure threw away, for the nemesis log: with correct
/// fsyncs only writes still in flight; with the planted skipped fsync,
/// everything since the node started.
fn describe_loss(r: &replog_faultfs::CrashReport) -> String {
    format!("lost {} unsynced bytes in {} files, {} namespace ops undone", r.bytes, r.files, r.undone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_seed_when_scheduled_twice_then_schedules_are_identical() {
        let a = schedule(42, &Fault::ALL, Duration::from_secs(60));
        let b = schedule(42, &Fault::ALL, Duration::from_secs(60));
        assert_eq!(a, b);
        assert!(a.len() >= 5, "{a:?}");
        assert_ne!(a, schedule(43, &Fault::ALL, Duration::from_secs(60)));
    }

    #[test]
    fn given_schedule_then_windows_do_not_overlap_and_end_before_the_run() {
        for seed in 0..50 {
            let total = Duration::from_secs(30);
            let w = schedule(seed, &[Fault::Kill, Fault::KillAll], total);
            for pair in w.windows(2) {
                assert!(pair[0].start + pair[0].duration < pair[1].start);
            }
            if let Some(last) = w.last() {
                assert!(last.start + last.duration <= total);
            }
            assert!(w.iter().all(|x| matches!(x.fault, Fault::Kill | Fault::KillAll)));
        }
    }

    #[test]
    fn given_fault_lists_when_parsed_then_names_groups_and_errors_are_handled() {
        assert_eq!(Fault::parse_list("").unwrap(), Fault::ALL.to_vec());
        assert_eq!(Fault::parse_list("all").unwrap(), Fault::ALL.to_vec());
        assert_eq!(Fault::parse_list("kill, pause,kill").unwrap(), vec![Fault::Kill, Fault::Pause]);
        assert_eq!(Fault::parse_list("partition").unwrap().len(), 4);
        assert!(Fault::parse_list("kill,explode").is_err());
        assert!(!Fault::Kill.needs_net() && Fault::Netem.needs_net());
        assert_eq!(
            Fault::parse_list("power-fail,power-fail-all").unwrap(),
            vec![Fault::PowerFail, Fault::PowerFailAll]
        );
        assert!(Fault::PowerFail.needs_faultfs() && !Fault::PowerFail.needs_net() && !Fault::Kill.needs_faultfs());
    }
}
