//! Node configuration, declared once: every key of [`NodeConfig`] is at the
//! same time a TOML key, a command-line flag (`--key-name`) and a `REPLOG_*`
//! environment variable, with one doc comment and one default. Values come
//! from the defaults, then an optional TOML file, then the environment and
//! flags; `validate()` checks them against each other.
//! `ops/replog-node.example.toml` documents every key (a test keeps it so).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use serde::{Deserialize, Serialize};

/// The address others reach a node at, when it is not `listen`.
pub type Advertise = Option<String>;

fn parse_advertise(s: &str) -> Result<Advertise, String> {
    Ok(Some(s.to_string()))
}

/// A listen address that defaults to one derived from another key.
pub type DerivedAddr = Option<SocketAddr>;

fn parse_derived_addr(s: &str) -> Result<DerivedAddr, String> {
    s.parse().map(Some).map_err(|e| format!("{s:?}: {e}"))
}

/// A file path that may be left out.
pub type OptPath = Option<PathBuf>;

fn parse_opt_path(s: &str) -> Result<OptPath, String> {
    Ok((!s.is_empty()).then(|| PathBuf::from(s)))
}

/// Principals that every ACL check allows.
pub type SuperUsers = Vec<String>;

fn parse_super_users(s: &str) -> Result<SuperUsers, String> {
    Ok(s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect())
}

/// Whether clients of a TLS listener must show a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Every client shows a certificate from `tls_ca`; its subject's CN is
    /// the client's principal.
    Required,
    /// A client may show one (its CN is then its principal) or
    /// authenticate with a user name and password instead.
    Optional,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, fields as `key=value`.
    Text,
    /// One JSON object per line: timestamp, level, target, message, fields, spans.
    Json,
}

/// The log filter used when neither the config nor RUST_LOG gives one.
pub const DEFAULT_LOG_FILTER: &str = "info,openraft=warn,sled=warn,h2=warn,tower=warn";

/// Log ranges openraft's runtime stats remember per group (see
/// `raft_config`): a few, where its default of 1,024 costs about 150 KiB
/// of every group's memory.
const LOG_STAGE_CAPACITY: u64 = 8;

/// Declares [`NodeConfig`], its defaults and the matching [`Overrides`]
/// (flags and environment) from one list.
macro_rules! node_config {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident : $ty:ty = $default:expr, env = $env:literal $(, parse = $parse:path)? ;
    )*) => {
        /// Everything a node needs to run.
        #[derive(Debug, Clone, Deserialize, Serialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct NodeConfig {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for NodeConfig {
            fn default() -> Self {
                NodeConfig { $( $field: $default, )* }
            }
        }

        /// Command-line flags and `REPLOG_*` environment variables; each
        /// overrides the config file.
        #[derive(Debug, Default, clap::Args)]
        pub struct Overrides {
            $(
                $(#[doc = $doc])*
                #[arg(long, env = $env $(, value_parser = $parse)?)]
                pub $field: Option<$ty>,
            )*
        }

        impl Overrides {
            fn apply(self, c: &mut NodeConfig) {
                $( if let Some(v) = self.$field { c.$field = v; } )*
            }
        }
    };
}

node_config! {
    /// This node's id, unique in the cluster, greater than 0.
    id: u64 = 0, env = "REPLOG_ID";
    /// gRPC listen address of the client service.
    listen: SocketAddr = "127.0.0.1:7001".parse().expect("literal address"), env = "REPLOG_LISTEN";
    /// Address other nodes and clients use to reach this node [default: listen].
    advertise: Advertise = None, env = "REPLOG_ADVERTISE", parse = parse_advertise;
    /// Listen address of the peer service (Raft, probes and requests
    /// forwarded between nodes) [default: listen's IP, its port plus
    /// peer_port_offset]. Clients never need it.
    peer_listen: DerivedAddr = None, env = "REPLOG_PEER_LISTEN", parse = parse_derived_addr;
    /// Where every node's peer service is found: at its advertised host, on
    /// its advertised port plus this offset. The same on every node.
    peer_port_offset: u16 = 1000, env = "REPLOG_PEER_PORT_OFFSET";
    /// PEM certificate chain this node shows to its peers, as server and as
    /// client. With peer_tls_key and peer_tls_ca, peers speak mutual TLS:
    /// only holders of a certificate from that CA reach the peer service.
    peer_tls_cert: OptPath = None, env = "REPLOG_PEER_TLS_CERT", parse = parse_opt_path;
    /// PEM private key of peer_tls_cert.
    peer_tls_key: OptPath = None, env = "REPLOG_PEER_TLS_KEY", parse = parse_opt_path;
    /// PEM certificate(s) of the cluster CA that peers' certificates must
    /// chain to.
    peer_tls_ca: OptPath = None, env = "REPLOG_PEER_TLS_CA", parse = parse_opt_path;
    /// PEM certificate chain of the client listener. With tls_key, clients
    /// must speak TLS. Certificate files are reread when they change or on
    /// SIGHUP, without a restart.
    tls_cert: OptPath = None, env = "REPLOG_TLS_CERT", parse = parse_opt_path;
    /// PEM private key of tls_cert.
    tls_key: OptPath = None, env = "REPLOG_TLS_KEY", parse = parse_opt_path;
    /// PEM certificate(s) of the CA that client certificates must chain to;
    /// without it the node asks clients for no certificate.
    tls_ca: OptPath = None, env = "REPLOG_TLS_CA", parse = parse_opt_path;
    /// With tls_ca: whether a client must show a certificate (`required`)
    /// or may authenticate with a password instead (`optional`).
    tls_client_auth: ClientAuth = ClientAuth::Required, env = "REPLOG_TLS_CLIENT_AUTH";
    /// Enforce ACLs on the client listener: what no ACL allows is denied
    /// (PERMISSION_DENIED). Off: every client may do everything.
    authorization: bool = false, env = "REPLOG_AUTHORIZATION";
    /// Principals (user names or certificate CNs, comma-separated) allowed
    /// everything, ACLs or not: how the first administrator gets in.
    super_users: SuperUsers = Vec::new(), env = "REPLOG_SUPER_USERS", parse = parse_super_users;
    /// Most connections one client IP address may hold open on the client
    /// listener (and, counted apart, on the Kafka listener); more are
    /// closed at once. 0: no limit.
    max_connections_per_ip: u32 = 0, env = "REPLOG_MAX_CONNECTIONS_PER_IP";
    /// Most requests one client connection may have open at once (HTTP/2
    /// concurrent streams, long-poll fetches and subscriptions included);
    /// a client over it waits for one of its own to finish, taking nothing
    /// from other connections. 0: the transport's default (200).
    max_requests_per_connection: u32 = 256, env = "REPLOG_MAX_REQUESTS_PER_CONNECTION";
    /// Produce bytes per second one principal may send to this node;
    /// answers to a principal over it are held back until it is within it
    /// again (as Kafka's quotas do). 0: no quota.
    produce_quota_bytes_per_sec: u64 = 0, env = "REPLOG_PRODUCE_QUOTA_BYTES_PER_SEC";
    /// Fetch bytes per second one principal may read from this node, held
    /// to in the same way. 0: no quota.
    fetch_quota_bytes_per_sec: u64 = 0, env = "REPLOG_FETCH_QUOTA_BYTES_PER_SEC";
    /// Listen address of the Kafka protocol listener (docs/kafka.md): Kafka
    /// clients produce, fetch and list offsets there. None: no listener.
    kafka_listen: DerivedAddr = None, env = "REPLOG_KAFKA_LISTEN", parse = parse_derived_addr;
    /// `host:port` Kafka clients are told to reach this node at (in
    /// Metadata) [default: kafka_listen].
    kafka_advertised: Advertise = None, env = "REPLOG_KAFKA_ADVERTISED", parse = parse_advertise;
    /// Largest Kafka request frame accepted, in bytes: a longer (or
    /// negative) length prefix closes the connection before anything is
    /// read or allocated for it.
    kafka_max_frame_bytes: usize = 100 << 20, env = "REPLOG_KAFKA_MAX_FRAME_BYTES";
    /// Create a topic a Kafka client names that does not exist — in a
    /// Metadata request that allows it, or a Produce — with
    /// kafka_default_partitions partitions and default_replication_factor
    /// replicas, as Kafka's auto.create.topics.enable does. Off: such a
    /// client gets UNKNOWN_TOPIC_OR_PARTITION.
    kafka_auto_create_topics: bool = false, env = "REPLOG_KAFKA_AUTO_CREATE_TOPICS";
    /// Partitions of a topic created by a Kafka client without a count: by
    /// kafka_auto_create_topics, or CreateTopics with num_partitions -1.
    kafka_default_partitions: u32 = 1, env = "REPLOG_KAFKA_DEFAULT_PARTITIONS";
    /// Prometheus /metrics, /health (liveness) and /ready (caught up)
    /// listen address.
    metrics_listen: SocketAddr = "127.0.0.1:9101".parse().expect("literal address"), env = "REPLOG_METRICS_LISTEN";
    /// Export metrics per partition (labels topic and partition, Raft term
    /// and indexes, lag per follower) instead of per topic. About 15 series
    /// per hosted partition: keep it off with thousands of partitions.
    metrics_per_partition: bool = false, env = "REPLOG_METRICS_PER_PARTITION";
    /// Log filter in RUST_LOG syntax (e.g. `info,replog_node=debug`); empty:
    /// the RUST_LOG variable, else `info` with openraft, sled, h2 and tower
    /// at `warn`.
    log: String = String::new(), env = "REPLOG_LOG";
    /// Log lines as `text` or as `json` objects, one per line.
    log_format: LogFormat = LogFormat::Text, env = "REPLOG_LOG_FORMAT";
    /// Where the node keeps its data: segment logs under logs/, small state
    /// in a sled database under sled/.
    data_dir: PathBuf = PathBuf::from("replog-data"), env = "REPLOG_DATA_DIR";
    /// The first cluster's members, `1=host:port,2=host:port,...`; start every
    /// member of the first cluster with the same list. Ignored on restart.
    initial_cluster: BTreeMap<u64, String> = BTreeMap::new(), env = "REPLOG_INITIAL_CLUSTER",
        parse = parse_initial_cluster;
    /// Join a running cluster through any of its nodes (`host:port`): the
    /// node registers with the controller, follows the cluster metadata
    /// and is given replicas. Instead of `initial-cluster`; kept on restart.
    join: Advertise = None, env = "REPLOG_JOIN", parse = parse_advertise;
    /// How long a stopping node (SIGTERM) spends handing the leadership of
    /// each group it leads to a caught-up replica before it stops, in ms.
    shutdown_handoff_ms: u64 = 5_000, env = "REPLOG_SHUTDOWN_HANDOFF_MS";
    /// Bytes per second this node sends, over all partition moves together,
    /// to the replicas a move brings in (log and snapshots), so that a move
    /// does not starve produce traffic; `50MiB` style units accepted. 0:
    /// unlimited. The cluster setting `move.throttle` overrides it.
    move_throttle_bytes_per_sec: u64 = 50 << 20, env = "REPLOG_MOVE_THROTTLE_BYTES_PER_SEC",
        parse = crate::throttle::parse_rate;
    /// This node's rack (or zone, or room): a partition's replicas are
    /// spread over as many racks as they can be, so that losing one rack
    /// loses no partition's majority where there are enough racks. Empty:
    /// none. Give every node one, or none.
    rack: String = String::new(), env = "REPLOG_RACK";
    /// Balance replicas and leaders by itself (as `replog cluster balance`
    /// does) when the cluster is whole and uneven, as after a node joined
    /// or came back: the controller leader starts at most
    /// balance_max_moves moves at a time, preferred-leader changes first.
    /// The cluster setting `balance.auto` overrides it.
    auto_balance: bool = true, env = "REPLOG_AUTO_BALANCE";
    /// Most partition moves automatic balancing keeps under way at once,
    /// cluster-wide (at least 1). The cluster setting `balance.max_moves`
    /// overrides it.
    balance_max_moves: u32 = 2, env = "REPLOG_BALANCE_MAX_MOVES";
    /// Raft heartbeat interval in ms. Followers expect one at least this often.
    heartbeat_ms: u64 = 125, env = "REPLOG_HEARTBEAT_MS";
    /// A follower that hears no leader for the max election timeout (its
    /// leader lease) and then a random time between the min and the max
    /// (ms) starts an election: how long a dead leader goes unnoticed
    /// (a leader whose node is gone, only the max: see failover.rs).
    election_timeout_min_ms: u64 = 400, env = "REPLOG_ELECTION_TIMEOUT_MIN_MS";
    /// Upper end of the election timeout range, in ms; also the leader
    /// lease: a leader that no majority acknowledged for this long serves
    /// no client as leader.
    election_timeout_max_ms: u64 = 700, env = "REPLOG_ELECTION_TIMEOUT_MAX_MS";
    /// How long (ms) a leader holds a commit that no append has yet carried
    /// to a follower, waiting for the next write's append to carry it, before
    /// sending it on its own. A write is answered once a majority holds it;
    /// followers learn that it committed only in a later append. Sent at
    /// once, that append doubles the appends per write and holds the next
    /// write's append back behind its round trip. Followers (and reads from
    /// replicas) see a commit up to this much later when no write follows.
    /// 0: at once; at most heartbeat_ms.
    commit_piggyback_ms: u64 = 5, env = "REPLOG_COMMIT_PIGGYBACK_MS";
    /// A partition group with no client operation for this long (ms), every
    /// replica holding its whole log, goes quiet: it stops ticking and
    /// heartbeating on every replica, node liveness standing in, until a
    /// write, a read or a failure wakes it (see quiesce.rs). 0: never; else
    /// at least twice election_timeout_max_ms (raised to that).
    quiesce_after_ms: u64 = 5_000, env = "REPLOG_QUIESCE_AFTER_MS";
    /// Largest producer batch accepted, in bytes (at most 64 MiB minus 4 KiB).
    max_batch_bytes: usize = 1 << 20, env = "REPLOG_MAX_BATCH_BYTES";
    /// Largest single record accepted, in bytes.
    max_record_bytes: usize = 1 << 20, env = "REPLOG_MAX_RECORD_BYTES";
    /// Longest a produce may wait for its commit, in ms: an acks=all produce
    /// answers TIMEOUT then, an acks=none write stops waiting and frees its
    /// slot. A request may ask for less.
    produce_timeout_ms: u64 = 10_000, env = "REPLOG_PRODUCE_TIMEOUT_MS";
    /// Longest long-poll wait a fetch may ask for, in ms.
    max_fetch_wait_ms: u64 = 30_000, env = "REPLOG_MAX_FETCH_WAIT_MS";
    /// sled page cache in MiB; sled holds only small state (offsets,
    /// indexes, votes).
    cache_mb: u64 = 64, env = "REPLOG_CACHE_MB";
    /// Log segment size in MiB: a segment file is sealed and a new one
    /// started past it. After a crash a node rereads each partition's last
    /// segment.
    segment_mb: u64 = 64, env = "REPLOG_SEGMENT_MB";
    /// Free space kept on the data volume, in MiB: below it produce is
    /// refused with DISK_FULL, below half of it log appends wait, and a
    /// ballast of half of it is kept for the node's own state.
    min_free_mb: u64 = 256, env = "REPLOG_MIN_FREE_MB";
    /// Replicas per topic partition when a create request does not say.
    default_replication_factor: u32 = 3, env = "REPLOG_DEFAULT_REPLICATION_FACTOR";
    /// Most partitions a topic may have.
    max_partitions: u32 = 1024, env = "REPLOG_MAX_PARTITIONS";
    /// Most partition replicas this node holds. 0: what its open-file
    /// limit allows, one descriptor per replica beyond a reserve of 1,024
    /// (the node raises its soft limit to the hard one at start). A create
    /// or move that would put more here is refused with REPLICA_LIMIT.
    max_replicas: u32 = 0, env = "REPLOG_MAX_REPLICAS";
    /// Partitions of the internal `__consumer_offsets` topic, created on a
    /// group's first use: consumer groups spread over that many coordinators.
    group_partitions: u32 = 16, env = "REPLOG_GROUP_PARTITIONS";
    /// Session timeout of a group member that does not ask for one, in ms:
    /// a member silent this long loses its partitions.
    group_session_timeout_ms: u32 = 10_000, env = "REPLOG_GROUP_SESSION_TIMEOUT_MS";
    /// Shortest session timeout a member may ask for, in ms.
    group_min_session_timeout_ms: u32 = 1_000, env = "REPLOG_GROUP_MIN_SESSION_TIMEOUT_MS";
    /// Longest session timeout a member may ask for, in ms.
    group_max_session_timeout_ms: u32 = 300_000, env = "REPLOG_GROUP_MAX_SESSION_TIMEOUT_MS";
    /// How often topic retention is applied, in ms: each partition leader
    /// releases what its topic's rules let go, and every replica gives back
    /// whole segment files below its log start.
    retention_check_ms: u64 = 5_000, env = "REPLOG_RETENTION_CHECK_MS";
}

impl NodeConfig {
    /// The log filter: the `log` key, else RUST_LOG, else the default.
    pub fn log_filter(&self) -> String {
        if !self.log.trim().is_empty() {
            return self.log.clone();
        }
        std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| DEFAULT_LOG_FILTER.into())
    }

    pub fn advertise_addr(&self) -> String {
        self.advertise.clone().unwrap_or_else(|| self.listen.to_string())
    }

    /// The peer service's listen address: `peer_listen`, else `listen`
    /// with the port moved by `peer_port_offset`.
    pub fn peer_listen_addr(&self) -> SocketAddr {
        self.peer_listen.unwrap_or_else(|| {
            SocketAddr::new(self.listen.ip(), self.listen.port().saturating_add(self.peer_port_offset))
        })
    }

    /// The Kafka address given to clients: `kafka_advertised`, else
    /// `kafka_listen`; none without a Kafka listener.
    pub fn kafka_advertised_addr(&self) -> Option<String> {
        let listen = self.kafka_listen?;
        Some(self.kafka_advertised.clone().unwrap_or_else(|| listen.to_string()))
    }

    /// Whether the peer listener speaks mutual TLS.
    pub fn peer_tls(&self) -> bool {
        self.peer_tls_cert.is_some()
    }

    /// Whether the client listener speaks TLS.
    pub fn client_tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// Checks fields against each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("--id must be given and greater than 0".into());
        }
        if self.join.is_some() && !self.initial_cluster.is_empty() {
            return Err(
                "--join and --initial-cluster exclude each other: a node either starts the first cluster or joins one"
                    .into(),
            );
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
        if self.commit_piggyback_ms > self.heartbeat_ms {
            return Err("commit-piggyback-ms may be at most heartbeat-ms".into());
        }
        if self.max_batch_bytes > replog_raft_store::store::MAX_ENTRY_BYTES - 4096 {
            return Err(format!(
                "max-batch-bytes may be at most {} (largest log entry)",
                replog_raft_store::store::MAX_ENTRY_BYTES - 4096
            ));
        }
        if self.group_partitions == 0 || self.group_partitions > self.max_partitions {
            return Err("group-partitions must be 1..=max-partitions".into());
        }
        let (lo, hi) = (self.group_min_session_timeout_ms, self.group_max_session_timeout_ms);
        if lo == 0 || lo > hi || !(lo..=hi).contains(&self.group_session_timeout_ms) {
            return Err("group session timeouts must satisfy 0 < min <= default <= max".into());
        }
        if self.segment_mb == 0 || self.segment_mb > 4096 {
            return Err("segment-mb must be 1..=4096".into());
        }
        if !(100..=3_600_000).contains(&self.retention_check_ms) {
            return Err("retention-check-ms must be 100..=3600000".into());
        }
        if self.max_record_bytes > self.max_batch_bytes {
            return Err("max-record-bytes cannot exceed max-batch-bytes".into());
        }
        let peer = [&self.peer_tls_cert, &self.peer_tls_key, &self.peer_tls_ca];
        if peer.iter().any(|p| p.is_some()) && !peer.iter().all(|p| p.is_some()) {
            return Err("peer-tls-cert, peer-tls-key and peer-tls-ca go together".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls-cert and tls-key go together".into());
        }
        if self.tls_ca.is_some() && self.tls_cert.is_none() {
            return Err("tls-ca needs tls-cert and tls-key".into());
        }
        if self.peer_listen.is_none() && self.listen.port().checked_add(self.peer_port_offset).is_none() {
            return Err("listen port plus peer-port-offset is past 65535: set peer-listen".into());
        }
        if self.peer_port_offset == 0 {
            return Err("peer-port-offset must not be 0: the peer service has its own port".into());
        }
        if self.balance_max_moves == 0 {
            return Err("balance-max-moves must be at least 1 (auto-balance false turns balancing off)".into());
        }
        if self.kafka_advertised.is_some() && self.kafka_listen.is_none() {
            return Err("kafka-advertised needs kafka-listen".into());
        }
        if let Some(a) = &self.kafka_advertised
            && a.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!("kafka-advertised {a:?} is not host:port"));
        }
        if !(1024..=i32::MAX as usize).contains(&self.kafka_max_frame_bytes) {
            return Err("kafka-max-frame-bytes must be 1024..=2147483647".into());
        }
        if self.authorization && !self.peer_tls() {
            // The peer port serves nodes, whom ACLs do not bind: without
            // mutual TLS there anyone who reaches it would act as a node.
            return Err("authorization needs mutual TLS on the peer port (--peer-tls-cert, --peer-tls-key, --peer-tls-ca): without it whoever reaches the peer port is trusted as a node".into());
        }
        if self.kafka_default_partitions == 0 || self.kafka_default_partitions > self.max_partitions {
            return Err("kafka-default-partitions must be 1..=max-partitions".into());
        }
        if self.kafka_listen.is_some() && (self.authorization || self.client_tls()) {
            // The Kafka listener has neither SASL nor TLS yet: it must not
            // open a door the client listener keeps shut.
            return Err("kafka-listen cannot be combined with authorization or client TLS yet (docs/kafka.md)".into());
        }
        if !self.log.trim().is_empty() {
            tracing_subscriber::EnvFilter::try_new(&self.log).map_err(|e| format!("log filter {:?}: {e}", self.log))?;
        }
        Ok(())
    }

    pub fn raft_config(&self) -> Result<openraft::Config, String> {
        let c = openraft::Config {
            cluster_name: "replog".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            commit_piggyback_wait: self.commit_piggyback_ms,
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
            // openraft keeps, per group, the latency of the last this many
            // log ranges through each stage (runtime stats replog never
            // reads): 1,024, a ring of about 150 KiB per group that fills
            // as the log moves, which at thousands of partitions per node
            // is most of a quiet replica's memory.
            log_stage_capacity: Some(LOG_STAGE_CAPACITY),
            ..Default::default()
        };
        c.validate().map_err(|e| e.to_string())
    }
}

/// The node's command line: a config file and the overrides.
#[derive(Debug, Parser)]
#[command(name = "replog-node", version, about = "A replog broker node")]
pub struct Args {
    /// TOML config file (see ops/replog-node.example.toml).
    #[arg(long, env = "REPLOG_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: Overrides,
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
    /// The command line, its help showing each key's default.
    pub fn command_with_defaults() -> clap::Command {
        use clap::CommandFactory;
        let defaults = match serde_json::to_value(NodeConfig::default()) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => Default::default(),
        };
        let mut cmd = Args::command();
        for (key, v) in defaults {
            let shown = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                _ => continue,
            };
            cmd = cmd.mut_arg(&key, |a| {
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                a.help(format!("{help} [default: {shown}]"))
            });
        }
        cmd
    }

    /// Parses the process's arguments (exits with usage on error).
    pub fn from_env() -> Args {
        use clap::FromArgMatches;
        let matches = Self::command_with_defaults().get_matches();
        Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// File (if any), then flags and environment on top; validated.
    pub fn into_config(self) -> Result<NodeConfig, String> {
        let mut c = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| format!("parsing {}: {e}", p.display()))?
            }
            None => NodeConfig::default(),
        };
        self.overrides.apply(&mut c);
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
    fn a_commit_piggyback_longer_than_a_heartbeat_is_refused() {
        let c = NodeConfig { id: 1, heartbeat_ms: 100, commit_piggyback_ms: 101, ..Default::default() };
        let e = c.validate().expect_err("refused");
        assert!(e.contains("commit-piggyback-ms"), "{e}");
        let c = NodeConfig { commit_piggyback_ms: 100, ..c };
        assert_eq!(c.raft_config().expect("at most a heartbeat").commit_piggyback_wait, 100);
    }

    #[test]
    fn authorization_without_peer_tls_is_refused() {
        let c = NodeConfig { id: 1, authorization: true, ..Default::default() };
        let e = c.validate().expect_err("refused");
        assert!(e.contains("peer-tls"), "{e}");
        let p = |s: &str| Some(std::path::PathBuf::from(s));
        let c = NodeConfig { peer_tls_cert: p("n.crt"), peer_tls_key: p("n.key"), peer_tls_ca: p("ca.crt"), ..c };
        c.validate().expect("with peer TLS");
    }

    /// Every key is a flag `--key-name` with the variable `REPLOG_KEY_NAME`,
    /// and the example file documents it.
    #[test]
    fn every_key_has_a_flag_a_variable_and_an_example() {
        use clap::CommandFactory;
        let keys: Vec<String> = match serde_json::to_value(NodeConfig::default()).unwrap() {
            serde_json::Value::Object(m) => m.keys().cloned().collect(),
            other => panic!("config serializes as {other}"),
        };
        let cmd = Args::command();
        let example = include_str!("../../ops/replog-node.example.toml");
        for key in &keys {
            let long = key.replace('_', "-");
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()))
                .unwrap_or_else(|| panic!("no flag --{long}"));
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            assert_eq!(env, format!("REPLOG_{}", key.to_uppercase()), "variable of --{long}");
            let documented = example.lines().any(|l| {
                let l = l.trim_start_matches('#').trim();
                l.starts_with(&format!("{key} =")) || l == format!("[{key}]")
            });
            assert!(documented, "ops/replog-node.example.toml does not document {key}");
        }
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "id = 2\nlisten = \"127.0.0.1:7002\"\nheartbeat_ms = 100\nsegment_mb = 8\n").unwrap();
        let args = Args::try_parse_from([
            "replog-node",
            "--config",
            file.to_str().unwrap(),
            "--heartbeat-ms",
            "120",
            "--initial-cluster",
            "2=127.0.0.1:7002",
        ])
        .unwrap();
        let c = args.into_config().unwrap();
        assert_eq!((c.id, c.heartbeat_ms, c.segment_mb), (2, 120, 8));
        assert_eq!(c.max_partitions, NodeConfig::default().max_partitions);
        assert_eq!(c.initial_cluster.get(&2).map(String::as_str), Some("127.0.0.1:7002"));
    }

    #[test]
    fn log_and_metrics_switches_come_from_flags_and_a_bad_filter_is_refused() {
        let args = Args::try_parse_from([
            "replog-node",
            "--id",
            "1",
            "--log-format",
            "json",
            "--metrics-per-partition",
            "true",
            "--log",
            "debug,openraft=info",
        ])
        .unwrap();
        let c = args.into_config().unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(c.metrics_per_partition);
        assert_eq!(c.log_filter(), "debug,openraft=info");
        let bad = NodeConfig { id: 1, log: "info,[[[".into(), ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("log filter"));
        let file: NodeConfig = toml::from_str("log_format = \"json\"\nmetrics_per_partition = true\n").unwrap();
        assert_eq!((file.log_format, file.metrics_per_partition), (LogFormat::Json, true));
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
