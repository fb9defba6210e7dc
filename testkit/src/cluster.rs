//! A cluster of real `replog-node` processes on this machine.
//!
//! Layout under the cluster's directory ([`ClusterOptions::dir`], else a
//! temporary directory removed with the cluster): node `i` keeps its sled
//! database under `node-<i>/data` and its log in `node-<i>.log` (appended
//! across restarts). Addresses: by default every node listens on
//! 127.0.0.1 (gRPC, peer and metrics ports claimed per node: [`crate::ports`]); with
//! [`ClusterOptions::per_node_ip`] node `i` listens on its own loopback
//! address 127.0.0.(10+i) ([`node_ip`]) and binds its outgoing peer
//! connections to it, so that iptables rules per pair of addresses can cut
//! real links (the chaos harness's `net` module). Clients connect from
//! 127.0.0.1.
//!
//! Processes are driven by PID only: SIGKILL ([`Cluster::kill`]), SIGTERM
//! ([`Cluster::stop`]), SIGSTOP / SIGCONT ([`Cluster::pause`] /
//! [`Cluster::resume`]), and a restart on the node's existing data
//! ([`Cluster::restart`]). On drop every paused node is resumed and every
//! node killed; each child also gets `PR_SET_PDEATHSIG = SIGKILL`, so a
//! harness that dies without unwinding takes its nodes with it (see
//! [`crate::child`] for the thread this follows).
//!
//! Readiness is asked of each node itself ([`crate::probe`]): the cluster
//! is ready once every serving node names the same controller leader, and
//! that leader serves. A wait that times out says so with the tail of every
//! node's log.
//!
//! **Power loss.** With [`ClusterOptions::faultfs`], each node's data
//! directory is a `replog-faultfs` mount ([`crate::disk`]) over
//! `node-<i>/disk`, with the daemon's log in `node-<i>.faultfs.log` and its
//! control socket in `node-<i>/faultfs.sock`. [`Cluster::power_fail`]
//! SIGKILLs the node, reaps it and tells the daemon to drop every unsynced
//! write; the node is then restarted on what is left, as after a power
//! cut. On drop the nodes are killed first, then every mount unmounted;
//! [`crate::clear_run_dir`] detaches any mount a killed harness left.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use replog_client::client::{Credentials, TlsOptions};
use replog_client::{Client, ClientConfig, FetchOptions, PartitionReader};
use replog_faultfs::CrashReport;

use crate::child::spawn_logged;
use crate::disk::Disk;
use crate::paths::{find_faultfs_bin, find_node_bin};
use crate::wait::poll_until;
use crate::{ports, probe};

/// How long [`Cluster::start`] waits for an agreed controller leader by
/// default: generous for debug builds on a busy 2-core machine.
pub const READY: Duration = Duration::from_secs(60);
/// Lines of each node's log shown when a wait fails.
const TAIL_LINES: usize = 20;

/// The loopback address of node `id` with per-node addresses:
/// 127.0.0.(10+id).
pub fn node_ip(id: u64) -> Ipv4Addr {
    assert!((1..=200).contains(&id), "node id {id} out of range 1..=200");
    Ipv4Addr::new(127, 0, 0, 10 + id as u8)
}

/// The last `lines` lines of the log at `path` (empty if there is none).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// How a cluster's nodes run.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where the nodes keep their data and logs; `None`: a temporary
    /// directory, removed with the cluster. It must not hold an earlier
    /// cluster's data.
    pub dir: Option<PathBuf>,
    /// Node `i` on 127.0.0.(10+i) instead of 127.0.0.1, for packet-level
    /// faults between nodes.
    pub per_node_ip: bool,
    /// Extra command-line arguments for every node.
    pub extra_args: Vec<String>,
    /// Extra environment for every node (e.g. a planted bug).
    pub env: Vec<(String, String)>,
    /// The nodes' `RUST_LOG`.
    pub log_filter: String,
    /// Mount every node's data directory through `replog-faultfs`, so that
    /// [`Cluster::power_fail`] can drop its unsynced writes. Root and
    /// `/dev/fuse` only.
    pub faultfs: bool,
    /// The `replog-node` binary; `None`: [`find_node_bin`].
    pub node_bin: Option<PathBuf>,
    /// How long [`Cluster::start`] and [`Cluster::launch`] wait for an
    /// agreed controller leader.
    pub ready_timeout: Duration,
    /// Extra command-line arguments for one node (after `extra_args`).
    pub node_args: BTreeMap<u64, Vec<String>>,
    /// How the test kit's own probes and [`Cluster::client`] speak TLS to
    /// nodes whose client listener does (`None`: plaintext).
    pub client_tls: Option<TlsOptions>,
    /// Credentials for [`Cluster::client`] (and nothing else).
    pub credentials: Option<Credentials>,
    /// Start each node's Kafka listener, on its slot's Kafka port
    /// ([`Node::kafka`]).
    pub kafka: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            dir: None,
            per_node_ip: false,
            extra_args: Vec::new(),
            env: Vec::new(),
            // REPLOG_TEST_LOG overrides it for a run being investigated.
            log_filter: std::env::var("REPLOG_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            faultfs: false,
            node_bin: None,
            ready_timeout: READY,
            node_args: BTreeMap::new(),
            client_tls: None,
            credentials: None,
            kafka: false,
        }
    }
}

/// One node: where it lives and, while it runs, its process.
pub struct Node {
    pub id: u64,
    pub ip: Ipv4Addr,
    /// gRPC address, `ip:port`.
    pub addr: String,
    /// Metrics address, `ip:port`.
    pub metrics: String,
    /// Kafka listener address, `ip:port` (listening only with
    /// [`ClusterOptions::kafka`]).
    pub kafka: String,
    /// `node-<i>/`: the node's own directory (a test may mount a volume
    /// here before the node starts).
    pub dir: PathBuf,
    /// `node-<i>/data`, the node's `--data-dir`.
    pub data_dir: PathBuf,
    /// `node-<i>.log`: stdout and stderr, appended across restarts.
    pub log: PathBuf,
    child: Option<Child>,
    paused: bool,
    disk: Option<Disk>,
    /// Added by [`Cluster::join`]: started with `--join` through this
    /// address instead of `--initial-cluster`.
    join_via: Option<String>,
    /// The claim on the node's ports, held while the cluster lives.
    _ports: ports::Slot,
}

impl Node {
    /// Node `id` of a cluster in `dir`, not started, with its ports claimed.
    fn new(id: u64, opts: &ClusterOptions, dir: &Path, join_via: Option<String>) -> Result<Node> {
        let ip = if opts.per_node_ip { node_ip(id) } else { Ipv4Addr::LOCALHOST };
        let node_dir = dir.join(format!("node-{id}"));
        let slot = ports::claim(ip)?;
        Ok(Node {
            id,
            ip,
            addr: format!("{ip}:{}", slot.client_port()),
            metrics: format!("{ip}:{}", slot.metrics_port()),
            kafka: format!("{ip}:{}", slot.kafka_port()),
            data_dir: node_dir.join("data"),
            dir: node_dir,
            log: dir.join(format!("node-{id}.log")),
            child: None,
            paused: false,
            disk: None,
            join_via,
            _ports: slot,
        })
    }
}

/// A cluster of node processes; see the module docs.
pub struct Cluster {
    nodes: BTreeMap<u64, Node>,
    initial: String,
    bin: PathBuf,
    dir: PathBuf,
    opts: ClusterOptions,
    /// Dropped after [`Drop::drop`] has stopped the nodes and disks.
    _temp: Option<tempfile::TempDir>,
}

pub use crate::ports::PEER_PORT_OFFSET;

impl Cluster {
    /// Starts `n` nodes and waits until they agree on a controller leader.
    pub async fn start(n: u64, opts: ClusterOptions) -> Result<Cluster> {
        Cluster::prepare(n, opts)?.launch().await
    }

    /// Chooses addresses and directories for `n` nodes without starting
    /// any, so that a test can prepare a node's directory first.
    pub fn prepare(n: u64, opts: ClusterOptions) -> Result<Cluster> {
        let bin = match &opts.node_bin {
            Some(b) => b.clone(),
            None => find_node_bin()?,
        };
        let (dir, temp) = match &opts.dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::tempdir().context("temporary cluster directory")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            nodes.insert(id, Node::new(id, &opts, &dir, None)?);
        }
        let initial = nodes.values().map(|n| format!("{}={}", n.id, n.addr)).collect::<Vec<_>>().join(",");
        Ok(Cluster { nodes, initial, bin, dir, opts, _temp: temp })
    }

    /// Mounts the disks (with faultfs), starts every node and waits until
    /// they agree on a controller leader.
    pub async fn launch(mut self) -> Result<Cluster> {
        if self.opts.faultfs {
            self.mount_disks()?;
        }
        for id in self.ids() {
            self.restart(id)?;
        }
        if let Err(e) = self.wait_ready(self.opts.ready_timeout).await {
            // The test gets no cluster to drop while it panics: keep the
            // logs here.
            if self._temp.is_some() {
                self.keep_logs();
            }
            return Err(e);
        }
        Ok(self)
    }

    fn mount_disks(&mut self) -> Result<()> {
        if !Path::new("/dev/fuse").exists() {
            bail!("power-fail faults need /dev/fuse (FUSE), which this machine does not have");
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("power-fail faults mount FUSE filesystems: run as root");
        }
        let fbin = find_faultfs_bin(&self.bin)?;
        for n in self.nodes.values_mut() {
            n.disk = Some(Disk::start(
                &fbin,
                &n.dir.join("disk"),
                &n.data_dir,
                &n.dir.join("faultfs.sock"),
                &self.dir.join(format!("node-{}.faultfs.log", n.id)),
            )?);
        }
        Ok(())
    }

    /// The directory holding every node's data and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&id]
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut Node> {
        self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))
    }

    /// Every node's gRPC address, by id.
    pub fn addrs(&self) -> BTreeMap<u64, String> {
        self.nodes.iter().map(|(id, n)| (*id, n.addr.clone())).collect()
    }

    /// Every node's address, by id.
    pub fn ips(&self) -> BTreeMap<u64, Ipv4Addr> {
        self.nodes.iter().map(|(id, n)| (*id, n.ip)).collect()
    }

    /// The PID of node `id` while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes[&id].child.as_ref().map(Child::id)
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes[&id].child.is_some()
    }

    pub fn is_paused(&self, id: u64) -> bool {
        self.nodes[&id].paused
    }

    /// Running and not paused: the nodes expected to answer.
    pub fn serving(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.child.is_some() && !n.paused).map(|n| n.id).collect()
    }

    /// The gRPC addresses of the serving nodes.
    pub fn serving_addrs(&self) -> Vec<String> {
        self.serving().into_iter().map(|id| self.nodes[&id].addr.clone()).collect()
    }

    /// A client bootstrapped with every serving node.
    /// The cluster's TLS and credentials fill in what `config` leaves out.
    pub async fn client(&self, mut config: ClientConfig) -> Result<Client> {
        if config.tls.is_none() {
            config.tls = self.opts.client_tls.clone();
        }
        if config.credentials.is_none() {
            config.credentials = self.opts.credentials.clone();
        }
        Ok(Client::connect_with(self.serving_addrs(), config).await?)
    }

    /// Starts node `id` on its data directory (first start or restart).
    /// Flags for node `id` alone, from its next start on (in place of any
    /// it had).
    pub fn set_node_args(&mut self, id: u64, args: &[&str]) {
        self.opts.node_args.insert(id, args.iter().map(|a| a.to_string()).collect());
    }

    pub fn restart(&mut self, id: u64) -> Result<()> {
        let (bin, initial, opts) = (self.bin.clone(), self.initial.clone(), self.opts.clone());
        let n = self.node_mut(id)?;
        if n.child.is_some() {
            bail!("node {id} is already running");
        }
        if let Some(d) = n.disk.as_mut() {
            d.check_alive().with_context(|| format!("node {id}'s data directory is gone"))?;
        }
        std::fs::create_dir_all(&n.data_dir)?;
        let mut cmd = Command::new(&bin);
        cmd.args(["--id", &id.to_string(), "--listen", &n.addr, "--metrics-listen", &n.metrics])
            .arg("--data-dir")
            .arg(&n.data_dir);
        match &n.join_via {
            Some(via) => cmd.args(["--join", via]),
            None => cmd.args(["--initial-cluster", &initial]),
        };
        if opts.kafka {
            cmd.args(["--kafka-listen", &n.kafka]);
        }
        cmd.args(&opts.extra_args)
            .args(opts.node_args.get(&id).into_iter().flatten())
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", &opts.log_filter);
        n.child = Some(spawn_logged(cmd, &n.log, libc::SIGKILL)?);
        n.paused = false;
        Ok(())
    }

    /// Adds node `id` (a new one) and starts it with `--join` through the
    /// first serving node: it asks the cluster to add it, so it runs with
    /// its own metadata once the controller has it. Returns at once; wait
    /// for it with [`Cluster::wait_ready`] or a look at the cluster status.
    /// Restarts of it join again (harmless).
    pub fn join(&mut self, id: u64) -> Result<()> {
        if self.nodes.contains_key(&id) {
            bail!("node {id} exists already");
        }
        if self.opts.faultfs {
            bail!("joining nodes with faultfs disks is not supported");
        }
        let via = self.serving_addrs().into_iter().next().ok_or_else(|| anyhow!("no node serves to join through"))?;
        let node = Node::new(id, &self.opts, &self.dir, Some(via))?;
        self.nodes.insert(id, node);
        self.restart(id)
    }

    /// Stops tracking node `id` (after it left the cluster): it is killed
    /// if it still runs, and no longer counts as serving.
    pub fn forget(&mut self, id: u64) -> Result<()> {
        self.kill(id)?;
        self.nodes.remove(&id);
        Ok(())
    }

    /// Restarts every node that is not running.
    pub fn restart_all(&mut self) -> Result<()> {
        for id in self.ids() {
            if !self.is_running(id) {
                self.restart(id)?;
            }
        }
        Ok(())
    }

    fn signal(&self, id: u64, sig: libc::c_int) -> Result<()> {
        let pid = self.pid(id).ok_or_else(|| anyhow!("node {id} is not running"))?;
        // SAFETY: plain kill(2) on our own child's pid.
        if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
            bail!("kill({pid}, {sig}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGKILL node `id` and reap it: no chance to flush or hand over
    /// anything. No-op if it is not running.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        let n = self.node_mut(id)?;
        if let Some(mut c) = n.child.take() {
            c.kill()?;
            c.wait()?;
        }
        n.paused = false;
        Ok(())
    }

    /// SIGKILL every node at once (signals first, then reaps).
    pub fn kill_all(&mut self) -> Result<()> {
        for id in self.ids() {
            if self.is_running(id) {
                self.signal(id, libc::SIGKILL)?;
            }
        }
        for id in self.ids() {
            self.kill(id)?;
        }
        Ok(())
    }

    /// Graceful stop: SIGTERM (and SIGCONT, should it be paused), then
    /// SIGKILL if it has not exited after `grace`. Returns its exit status
    /// if it exited on its own, `None` if it had to be killed (or was not
    /// running).
    pub async fn stop(&mut self, id: u64, grace: Duration) -> Result<Option<ExitStatus>> {
        if !self.is_running(id) {
            return Ok(None);
        }
        self.signal(id, libc::SIGTERM)?;
        self.signal(id, libc::SIGCONT)?;
        let n = self.node_mut(id)?;
        n.paused = false;
        let child = n.child.as_mut().expect("running");
        let exited = poll_until(&format!("node {id} to exit on SIGTERM"), grace, || {
            std::future::ready(child.try_wait().ok().flatten())
        })
        .await;
        match exited {
            Ok(status) => {
                n.child = None;
                Ok(Some(status))
            }
            Err(_) => {
                self.kill(id)?;
                Ok(None)
            }
        }
    }

    /// SIGSTOP node `id`: it keeps its sockets but answers nothing.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        self.signal(id, libc::SIGSTOP)?;
        self.node_mut(id)?.paused = true;
        Ok(())
    }

    /// SIGCONT node `id`.
    pub fn resume(&mut self, id: u64) -> Result<()> {
        if self.is_running(id) {
            self.signal(id, libc::SIGCONT)?;
        }
        self.node_mut(id)?.paused = false;
        Ok(())
    }

    /// Nodes whose process exited on its own (crashed), with the status;
    /// they count as stopped from then on. A crash is a finding: callers
    /// report it.
    pub fn exited(&mut self) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for n in self.nodes.values_mut() {
            if let Some(c) = n.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                out.push((n.id, status.to_string()));
                n.child = None;
                n.paused = false;
            }
        }
        out
    }

    /// Whether every node's data directory is a faultfs mount, so that
    /// [`Cluster::power_fail`] works.
    pub fn has_faultfs(&self) -> bool {
        self.nodes.values().all(|n| n.disk.is_some())
    }

    fn crash_disk(&mut self, id: u64) -> Result<CrashReport> {
        let disk = self.node_mut(id)?.disk.as_mut().ok_or_else(|| anyhow!("node {id} has no faultfs mount"))?;
        disk.crash().with_context(|| format!("power failure of node {id}"))
    }

    /// Power failure of node `id`: SIGKILL, reap, then drop every write it
    /// had not fsync'd. It stays down until [`Cluster::restart`].
    pub fn power_fail(&mut self, id: u64) -> Result<CrashReport> {
        self.kill(id)?;
        self.crash_disk(id)
    }

    /// Power failure of every node at once: all SIGKILLed, then every disk
    /// loses its unsynced writes. Returns what each lost.
    pub fn power_fail_all(&mut self) -> Result<Vec<(u64, CrashReport)>> {
        self.kill_all()?;
        self.ids().into_iter().map(|id| Ok((id, self.crash_disk(id)?))).collect()
    }

    /// The controller leader as node `id` itself sees it (`None`: no
    /// answer, or no leader).
    pub async fn controller_leader_at(&self, id: u64) -> Option<u64> {
        probe::controller_leader(&self.nodes[&id].addr, self.opts.client_tls.as_ref()).await
    }

    /// The controller leader, as the first serving node that knows it says.
    pub async fn controller_leader(&self) -> Option<u64> {
        for id in self.serving() {
            if let Some(l) = self.controller_leader_at(id).await {
                return Some(l);
            }
        }
        None
    }

    /// The leader of `topic`/`partition`, as the first serving node that
    /// knows one says (it may be stale while a partition heals).
    pub async fn leader_of(&self, topic: &str, partition: u32) -> Option<u64> {
        for id in self.serving() {
            if let Some(l) =
                probe::partition_leader(&self.nodes[&id].addr, topic, partition, self.opts.client_tls.as_ref()).await
            {
                return Some(l);
            }
        }
        None
    }

    /// The controller leader every serving node reports, if they all
    /// report the same one and it is itself serving.
    pub async fn controller_agreed(&self) -> Option<u64> {
        let serving = self.serving();
        let mut leader = None;
        for id in &serving {
            let l = self.controller_leader_at(*id).await?;
            if leader.is_some_and(|x| x != l) {
                return None;
            }
            leader = Some(l);
        }
        leader.filter(|l| serving.contains(l))
    }

    /// Waits until the serving nodes agree on a controller leader, and
    /// returns it; on timeout the error carries every node's log tail.
    pub async fn wait_ready(&self, limit: Duration) -> Result<u64> {
        poll_until("the serving nodes to agree on a controller leader", limit, || self.controller_agreed())
            .await
            .with_context(|| self.log_tails())
    }

    /// Waits until every partition of `topic` has a serving leader that
    /// answers a fetch; returns the leaders by partition.
    pub async fn wait_leaders(&self, client: &Client, topic: &str, limit: Duration) -> Result<BTreeMap<u32, u64>> {
        let serving = &self.serving();
        // What was last in the way, for the error.
        let last = &std::sync::Mutex::new(String::new());
        let note = |s: String| *last.lock().expect("last") = s;
        let what = format!("a serving leader for every partition of {topic}");
        let found = poll_until(&what, limit, || async move {
            let t = client.describe_topic(topic).await.map_err(|e| note(e.to_string())).ok()?;
            let mut leaders = BTreeMap::new();
            for p in &t.partitions {
                match p.leader {
                    Some(l) if serving.contains(&l) => {
                        let fetch = FetchOptions { max_bytes: 1, max_records: 1, max_wait_ms: 0, min_bytes: 0 };
                        let mut r = PartitionReader::new(client.clone(), topic, p.partition, 0).with_options(fetch);
                        match r.poll().await {
                            Ok(_) => {
                                leaders.insert(p.partition, l);
                            }
                            Err(e) => note(format!("partition {}: {e}", p.partition)),
                        }
                    }
                    other => note(format!("partition {} leader {other:?}", p.partition)),
                }
            }
            (leaders.len() == t.partitions.len()).then_some(leaders)
        })
        .await;
        found.with_context(|| format!("last seen: {}", last.lock().expect("last")))
    }

    /// Node `id`'s whole log.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default()
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        log_tail(&self.nodes[&id].log, lines)
    }

    /// The tail of every node's log, for a failed wait.
    fn log_tails(&self) -> String {
        let mut out = format!("node logs under {}", self.dir.display());
        for (id, n) in &self.nodes {
            out.push_str(&format!(
                "\n--- last {TAIL_LINES} lines of {}\n{}",
                n.log.display(),
                self.log_tail(*id, TAIL_LINES)
            ));
        }
        out
    }
}

impl Cluster {
    /// Copies the node logs of a failed test out of the temporary
    /// directory that is about to go, and says where.
    fn keep_logs(&self) {
        let kept =
            std::env::temp_dir().join(format!("replog-failed-{}-{}", std::process::id(), replog_proto::now_ms()));
        if std::fs::create_dir_all(&kept).is_err() {
            return;
        }
        for n in self.nodes.values() {
            let _ = std::fs::copy(&n.log, kept.join(format!("node-{}.log", n.id)));
        }
        eprintln!("the test failed: node logs kept in {}", kept.display());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            if let Some(mut c) = n.child.take() {
                if n.paused {
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGCONT) };
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // Only once no node has a file open in them: the unmounts are then
        // clean, not lazy.
        for n in self.nodes.values_mut() {
            if let Some(mut d) = n.disk.take() {
                d.stop();
            }
        }
        if std::thread::panicking() && self._temp.is_some() {
            self.keep_logs();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ips_are_loopback_and_distinct() {
        let ips: Vec<_> = (1..=5).map(node_ip).collect();
        assert!(ips.iter().all(|ip| ip.is_loopback()));
        assert_eq!(ips[0], Ipv4Addr::new(127, 0, 0, 11));
        assert_eq!(ips[4], Ipv4Addr::new(127, 0, 0, 15));
    }

    #[test]
    fn given_prepared_nodes_then_each_has_its_own_dirs_ports_and_the_initial_cluster_names_them_all() {
        let opts = ClusterOptions { node_bin: Some("/bin/true".into()), ..ClusterOptions::default() };
        let c = Cluster::prepare(3, opts).unwrap();
        let n2 = c.node(2);
        assert_eq!(n2.dir, c.dir().join("node-2"));
        assert_eq!(n2.data_dir, c.dir().join("node-2/data"));
        assert_eq!(n2.log, c.dir().join("node-2.log"));
        assert!(n2.addr.starts_with("127.0.0.1:"));
        let addrs: std::collections::BTreeSet<_> = c.addrs().into_values().collect();
        assert_eq!(addrs.len(), 3);
        assert_eq!(c.initial, format!("1={},2={},3={}", c.node(1).addr, n2.addr, c.node(3).addr));
        assert!(c.serving().is_empty(), "nothing runs before launch");
    }
}
