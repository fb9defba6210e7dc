//! The `replog` command-line tool: argument definitions and dispatch. One
//! file per subcommand.

mod bench;
mod cluster;
mod consume;
mod produce;
mod queue;
mod topic;

use clap::{Parser, Subcommand, ValueEnum};

use crate::{Client, Error};

#[derive(Debug, Parser)]
#[command(name = "replog", version, about = "Command-line client for a replog cluster")]
pub struct Cli {
    /// Broker addresses to start from (host:port, comma-separated).
    #[arg(long, global = true, env = "REPLOG_BOOTSTRAP", default_value = "127.0.0.1:7001", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCmd),
    /// Send one record per line of standard input.
    Produce(produce::ProduceArgs),
    /// Print records of a topic.
    Consume(consume::ConsumeArgs),
    /// Cluster-wide information.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Measure produce or consume throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Queue groups: consume (each event to one consumer), describe, reset.
    #[command(subcommand)]
    Queue(queue::QueueCmd),
}

/// Runs the parsed command; the error's exit code is 1 for broker and
/// transport errors, 2 for bad arguments.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let connect = || Client::connect(cli.bootstrap.clone());
    match cli.command {
        Command::Topic(cmd) => topic::run(connect().await?, cmd, cli.output).await,
        Command::Produce(args) => produce::run(connect().await?, args, cli.output).await,
        Command::Consume(args) => consume::run(connect().await?, args, cli.output).await,
        Command::Cluster(cmd) => cluster::run(connect().await?, cmd, cli.output).await,
        Command::Bench(cmd) => bench::run(connect().await?, cmd).await,
        Command::Queue(cmd) => queue::run(connect().await?, cmd, cli.output).await,
    }
}

/// Maps an error to the process exit code.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<Error>() {
        Some(Error::InvalidArgument(_)) => 2,
        _ => 1,
    }
}
