//! The joining side of `--join`: asks the cluster (through the given node,
//! which forwards to the controller leader) to add this node, until it is
//! added. The controller then replicates its metadata here, and the
//! reconciler opens what placement gives this node.

use std::sync::Arc;
use std::time::Duration;

use replog_proto::pb;
use tracing::{info, warn};

use crate::node::Node;

/// Pause between join attempts.
const RETRY: Duration = Duration::from_secs(1);

pub async fn run(node: Arc<Node>, via: String) {
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match ask(&node, &via).await {
            Ok(leader) => {
                info!(via = %via, controller_leader = leader, "joined the cluster");
                return;
            }
            // Quiet at first: the node asked may itself be starting.
            Err(e) if attempts < 5 => tracing::debug!("joining through {via}: {e}"),
            Err(e) => warn!("joining through {via}: {e}; retrying"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn ask(node: &Node, via: &str) -> Result<u64, String> {
    let mut client = node.pool.replog_client(via).map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(pb::JoinClusterRequest { node_id: node.id, addr: node.addr.clone() });
    req.set_timeout(Duration::from_secs(20));
    let r = client.join_cluster(req).await.map_err(|s| format!("{}: {}", s.code(), s.message()))?;
    Ok(r.into_inner().controller_leader)
}
