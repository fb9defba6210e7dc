//! `replog cluster status`.

use clap::Subcommand;
use serde_json::json;

use super::Output;
use crate::Client;

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Nodes, whether each is alive, and how many partitions each leads.
    Status,
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
                                   "leader_count": n.leader_count, "replica_count": n.replica_count})
                        })
                        .collect();
                    let controller = (s.controller_leader != 0).then_some(s.controller_leader);
                    println!("{}", json!({ "nodes": nodes, "controller_leader": controller }));
                }
                Output::Text => {
                    println!("{:>4}  {:<22}  {:<5}  {:>7}  {:>8}", "ID", "ADDR", "ALIVE", "LEADERS", "REPLICAS");
                    for n in &s.nodes {
                        let ctl = if n.id == s.controller_leader { "  (controller)" } else { "" };
                        println!(
                            "{:>4}  {:<22}  {:<5}  {:>7}  {:>8}{ctl}",
                            n.id, n.addr, n.alive, n.leader_count, n.replica_count
                        );
                    }
                }
            }
        }
    }
    Ok(())
}
