//! ClusterConfig: sets or clears cluster-wide settings ([`crate::settings`])
//! at the controller leader, then lists them all. A bad key or value
//! refuses the whole request with INVALID_CONFIG and changes nothing.

use std::sync::Arc;

use replog_proto::pb::{ClusterConfigRequest, ClusterConfigResponse, ClusterSetting};
use replog_raft_store::controller::ControllerCmd;
use tracing::info;

use super::propose;
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::settings;

pub async fn handle(node: Arc<Node>, req: ClusterConfigRequest) -> Result<ClusterConfigResponse> {
    let mut entries = Vec::new();
    for s in &req.set {
        let value = if s.value.trim().is_empty() {
            settings::known(&s.key).map(|_| None)
        } else {
            settings::check(&s.key, &s.value).map(Some)
        };
        let value = value.map_err(|reason| NodeError::InvalidConfig { key: s.key.clone(), reason })?;
        entries.push((s.key.clone(), value));
    }
    if !entries.is_empty() {
        info!(?entries, "cluster settings changed");
        propose(&node, ControllerCmd::SetClusterConfig { entries }).await?;
    }
    let meta = node.meta();
    let settings = settings::ALL
        .iter()
        .map(|(key, doc)| ClusterSetting {
            key: key.to_string(),
            value: meta.settings.get(*key).cloned().unwrap_or_default(),
            doc: doc.to_string(),
        })
        .collect();
    Ok(ClusterConfigResponse { settings })
}
