//! JoinCluster: a node started with `--join` asks the controller leader to
//! add it. It becomes a learner of the controller group (so it applies the
//! cluster metadata like every node) and its address is registered, after
//! which placement and balancing count it. Asking again is harmless: a
//! restarted node does it on every start.

use std::sync::Arc;

use replog_proto::codes::ErrorCode;
use replog_proto::pb::{JoinClusterRequest, JoinClusterResponse};
use replog_raft_store::controller::ControllerCmd;
use tracing::info;

use super::{propose, refuse};
use crate::error::{NodeError, Result};
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: JoinClusterRequest) -> Result<JoinClusterResponse> {
    let (id, addr) = (req.node_id, req.addr);
    if id == 0 {
        return Err(NodeError::InvalidRequest("node id must be greater than 0".into()));
    }
    if addr.is_empty() || !addr.contains(':') {
        return Err(NodeError::InvalidRequest(format!("address {addr:?} is not host:port")));
    }
    let meta = node.meta();
    if let Some(n) = meta.nodes.get(&id)
        && n.addr != addr
        && (id == node.id || node.prober.alive(id))
    {
        return Err(refuse(ErrorCode::NodeIdInUse, format!("node {id} is alive at {}", n.addr)));
    }
    if meta.decommissioning.contains(&id) {
        return Err(refuse(ErrorCode::NodeIdInUse, format!("node {id} is being decommissioned")));
    }
    let known = node.controller.member_addr(id);
    if known.as_deref() != Some(addr.as_str()) {
        if known.is_some() {
            return Err(refuse(ErrorCode::NodeIdInUse, format!("node {id} is a controller member at {known:?}")));
        }
        node.controller.add_learner(id, addr.clone()).await?;
        info!(node = id, %addr, "node joined the controller group as a learner");
    }
    if meta.nodes.get(&id).map(|n| &n.addr) != Some(&addr) {
        propose(&node, ControllerCmd::RegisterNode { id, addr }).await?;
    }
    Ok(JoinClusterResponse { controller_leader: node.id })
}
