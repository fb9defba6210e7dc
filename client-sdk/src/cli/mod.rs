//! The `replog` command-line tool: argument definitions and dispatch. One
//! file per subcommand.

mod bench;
mod cluster;
mod consume;
mod group;
mod produce;
mod queue;
mod schema;
mod topic;

use clap::{Parser, Subcommand, ValueEnum};

use crate::{Client, Error};

/// The nodes of the local `make run` cluster (`ops/cluster.sh up`).
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

#[derive(Debug, Parser)]
#[command(name = "replog", version, about = "Command-line client for a replog cluster")]
pub struct Cli {
    /// Broker addresses to start from (host:port, comma-separated). Any
    /// one that answers will do; the default is the three nodes of the
    /// local `make run` cluster, so it works while one of them is down.
    #[arg(
        long,
        global = true,
        env = "REPLOG_BOOTSTRAP",
        default_value = DEFAULT_BOOTSTRAP,
        value_delimiter = ','
    )]
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
    /// List, describe, reset and delete consumer groups.
    #[command(subcommand)]
    Group(group::GroupCmd),
    /// Cluster-wide information.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Measure produce or consume throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Queue groups: consume (each event to one consumer), describe, reset.
    #[command(subcommand)]
    Queue(queue::QueueCmd),
    /// The schema registry: register, check, get, list and delete schemas.
    #[command(subcommand)]
    Schema(schema::SchemaCmd),
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
        Command::Group(cmd) => group::run(connect().await?, cmd, cli.output).await,
        Command::Bench(cmd) => bench::run(connect().await?, cmd).await,
        Command::Queue(cmd) => queue::run(connect().await?, cmd, cli.output).await,
        Command::Schema(cmd) => schema::run(connect().await?, cmd, cli.output).await,
    }
}

/// Maps an error to the process exit code.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<Error>() {
        Some(Error::InvalidArgument(_)) => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_no_bootstrap_flag_when_parsed_then_every_local_cluster_node_is_a_bootstrap() {
        let cli = Cli::try_parse_from(["replog", "cluster", "status"]).expect("parse");
        // The variable, when set, rightly wins over the default.
        if std::env::var_os("REPLOG_BOOTSTRAP").is_none() {
            assert_eq!(cli.bootstrap, vec!["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]);
        }
    }
}
