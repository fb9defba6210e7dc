//! Cluster status: every node, whether it answers, what it leads, how many
//! partition replicas it holds, whether it is in sync, and its part in
//! membership (controller voter, stopping, being decommissioned).

use replog_proto::pb::{ClusterStatusResponse, NodeStatus};

use crate::node::Node;
use crate::prober::PeerView;

pub async fn handle(node: &Node) -> ClusterStatusResponse {
    // Ask everyone now rather than report the prober's last round.
    node.probe_round().await;
    let members = node.members.all();
    let views = node.peer_views();
    let me = node.node_info();
    let (voters, _) = node.controller.voters_and_learners();
    // A node that does not answer cannot report its replicas; it still holds
    // what the metadata assigns it, and it serves them again on restart.
    let meta = node.meta();
    let assigned = |id: u64| {
        meta.topics.values().flat_map(|t| t.partitions.iter()).filter(|p| p.replicas.contains(&id)).count() as u32
    };
    let nodes = members
        .into_iter()
        .map(|(id, addr)| {
            let base = NodeStatus {
                id,
                decommissioning: meta.decommissioning.contains(&id),
                controller_voter: voters.contains(&id),
                rack: meta.racks.get(&id).cloned().unwrap_or_default(),
                ..NodeStatus::default()
            };
            if id == node.id {
                return NodeStatus {
                    addr,
                    alive: true,
                    leader_count: me.leader_count,
                    replica_count: me.replica_count,
                    stopping: me.stopping,
                    under_replicated: me.under_replicated,
                    in_sync: me.in_sync,
                    ..base
                };
            }
            let v = views.get(&id);
            let answers = v.is_some_and(|v| v.last_ok.is_some_and(|t| t.elapsed() < crate::prober::ALIVE_WITHIN));
            let alive = v.is_some_and(PeerView::alive);
            // A node found gone (connection refused) is reported from the
            // metadata, not from its last answer, which may predate its
            // replicas; a stopping one still answers for itself.
            let gone = v.is_some_and(|v| v.refused);
            let info = v.and_then(|v| v.info.as_ref()).filter(|_| answers && !gone);
            NodeStatus {
                addr,
                alive,
                leader_count: info.map_or(0, |i| i.leader_count),
                replica_count: info.map_or_else(|| assigned(id), |i| i.replica_count),
                stopping: info.is_some_and(|i| i.stopping),
                under_replicated: info.map_or(0, |i| i.under_replicated),
                in_sync: info.is_some_and(|i| i.in_sync),
                ..base
            }
        })
        .collect();
    ClusterStatusResponse { nodes, controller_leader: node.controller.leader().unwrap_or(0) }
}
