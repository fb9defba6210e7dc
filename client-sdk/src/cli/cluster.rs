//! `replog cluster status|balance|config|voters`.

use clap::Subcommand;
use serde_json::json;

use super::Output;
use super::membership::{print_moves, wait_moves};
use crate::Client;

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Nodes: alive, in sync, leaders, replicas, under-replicated
    /// partitions they lead, controller voter, stopping, decommissioning.
    Status,
    /// Spread replicas and preferred leaders evenly over the live nodes
    /// (each within one of even) by moving partitions.
    Balance {
        /// Only show the plan.
        #[arg(long)]
        dry_run: bool,
        /// Wait until the moves are done.
        #[arg(long)]
        wait: bool,
    },
    /// The controller group's voters: `--add`/`--remove` grow, shrink or
    /// replace them in one change (a removed voter stays a learner).
    Voters {
        /// Nodes to make voters (each must be alive and joined).
        #[arg(long, value_delimiter = ',')]
        add: Vec<u64>,
        /// Voters to turn into learners.
        #[arg(long, value_delimiter = ',')]
        remove: Vec<u64>,
    },
    /// Cluster-wide settings, overriding each node's own: `move.throttle`,
    /// `balance.auto`, `balance.max_moves`.
    Config {
        #[command(subcommand)]
        cmd: Option<ConfigCmd>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Every setting and its cluster-wide value (the default).
    Get,
    /// Set one for the whole cluster, e.g. `move.throttle 10MiB`.
    Set { key: String, value: String },
    /// Clear one: each node's own setting applies again.
    Unset { key: String },
}

pub async fn run(client: Client, cmd: ClusterCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        ClusterCmd::Status => {
            let s = client.cluster_status().await?;
            match out {
                Output::Json => {
                    let nodes: Vec<_> = s
                        .nodes
                        .iter()
                        .map(|n| {
                            json!({"id": n.id, "addr": n.addr, "alive": n.alive,
                                   "leader_count": n.leader_count, "replica_count": n.replica_count,
                                   "in_sync": n.in_sync, "under_replicated": n.under_replicated,
                                   "controller_voter": n.controller_voter, "stopping": n.stopping,
                                   "decommissioning": n.decommissioning,
                                   "rack": (!n.rack.is_empty()).then_some(&n.rack)})
                        })
                        .collect();
                    let controller = (s.controller_leader != 0).then_some(s.controller_leader);
                    println!("{}", json!({ "nodes": nodes, "controller_leader": controller }));
                }
                Output::Text => {
                    println!(
                        "{:>4}  {:<22}  {:<5}  {:<7}  {:>7}  {:>8}  {:>8}  ROLE",
                        "ID", "ADDR", "ALIVE", "IN_SYNC", "LEADERS", "REPLICAS", "UNDER_R"
                    );
                    for n in &s.nodes {
                        let mut role = vec![if n.controller_voter { "voter" } else { "learner" }];
                        if n.id == s.controller_leader {
                            role.push("controller");
                        }
                        if n.stopping {
                            role.push("stopping");
                        }
                        if n.decommissioning {
                            role.push("decommissioning");
                        }
                        let rack = format!("rack={}", n.rack);
                        if !n.rack.is_empty() {
                            role.push(&rack);
                        }
                        println!(
                            "{:>4}  {:<22}  {:<5}  {:<7}  {:>7}  {:>8}  {:>8}  {}",
                            n.id,
                            n.addr,
                            n.alive,
                            n.in_sync,
                            n.leader_count,
                            n.replica_count,
                            n.under_replicated,
                            role.join(",")
                        );
                    }
                }
            }
        }
        ClusterCmd::Config { cmd } => {
            let settings = match cmd.unwrap_or(ConfigCmd::Get) {
                ConfigCmd::Get => client.cluster_config(&[]).await?,
                ConfigCmd::Set { key, value } => client.cluster_config(&[(&key, &value)]).await?,
                ConfigCmd::Unset { key } => client.cluster_config(&[(&key, "")]).await?,
            };
            match out {
                Output::Json => {
                    let m: serde_json::Map<String, serde_json::Value> = settings
                        .iter()
                        .map(|s| (s.key.clone(), (!s.value.is_empty()).then(|| s.value.clone()).into()))
                        .collect();
                    println!("{}", serde_json::Value::Object(m));
                }
                Output::Text => {
                    for s in &settings {
                        let v = if s.value.is_empty() { "(each node's own)" } else { &s.value };
                        println!("{:<18} {:<20} {}", s.key, v, s.doc);
                    }
                }
            }
        }
        ClusterCmd::Voters { add, remove } => {
            let (voters, learners) = client.controller_voters(&add, &remove).await?;
            match out {
                Output::Json => println!("{}", json!({ "voters": voters, "learners": learners })),
                Output::Text => println!("voters {voters:?}, learners {learners:?}"),
            }
        }
        ClusterCmd::Balance { dry_run, wait } => {
            let moves = client.balance_cluster(dry_run).await?;
            let what = if dry_run { "balance plan (dry run)" } else { "balancing" };
            print_moves(what, &moves, out);
            if wait && !dry_run {
                wait_moves(&client, out, || client.moves_done(&moves)).await?;
            }
        }
    }
    Ok(())
}
