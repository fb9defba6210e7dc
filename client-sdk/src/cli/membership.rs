//! `replog partition move|status`, `replog node decommission`, and the
//! text and JSON forms of partition moves shared with `cluster balance`.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::Output;
use crate::Client;
use crate::membership::PartitionMove;

/// How often `--wait` looks at the moves.
const WAIT_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Subcommand)]
pub enum PartitionCmd {
    /// Move a partition to a new replica set: the new replicas join as
    /// learners, catch up, and replace the old ones by joint consensus.
    Move(MoveArgs),
    /// Moves under way, with each new replica's progress.
    Status {
        /// Keep showing progress until no move is left.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Args)]
pub struct MoveArgs {
    pub topic: String,
    pub partition: u32,
    /// The new replica set, node ids; the first is the preferred leader.
    #[arg(long, value_delimiter = ',', required = true)]
    pub replicas: Vec<u64>,
    /// Allow fewer replicas than the partition has now.
    #[arg(long)]
    pub force: bool,
    /// Wait until the move is done, showing its progress.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Move every replica off a node, then remove it from the cluster
    /// (stop its process afterwards).
    Decommission {
        id: u64,
        /// Wait until the node has left the cluster.
        #[arg(long)]
        wait: bool,
    },
}

pub async fn run_partition(client: Client, cmd: PartitionCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        PartitionCmd::Move(a) => {
            let m = client.move_partition(&a.topic, a.partition, &a.replicas, a.force).await?;
            match (&m, out) {
                (Some(m), Output::Json) => println!("{}", move_json(m)),
                (Some(m), Output::Text) => println!("moving {}", move_line(m)),
                (None, Output::Json) => println!("{}", json!({"reordered": a.replicas})),
                (None, Output::Text) => println!("{}/{}: preferred order now {:?}", a.topic, a.partition, a.replicas),
            }
            if a.wait
                && let Some(m) = m
            {
                let moves = [m];
                wait_moves(&client, out, || client.moves_done(&moves)).await?;
            }
        }
        PartitionCmd::Status { wait } => {
            let s = client.move_status().await?;
            print_status(&s, out);
            if wait {
                wait_moves(&client, out, || async { Ok(client.move_status().await?.moves.is_empty()) }).await?;
            }
        }
    }
    Ok(())
}

pub async fn run_node(client: Client, cmd: NodeCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        NodeCmd::Decommission { id, wait } => {
            let moves = client.decommission_node(id).await?;
            print_moves(&format!("decommissioning node {id}"), &moves, out);
            if wait {
                wait_moves(&client, out, || client.node_removed(id)).await?;
                if out == Output::Text {
                    println!("node {id} has left the cluster; stop its process");
                }
            }
        }
    }
    Ok(())
}

/// Until `done` says so, shows every [`WAIT_POLL`] the progress of the
/// moves under way.
pub async fn wait_moves<F, Fut>(client: &Client, out: Output, done: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = crate::Result<bool>>,
{
    let started = Instant::now();
    loop {
        if done().await? {
            if out == Output::Text {
                println!("done in {:.1} s", started.elapsed().as_secs_f64());
            }
            return Ok(());
        }
        if out == Output::Text {
            for m in &client.move_status().await?.moves {
                println!("{}", progress_bar(m));
            }
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

pub fn print_status(s: &crate::membership::MoveStatusResponse, out: Output) {
    match out {
        Output::Json => {
            let moves: Vec<Value> = s.moves.iter().map(move_json).collect();
            println!("{}", json!({"moves": moves, "decommissioning": s.decommissioning}));
        }
        Output::Text => {
            if s.moves.is_empty() {
                println!("no moves under way");
            }
            for m in &s.moves {
                println!("{}", progress_bar(m));
            }
            if !s.decommissioning.is_empty() {
                println!("decommissioning: {:?}", s.decommissioning);
            }
        }
    }
}

pub fn print_moves(what: &str, moves: &[PartitionMove], out: Output) {
    match out {
        Output::Json => println!("{}", json!({ "moves": moves.iter().map(move_json).collect::<Vec<_>>() })),
        Output::Text => {
            println!("{what}: {} change(s)", moves.len());
            for m in moves {
                println!("  {}", move_line(m));
            }
        }
    }
}

pub fn move_json(m: &PartitionMove) -> Value {
    let progress: Vec<Value> = m
        .progress
        .iter()
        .map(|p| json!({"node": p.node, "applied_index": p.applied_index, "leader_index": p.leader_index}))
        .collect();
    json!({"topic": m.topic, "partition": m.partition, "group": m.group_id, "from": m.from, "to": m.to,
           "leader": (m.leader != 0).then_some(m.leader), "progress": progress})
}

pub fn move_line(m: &PartitionMove) -> String {
    format!("{}/{}: {:?} -> {:?}", m.topic, m.partition, m.from, m.to)
}

/// `topic/p: [1,2,3] -> [1,2,4]  [#########-----------]  45%`: the share of
/// the leader's log the slowest new replica holds.
pub fn progress_bar(m: &PartitionMove) -> String {
    const WIDTH: usize = 20;
    let fraction = m
        .progress
        .iter()
        .filter(|p| !m.from.contains(&p.node))
        .map(|p| if p.leader_index == 0 { 0.0 } else { (p.applied_index as f64 / p.leader_index as f64).min(1.0) })
        .fold(1.0f64, f64::min);
    let filled = (fraction * WIDTH as f64).round() as usize;
    format!("{}  [{}{}] {:>3.0}%", move_line(m), "#".repeat(filled), "-".repeat(WIDTH - filled), fraction * 100.0)
}
