//! The `replog` command-line tool: argument definitions and dispatch. One
//! file per subcommand.

mod acl;
mod bench;
mod cluster;
mod consume;
mod group;
mod membership;
mod produce;
mod queue;
mod schema;
mod tls;
mod topic;
mod user;

use clap::{Parser, Subcommand, ValueEnum};

use crate::client::{ClientConfig, Credentials, TlsOptions};
use crate::{Client, Error};

/// The nodes of the local `make run` cluster (`ops/cluster.sh up`).
pub use crate::client::DEFAULT_BOOTSTRAP;

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
    /// Speak TLS, trusting brokers whose certificates this CA (PEM) issued.
    /// The variables are REPLOG_CLIENT_TLS_*, apart from the node's own
    /// REPLOG_TLS_* (its server certificate).
    #[arg(long, global = true, env = "REPLOG_CLIENT_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// This client's certificate (PEM), for brokers that ask for one; its
    /// subject's CN is the principal.
    #[arg(long, global = true, env = "REPLOG_CLIENT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, global = true, env = "REPLOG_CLIENT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Authenticate as this user (with --password).
    #[arg(long, global = true, env = "REPLOG_USER", requires = "password")]
    pub user: Option<String>,
    /// The user's password.
    #[arg(long, global = true, env = "REPLOG_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
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
    /// Move partitions between nodes and follow the moves.
    #[command(subcommand)]
    Partition(membership::PartitionCmd),
    /// Node membership: decommission a node.
    #[command(subcommand)]
    Node(membership::NodeCmd),
    /// Users who authenticate with a password (SCRAM-SHA-256).
    #[command(subcommand)]
    User(user::UserCmd),
    /// Permissions of principals on topics, groups and the cluster.
    #[command(subcommand)]
    Acl(acl::AclCmd),
    /// Throwaway certificates for a local cluster.
    #[command(subcommand)]
    Tls(tls::TlsCmd),
    /// The schema registry: register, check, get, list and delete schemas.
    #[command(subcommand)]
    Schema(schema::SchemaCmd),
}

/// Runs the parsed command; the error's exit code is 1 for broker and
/// transport errors, 2 for bad arguments.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.client_config()?;
    let connect = || Client::connect_with(cli.bootstrap.clone(), config.clone());
    match cli.command {
        Command::Tls(cmd) => tls::run(cmd),
        Command::User(cmd) => user::run(connect().await?, cmd, cli.output).await,
        Command::Acl(cmd) => acl::run(connect().await?, cmd, cli.output).await,
        Command::Topic(cmd) => topic::run(connect().await?, cmd, cli.output).await,
        Command::Produce(args) => produce::run(connect().await?, args, cli.output).await,
        Command::Consume(args) => consume::run(connect().await?, args, cli.output).await,
        Command::Cluster(cmd) => cluster::run(connect().await?, cmd, cli.output).await,
        Command::Group(cmd) => group::run(connect().await?, cmd, cli.output).await,
        Command::Bench(cmd) => bench::run(connect().await?, cmd).await,
        Command::Queue(cmd) => queue::run(connect().await?, cmd, cli.output).await,
        Command::Partition(cmd) => membership::run_partition(connect().await?, cmd, cli.output).await,
        Command::Node(cmd) => membership::run_node(connect().await?, cmd, cli.output).await,
        Command::Schema(cmd) => schema::run(connect().await?, cmd, cli.output).await,
    }
}

impl Cli {
    /// The SDK settings the global flags make.
    pub fn client_config(&self) -> Result<ClientConfig, Error> {
        let tls = match &self.tls_ca {
            Some(ca) => Some(TlsOptions::from_files(ca, self.tls_cert.as_deref(), self.tls_key.as_deref())?),
            None if self.tls_cert.is_some() => {
                return Err(Error::InvalidArgument("--tls-cert needs --tls-ca".into()));
            }
            None => None,
        };
        let credentials = match (&self.user, &self.password) {
            (Some(user), Some(password)) => Some(Credentials { user: user.clone(), password: password.clone() }),
            (None, _) => None,
            (Some(_), None) => return Err(Error::InvalidArgument("--user needs --password".into())),
        };
        Ok(ClientConfig { tls, credentials, ..ClientConfig::default() })
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
