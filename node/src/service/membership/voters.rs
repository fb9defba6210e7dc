//! ControllerVoters: grows, shrinks or reshapes the controller group's
//! voters in one joint change at the controller leader. A voter added must
//! be a live node of the cluster that already follows the metadata (every
//! joined node is a learner of the controller group); a voter removed stays
//! a learner. Refused when the current voters or the new ones would have no
//! live majority, so the change can always commit and leaves a controller
//! that can.

use std::collections::BTreeSet;
use std::sync::Arc;

use replog_proto::codes::ErrorCode;
use replog_proto::pb::{ControllerVotersRequest, ControllerVotersResponse};
use replog_raft_store::NodeId;
use tracing::info;

use super::refuse;
use crate::error::{NodeError, Result};
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: ControllerVotersRequest) -> Result<ControllerVotersResponse> {
    let (voters, learners) = node.controller.voters_and_learners();
    if req.add.is_empty() && req.remove.is_empty() {
        return Ok(answer(voters, learners));
    }
    if let Some(n) = req.add.iter().find(|n| req.remove.contains(n)) {
        return Err(NodeError::InvalidRequest(format!("node {n} is both added and removed")));
    }
    let meta = node.meta();
    for n in req.add.iter().chain(&req.remove) {
        if !meta.nodes.contains_key(n) {
            let known: Vec<_> = meta.nodes.keys().collect();
            return Err(refuse(ErrorCode::UnknownNode, format!("node {n} is not in the cluster (nodes: {known:?})")));
        }
    }
    if let Some(n) = req.add.iter().find(|n| meta.decommissioning.contains(n)) {
        return Err(refuse(ErrorCode::ControllerQuorum, format!("node {n} is being decommissioned")));
    }
    if let Some(n) = req.add.iter().find(|n| !voters.contains(n) && !learners.contains(n)) {
        return Err(refuse(
            ErrorCode::ControllerQuorum,
            format!("node {n} does not follow the controller group yet (it joins as a learner first)"),
        ));
    }
    let mut live = node.live_nodes();
    if req.add.iter().any(|n| !live.contains(n)) {
        // Not heard from lately, or the prober has not asked yet.
        node.probe_round().await;
        live = node.live_nodes();
    }
    if let Some(n) = req.add.iter().find(|n| !live.contains(n)) {
        return Err(refuse(ErrorCode::ControllerQuorum, format!("node {n} is not alive: it could not vote")));
    }
    let new: BTreeSet<NodeId> = voters.iter().chain(&req.add).copied().filter(|v| !req.remove.contains(v)).collect();
    let live_in = |s: &BTreeSet<NodeId>| s.iter().filter(|n| live.contains(n)).count();
    if new.is_empty() || live_in(&new) < new.len() / 2 + 1 || live_in(&voters) < voters.len() / 2 + 1 {
        return Err(refuse(
            ErrorCode::ControllerQuorum,
            format!("voters {voters:?} -> {new:?}: each set needs a live majority (live: {live:?})"),
        ));
    }
    if new != voters {
        node.controller.replace_voters(new.clone()).await?;
        info!(from = ?voters, to = ?new, "controller voters changed");
    }
    let (voters, learners) = node.controller.voters_and_learners();
    Ok(answer(voters, learners))
}

fn answer(voters: BTreeSet<NodeId>, learners: BTreeSet<NodeId>) -> ControllerVotersResponse {
    ControllerVotersResponse { voters: voters.into_iter().collect(), learners: learners.into_iter().collect() }
}
