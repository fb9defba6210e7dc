//! Throwaway certificates for local clusters and tests: a CA, and
//! certificates it issues to nodes (server and client use, with IP and DNS
//! names) and to clients (the subject's CN is the client's principal).
//! `replog tls init` writes a set of them; for production, use your own PKI.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// A certificate and its key, both PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl Pem {
    /// Writes `<dir>/<name>.crt` and `<dir>/<name>.key` (the key readable by
    /// its owner only).
    pub fn write(&self, dir: &Path, name: &str) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(format!("{name}.crt")), &self.cert)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join(format!("{name}.key")))?;
        std::io::Write::write_all(&mut f, self.key.as_bytes())
    }
}

/// A certificate authority that lives as long as this value.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: Pem,
}

fn err(e: rcgen::Error) -> String {
    e.to_string()
}

impl Ca {
    /// A new self-signed CA named `cn`.
    pub fn new(cn: &str) -> Result<Ca, String> {
        let mut params = CertificateParams::new(Vec::new()).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.self_signed(&key).map_err(err)?;
        let pem = Pem { cert: cert.pem(), key: key.serialize_pem() };
        Ok(Ca { issuer: Issuer::new(params, key), pem })
    }

    /// The CA's own certificate and key.
    pub fn pem(&self) -> &Pem {
        &self.pem
    }

    /// A certificate for subject CN `cn`, valid for `names` (IP addresses
    /// or DNS names) as a server and as a client.
    pub fn issue(&self, cn: &str, names: &[&str]) -> Result<Pem, String> {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
    }
}

/// The names a local node certificate covers: loopback (including the
/// per-node addresses 127.0.0.11–19 of the chaos harness) and localhost.
pub const LOCAL_NAMES: [&str; 12] = [
    "127.0.0.1",
    "localhost",
    "127.0.0.11",
    "127.0.0.12",
    "127.0.0.13",
    "127.0.0.14",
    "127.0.0.15",
    "127.0.0.16",
    "127.0.0.17",
    "127.0.0.18",
    "127.0.0.19",
    "::1",
];

/// Writes a local set under `dir`: `ca.crt`/`ca.key`, `node.crt`/`node.key`
/// (CN `node`, [`LOCAL_NAMES`]) and `client.crt`/`client.key` (CN
/// `client_cn`).
pub fn init_local(dir: &Path, client_cn: &str) -> Result<(), String> {
    let ca = Ca::new("replog local CA")?;
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    ca.pem().write(dir, "ca").map_err(io)?;
    ca.issue("node", &LOCAL_NAMES)?.write(dir, "node").map_err(io)?;
    ca.issue(client_cn, &[])?.write(dir, "client").map_err(io)?;
    Ok(())
}
