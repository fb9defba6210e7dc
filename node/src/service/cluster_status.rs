//! Cluster status: every node, whether it answers, what it leads and how
//! many partition replicas it holds.

use replog_proto::pb::{ClusterStatusResponse, NodeStatus};

use crate::node::Node;
use crate::prober::PeerView;

pub async fn handle(node: &Node) -> ClusterStatusResponse {
    // Ask everyone now rather than report the prober's last round.
    node.probe_round().await;
    let members = node.members.all();
    let views = node.peer_views();
    let me = node.node_info();
    // A node that does not answer cannot report its replicas; it still holds
    // what the metadata assigns it, and it serves them again on restart.
    let meta = node.meta();
    let assigned = |id: u64| {
        meta.topics.values().flat_map(|t| t.partitions.iter()).filter(|p| p.replicas.contains(&id)).count() as u32
    };
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
                replica_count: info.map_or_else(|| assigned(id), |i| i.replica_count),
            }
        })
        .collect();
    ClusterStatusResponse { nodes, controller_leader: node.controller.leader().unwrap_or(0) }
}
