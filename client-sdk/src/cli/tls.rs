//! `replog tls init DIR`: a throwaway CA and certificates for a local
//! cluster (`ops/cluster.sh up --tls`).

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum TlsCmd {
    /// Write ca.crt/ca.key, node.crt/node.key (CN node, valid for
    /// 127.0.0.1, 127.0.0.11-19, ::1 and localhost) and client.crt/client.key
    /// into DIR.
    Init {
        dir: PathBuf,
        /// The client certificate's CN: its principal.
        #[arg(long, default_value = "admin")]
        client_cn: String,
    },
}

pub fn run(cmd: TlsCmd) -> anyhow::Result<()> {
    match cmd {
        TlsCmd::Init { dir, client_cn } => {
            crate::certs::init_local(&dir, &client_cn).map_err(anyhow::Error::msg)?;
            println!("wrote ca, node and client certificates to {}", dir.display());
            Ok(())
        }
    }
}
