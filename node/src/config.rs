//! Node configuration: a serde struct with defaults, loaded from an optional
//! TOML file, overridden by flags and `REPLOG_*` environment variables, and
//! checked by `validate()`. `ops/replog-node.example.toml` documents every key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

/// Everything a node needs to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id, unique in the cluster, > 0.
    pub id: u64,
    /// gRPC listen address (client and peer services).
    pub listen: SocketAddr,
    /// Address other nodes and clients use to reach this node; defaults to `listen`.
    pub advertise: Option<String>,
    /// Prometheus `/metrics` and `/health` listen address.
    pub metrics_listen: SocketAddr,
    /// Where the node keeps its sled database.
    pub data_dir: PathBuf,
    /// The first cluster's members, `id → address`; every member of the
    /// first cluster is started with the same map. Ignored on restart.
    pub initial_cluster: BTreeMap<u64, String>,
    /// Raft heartbeat interval. Followers expect one at least this often.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in this range
    /// starts an election: how long a dead leader goes unnoticed.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Largest producer batch accepted, in bytes.
    pub max_batch_bytes: usize,
    /// Largest single record accepted, in bytes.
    pub max_record_bytes: usize,
    /// Longest time a produce may wait for its commit: an acks=all produce
    /// answers TIMEOUT then, an acks=none write stops waiting and frees its
    /// slot. A request may ask for less.
    pub produce_timeout_ms: u64,
    /// Longest long-poll wait a fetch may ask for.
    pub max_fetch_wait_ms: u64,
    /// sled page cache, in MiB.
    pub cache_mb: u64,
    /// Replicas per topic partition when a request does not say.
    pub default_replication_factor: u32,
    /// Most partitions a topic may have.
    pub max_partitions: u32,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 0,
            listen: "127.0.0.1:7001".parse().expect("literal address"),
            advertise: None,
            metrics_listen: "127.0.0.1:9101".parse().expect("literal address"),
            data_dir: PathBuf::from("replog-data"),
            initial_cluster: BTreeMap::new(),
            heartbeat_ms: 150,
            election_timeout_min_ms: 750,
            election_timeout_max_ms: 1500,
            max_batch_bytes: 1 << 20,
            max_record_bytes: 1 << 20,
            produce_timeout_ms: 10_000,
            max_fetch_wait_ms: 30_000,
            cache_mb: 256,
            default_replication_factor: 3,
            max_partitions: 1024,
        }
    }
}

impl NodeConfig {
    pub fn advertise_addr(&self) -> String {
        self.advertise.clone().unwrap_or_else(|| self.listen.to_string())
    }

    /// Checks fields against each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("--id must be given and greater than 0".into());
        }
        if !self.initial_cluster.is_empty() {
            match self.initial_cluster.get(&self.id) {
                None => {
                    return Err(format!("--initial-cluster does not name this node (id {})", self.id));
                }
                Some(a) if *a != self.advertise_addr() => {
                    return Err(format!(
                        "--initial-cluster gives node {} the address {a}, but it advertises {}",
                        self.id,
                        self.advertise_addr()
                    ));
                }
                _ => {}
            }
        }
        if self.heartbeat_ms == 0 || self.election_timeout_min_ms <= self.heartbeat_ms * 3 {
            return Err("election timeout must be more than 3 heartbeats".into());
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err("election-timeout-max-ms must exceed election-timeout-min-ms".into());
        }
        if self.max_batch_bytes > replog_raft_store::store::MAX_INLINE_ENTRY_BYTES - 4096 {
            return Err(format!(
                "max-batch-bytes may be at most {} (sled inline entry limit)",
                replog_raft_store::store::MAX_INLINE_ENTRY_BYTES - 4096
            ));
        }
        if self.max_record_bytes > self.max_batch_bytes {
            return Err("max-record-bytes cannot exceed max-batch-bytes".into());
        }
        Ok(())
    }

    pub fn raft_config(&self) -> Result<openraft::Config, String> {
        let c = openraft::Config {
            cluster_name: "replog".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            // Raft logs are partition logs: openraft must never snapshot and
            // purge them on its own; retention decides what is released.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: u64::MAX / 2,
            max_payload_entries: 64,
            // A restarted node must win an election like any other, never
            // resume leadership from local state alone.
            enable_leader_restore: Some(false),
            // A node cut off from the cluster must not disrupt it with
            // ever-higher terms when it comes back.
            enable_pre_vote: Some(true),
            ..Default::default()
        };
        c.validate().map_err(|e| e.to_string())
    }
}

/// Command-line flags; each overrides the config file and has a `REPLOG_*`
/// environment variable.
#[derive(Debug, Parser)]
#[command(name = "replog-node", version, about = "A replog broker node")]
pub struct Args {
    /// TOML config file (see ops/replog-node.example.toml).
    #[arg(long, env = "REPLOG_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "REPLOG_ID")]
    pub id: Option<u64>,
    /// gRPC listen address [default: 127.0.0.1:7001].
    #[arg(long, env = "REPLOG_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address peers and clients use for this node [default: --listen].
    #[arg(long, env = "REPLOG_ADVERTISE")]
    pub advertise: Option<String>,
    /// Prometheus /metrics and /health address [default: 127.0.0.1:9101].
    #[arg(long, env = "REPLOG_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    #[arg(long, env = "REPLOG_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// First cluster members: `1=host:port,2=host:port,...`.
    #[arg(long, env = "REPLOG_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Join a running cluster through this node (not available yet).
    #[arg(long, env = "REPLOG_JOIN")]
    pub join: Option<String>,
    /// Directory with TLS material (not available yet).
    #[arg(long, env = "REPLOG_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    #[arg(long, env = "REPLOG_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    #[arg(long, env = "REPLOG_ELECTION_TIMEOUT_MIN_MS")]
    pub election_timeout_min_ms: Option<u64>,
    #[arg(long, env = "REPLOG_ELECTION_TIMEOUT_MAX_MS")]
    pub election_timeout_max_ms: Option<u64>,
    #[arg(long, env = "REPLOG_MAX_BATCH_BYTES")]
    pub max_batch_bytes: Option<usize>,
    #[arg(long, env = "REPLOG_MAX_RECORD_BYTES")]
    pub max_record_bytes: Option<usize>,
    #[arg(long, env = "REPLOG_CACHE_MB")]
    pub cache_mb: Option<u64>,
}

pub fn parse_initial_cluster(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut m = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| format!("{part:?} is not id=host:port"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("{id:?} is not a node id"))?;
        if id == 0 {
            return Err("node ids start at 1".into());
        }
        if !addr.contains(':') {
            return Err(format!("{addr:?} is not host:port"));
        }
        if m.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    Ok(m)
}

impl Args {
    /// File (if any), then flags and environment on top; validated.
    pub fn into_config(self) -> Result<NodeConfig, String> {
        let mut c = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| format!("parsing {}: {e}", p.display()))?
            }
            None => NodeConfig::default(),
        };
        if self.join.is_some() {
            return Err("--join is not available in this version; start every node with --initial-cluster".into());
        }
        if self.tls_dir.is_some() {
            return Err("--tls-dir is not available in this version".into());
        }
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* };
        }
        set!(
            id,
            listen,
            metrics_listen,
            data_dir,
            heartbeat_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
            max_batch_bytes,
            max_record_bytes,
            cache_mb
        );
        if let Some(a) = self.advertise {
            c.advertise = Some(a);
        }
        if let Some(ic) = self.initial_cluster {
            c.initial_cluster = parse_initial_cluster(&ic)?;
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_and_rejects_garbage() {
        let m = parse_initial_cluster("1=127.0.0.1:7001, 2=127.0.0.1:7002").unwrap();
        assert_eq!(m.len(), 2);
        assert!(parse_initial_cluster("1=a:1,1=b:2").is_err());
        assert!(parse_initial_cluster("x=a:1").is_err());
        assert!(parse_initial_cluster("0=a:1").is_err());
        assert!(parse_initial_cluster("1=nohostport").is_err());
    }

    #[test]
    fn defaults_validate_and_make_a_valid_raft_config() {
        let c = NodeConfig { id: 1, ..Default::default() };
        c.validate().unwrap();
        c.raft_config().unwrap();
    }

    #[test]
    fn node_missing_from_initial_cluster_is_refused() {
        let c = NodeConfig {
            id: 4,
            initial_cluster: parse_initial_cluster("1=127.0.0.1:7001").unwrap(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("does not name this node"));
    }
}
