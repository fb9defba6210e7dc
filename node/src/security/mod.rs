//! Security (docs/security.md): who may connect and what they may do.
//!
//! - [`tls`]: certificates and keys from PEM files, the reloadable TLS
//!   acceptor both listeners use, and the peers' client-side TLS.
//! - [`conn`]: the listeners' accept loops: TLS handshakes off the accept
//!   path, and what each connection carries into its requests
//!   ([`conn::ConnInfo`]: remote address, certificate principal).

pub mod auth;
pub mod conn;
pub mod quota;
pub mod tls;

use crate::config::{ClientAuth, NodeConfig};
use tls::TlsFiles;

/// The peer listener's TLS files, if peers speak TLS: mutual, always.
pub fn peer_tls_files(c: &NodeConfig) -> Option<TlsFiles> {
    Some(TlsFiles {
        cert: c.peer_tls_cert.clone()?,
        key: c.peer_tls_key.clone()?,
        ca: Some(c.peer_tls_ca.clone()?),
        client_auth: ClientAuth::Required,
    })
}

/// The client listener's TLS files, if clients speak TLS.
pub fn client_tls_files(c: &NodeConfig) -> Option<TlsFiles> {
    Some(TlsFiles {
        cert: c.tls_cert.clone()?,
        key: c.tls_key.clone()?,
        ca: c.tls_ca.clone(),
        client_auth: c.tls_client_auth,
    })
}
