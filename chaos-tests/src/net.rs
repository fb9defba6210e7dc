//! Packet-level network faults between chaos nodes: iptables rules in a
//! chain of our own, and traffic control on `lo`.
//!
//! Every node of a chaos cluster has its own loopback address
//! ([`crate::cluster`]) and sends its peer traffic from it, so a rule naming a source and
//! a destination node address cuts exactly one direction of one link, at the
//! packet level: the kernel drops the segments, TCP times out, gRPC
//! connections stall — as on a real network. Client traffic (from
//! 127.0.0.1) never matches.
//!
//! What is touched, and nothing else:
//!
//! - the iptables chain [`CHAIN`], jumped to from `INPUT` (`-i lo`) and
//!   `OUTPUT` (`-o lo`) only for 127.0.0.0/8 → 127.0.0.0/8 traffic. Faults
//!   append `DROP` rules for pairs of node addresses to it; healing flushes
//!   the chain. The jumps and the chain are removed on drop;
//! - a root qdisc with handle [`TC_HANDLE`] on `lo`, with u32 filters that
//!   send only node-to-node traffic into a `netem` (delay, jitter, loss)
//!   class. The kernel here may lack `sch_netem`; then the same fault is
//!   made of an HTB class limited to a slow rate (queueing delay and tail
//!   drops on node links) plus iptables random loss (`-m statistic`) on node
//!   pairs, and [`Net::netem`] says which it used. Healing deletes the root
//!   qdisc only if it is ours.
//!
//! Two ways to hold the network. A chaos run's [`Net::new`] removes stale
//! state from a crashed run at start and every trace of itself on drop. An
//! operator command's [`Net::attach`] (`chaos net`, [`crate::net_cmd`])
//! adds to the faults in force and leaves them in force when it ends; it
//! also serves real hosts, whose addresses are not loopback: the jumps
//! into [`CHAIN`] are then unconditional (the chain's rules name node
//! address pairs, so other traffic passes) and traffic control acts on the
//! device given (e.g. `eth0`). Either way only one [`Net`] may exist on the
//! machine at a time (an exclusive `flock` on [`LOCK_FILE`]). Root is
//! required; `iptables` and `tc` are installed with `apt-get` if missing.
//!
//! The rule sets are built by pure functions ([`pair_rules`] and friends) so
//! that they are tested without root.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};

/// Our iptables chain.
pub const CHAIN: &str = "REPLOG-CHAOS";
/// Comment on every rule we add, to recognise them.
pub const COMMENT: &str = "replog-chaos";
/// Handle of our root qdisc on `lo` (hex 7e57).
pub const TC_HANDLE: &str = "7e57:";
/// Device for traffic control of a chaos run's loopback nodes.
pub const TC_DEV: &str = "lo";
/// Lock file held while a [`Net`] exists.
pub const LOCK_FILE: &str = "/tmp/replog-chaos-net.lock";

/// The jumps into [`CHAIN`]: (hook, interface flag).
const JUMPS: [(&str, &str); 2] = [("INPUT", "-i"), ("OUTPUT", "-o")];

/// How a delay/loss fault was made.
#[derive(Debug, Clone, PartialEq)]
pub enum NetemMode {
    /// `tc netem delay D jitter J loss L%` on node-to-node traffic.
    Netem { delay_ms: u32, jitter_ms: u32, loss_pct: f64 },
    /// No `sch_netem` in this kernel: node-to-node traffic is shaped to
    /// `rate_kbit` (queueing delay, tail drops) and `loss_pct` of its
    /// packets are dropped by iptables.
    Shaped { rate_kbit: u32, loss_pct: f64 },
}

impl std::fmt::Display for NetemMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetemMode::Netem { delay_ms, jitter_ms, loss_pct } => {
                write!(f, "netem delay {delay_ms}ms±{jitter_ms}ms loss {loss_pct}%")
            }
            NetemMode::Shaped { rate_kbit, loss_pct } => {
                write!(f, "shaped {rate_kbit}kbit + loss {loss_pct}% (no sch_netem)")
            }
        }
    }
}

/// iptables arguments (after `-A CHAIN`) dropping packets `from` → `to`.
pub fn drop_rule(from: Ipv4Addr, to: Ipv4Addr) -> Vec<String> {
    vec![
        "-s".into(),
        format!("{from}/32"),
        "-d".into(),
        format!("{to}/32"),
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        COMMENT.into(),
        "-j".into(),
        "DROP".into(),
    ]
}

/// Directed links `(from, to)` cut when the nodes are split into `groups`:
/// every pair of nodes in different groups, both ways. Nodes in no group
/// keep every link.
pub fn partition_links(groups: &[Vec<u64>]) -> BTreeSet<(u64, u64)> {
    let mut links = BTreeSet::new();
    for (i, a) in groups.iter().enumerate() {
        for b in groups.iter().skip(i + 1) {
            for x in a {
                for y in b {
                    if x != y {
                        links.insert((*x, *y));
                        links.insert((*y, *x));
                    }
                }
            }
        }
    }
    links
}

/// Links cut by a bridge: `left` and `right` cannot talk, `bridge` talks
/// to both sides.
pub fn bridge_links(left: &[u64], bridge: u64, right: &[u64]) -> BTreeSet<(u64, u64)> {
    let left: Vec<u64> = left.iter().copied().filter(|n| *n != bridge).collect();
    let right: Vec<u64> = right.iter().copied().filter(|n| *n != bridge).collect();
    partition_links(&[left, right])
}

/// Every directed link between distinct nodes.
pub fn all_links(ids: &[u64]) -> BTreeSet<(u64, u64)> {
    let mut links = BTreeSet::new();
    for a in ids {
        for b in ids {
            if a != b {
                links.insert((*a, *b));
            }
        }
    }
    links
}

/// iptables rules (after `-A CHAIN`) dropping every link in `links`.
pub fn pair_rules(ips: &BTreeMap<u64, Ipv4Addr>, links: &BTreeSet<(u64, u64)>) -> Result<Vec<Vec<String>>> {
    links
        .iter()
        .map(|(a, b)| {
            let ia = ips.get(a).ok_or_else(|| anyhow!("unknown node {a}"))?;
            let ib = ips.get(b).ok_or_else(|| anyhow!("unknown node {b}"))?;
            Ok(drop_rule(*ia, *ib))
        })
        .collect()
}

fn run(prog: &str, args: &[String]) -> Result<String> {
    let out = Command::new(prog).args(args).output().with_context(|| format!("running {prog}"))?;
    if !out.status.success() {
        bail!("{prog} {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn iptables(args: &[&str]) -> Result<String> {
    let mut v = vec!["-w".to_string()];
    v.extend(args.iter().map(|s| s.to_string()));
    run("iptables", &v)
}

fn tc(args: &[&str]) -> Result<String> {
    run("tc", &args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

fn have(prog: &str) -> bool {
    Command::new("which").arg(prog).output().map(|o| o.status.success()).unwrap_or(false)
}

/// Installs `iptables` and `iproute2` with apt-get if `iptables` or `tc` is
/// missing.
pub fn ensure_tools() -> Result<()> {
    if have("iptables") && have("tc") {
        return Ok(());
    }
    eprintln!("chaos: installing iptables and iproute2 with apt-get");
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    let _ = ok(Command::new("apt-get").args(["update", "-qq"]));
    if !ok(Command::new("apt-get")
        .args(["install", "-y", "-qq", "iptables", "iproute2"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    {
        bail!("apt-get install iptables iproute2 failed; install them by hand");
    }
    if !(have("iptables") && have("tc")) {
        bail!("iptables or tc still missing after apt-get install");
    }
    Ok(())
}

/// The jump from `hook` into [`CHAIN`] (after `-A`/`-I`/`-C`/`-D`): for
/// loopback nodes only 127.0.0.0/8 traffic on `lo`; on real hosts every
/// packet (the chain's rules select node pairs).
pub fn jump_args(hook: &str, flag: &str, loopback: bool) -> Vec<String> {
    let mut a = vec![hook.to_string()];
    if loopback {
        a.extend([flag, "lo", "-s", "127.0.0.0/8", "-d", "127.0.0.0/8"].map(String::from));
    }
    a.extend(["-j", CHAIN].map(String::from));
    a
}

fn iptables_jump(op: &str, jump: &[String]) -> Result<String> {
    let args: Vec<&str> = std::iter::once(op).chain(jump.iter().map(String::as_str)).collect();
    iptables(&args)
}

/// Removes the jumps into [`CHAIN`] (both forms) and the chain with every
/// rule in it: every partition, and the loss rules of a shaped delay.
pub fn remove_chain() -> Result<()> {
    for (hook, flag) in JUMPS {
        for loopback in [true, false] {
            let a = jump_args(hook, flag, loopback);
            // -C succeeds while a jump exists; a crashed run may have left several.
            while iptables_jump("-C", &a).is_ok() {
                iptables_jump("-D", &a)?;
            }
        }
    }
    if iptables(&["-n", "-L", CHAIN]).is_ok() {
        iptables(&["-F", CHAIN])?;
        iptables(&["-X", CHAIN])?;
    }
    Ok(())
}

/// Removes every trace of an earlier run: the jumps, the chain, our qdisc
/// on `dev`. Safe to call when there is nothing to remove.
pub fn remove_stale(dev: &str) -> Result<()> {
    remove_chain()?;
    remove_qdisc(dev)
}

fn our_qdisc_present(dev: &str) -> Result<bool> {
    let out = tc(&["qdisc", "show", "dev", dev])?;
    Ok(out.lines().any(|l| l.contains(&format!(" {TC_HANDLE} root"))))
}

fn remove_qdisc(dev: &str) -> Result<()> {
    if our_qdisc_present(dev)? {
        tc(&["qdisc", "del", "dev", dev, "root", "handle", TC_HANDLE])?;
    }
    Ok(())
}

/// The chain's random-loss rules (those of a shaped delay), as delete
/// commands, from `iptables -S` output.
pub fn loss_rule_deletes(listing: &str) -> Vec<Vec<String>> {
    listing
        .lines()
        .filter(|l| l.starts_with("-A ") && l.contains("--mode random"))
        .map(|l| std::iter::once("-D".to_string()).chain(l.split_whitespace().skip(1).map(String::from)).collect())
        .collect()
}

/// The packet-fault controller for one cluster; see the module docs.
pub struct Net {
    ips: BTreeMap<u64, Ipv4Addr>,
    /// The device traffic control acts on.
    dev: String,
    _lock: File,
    netem_supported: Option<bool>,
    /// An operator's faults stay in force when it ends; a run's do not.
    keep: bool,
}

impl Net {
    /// For a chaos run on loopback nodes: checks root, installs the tools
    /// if needed, takes the machine-wide lock, removes stale state and
    /// installs the chain and its jumps. Everything goes on drop.
    pub fn new(ips: BTreeMap<u64, Ipv4Addr>) -> Result<Net> {
        if let Some((id, ip)) = ips.iter().find(|(_, ip)| !ip.is_loopback()) {
            bail!("node {id} has address {ip}: chaos network faults act on loopback addresses only");
        }
        let net = Net::take(ips, TC_DEV, false)?;
        remove_stale(&net.dev)?;
        net.ensure_chain()?;
        Ok(net)
    }

    /// For one operator command: takes the machine-wide lock (failing at
    /// once if a chaos run holds it) and changes nothing yet. Faults added
    /// through it, and those already in force, stay after it is dropped.
    pub fn attach(ips: BTreeMap<u64, Ipv4Addr>, dev: &str) -> Result<Net> {
        Net::take(ips, dev, true)
    }

    fn take(ips: BTreeMap<u64, Ipv4Addr>, dev: &str, keep: bool) -> Result<Net> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("network faults need root (iptables, tc); run as root or leave out the partition and netem faults");
        }
        ensure_tools()?;
        let lock = File::create(LOCK_FILE).with_context(|| format!("create {LOCK_FILE}"))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!("another chaos run holds {LOCK_FILE}; network faults are machine-wide, run one at a time");
        }
        Ok(Net { ips, dev: dev.to_string(), _lock: lock, netem_supported: None, keep })
    }

    /// Whether every node address is a loopback one (the jumps then match
    /// loopback traffic only).
    fn loopback(&self) -> bool {
        self.ips.values().all(Ipv4Addr::is_loopback)
    }

    /// Creates the chain and the jumps into it, unless they are there.
    fn ensure_chain(&self) -> Result<()> {
        if iptables(&["-n", "-L", CHAIN]).is_err() {
            iptables(&["-N", CHAIN])?;
        }
        for (hook, flag) in JUMPS {
            let a = jump_args(hook, flag, self.loopback());
            if iptables_jump("-C", &a).is_err() {
                // -I HOOK 1 <match> -j CHAIN: first in the hook, before
                // any ACCEPT of the machine's own rules.
                let mut insert = a.clone();
                insert.insert(1, "1".into());
                iptables_jump("-I", &insert)?;
            }
        }
        Ok(())
    }

    pub fn ids(&self) -> Vec<u64> {
        self.ips.keys().copied().collect()
    }

    /// Drops every directed link in `links`.
    pub fn cut(&self, links: &BTreeSet<(u64, u64)>) -> Result<()> {
        self.ensure_chain()?;
        for rule in pair_rules(&self.ips, links)? {
            let args: Vec<&str> = ["-A", CHAIN].into_iter().chain(rule.iter().map(String::as_str)).collect();
            iptables(&args)?;
        }
        Ok(())
    }

    /// Splits the nodes into `groups` that cannot reach each other.
    pub fn partition(&self, groups: &[Vec<u64>]) -> Result<()> {
        self.cut(&partition_links(groups))
    }

    /// Cuts `id` off from every other node.
    pub fn isolate(&self, id: u64) -> Result<()> {
        let rest: Vec<u64> = self.ids().into_iter().filter(|n| *n != id).collect();
        self.partition(&[vec![id], rest])
    }

    /// `left` and `right` cannot talk; `bridge` sees both.
    pub fn bridge(&self, left: &[u64], bridge: u64, right: &[u64]) -> Result<()> {
        self.cut(&bridge_links(left, bridge, right))
    }

    /// Packets `from` → `to` are dropped; `to` → `from` pass.
    pub fn drop_oneway(&self, from: u64, to: u64) -> Result<()> {
        self.cut(&BTreeSet::from([(from, to)]))
    }

    /// Delay, jitter and loss on every node-to-node link. Falls back to a
    /// shaped slow link plus random loss when the kernel has no netem.
    pub fn netem(&mut self, delay_ms: u32, jitter_ms: u32, loss_pct: f64) -> Result<NetemMode> {
        self.heal_delay()?;
        let dev = self.dev.clone();
        let dev = dev.as_str();
        tc(&["qdisc", "add", "dev", dev, "root", "handle", TC_HANDLE, "htb"])?;
        let class = format!("{}1", TC_HANDLE);
        let leaf = "7e58:";
        let mode = if self.netem_supported != Some(false) {
            // A class at (effectively) unlimited rate with a netem leaf.
            tc(&[
                "class", "add", "dev", dev, "parent", TC_HANDLE, "classid", &class, "htb", "rate", "10gbit", "quantum",
                "60000",
            ])?;
            let (d, j, l) = (format!("{delay_ms}ms"), format!("{jitter_ms}ms"), format!("{loss_pct}%"));
            match tc(&[
                "qdisc", "add", "dev", dev, "parent", &class, "handle", leaf, "netem", "delay", &d, &j, "loss", &l,
            ]) {
                Ok(_) => {
                    self.netem_supported = Some(true);
                    Some(NetemMode::Netem { delay_ms, jitter_ms, loss_pct })
                }
                Err(e) if e.to_string().contains("unknown") => {
                    self.netem_supported = Some(false);
                    remove_qdisc(dev)?;
                    tc(&["qdisc", "add", "dev", dev, "root", "handle", TC_HANDLE, "htb"])?;
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let mode = match mode {
            Some(m) => m,
            None => {
                // Slow enough that a burst of Raft traffic queues for
                // roughly `delay_ms`: rate ≈ 64 KiB per delay.
                let rate_kbit = (64 * 8 * 1000 / delay_ms.max(1)).clamp(256, 8192);
                let rate = format!("{rate_kbit}kbit");
                tc(&[
                    "class", "add", "dev", dev, "parent", TC_HANDLE, "classid", &class, "htb", "rate", &rate, "ceil",
                    &rate,
                ])?;
                tc(&["qdisc", "add", "dev", dev, "parent", &class, "handle", leaf, "pfifo", "limit", "64"])?;
                self.ensure_chain()?;
                let p = format!("{:.4}", loss_pct / 100.0);
                for (a, b) in all_links(&self.ids()) {
                    let (ia, ib) = (self.ips[&a].to_string(), self.ips[&b].to_string());
                    iptables(&[
                        "-A",
                        CHAIN,
                        "-s",
                        &ia,
                        "-d",
                        &ib,
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        &p,
                        "-m",
                        "comment",
                        "--comment",
                        COMMENT,
                        "-j",
                        "DROP",
                    ])?;
                }
                NetemMode::Shaped { rate_kbit, loss_pct }
            }
        };
        // Unclassified traffic (clients, everything else) bypasses HTB
        // (no default class): only node pairs are filtered into ours.
        for (a, b) in all_links(&self.ids()) {
            let (sa, sb) = (format!("{}/32", self.ips[&a]), format!("{}/32", self.ips[&b]));
            tc(&[
                "filter", "add", "dev", dev, "parent", TC_HANDLE, "protocol", "ip", "prio", "1", "u32", "match", "ip",
                "src", &sa, "match", "ip", "dst", &sb, "flowid", &class,
            ])?;
        }
        Ok(mode)
    }

    /// Removes every fault: flushes the chain, deletes our qdisc.
    pub fn heal(&self) -> Result<()> {
        if iptables(&["-n", "-L", CHAIN]).is_ok() {
            iptables(&["-F", CHAIN])?;
        }
        remove_qdisc(&self.dev)
    }

    /// Removes every partition: the chain, with every rule in it, and the
    /// jumps into it.
    pub fn heal_partitions(&self) -> Result<()> {
        remove_chain()
    }

    /// Removes the delay: our qdisc, and the random-loss rules of a shaped
    /// delay (partitions stay).
    pub fn heal_delay(&self) -> Result<()> {
        remove_qdisc(&self.dev)?;
        if let Ok(listing) = iptables(&["-S", CHAIN]) {
            for delete in loss_rule_deletes(&listing) {
                iptables(&delete.iter().map(String::as_str).collect::<Vec<_>>())?;
            }
        }
        Ok(())
    }

    /// Removes every trace: the jumps, the chain, our qdisc.
    pub fn heal_all(&self) -> Result<()> {
        remove_stale(&self.dev)
    }

    /// The rules currently in the chain (for logs); `None` if there is no
    /// chain.
    pub fn rules(&self) -> Option<String> {
        iptables(&["-S", CHAIN]).ok()
    }

    /// The qdiscs, classes and filters on the device.
    pub fn traffic_control(&self) -> Result<String> {
        let dev = self.dev.as_str();
        let mut out = String::new();
        for what in ["qdisc", "class", "filter"] {
            out.push_str(&tc(&[what, "show", "dev", dev])?);
        }
        Ok(out)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(e) = remove_stale(&self.dev) {
            eprintln!("chaos: cleaning up network faults failed: {e:#}; run chaos-tests/scripts/heal.sh");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips() -> BTreeMap<u64, Ipv4Addr> {
        (1..=3u64).map(|i| (i, Ipv4Addr::new(127, 0, 0, 10 + i as u8))).collect()
    }

    #[test]
    fn given_split_when_links_computed_then_only_cross_group_links_are_cut_both_ways() {
        let links = partition_links(&[vec![1], vec![2, 3]]);
        assert_eq!(links, BTreeSet::from([(1, 2), (2, 1), (1, 3), (3, 1)]));
    }

    #[test]
    fn given_bridge_when_links_computed_then_bridge_keeps_both_sides() {
        let links = bridge_links(&[1, 2], 3, &[4, 5]);
        assert!(links.contains(&(1, 4)) && links.contains(&(5, 2)));
        assert!(links.iter().all(|(a, b)| *a != 3 && *b != 3));
        assert_eq!(links.len(), 8);
    }

    #[test]
    fn given_links_when_rules_built_then_each_names_source_and_destination_node() {
        let rules = pair_rules(&ips(), &BTreeSet::from([(1, 2)])).unwrap();
        assert_eq!(rules.len(), 1);
        let r = rules[0].join(" ");
        assert!(r.starts_with("-s 127.0.0.11/32 -d 127.0.0.12/32"), "{r}");
        assert!(r.ends_with("-j DROP"), "{r}");
        assert!(pair_rules(&ips(), &BTreeSet::from([(1, 9)])).is_err());
    }

    #[test]
    fn all_links_are_directed_pairs_of_distinct_nodes() {
        assert_eq!(all_links(&[1, 2, 3]).len(), 6);
    }

    #[test]
    fn given_loopback_or_real_hosts_then_the_jump_matches_loopback_traffic_or_everything() {
        assert_eq!(
            jump_args("INPUT", "-i", true).join(" "),
            "INPUT -i lo -s 127.0.0.0/8 -d 127.0.0.0/8 -j REPLOG-CHAOS"
        );
        assert_eq!(jump_args("OUTPUT", "-o", false).join(" "), "OUTPUT -j REPLOG-CHAOS");
    }

    #[test]
    fn given_a_chain_listing_then_only_random_loss_rules_are_deleted() {
        let listing = "-N REPLOG-CHAOS\n\
            -A REPLOG-CHAOS -s 127.0.0.11/32 -d 127.0.0.12/32 -m comment --comment replog-chaos -j DROP\n\
            -A REPLOG-CHAOS -s 127.0.0.11/32 -d 127.0.0.13/32 -m statistic --mode random --probability 0.05000000000 -m comment --comment replog-chaos -j DROP\n";
        let deletes = loss_rule_deletes(listing);
        assert_eq!(deletes.len(), 1);
        assert_eq!(deletes[0][..4].join(" "), "-D REPLOG-CHAOS -s 127.0.0.11/32");
        assert!(deletes[0].join(" ").contains("--probability 0.05000000000"));
    }
}
