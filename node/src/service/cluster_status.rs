//! Cluster status: every node, whether it answers, what it leads.

use replog_proto::pb::{ClusterStatusResponse, NodeStatus};

use crate::node::Node;
use crate::prober::PeerView;

pub async fn handle(node: &Node) -> ClusterStatusResponse {
    // Ask everyone now rather than report the prober's last round.
    node.probe_round().await;
    let members = node.members.all();
    let views = node.peer_views();
    let me = node.node_info();
    let nodes = members
        .into_iter()
        .map(|(id, addr)| {
            if id == node.id {
                return NodeStatus {
                    id,
                    addr,
                    alive: true,
                    leader_count: me.leader_count,
                    replica_count: me.replica_count,
                };
            }
            let v = views.get(&id);
            let alive = v.is_some_and(PeerView::alive);
            let info = v.and_then(|v| v.info.as_ref()).filter(|_| alive);
            NodeStatus {
                id,
                addr,
                alive,
                leader_count: info.map_or(0, |i| i.leader_count),
                replica_count: info.map_or(0, |i| i.replica_count),
            }
        })
        .collect();
    ClusterStatusResponse { nodes, controller_leader: node.controller.leader().unwrap_or(0) }
}
