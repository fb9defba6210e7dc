//! TLS from PEM files: the server side of both listeners (rustls behind a
//! handle that rereads its files when they change or on SIGHUP, so that a
//! certificate is rotated without a restart) and the client side a node
//! uses towards its peers.
//!
//! A listener with a CA asks for client certificates and accepts only
//! those that chain to it: on the peer listener always (mutual TLS between
//! nodes), on the client listener as `tls_client_auth` says.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tracing::{info, warn};

use crate::config::ClientAuth;

/// How often the files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Modification time and length of each file, to tell a change.
type Stamp = Vec<Option<(SystemTime, u64)>>;

/// Where a listener's certificate, key and (optionally) client CA are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must (or may, see `client_auth`) show a certificate from it.
    pub ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(path)? {
        roots.add(c).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The subject's common name of a DER certificate: a client's principal.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

impl TlsFiles {
    /// The rustls server configuration these files make (HTTP/2 only).
    pub fn server_config(&self) -> Result<ServerConfig, String> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &self.ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider());
                let v = match self.client_auth {
                    ClientAuth::Required => v,
                    ClientAuth::Optional => v.allow_unauthenticated(),
                };
                builder.with_client_cert_verifier(v.build().map_err(|e| format!("{}: {e}", ca.display()))?)
            }
        };
        let mut c = builder
            .with_single_cert(read_certs(&self.cert)?, read_key(&self.key)?)
            .map_err(|e| format!("{} / {}: {e}", self.cert.display(), self.key.display()))?;
        c.alpn_protocols = vec![b"h2".to_vec()];
        Ok(c)
    }

    /// What tells a changed file: modification time and length of each.
    fn stamp(&self) -> Stamp {
        [Some(&self.cert), Some(&self.key), self.ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
            .collect()
    }

    /// The client side of mutual TLS to a peer: this node's certificate
    /// and key, and the CA the peer's certificate must chain to.
    pub fn peer_client_config(&self) -> Result<tonic::transport::ClientTlsConfig, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let ca = self.ca.as_deref().ok_or("the peer TLS configuration has no CA")?;
        // Parse first, so that a bad file is reported here, not on connect.
        roots(ca)?;
        read_key(&self.key)?;
        read_certs(&self.cert)?;
        Ok(tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?))
            .identity(tonic::transport::Identity::from_pem(read(&self.cert)?, read(&self.key)?)))
    }
}

/// A listener's TLS configuration, swapped whole when its files change.
pub struct Acceptor {
    files: TlsFiles,
    /// Which listener, for logs.
    name: &'static str,
    current: RwLock<(Arc<ServerConfig>, Stamp)>,
}

impl Acceptor {
    pub fn new(files: TlsFiles, name: &'static str) -> Result<Arc<Acceptor>, String> {
        let stamp = files.stamp();
        let config = Arc::new(files.server_config()?);
        Ok(Arc::new(Acceptor { files, name, current: RwLock::new((config, stamp)) }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration new connections get.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.read().expect("tls lock").0.clone()
    }

    /// Rereads the files if they changed since the last load (always with
    /// `force`). Returns whether a new configuration is in use; a file that
    /// does not load leaves the old one in use.
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        let stamp = self.files.stamp();
        if !force && self.current.read().expect("tls lock").1 == stamp {
            return Ok(false);
        }
        let loaded = self.files.server_config();
        let mut cur = self.current.write().expect("tls lock");
        // Remembered even when it fails, so a bad file is reported once.
        cur.1 = stamp;
        cur.0 = Arc::new(loaded?);
        Ok(true)
    }

    /// Reloads on SIGHUP and whenever the files change, until the node
    /// stops; `then` runs after each successful reload.
    pub fn spawn_reloader(self: &Arc<Self>, then: impl Fn(&Acceptor) + Send + Sync + 'static) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                let force = tokio::select! {
                    _ = tokio::time::sleep(RELOAD_CHECK) => false,
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
                };
                let Some(a) = me.upgrade() else { return };
                match a.reload(force) {
                    Ok(true) => {
                        info!(listener = a.name, cert = %a.files.cert.display(), "TLS certificates reloaded");
                        then(&a);
                    }
                    Ok(false) => {}
                    Err(e) => warn!(listener = a.name, error = e, "TLS files do not load; keeping the previous ones"),
                }
            }
        });
    }
}
