//! How chaos runs set up their clusters. The cluster itself is the test
//! kit's [`replog_testkit::Cluster`] (real `replog-node` processes driven by
//! PID, faultfs disks, readiness asked of each node); a chaos run puts
//! every node on its own loopback address 127.0.0.(10+i), so that the
//! packet filters of [`crate::net`] can tell the nodes apart, and takes
//! its knobs from the environment:
//!
//! - `CHAOS_FAULTFS`: data directories on `replog-faultfs` mounts
//!   (`auto`, the default: when a power fault is enabled; `1`: always;
//!   `0`: never);
//! - `CHAOS_PLANT`: a bug planted in every node ([`Plant`]);
//! - `CHAOS_NODE_LOG`: the nodes' `RUST_LOG`;
//! - `CHAOS_SECURE=1`: TLS between the nodes (mutual) and to clients, and
//!   `--authorization` on; the run sets up as the super user `chaos-admin`
//!   (a client certificate) and the workload runs as the SCRAM user
//!   [`WORKLOAD_USER`], allowed exactly what it does ([`Secure`]);
//! - `REPLOG_NODE_BIN`, `REPLOG_FAULTFS_BIN`: the binaries under test
//!   (else `replog-node` under the target directory, the profile of the
//!   running executable first, and `replog-faultfs` next to it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use replog_client::certs::{Ca, LOCAL_NAMES};
use replog_client::client::{Credentials, TlsOptions};
use replog_client::security::Acl;
use replog_client::{Client, ClientConfig};
use replog_testkit::{Cluster, ClusterOptions};

/// The principal the workload runs as in a secure run.
pub const WORKLOAD_USER: &str = "chaos";
/// Its password (a throwaway: the run's CA lives only in its directory).
const WORKLOAD_PASSWORD: &str = "chaos-workload";
/// The super user a secure run sets up as (its client certificate's CN).
const ADMIN: &str = "chaos-admin";

/// The options of a chaos cluster under `run_dir`, from the environment;
/// `power_faults`: whether the schedule cuts power (then the disks are
/// faultfs mounts unless `CHAOS_FAULTFS` says otherwise).
pub fn options_from_env(run_dir: &Path, power_faults: bool) -> Result<(ClusterOptions, Option<Secure>)> {
    let faultfs = match std::env::var("CHAOS_FAULTFS").unwrap_or_default().trim() {
        "" | "auto" => power_faults,
        "1" | "on" | "true" => true,
        "0" | "off" | "false" if power_faults => {
            bail!("CHAOS_FAULTFS=0, but power-fail faults need the faultfs mounts")
        }
        "0" | "off" | "false" => false,
        v => bail!("CHAOS_FAULTFS must be auto, 1 or 0, got {v:?}"),
    };
    let mut opts = chaos_options(run_dir);
    opts.faultfs = faultfs;
    if let Some(p) = Plant::from_env()? {
        let (k, v) = p.env();
        opts.env.push((k.into(), v.into()));
    }
    let secure = Secure::from_env(run_dir)?;
    if let Some(s) = &secure {
        s.apply(&mut opts);
    }
    Ok((opts, secure))
}

/// A secure run's certificates, all issued by a CA made for the run and
/// kept in its directory (`tls/`).
pub struct Secure {
    dir: PathBuf,
    ca: TlsOptions,
    admin: TlsOptions,
}

impl Secure {
    /// `CHAOS_SECURE=1`: makes the CA, the nodes' certificate and the
    /// super user's under `run_dir/tls`.
    pub fn from_env(run_dir: &Path) -> Result<Option<Secure>> {
        match std::env::var("CHAOS_SECURE").unwrap_or_default().trim() {
            "" | "0" | "off" | "false" => return Ok(None),
            "1" | "on" | "true" => {}
            v => bail!("CHAOS_SECURE must be 1 or 0, got {v:?}"),
        }
        let dir = run_dir.join("tls");
        std::fs::create_dir_all(&dir)?;
        let err = |e: String| anyhow::anyhow!("certificates for a secure run: {e}");
        let ca = Ca::new("replog chaos CA").map_err(err)?;
        ca.pem().write(&dir, "ca")?;
        ca.issue("node", &LOCAL_NAMES).map_err(err)?.write(&dir, "node")?;
        let admin = ca.issue(ADMIN, &[]).map_err(err)?;
        let ca_pem = ca.pem().cert.clone().into_bytes();
        Ok(Some(Secure {
            dir,
            ca: TlsOptions { ca_pem: ca_pem.clone(), identity: None },
            admin: TlsOptions { ca_pem, identity: Some((admin.cert.into_bytes(), admin.key.into_bytes())) },
        }))
    }

    /// TLS on both listeners, client certificates optional (the workload
    /// shows a password instead), authorization on with the super user.
    fn apply(&self, opts: &mut ClusterOptions) {
        let f = |name: &str| self.dir.join(name).display().to_string();
        let (crt, key, ca) = (f("node.crt"), f("node.key"), f("ca.crt"));
        for (flag, value) in [
            ("--tls-cert", &crt),
            ("--tls-key", &key),
            ("--tls-ca", &ca),
            ("--peer-tls-cert", &crt),
            ("--peer-tls-key", &key),
            ("--peer-tls-ca", &ca),
        ] {
            opts.extra_args.extend([flag.to_string(), value.clone()]);
        }
        opts.extra_args.extend(
            ["--tls-client-auth", "optional", "--authorization", "true", "--super-users", ADMIN].map(String::from),
        );
        // The test kit's own calls (readiness, leaders) go as the super user.
        opts.client_tls = Some(self.admin.clone());
    }

    /// As the super user: creates [`WORKLOAD_USER`] and allows it topics
    /// and groups (produce, consume, create, delete, …) and nothing on the
    /// cluster; then connects as it, once every node knows it.
    pub async fn workload_client(&self, cluster: &Cluster, config: ClientConfig, wait: Duration) -> Result<Client> {
        let admin = cluster.client(config.clone()).await.context("connect as the super user")?;
        admin.upsert_user(WORKLOAD_USER, WORKLOAD_PASSWORD).await.context("create the workload user")?;
        for resource_type in ["topic", "group"] {
            admin.add_acl(&Acl::new(WORKLOAD_USER, resource_type, "*", "all")).await.context("allow the workload")?;
        }
        let config = ClientConfig {
            tls: Some(self.ca.clone()),
            credentials: Some(Credentials { user: WORKLOAD_USER.into(), password: WORKLOAD_PASSWORD.into() }),
            ..config
        };
        replog_testkit::wait::poll_until("the workload user to authenticate", wait, || async {
            Client::connect_with(cluster.serving_addrs(), config.clone()).await.ok()
        })
        .await
    }
}

/// Per-node addresses, the nodes' log filter from `CHAOS_NODE_LOG`, and no
/// faultfs or planted bug: the cluster of a soak, and the base of
/// [`options_from_env`].
pub fn chaos_options(run_dir: &Path) -> ClusterOptions {
    let mut opts = ClusterOptions { dir: Some(run_dir.to_path_buf()), per_node_ip: true, ..ClusterOptions::default() };
    if let Ok(filter) = std::env::var("CHAOS_NODE_LOG") {
        opts.log_filter = filter;
    }
    opts
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_plant_names_then_known_ones_parse_with_their_env_and_others_fail() {
        let p = Plant::parse("skip-fsync").unwrap();
        assert_eq!(p.env(), ("REPLOG_UNSAFE_SKIP_FSYNC", "1"));
        assert_eq!(p.name(), "skip-fsync");
        assert!(Plant::parse("skip-everything").is_err());
    }

    #[test]
    fn chaos_clusters_put_every_node_on_its_own_address_under_the_run_dir() {
        let opts = chaos_options(Path::new("/tmp/run-1"));
        assert!(opts.per_node_ip);
        assert_eq!(opts.dir.as_deref(), Some(Path::new("/tmp/run-1")));
        assert!(!opts.faultfs && opts.env.is_empty());
    }
}
