//! `chaos net …`: the network faults of [`crate::net`] by hand, against a
//! cluster started with `ops/cluster.sh` or a real deployment. The scripts
//! `chaos-tests/scripts/partition.sh`, `netem.sh` and `heal.sh` are thin
//! wrappers over these commands.
//!
//! Faults added here stay in force when the command ends (each command
//! adds to what is there) until `chaos net heal`. A command fails at once
//! while a chaos run holds the network (`/tmp/replog-chaos-net.lock`).
//!
//! Nodes come from `--nodes ID=IP,…` (env `REPLOG_NODE_IPS`; on real hosts
//! run the same command on every node host), else from the `cluster.env`
//! of the `ops/cluster.sh` cluster in `--cluster-dir` (env
//! `REPLOG_CLUSTER_DIR`, default `target/replog-cluster`), which must have
//! been started with `REPLOG_PER_NODE_IP=1` so that every node has an
//! address of its own. `heal` and `show` need no nodes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use crate::net::{CHAIN, Net, TC_DEV};

/// What `heal` and `show` act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The iptables chain: partitions and one-way drops (and a shaped
    /// delay's loss rules).
    Partitions,
    /// The qdisc of a delay, and a shaped delay's loss rules.
    Delay,
    /// Both.
    All,
}

/// One operator command.
#[derive(Debug, Clone, PartialEq)]
pub enum NetCommand {
    /// `isolate ID`: node ID cut off from every other node.
    Isolate(u64),
    /// `split A,B C,D …`: groups that cannot reach each other.
    Split(Vec<Vec<u64>>),
    /// `bridge A,B M C,D`: the two sides cannot talk; M talks to both.
    Bridge(Vec<u64>, u64, Vec<u64>),
    /// `oneway FROM TO`: packets FROM → TO dropped, TO → FROM pass.
    Oneway(u64, u64),
    /// Delay, jitter and loss on every node-to-node link.
    Delay {
        delay_ms: u32,
        jitter_ms: u32,
        loss_pct: f64,
    },
    Heal(Scope),
    Show(Scope),
}

/// Where the nodes and the device come from.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `ID=IP,…` (`REPLOG_NODE_IPS`); an `ID=IP:PORT` entry is taken as IP.
    pub nodes: Option<String>,
    /// The `ops/cluster.sh` state directory whose `cluster.env` names the
    /// nodes when `nodes` is not given.
    pub cluster_dir: String,
    /// The device traffic control acts on (`REPLOG_NETEM_DEV`).
    pub dev: Option<String>,
}

/// Parses `ID=IP[:PORT],…` into addresses by id; every node must have an
/// address of its own.
pub fn parse_nodes(list: &str) -> Result<BTreeMap<u64, Ipv4Addr>> {
    let mut nodes = BTreeMap::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry.split_once('=').ok_or_else(|| anyhow!("bad node entry {entry:?} (want ID=IP)"))?;
        let id: u64 = id.parse().map_err(|_| anyhow!("bad node id in {entry:?}"))?;
        let ip = addr.rsplit_once(':').map_or(addr, |(ip, _port)| ip);
        let ip: Ipv4Addr = ip.parse().map_err(|_| anyhow!("bad address in {entry:?} (IPv4 only)"))?;
        nodes.insert(id, ip);
    }
    if nodes.is_empty() {
        bail!("no nodes in {list:?}");
    }
    let mut distinct: Vec<Ipv4Addr> = nodes.values().copied().collect();
    distinct.sort();
    distinct.dedup();
    if distinct.len() != nodes.len() {
        bail!(
            "nodes share an address ({list}): packet faults need one address per node; restart the cluster with REPLOG_PER_NODE_IP=1 ops/cluster.sh up"
        );
    }
    Ok(nodes)
}

/// The `INITIAL_CLUSTER` of an `ops/cluster.sh` state directory.
fn initial_cluster(dir: &Path) -> Result<String> {
    let env = dir.join("cluster.env");
    let text = std::fs::read_to_string(&env).with_context(|| {
        format!(
            "no nodes: set REPLOG_NODE_IPS=1=IP,2=IP,... or start a cluster with REPLOG_PER_NODE_IP=1 ops/cluster.sh up (read {})",
            env.display()
        )
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("INITIAL_CLUSTER="))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{} names no INITIAL_CLUSTER", env.display()))
}

/// The nodes the target names.
pub fn nodes(target: &Target) -> Result<BTreeMap<u64, Ipv4Addr>> {
    match &target.nodes {
        Some(list) if !list.trim().is_empty() => parse_nodes(list),
        _ => parse_nodes(&initial_cluster(Path::new(&target.cluster_dir))?),
    }
}

/// Parses a comma list of node ids.
pub fn parse_group(list: &str) -> Result<Vec<u64>> {
    list.split(',').map(|id| id.trim().parse().map_err(|_| anyhow!("bad node id {id:?} in {list:?}"))).collect()
}

fn join(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn check_known(net: &Net, id: u64) -> Result<()> {
    if !net.ids().contains(&id) {
        bail!("unknown node {id} (nodes: {})", join(&net.ids()));
    }
    Ok(())
}

/// Runs `cmd`; returns what to print.
pub fn run(cmd: &NetCommand, target: &Target) -> Result<String> {
    let dev = target.dev.clone().unwrap_or_else(|| TC_DEV.to_string());
    let needs_nodes = !matches!(cmd, NetCommand::Heal(_) | NetCommand::Show(_));
    let ips = if needs_nodes { nodes(target)? } else { BTreeMap::new() };
    let mut net = Net::attach(ips, &dev)?;
    Ok(match cmd {
        NetCommand::Isolate(id) => {
            check_known(&net, *id)?;
            net.isolate(*id)?;
            let rest: Vec<u64> = net.ids().into_iter().filter(|n| n != id).collect();
            format!("isolated node {id} from {}", join(&rest))
        }
        NetCommand::Split(groups) => {
            if groups.len() < 2 {
                bail!("split needs two groups or more, e.g. split 1 2,3");
            }
            net.partition(groups)?;
            format!("split into: {}", groups.iter().map(|g| join(g)).collect::<Vec<_>>().join(" "))
        }
        NetCommand::Bridge(left, middle, right) => {
            check_known(&net, *middle)?;
            net.bridge(left, *middle, right)?;
            format!("bridge: {} <-> {middle} <-> {}", join(left), join(right))
        }
        NetCommand::Oneway(from, to) => {
            net.drop_oneway(*from, *to)?;
            format!("dropping packets {from} -> {to}")
        }
        NetCommand::Delay { delay_ms, jitter_ms, loss_pct } => {
            let mode = net.netem(*delay_ms, *jitter_ms, *loss_pct)?;
            format!("{mode} on every link between nodes {} on {dev}", join(&net.ids()))
        }
        NetCommand::Heal(Scope::Partitions) => {
            net.heal_partitions()?;
            "partitions healed".into()
        }
        NetCommand::Heal(Scope::Delay) => {
            net.heal_delay()?;
            "delay removed".into()
        }
        NetCommand::Heal(Scope::All) => {
            net.heal_all()?;
            "network healed".into()
        }
        NetCommand::Show(scope) => {
            let mut out = String::new();
            if *scope != Scope::Delay {
                out += &net.rules().unwrap_or_else(|| format!("no {CHAIN} chain: no partition\n"));
            }
            if *scope != Scope::Partitions {
                out += &net.traffic_control()?;
            }
            out.trim_end().to_string()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_node_list_then_ids_map_to_addresses_and_ports_are_dropped() {
        let nodes = parse_nodes("1=127.0.0.11:7001,2=127.0.0.12:7002, 3=10.0.0.13").unwrap();
        assert_eq!(nodes[&1], Ipv4Addr::new(127, 0, 0, 11));
        assert_eq!(nodes[&3], Ipv4Addr::new(10, 0, 0, 13));
        assert_eq!(nodes.len(), 3);
    }

    #[test]
    fn given_nodes_sharing_an_address_then_the_error_names_per_node_ips() {
        let err = parse_nodes("1=127.0.0.1:7001,2=127.0.0.1:7002").unwrap_err().to_string();
        assert!(err.contains("REPLOG_PER_NODE_IP=1"), "{err}");
        assert!(parse_nodes("1=localhost").is_err());
        assert!(parse_nodes("x=127.0.0.11").is_err());
        assert!(parse_nodes("").is_err());
    }

    #[test]
    fn given_a_cluster_env_then_its_initial_cluster_names_the_nodes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cluster.env"),
            "# written by ops/cluster.sh\nN=2\nINITIAL_CLUSTER=1=127.0.0.11:7001,2=127.0.0.12:7002\nPER_NODE_IP=1\n",
        )
        .unwrap();
        let target = Target { cluster_dir: dir.path().display().to_string(), ..Target::default() };
        assert_eq!(nodes(&target).unwrap().keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        let given = Target { nodes: Some("5=10.0.0.5".into()), ..target };
        assert_eq!(nodes(&given).unwrap().keys().copied().collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn groups_are_comma_lists_of_ids() {
        assert_eq!(parse_group("1,2, 3").unwrap(), vec![1, 2, 3]);
        assert!(parse_group("1,,2").is_err());
    }
}
