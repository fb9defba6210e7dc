//! Connections, the metadata cache and leader-routed requests.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use replog_proto::codes::ErrorCode;
use replog_proto::pb::{self, replog_client::ReplogClient};
use replog_proto::transport::Unary;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, LeaderHint, Result};

/// Per-attempt timeout of a metadata request.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a request changes cluster state. Retrying a write after an
/// attempt whose outcome is unknown can only ever be answered
/// "indeterminate"; a read has no outcome to be unsure about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    Read,
    Write,
}

/// Client settings. The defaults suit a local cluster and most deployments.
///
/// ```
/// use std::time::Duration;
/// use replog_client::{Client, ClientConfig};
///
/// // Give up after 5 s instead of 30: the caller would rather report an error.
/// let config = ClientConfig {
///     request_timeout: Duration::from_secs(2),
///     retry_deadline: Duration::from_secs(5),
///     ..ClientConfig::default()
/// };
/// assert!(config.retry_deadline > config.request_timeout);
/// # async fn connect(config: ClientConfig) -> replog_client::Result<Client> {
/// let client = Client::connect_with(["127.0.0.1:7001", "127.0.0.1:7002"], config).await?;
/// # Ok(client) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Per-attempt RPC timeout (a long-poll fetch adds its wait to this).
    pub request_timeout: Duration,
    /// Total time a request may spend retrying NOT_LEADER / UNAVAILABLE.
    /// Leader elections take 1–2 s, so this must be several times that.
    pub retry_deadline: Duration,
    pub backoff_initial: Duration,
    /// Longest pause between retries: a new leader is usually elected
    /// within a second, and each retry asks the cluster again who leads,
    /// so a long pause only adds to the time a failover costs.
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
    /// TLS to the brokers (`None`: plaintext).
    pub tls: Option<TlsOptions>,
    /// A user name and password sent with every request (over TLS only,
    /// in any real deployment); `None`: none, or the certificate's
    /// principal.
    pub credentials: Option<Credentials>,
}

/// How the client speaks TLS: the CA that issued the brokers' certificates
/// and, for mutual TLS, this client's certificate and key (all PEM).
#[derive(Clone)]
pub struct TlsOptions {
    pub ca_pem: Vec<u8>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions").field("client_certificate", &self.identity.is_some()).finish_non_exhaustive()
    }
}

impl TlsOptions {
    /// Reads the CA and, if both are given, the client certificate and key.
    pub fn from_files(
        ca: &std::path::Path,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
    ) -> Result<TlsOptions> {
        let read =
            |p: &std::path::Path| std::fs::read(p).map_err(|e| Error::InvalidArgument(format!("{}: {e}", p.display())));
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            (None, None) => None,
            _ => {
                return Err(Error::InvalidArgument(
                    "a client certificate needs its key, and a key its certificate".into(),
                ));
            }
        };
        Ok(TlsOptions { ca_pem: read(ca)?, identity })
    }

    fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let c = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        match &self.identity {
            Some((cert, key)) => c.identity(Identity::from_pem(cert, key)),
            None => c,
        }
    }
}

/// A user name and password, sent in every request's metadata.
#[derive(Clone, Default)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).finish_non_exhaustive()
    }
}

/// Adds the credentials (if any) to each request.
#[derive(Clone, Default)]
pub struct Authenticate {
    headers: Option<(
        tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
        tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    )>,
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut req: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some((user, password)) = &self.headers {
            req.metadata_mut().insert(replog_proto::codes::USER_KEY, user.clone());
            req.metadata_mut().insert(replog_proto::codes::PASSWORD_KEY, password.clone());
        }
        Ok(req)
    }
}

/// A connection to one broker: the generated client with the credentials
/// interceptor, each request ending with its message's frame ([`Unary`]).
pub type Conn = ReplogClient<tonic::service::interceptor::InterceptedService<Unary<Channel>, Authenticate>>;

/// The nodes of the local `make run` cluster, the default bootstrap of the
/// CLI and the examples.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

/// The bootstrap list in `REPLOG_BOOTSTRAP` (comma-separated `host:port`),
/// else [`DEFAULT_BOOTSTRAP`]: what the CLI reads, for programs that want
/// the same.
///
/// ```
/// // SAFETY (edition 2024): no other thread reads the environment here.
/// unsafe { std::env::set_var("REPLOG_BOOTSTRAP", "10.0.0.1:7001,10.0.0.2:7001") };
/// assert_eq!(replog_client::bootstrap_from_env(), ["10.0.0.1:7001", "10.0.0.2:7001"]);
/// ```
pub fn bootstrap_from_env() -> Vec<String> {
    std::env::var("REPLOG_BOOTSTRAP")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .as_deref()
        .unwrap_or(DEFAULT_BOOTSTRAP)
        .split(',')
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect()
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(10),
            retry_deadline: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(2),
            tls: None,
            credentials: None,
        }
    }
}

/// A topic as the cluster describes it.
///
/// ```no_run
/// # async fn run(client: replog_client::Client) -> replog_client::Result<()> {
/// let topic = client.create_topic_with("audit", 3, 3, &[("retention.ms", "604800000")]).await?;
/// println!("{} (id {}): {} partitions", topic.name, topic.topic_id, topic.partitions.len());
/// for (key, value) in &topic.configs {
///     println!("  {key} = {value}");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: u64,
    pub partitions: Vec<PartitionInfo>,
    /// Settings that differ from the defaults (`retention.ms`, …).
    pub configs: std::collections::BTreeMap<String, String>,
}

/// One partition of a [`TopicInfo`]: its replicas, leader and offsets.
///
/// ```no_run
/// # async fn run(client: replog_client::Client) -> replog_client::Result<()> {
/// for p in client.describe_topic("orders").await?.partitions {
///     let leader = p.leader.map_or("none".to_string(), |id| format!("node {id}"));
///     let retained = p.high_watermark - p.log_start_offset;
///     println!("orders/{}: leader {leader}, replicas {:?}, {retained} records", p.partition, p.replicas);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionInfo {
    pub partition: u32,
    /// Node id of the leader; `None` while there is none.
    pub leader: Option<u64>,
    pub replicas: Vec<u64>,
    pub log_start_offset: u64,
    pub high_watermark: u64,
}

impl From<pb::TopicMetadata> for TopicInfo {
    fn from(t: pb::TopicMetadata) -> Self {
        TopicInfo {
            name: t.name,
            topic_id: t.topic_id,
            partitions: t
                .partitions
                .into_iter()
                .map(|p| PartitionInfo {
                    partition: p.partition,
                    leader: (p.leader != 0).then_some(p.leader),
                    replicas: p.replicas,
                    log_start_offset: p.log_start_offset,
                    high_watermark: p.high_watermark,
                })
                .collect(),
            configs: t.configs.into_iter().collect(),
        }
    }
}

#[derive(Default)]
struct MetaCache {
    nodes: HashMap<u64, String>,
    topics: HashMap<String, TopicInfo>,
}

struct Inner {
    config: ClientConfig,
    bootstrap: Vec<String>,
    conns: Mutex<HashMap<String, Conn>>,
    meta: Mutex<MetaCache>,
    auth: Authenticate,
}

/// A handle to a replog cluster. Cheap to clone; clones share connections
/// and the metadata cache, so one per process is enough.
///
/// ```no_run
/// use replog_client::{Client, ErrorCode, GroupConsumer, GroupConsumerConfig, Producer, ProducerConfig};
///
/// # async fn run() -> replog_client::Result<()> {
/// let client = Client::connect(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]).await?;
/// match client.create_topic("orders", 6, 3).await {
///     Ok(_) => {}
///     Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {}
///     Err(e) => return Err(e),
/// }
/// for t in client.list_topics().await? {
///     println!("{}: {} partitions", t.name, t.partitions.len());
/// }
/// let producer = Producer::new(client.clone(), ProducerConfig::default());
/// let consumer = GroupConsumer::new(client, "billing", GroupConsumerConfig::default());
/// # let _ = (producer, consumer);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects using `bootstrap` addresses (`host:port`). Fails if none of
    /// them answers a metadata request within the retry deadline.
    pub async fn connect<I, S>(bootstrap: I) -> Result<Client>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::connect_with(bootstrap, ClientConfig::default()).await
    }

    pub async fn connect_with<I, S>(bootstrap: I, config: ClientConfig) -> Result<Client>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let bootstrap: Vec<String> = bootstrap.into_iter().map(Into::into).filter(|s| !s.is_empty()).collect();
        if bootstrap.is_empty() {
            return Err(Error::InvalidArgument("no bootstrap address given".into()));
        }
        for a in &bootstrap {
            if !a.contains(':') {
                return Err(Error::InvalidArgument(format!("bootstrap address {a:?} is not host:port")));
            }
        }
        let auth = match &config.credentials {
            None => Authenticate::default(),
            Some(c) => {
                let value = |what: &str, s: &str| {
                    s.parse().map_err(|_| Error::InvalidArgument(format!("the {what} must be printable ASCII")))
                };
                Authenticate { headers: Some((value("user name", &c.user)?, value("password", &c.password)?)) }
            }
        };
        let client = Client {
            inner: Arc::new(Inner { config, bootstrap, conns: Mutex::default(), meta: Mutex::default(), auth }),
        };
        client.refresh_metadata(&[]).await?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub(crate) fn conn(&self, addr: &str) -> Result<Conn> {
        let mut conns = self.inner.conns.lock().expect("conns lock");
        if let Some(c) = conns.get(addr) {
            return Ok(c.clone());
        }
        let c = self.new_conn(addr)?;
        conns.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// A connection of its own to `addr`, outside the shared pool: a
    /// subscription stream that its reader stops taking from holds its
    /// connection's flow-control window, which must not stall other calls.
    pub(crate) fn new_conn(&self, addr: &str) -> Result<Conn> {
        let cfg = &self.inner.config;
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| Error::InvalidArgument(format!("bad address {addr}: {e}")))?;
        if let Some(tls) = &cfg.tls {
            ep = ep.tls_config(tls.tonic()).map_err(|e| Error::InvalidArgument(format!("TLS settings: {e}")))?;
        }
        let ep = ep
            .connect_timeout(self.inner.config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        Ok(ReplogClient::with_interceptor(Unary(ep.connect_lazy()), self.inner.auth.clone())
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20))
    }

    /// Addresses to try for cluster-wide requests: known nodes first, then
    /// the bootstrap list.
    fn any_addrs(&self) -> Vec<String> {
        let meta = self.inner.meta.lock().expect("meta lock");
        let mut v: Vec<String> = meta.nodes.values().cloned().collect();
        v.sort();
        for b in &self.inner.bootstrap {
            if !v.contains(b) {
                v.push(b.clone());
            }
        }
        v
    }

    /// Runs `f` against some node, retrying retryable errors with backoff
    /// until the deadline. `f` gets the attempt number and picks its address.
    ///
    /// For a [`Call::Write`], a non-retryable error that follows an attempt
    /// with an unknown outcome is returned as [`Error::Indeterminate`]: the
    /// earlier attempt may still commit, so the later refusal does not mean
    /// the write did not happen.
    pub(crate) async fn retry<T, F, Fut>(&self, call: Call, f: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.retry_within(call, self.inner.config.retry_deadline, f).await
    }

    /// [`Client::retry`] with its own deadline instead of the configured
    /// one (a group heartbeat is worth retrying only within its interval).
    pub(crate) async fn retry_within<T, F, Fut>(&self, call: Call, deadline: Duration, mut f: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let cfg = &self.inner.config;
        let start = Instant::now();
        let mut backoff = cfg.backoff_initial;
        let mut attempt = 0u32;
        // The first attempt whose outcome is unknown, and its number (from 1).
        let mut unknown: Option<(u32, Error)> = None;
        loop {
            let err = match f(attempt).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            attempt += 1;
            if unknown.is_none() && err.is_indeterminate() {
                unknown = Some((attempt, err.clone()));
            }
            if !err.is_retryable() {
                return Err(match unknown {
                    Some((earlier_attempt, earlier)) if call == Call::Write && !err.is_indeterminate() => {
                        Error::Indeterminate {
                            attempts: attempt,
                            earlier_attempt,
                            earlier: Box::new(earlier),
                            last: Box::new(err),
                        }
                    }
                    _ => err,
                });
            }
            let elapsed = start.elapsed();
            if elapsed + backoff > deadline {
                return Err(Error::DeadlineExceeded {
                    attempts: attempt,
                    elapsed_ms: elapsed.as_millis() as u64,
                    indeterminate: unknown.is_some(),
                    last: Box::new(err),
                });
            }
            // A NOT_LEADER with an address is worth an immediate retry there.
            let hinted = matches!(&err, Error::Broker { leader: Some(LeaderHint { addr: Some(_), .. }), .. });
            tracing::debug!(attempt, elapsed_ms = elapsed.as_millis() as u64, hinted, error = %err, "retrying");
            if !hinted || attempt > 3 {
                let jitter = rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1);
                tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                backoff = (backoff * 2).min(cfg.backoff_max);
            }
        }
    }

    /// Sends a cluster-wide request to any node, rotating on failure.
    pub(crate) async fn any_node<T, F, Fut>(&self, call: Call, f: F) -> Result<T>
    where
        F: Fn(Conn, String) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        // Start at a random node so that one dead or paused node does not
        // cost every call a timeout.
        let start = rand::random::<u32>() as usize;
        self.retry(call, |attempt| {
            let addrs = self.any_addrs();
            let addr = addrs[(start + attempt as usize) % addrs.len()].clone();
            let conn = self.conn(&addr);
            let fut = conn.map(|c| f(c, addr.clone()));
            async move {
                let resp = fut?.await.map_err(|s| Error::from_status(&addr, s))?;
                Ok(resp.into_inner())
            }
        })
        .await
    }

    /// Fetches metadata for `topics` (all when empty) and updates the cache.
    pub async fn refresh_metadata(&self, topics: &[String]) -> Result<Vec<TopicInfo>> {
        // Metadata is cheap for a healthy node: do not wait long on a sick one.
        let timeout = self.inner.config.request_timeout.min(METADATA_TIMEOUT);
        let resp = self
            .any_node(Call::Read, |mut c, _| {
                let mut req = tonic::Request::new(pb::MetadataRequest { topics: topics.to_vec() });
                req.set_timeout(timeout);
                async move { c.metadata(req).await }
            })
            .await?;
        let infos: Vec<TopicInfo> = resp.topics.into_iter().map(TopicInfo::from).collect();
        let mut meta = self.inner.meta.lock().expect("meta lock");
        for n in resp.nodes {
            meta.nodes.insert(n.id, n.addr);
        }
        if topics.is_empty() {
            meta.topics.clear();
        }
        for t in &infos {
            meta.topics.insert(t.name.clone(), t.clone());
        }
        Ok(infos)
    }

    /// The cached description of `topic`, fetched if absent.
    pub async fn topic(&self, topic: &str) -> Result<TopicInfo> {
        if let Some(t) = self.inner.meta.lock().expect("meta lock").topics.get(topic) {
            return Ok(t.clone());
        }
        let infos = self.refresh_metadata(&[topic.to_string()]).await?;
        infos.into_iter().find(|t| t.name == topic).ok_or_else(|| Error::Broker {
            code: ErrorCode::UnknownTopic,
            message: format!("topic {topic:?} does not exist"),
            leader: None,
        })
    }

    /// How many partitions `topic` has, from the cache (fetched if absent).
    /// The producer asks this for every record, so the cached description
    /// is not copied.
    pub(crate) async fn partition_count(&self, topic: &str) -> Result<u32> {
        if let Some(t) = self.inner.meta.lock().expect("meta lock").topics.get(topic) {
            return Ok(t.partitions.len() as u32);
        }
        Ok(self.topic(topic).await?.partitions.len() as u32)
    }

    fn forget_topic(&self, topic: &str) {
        self.inner.meta.lock().expect("meta lock").topics.remove(topic);
    }

    /// Address to send a partition request to on this attempt: the cached
    /// leader, else a replica chosen by the attempt number.
    pub(crate) async fn partition_addr(&self, topic: &str, partition: u32, attempt: u32) -> Result<String> {
        let info = self.topic(topic).await?;
        let p = info.partitions.get(partition as usize).ok_or_else(|| Error::Broker {
            code: ErrorCode::UnknownPartition,
            message: format!("topic {topic:?} has {} partitions; {partition} is out of range", info.partitions.len()),
            leader: None,
        })?;
        let node = {
            let meta = self.inner.meta.lock().expect("meta lock");
            let node = match p.leader {
                Some(l) if meta.nodes.contains_key(&l) => l,
                _ if p.replicas.is_empty() => {
                    return Err(Error::Corrupt(format!("{topic}/{partition} has no replicas")));
                }
                _ => p.replicas[attempt as usize % p.replicas.len()],
            };
            if let Some(addr) = meta.nodes.get(&node) {
                return Ok(addr.clone());
            }
            node
        };
        // A node we have no address for yet: learn the cluster again.
        self.refresh_metadata(&[topic.to_string()]).await?;
        self.node_addr(node).ok_or_else(|| Error::Broker {
            code: ErrorCode::Unavailable,
            message: format!("no address known for node {node}"),
            leader: None,
        })
    }

    /// Records what a failed partition request taught us about the leader.
    pub(crate) fn learn(&self, topic: &str, partition: u32, err: &Error) {
        if !err.is_retryable() {
            return;
        }
        let mut meta = self.inner.meta.lock().expect("meta lock");
        if let Error::Broker { leader: Some(LeaderHint { id, addr }), .. } = err {
            if let Some(addr) = addr {
                meta.nodes.insert(*id, addr.clone());
            }
            if let Some(p) = meta.topics.get_mut(topic).and_then(|t| t.partitions.get_mut(partition as usize)) {
                p.leader = Some(*id);
                return;
            }
        }
        // No usable hint: drop the entry so that the next attempt refreshes.
        meta.topics.remove(topic);
    }

    /// Runs a partition request at the partition's leader, following
    /// NOT_LEADER hints and refreshing metadata until the retry deadline.
    pub(crate) async fn at_leader<T, F, Fut>(&self, topic: &str, partition: u32, call: Call, f: F) -> Result<T>
    where
        F: Fn(Conn, String) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.at_leader_within(topic, partition, call, self.inner.config.retry_deadline, f).await
    }

    /// [`Client::at_leader`] retrying until `deadline` instead of the
    /// configured retry deadline.
    pub(crate) async fn at_leader_within<T, F, Fut>(
        &self,
        topic: &str,
        partition: u32,
        call: Call,
        deadline: Duration,
        f: F,
    ) -> Result<T>
    where
        F: Fn(Conn, String) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.retry_within(call, deadline, |attempt| {
            let f = &f;
            async move {
                let addr = self.partition_addr(topic, partition, attempt).await?;
                let conn = self.conn(&addr)?;
                match f(conn, addr.clone()).await {
                    Ok(r) => Ok(r.into_inner()),
                    Err(s) => {
                        let e = Error::from_status(&addr, s);
                        self.learn(topic, partition, &e);
                        Err(e)
                    }
                }
            }
        })
        .await
    }

    /// Appends one encoded batch to a partition at its leader and returns the
    /// batch's base offset (`None` with acks=none, which assigns none). Retries NOT_LEADER / UNAVAILABLE; a retry after an
    /// indeterminate failure may append the batch twice unless the batch
    /// carries an idempotent producer id. A refusal that follows such an
    /// attempt comes back as [`Error::Indeterminate`], never as a definite
    /// failure.
    pub async fn produce_batch(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
        acks: pb::Acks,
    ) -> Result<pb::ProduceResponse> {
        let timeout = self.inner.config.request_timeout;
        let resp = self
            .at_leader(topic, partition, Call::Write, |mut c, _| {
                let mut req = tonic::Request::new(pb::ProduceRequest {
                    topic: topic.to_string(),
                    partition,
                    batch: batch.clone(),
                    acks: acks as i32,
                    timeout_ms: timeout.as_millis() as u32,
                });
                req.set_timeout(timeout + Duration::from_secs(1));
                async move { c.produce(req).await }
            })
            .await?;
        if acks == pb::Acks::All && resp.base_offset.is_none() {
            // Appended, but where is unknown: no caller may take it as an offset.
            return Err(Error::Corrupt(format!(
                "{topic}/{partition}: the broker acknowledged an acks=all batch without its offset"
            )));
        }
        Ok(resp)
    }

    /// Raw fetch at the leader (or at the node `replica_addr` when given).
    pub async fn fetch_raw(&self, req: pb::FetchRequest, replica_addr: Option<&str>) -> Result<pb::FetchResponse> {
        let timeout = self.inner.config.request_timeout + Duration::from_millis(req.max_wait_ms as u64);
        let call = move |mut c: Conn, req: pb::FetchRequest| {
            let mut r = tonic::Request::new(req);
            r.set_timeout(timeout);
            async move { c.fetch(r).await }
        };
        match replica_addr {
            Some(addr) => {
                let c = self.conn(addr)?;
                let r = call(c, pb::FetchRequest { replica_read: true, ..req }).await;
                r.map(|r| r.into_inner()).map_err(|s| Error::from_status(addr, s))
            }
            None => {
                let (topic, partition) = (req.topic.clone(), req.partition);
                self.at_leader(&topic, partition, Call::Read, |c, _| call(c, req.clone())).await
            }
        }
    }

    pub async fn create_topic(&self, name: &str, partitions: u32, replication_factor: u32) -> Result<TopicInfo> {
        self.create_topic_with(name, partitions, replication_factor, &[]).await
    }

    /// Creates a topic with settings, e.g. `[("retention.ms", "86400000")]`.
    pub async fn create_topic_with(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        configs: &[(&str, &str)],
    ) -> Result<TopicInfo> {
        let timeout = self.inner.config.request_timeout + Duration::from_secs(10);
        let configs: std::collections::HashMap<String, String> =
            configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let resp = self
            .any_node(Call::Write, |mut c, _| {
                let mut req = tonic::Request::new(pb::CreateTopicRequest {
                    name: name.to_string(),
                    partitions,
                    replication_factor,
                    configs: configs.clone(),
                });
                req.set_timeout(timeout);
                async move { c.create_topic(req).await }
            })
            .await?;
        let info = TopicInfo::from(resp.topic.unwrap_or_default());
        self.inner.meta.lock().expect("meta lock").topics.insert(info.name.clone(), info.clone());
        Ok(info)
    }

    /// Sets and removes topic settings; answers with the topic as it now
    /// stands. Unknown settings and values out of range fail with
    /// INVALID_CONFIG and change nothing.
    pub async fn alter_topic_config(&self, name: &str, set: &[(&str, &str)], delete: &[&str]) -> Result<TopicInfo> {
        let timeout = self.inner.config.request_timeout;
        let set: std::collections::HashMap<String, String> =
            set.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let delete: Vec<String> = delete.iter().map(|k| k.to_string()).collect();
        let resp = self
            .any_node(Call::Write, |mut c, _| {
                let mut req = tonic::Request::new(pb::AlterTopicConfigRequest {
                    name: name.to_string(),
                    set: set.clone(),
                    delete: delete.clone(),
                });
                req.set_timeout(timeout);
                async move { c.alter_topic_config(req).await }
            })
            .await?;
        Ok(TopicInfo::from(resp.topic.unwrap_or_default()))
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let timeout = self.inner.config.request_timeout;
        self.any_node(Call::Write, |mut c, _| {
            let mut req = tonic::Request::new(pb::DeleteTopicRequest { name: name.to_string() });
            req.set_timeout(timeout);
            async move { c.delete_topic(req).await }
        })
        .await?;
        self.forget_topic(name);
        Ok(())
    }

    /// Every topic, with fresh leaders and offsets.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        let mut v = self.refresh_metadata(&[]).await?;
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// One topic, with fresh leaders and offsets.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        self.forget_topic(name);
        self.topic(name).await
    }

    pub async fn cluster_status(&self) -> Result<pb::ClusterStatusResponse> {
        let timeout = self.inner.config.request_timeout;
        self.any_node(Call::Read, |mut c, _| {
            let mut req = tonic::Request::new(pb::ClusterStatusRequest {});
            req.set_timeout(timeout);
            async move { c.cluster_status(req).await }
        })
        .await
    }

    /// What node `addr` itself holds of `topics`' metadata (all topics when
    /// empty): one attempt at that node, no retry and no redirect, bounded
    /// by `timeout` — for tools that compare nodes' views.
    pub async fn metadata_at(&self, addr: &str, topics: &[String], timeout: Duration) -> Result<pb::MetadataResponse> {
        let mut c = self.conn(addr)?;
        let mut req = tonic::Request::new(pb::MetadataRequest { topics: topics.to_vec() });
        req.set_timeout(timeout);
        match tokio::time::timeout(timeout, c.metadata(req)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(Error::from_status(addr, status)),
            Err(_) => Err(Error::from_status(addr, tonic::Status::deadline_exceeded("no answer in time"))),
        }
    }

    /// A fresh idempotent-producer id `(producer id, epoch)`.
    pub async fn init_producer(&self) -> Result<(i64, i16)> {
        let timeout = self.inner.config.request_timeout;
        // Not a write for the caller: an id allocated by an attempt whose
        // answer was lost is never used by anyone.
        let r = self
            .any_node(Call::Read, |mut c, _| {
                let mut req = tonic::Request::new(pb::InitProducerRequest {});
                req.set_timeout(timeout);
                async move { c.init_producer(req).await }
            })
            .await?;
        Ok((r.producer_id, r.epoch as i16))
    }

    /// Address of node `id` as last seen in metadata.
    pub fn node_addr(&self, id: u64) -> Option<String> {
        self.inner.meta.lock().expect("meta lock").nodes.get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    //! The retry loop's verdict on a sequence of attempt outcomes. The loop
    //! is driven directly with scripted outcomes because which error a real
    //! cluster returns on which attempt depends on timing; the end-to-end
    //! case runs against real nodes in `node/tests/t60_indeterminate_retry.rs`.

    use super::*;

    fn client() -> Client {
        let config = ClientConfig {
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(1),
            ..ClientConfig::default()
        };
        Client {
            inner: Arc::new(Inner {
                config,
                bootstrap: Vec::new(),
                conns: Mutex::default(),
                meta: Mutex::default(),
                auth: Authenticate::default(),
            }),
        }
    }

    fn broker(code: ErrorCode) -> Error {
        Error::Broker { code, message: code.name().into(), leader: None }
    }

    fn transport() -> Error {
        Error::Transport { addr: "127.0.0.1:1".into(), message: "deadline exceeded".into() }
    }

    /// Runs `call` through the retry loop, failing attempt *i* with `script[i]`.
    async fn run(call: Call, script: Vec<Error>) -> Error {
        let script = Arc::new(script);
        client()
            .retry(call, |attempt| {
                let script = script.clone();
                async move { Err::<(), _>(script[attempt as usize].clone()) }
            })
            .await
            .expect_err("every attempt fails")
    }

    #[tokio::test]
    async fn given_a_write_when_a_refusal_follows_an_unknown_attempt_then_the_error_is_indeterminate() {
        for first in [transport(), broker(ErrorCode::Timeout), broker(ErrorCode::Unavailable)] {
            let e =
                run(Call::Write, vec![first.clone(), broker(ErrorCode::NotLeader), broker(ErrorCode::UnknownTopic)])
                    .await;
            assert!(e.is_indeterminate(), "after {first:?}: {e:?}");
            assert!(!e.is_retryable());
            assert_eq!(e.code(), Some(ErrorCode::UnknownTopic), "the last code stays visible");
            assert!(e.to_string().contains("may have been applied"), "{e}");
            match e {
                Error::Indeterminate { attempts: 3, earlier_attempt: 1, .. } => {}
                other => panic!("expected Indeterminate after 3 attempts, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn given_a_write_when_refused_without_an_unknown_attempt_then_the_refusal_is_definite() {
        let e = run(Call::Write, vec![broker(ErrorCode::NotLeader), broker(ErrorCode::UnknownTopic)]).await;
        assert!(!e.is_indeterminate(), "{e:?}");
        assert!(matches!(e, Error::Broker { code: ErrorCode::UnknownTopic, .. }), "{e:?}");
    }

    #[tokio::test]
    async fn given_a_read_when_a_refusal_follows_a_timeout_then_the_refusal_is_returned_as_is() {
        let e = run(Call::Read, vec![transport(), broker(ErrorCode::OffsetOutOfRange)]).await;
        assert!(matches!(e, Error::Broker { code: ErrorCode::OffsetOutOfRange, .. }), "{e:?}");
    }
}
