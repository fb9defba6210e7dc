//! A cluster of real `replog-node` processes for chaos runs, each on its own
//! loopback address so that packet filters can tell the nodes apart.
//!
//! Node `i` listens for gRPC on `127.0.0.(10+i):<port>` and for metrics on the
//! same IP, keeps its sled database under `<run dir>/node-<i>/data` and its
//! log in `<run dir>/node-<i>.log` (appended across restarts). A node binds
//! its outgoing peer connections to its listen IP, so every packet between
//! two nodes carries both nodes' own addresses, and iptables rules per pair
//! of addresses (see [`crate::net`]) cut real links. Clients connect from
//! 127.0.0.1 and are never matched by those rules.
//!
//! Processes are driven by PID only: SIGKILL ([`ChaosCluster::kill`]),
//! SIGTERM ([`ChaosCluster::stop`]), SIGSTOP / SIGCONT
//! ([`ChaosCluster::pause`] / [`ChaosCluster::resume`]), and a restart on the
//! node's existing data ([`ChaosCluster::restart`]). On drop every paused
//! node is resumed and every node killed; each child also gets
//! `PR_SET_PDEATHSIG = SIGKILL`, so a harness that dies without unwinding
//! takes its nodes with it.
//!
//! The binary is `$REPLOG_NODE_BIN`, else `replog-node` next to the running
//! executable's profile directory (`target/release` or `target/debug`),
//! found from [`std::env::current_exe`].
//!
//! **Power loss.** With [`ClusterOptions::faultfs`], each node's data
//! directory is a mount of `replog-faultfs` (`$REPLOG_FAULTFS_BIN`, else next
//! to `replog-node`) over `<run dir>/node-<i>/disk`, which plays the node's
//! disk: it holds only what the node fsync'd. The daemon runs for the whole
//! life of the cluster, across node restarts, with its log in
//! `<run dir>/node-<i>.faultfs.log` and its control socket in
//! `<run dir>/node-<i>/faultfs.sock`. [`ChaosCluster::power_fail`] SIGKILLs
//! the node, reaps it (so none of its requests is still in flight in the
//! mount) and tells the daemon to drop every unsynced write; the node is
//! then restarted on what is left, as after a power cut. On drop the nodes
//! are killed first and every mount is unmounted; a harness that dies
//! without unwinding takes the daemons with it (`PR_SET_PDEATHSIG =
//! SIGTERM`, on which they unmount), and [`clear_run_dir`] detaches any
//! mount a killed harness still left behind.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use replog_client::{Client, ClientConfig, FetchOptions, PartitionReader};
use replog_faultfs::CrashReport;
use replog_faultfs::control::Client as FaultFsClient;

/// The loopback address of node `id`: 127.0.0.(10+id).
pub fn node_ip(id: u64) -> Ipv4Addr {
    assert!((1..=200).contains(&id), "node id {id} out of range 1..=200");
    Ipv4Addr::new(127, 0, 0, 10 + id as u8)
}

/// Client settings for control-plane look-ups (leaders, readiness): short,
/// so that a paused or partitioned node costs a second, not thirty.
pub fn probe_config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_millis(1500),
        retry_deadline: Duration::from_millis(1500),
        connect_timeout: Duration::from_millis(500),
        ..ClientConfig::default()
    }
}

/// One node: where it lives and, while it runs, its process.
pub struct ChaosNode {
    pub id: u64,
    pub ip: Ipv4Addr,
    /// gRPC address, `ip:port`.
    pub addr: String,
    /// Metrics address, `ip:port`.
    pub metrics: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// The lazy filesystem under `data_dir`, when the cluster has one.
    disk: Option<Disk>,
}

impl ChaosNode {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// A running cluster; see the module docs.
pub struct ChaosCluster {
    nodes: BTreeMap<u64, ChaosNode>,
    initial: String,
    bin: PathBuf,
    run_dir: PathBuf,
    opts: ClusterOptions,
}

/// How a cluster's nodes run.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Extra command-line arguments for every node.
    pub extra_args: Vec<String>,
    /// Mount every node's data directory through `replog-faultfs`, so that
    /// [`ChaosCluster::power_fail`] can drop its unsynced writes.
    pub faultfs: bool,
    /// A bug planted in every node, to show that the faults and the checker
    /// catch it.
    pub plant: Option<Plant>,
}

impl ClusterOptions {
    /// From the environment: `CHAOS_FAULTFS` (`auto`, the default: mount
    /// when `power_faults` is set; `1`: always; `0`: never) and
    /// `CHAOS_PLANT` (see [`Plant`]).
    pub fn from_env(power_faults: bool) -> Result<ClusterOptions> {
        let faultfs = match std::env::var("CHAOS_FAULTFS").unwrap_or_default().trim() {
            "" | "auto" => power_faults,
            "1" | "on" | "true" => true,
            "0" | "off" | "false" if power_faults => {
                bail!("CHAOS_FAULTFS=0, but power-fail faults need the faultfs mounts")
            }
            "0" | "off" | "false" => false,
            v => bail!("CHAOS_FAULTFS must be auto, 1 or 0, got {v:?}"),
        };
        Ok(ClusterOptions { extra_args: Vec::new(), faultfs, plant: Plant::from_env()? })
    }
}

/// A test-only bug a node can be started with (`CHAOS_PLANT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plant {
    /// `skip-fsync`: the storage skips its fdatasync/fsync calls
    /// (`REPLOG_UNSAFE_SKIP_FSYNC=1`), so acknowledged writes are not on
    /// disk. Power failures must then lose acknowledged writes.
    SkipFsync,
}

impl Plant {
    pub const ALL: [Plant; 1] = [Plant::SkipFsync];

    pub fn name(self) -> &'static str {
        match self {
            Plant::SkipFsync => "skip-fsync",
        }
    }

    /// The environment variable and value that plant it in a node.
    pub fn env(self) -> (&'static str, &'static str) {
        match self {
            Plant::SkipFsync => ("REPLOG_UNSAFE_SKIP_FSYNC", "1"),
        }
    }

    pub fn parse(name: &str) -> Result<Plant> {
        match Plant::ALL.iter().find(|p| p.name() == name) {
            Some(p) => Ok(*p),
            None => bail!("unknown planted bug {name:?}; known: {}", Plant::ALL.map(Plant::name).join(", ")),
        }
    }

    /// `CHAOS_PLANT`, if set and not empty.
    pub fn from_env() -> Result<Option<Plant>> {
        match std::env::var("CHAOS_PLANT") {
            Ok(v) if !v.trim().is_empty() => Plant::parse(v.trim()).map(Some),
            _ => Ok(None),
        }
    }
}

/// A node's `replog-faultfs` daemon: the mount under its data directory.
struct Disk {
    child: Child,
    control: PathBuf,
    mountpoint: PathBuf,
}

/// How long a daemon may take to mount and answer, or to unmount on exit.
const DISK_START: Duration = Duration::from_secs(10);
const DISK_STOP: Duration = Duration::from_secs(5);

impl Disk {
    /// Starts the daemon: `backing` (the disk) mounted at `mountpoint`,
    /// and waits until its control socket answers.
    fn start(bin: &Path, backing: &Path, mountpoint: &Path, control: &Path, log: &Path) -> Result<Disk> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let log = OpenOptions::new().create(true).append(true).open(log)?;
        let mut cmd = Command::new(bin);
        cmd.arg("mount")
            .arg("--backing")
            .arg(backing)
            .arg("--mountpoint")
            .arg(mountpoint)
            .arg("--control")
            .arg(control)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
        // SIGTERM, not SIGKILL: the daemon unmounts on it.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("spawn {}", bin.display()))?;
        let mut disk = Disk { child, control: control.to_path_buf(), mountpoint: mountpoint.to_path_buf() };
        let deadline = Instant::now() + DISK_START;
        loop {
            if let Some(status) = disk.child.try_wait()? {
                bail!("replog-faultfs for {} exited ({status}) before it was ready", mountpoint.display());
            }
            if FaultFsClient::connect(control).and_then(|mut c| c.ping()).is_ok() {
                return Ok(disk);
            }
            if Instant::now() >= deadline {
                disk.stop();
                bail!("replog-faultfs did not mount {} within {DISK_START:?}", mountpoint.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn client(&self) -> Result<FaultFsClient> {
        Ok(FaultFsClient::connect(&self.control)?)
    }

    fn crash(&mut self) -> Result<CrashReport> {
        if let Some(status) = self.child.try_wait()? {
            bail!("replog-faultfs for {} has exited ({status})", self.mountpoint.display());
        }
        Ok(self.client()?.crash()?)
    }

    /// Asks the daemon to unmount and exit; kills it and detaches the mount
    /// if it does not within [`DISK_STOP`].
    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.client().and_then(|mut c| Ok(c.exit()?));
            let deadline = Instant::now() + DISK_STOP;
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.child.try_wait().ok().flatten().is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        for m in replog_faultfs::mount::mounts_under(&self.mountpoint) {
            let _ = replog_faultfs::mount::detach(&m);
        }
    }
}

/// Empties `run_dir` for a new run: detaches `replog-faultfs` mounts a
/// killed harness left under it (their daemons are gone), then removes it.
pub fn clear_run_dir(run_dir: &Path) -> Result<()> {
    if !run_dir.exists() {
        return Ok(());
    }
    for m in replog_faultfs::mount::mounts_under(run_dir) {
        replog_faultfs::mount::detach(&m).with_context(|| format!("detach stale mount {}", m.display()))?;
    }
    std::fs::remove_dir_all(run_dir).with_context(|| format!("remove {}", run_dir.display()))
}

/// Finds the `replog-faultfs` binary: `$REPLOG_FAULTFS_BIN`, else next to
/// `node_bin`.
pub fn find_faultfs_bin(node_bin: &Path) -> Result<PathBuf> {
    if let Ok(p) = std::env::var("REPLOG_FAULTFS_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("REPLOG_FAULTFS_BIN={} is not a file", p.display());
    }
    let p = node_bin.with_file_name("replog-faultfs");
    if p.is_file() {
        return Ok(p);
    }
    bail!(
        "replog-faultfs not found next to {} (build it with `cargo build --release -p replog-faultfs`, or set REPLOG_FAULTFS_BIN)",
        node_bin.display()
    )
}

/// Finds the `replog-node` binary: `$REPLOG_NODE_BIN`, else next to the
/// current executable's profile directory (preferring the profile the
/// current executable was built with).
pub fn find_node_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("REPLOG_NODE_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("REPLOG_NODE_BIN={} is not a file", p.display());
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let target = exe
        .ancestors()
        .find(|a| a.join("CACHEDIR.TAG").is_file() || a.file_name().is_some_and(|n| n == "target"))
        .ok_or_else(|| anyhow!("cannot find the target directory above {}", exe.display()))?;
    let release_first = exe.components().any(|c| c.as_os_str() == "release");
    let mut profiles = ["release", "debug"];
    if !release_first {
        profiles.reverse();
    }
    for profile in profiles {
        let p = target.join(profile).join("replog-node");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "replog-node not found under {} (build it with `cargo build --release -p replog-node`, or set REPLOG_NODE_BIN)",
        target.display()
    )
}

/// A free TCP port on `ip` (bound and released; the node binds it next).
fn free_port(ip: Ipv4Addr) -> Result<u16> {
    let l = TcpListener::bind((ip, 0)).with_context(|| format!("bind {ip}:0"))?;
    Ok(l.local_addr()?.port())
}

impl ChaosCluster {
    /// Starts `n` nodes under `run_dir` (which must not hold an earlier
    /// cluster's data) and waits until they agree on a controller leader.
    pub async fn start(n: u64, run_dir: &Path, extra_args: &[String]) -> Result<ChaosCluster> {
        ChaosCluster::start_with(n, run_dir, ClusterOptions { extra_args: extra_args.to_vec(), ..Default::default() })
            .await
    }

    /// [`ChaosCluster::start`] with options: faultfs mounts, planted bugs.
    pub async fn start_with(n: u64, run_dir: &Path, opts: ClusterOptions) -> Result<ChaosCluster> {
        let bin = find_node_bin()?;
        let faultfs_bin = if opts.faultfs {
            if !Path::new("/dev/fuse").exists() {
                bail!("power-fail faults need /dev/fuse (FUSE), which this machine does not have");
            }
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                bail!("power-fail faults mount FUSE filesystems: run as root");
            }
            Some(find_faultfs_bin(&bin)?)
        } else {
            None
        };
        std::fs::create_dir_all(run_dir)?;
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let ip = node_ip(id);
            let (port, mport) = (free_port(ip)?, free_port(ip)?);
            nodes.insert(
                id,
                ChaosNode {
                    id,
                    ip,
                    addr: format!("{ip}:{port}"),
                    metrics: format!("{ip}:{mport}"),
                    data_dir: run_dir.join(format!("node-{id}")).join("data"),
                    log: run_dir.join(format!("node-{id}.log")),
                    child: None,
                    paused: false,
                    disk: None,
                },
            );
        }
        let initial = nodes.values().map(|n| format!("{}={}", n.id, n.addr)).collect::<Vec<_>>().join(",");
        let mut c = ChaosCluster { nodes, initial, bin, run_dir: run_dir.to_path_buf(), opts };
        if let Some(fbin) = &faultfs_bin {
            for n in c.nodes.values_mut() {
                let node_dir = run_dir.join(format!("node-{}", n.id));
                n.disk = Some(Disk::start(
                    fbin,
                    &node_dir.join("disk"),
                    &n.data_dir,
                    &node_dir.join("faultfs.sock"),
                    &run_dir.join(format!("node-{}.faultfs.log", n.id)),
                )?);
            }
        }
        for id in 1..=n {
            c.restart(id)?;
        }
        c.wait_ready(Duration::from_secs(60)).await?;
        Ok(c)
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
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

    pub fn node(&self, id: u64) -> &ChaosNode {
        &self.nodes[&id]
    }

    /// Every node's gRPC address, by id.
    pub fn addrs(&self) -> BTreeMap<u64, String> {
        self.nodes.iter().map(|(id, n)| (*id, n.addr.clone())).collect()
    }

    pub fn ips(&self) -> BTreeMap<u64, Ipv4Addr> {
        self.nodes.iter().map(|(id, n)| (*id, n.ip)).collect()
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

    /// A client bootstrapped with every node.
    pub async fn client(&self, config: ClientConfig) -> Result<Client> {
        let addrs: Vec<String> = self.nodes.values().map(|n| n.addr.clone()).collect();
        Ok(Client::connect_with(addrs, config).await?)
    }

    /// Starts node `id` on its data dir (first start or restart).
    pub fn restart(&mut self, id: u64) -> Result<()> {
        let initial = self.initial.clone();
        let bin = self.bin.clone();
        let extra = self.opts.extra_args.clone();
        let plant = self.opts.plant;
        let n = self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        if n.child.is_some() {
            bail!("node {id} is already running");
        }
        if let Some(d) = n.disk.as_mut()
            && let Some(status) = d.child.try_wait()?
        {
            bail!("node {id}'s replog-faultfs exited ({status}); its data directory is gone");
        }
        std::fs::create_dir_all(&n.data_dir)?;
        let log = OpenOptions::new().create(true).append(true).open(&n.log)?;
        let mut cmd = Command::new(&bin);
        cmd.args(["--id", &id.to_string(), "--listen", &n.addr])
            .args(["--metrics-listen", &n.metrics])
            .arg("--data-dir")
            .arg(&n.data_dir)
            .args(["--initial-cluster", &initial])
            .args(&extra)
            .env("RUST_LOG", std::env::var("CHAOS_NODE_LOG").unwrap_or_else(|_| "info,openraft=warn".into()))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        if let Some(p) = plant {
            let (k, v) = p.env();
            cmd.env(k, v);
        }
        // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("spawn {}", bin.display()))?;
        n.child = Some(child);
        n.paused = false;
        Ok(())
    }

    fn signal(&self, id: u64, sig: libc::c_int) -> Result<()> {
        let pid = self.nodes[&id].pid().ok_or_else(|| anyhow!("node {id} is not running"))?;
        // SAFETY: plain kill(2) on our own child's pid.
        if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
            bail!("kill({pid}, {sig}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGKILL node `id` and reap it. No-op if it is not running.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        let n = self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
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

    /// Whether nodes' data directories are faultfs mounts, so that
    /// [`ChaosCluster::power_fail`] works.
    pub fn has_faultfs(&self) -> bool {
        self.nodes.values().all(|n| n.disk.is_some())
    }

    fn crash_disk(&mut self, id: u64) -> Result<CrashReport> {
        let n = self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        let disk = n.disk.as_mut().ok_or_else(|| anyhow!("node {id} has no faultfs mount (CHAOS_FAULTFS)"))?;
        disk.crash().with_context(|| format!("power failure of node {id}"))
    }

    /// Power failure of node `id`: SIGKILL, reap, then drop every write it
    /// had not fsync'd. It stays down until [`ChaosCluster::restart`].
    pub fn power_fail(&mut self, id: u64) -> Result<CrashReport> {
        self.kill(id)?;
        self.crash_disk(id)
    }

    /// Power failure of every node at once: all SIGKILLed, then every
    /// disk loses its unsynced writes. Returns what each lost.
    pub fn power_fail_all(&mut self) -> Result<Vec<(u64, CrashReport)>> {
        self.kill_all()?;
        let mut out = Vec::new();
        for id in self.ids() {
            out.push((id, self.crash_disk(id)?));
        }
        Ok(out)
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

    /// Graceful stop: SIGTERM (and SIGCONT, should it be paused), then
    /// SIGKILL if it has not exited after `grace`. Returns whether it exited
    /// on its own.
    pub async fn stop(&mut self, id: u64, grace: Duration) -> Result<bool> {
        if !self.is_running(id) {
            return Ok(true);
        }
        self.signal(id, libc::SIGTERM)?;
        self.signal(id, libc::SIGCONT)?;
        let deadline = Instant::now() + grace;
        let n = self.nodes.get_mut(&id).expect("checked");
        n.paused = false;
        let child = n.child.as_mut().expect("checked");
        loop {
            if child.try_wait()?.is_some() {
                n.child = None;
                return Ok(true);
            }
            if Instant::now() >= deadline {
                self.kill(id)?;
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGSTOP node `id`.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        self.signal(id, libc::SIGSTOP)?;
        self.nodes.get_mut(&id).expect("exists").paused = true;
        Ok(())
    }

    /// SIGCONT node `id`.
    pub fn resume(&mut self, id: u64) -> Result<()> {
        if self.is_running(id) {
            self.signal(id, libc::SIGCONT)?;
        }
        self.nodes.get_mut(&id).expect("exists").paused = false;
        Ok(())
    }

    /// Nodes whose process exited on its own (crashed), with the status. A
    /// crash is a finding: the harness reports it.
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

    /// The controller leader as node `id` sees it (`None`: no answer or no
    /// leader).
    pub async fn controller_leader_at(&self, id: u64) -> Option<u64> {
        let c = Client::connect_with([self.nodes[&id].addr.clone()], probe_config()).await.ok()?;
        let s = c.cluster_status().await.ok()?;
        (s.controller_leader != 0).then_some(s.controller_leader)
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
            let Ok(c) = Client::connect_with([self.nodes[&id].addr.clone()], probe_config()).await else {
                continue;
            };
            if let Ok(t) = c.describe_topic(topic).await
                && let Some(l) = t.partitions.get(partition as usize).and_then(|p| p.leader)
            {
                return Some(l);
            }
        }
        None
    }

    /// Whether every serving node reports the same controller leader, and
    /// that leader is itself serving.
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

    /// Waits until the serving nodes agree on a controller leader.
    pub async fn wait_ready(&self, limit: Duration) -> Result<u64> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.controller_agreed().await {
                return Ok(l);
            }
            if Instant::now() >= deadline {
                bail!("no agreed controller leader within {limit:?}; node logs under {}", self.run_dir.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every partition of `topic` has a serving leader that
    /// answers a fetch; returns the leaders.
    pub async fn wait_leaders(&self, client: &Client, topic: &str, limit: Duration) -> Result<Vec<u64>> {
        let deadline = Instant::now() + limit;
        let serving = self.serving();
        loop {
            let mut last = String::new();
            match client.describe_topic(topic).await {
                Ok(t) => {
                    let mut leaders = Vec::new();
                    for p in &t.partitions {
                        match p.leader {
                            Some(l) if serving.contains(&l) => {
                                let mut r = PartitionReader::new(client.clone(), topic, p.partition, 0).with_options(
                                    FetchOptions { max_bytes: 1, max_records: 1, max_wait_ms: 0, min_bytes: 0 },
                                );
                                match r.poll().await {
                                    Ok(_) => leaders.push(l),
                                    Err(e) => last = format!("partition {}: {e}", p.partition),
                                }
                            }
                            other => last = format!("partition {} leader {other:?}", p.partition),
                        }
                    }
                    if leaders.len() == t.partitions.len() {
                        return Ok(leaders);
                    }
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                bail!("{topic}: not every partition has a leader within {limit:?} ({last})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ChaosCluster {
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
    fn given_plant_names_then_known_ones_parse_with_their_env_and_others_fail() {
        let p = Plant::parse("skip-fsync").unwrap();
        assert_eq!(p.env(), ("REPLOG_UNSAFE_SKIP_FSYNC", "1"));
        assert_eq!(p.name(), "skip-fsync");
        assert!(Plant::parse("skip-everything").is_err());
    }
}
