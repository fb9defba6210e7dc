//! MoveStatus: the moves under way and the nodes being decommissioned, from
//! this node's metadata, with each new replica's progress.

use replog_proto::pb::{MoveStatusRequest, MoveStatusResponse};

use super::describe_move;
use crate::node::Node;

pub fn handle(node: &Node, _req: MoveStatusRequest) -> MoveStatusResponse {
    let meta = node.meta();
    let moves = meta
        .moves
        .iter()
        .map(|(g, to)| describe_move(node, &meta, *g, meta.replicas_of(*g).unwrap_or_default(), to))
        .collect();
    MoveStatusResponse { moves, decommissioning: meta.decommissioning.iter().copied().collect() }
}
