//! FindCoordinator: which node coordinates a group. The first call in a
//! cluster creates the internal `__consumer_offsets` topic.

use std::sync::Arc;
use std::time::Duration;

use replog_proto::pb::{FindCoordinatorRequest, FindCoordinatorResponse};
use tracing::instrument;

use super::{coordinator_partition, validate_group};
use crate::coordinator::GROUPS_TOPIC;
use crate::error::{NodeError, Result};
use crate::node::Node;

/// How long a first FindCoordinator waits for the internal topic to appear.
const CREATE_WAIT: Duration = Duration::from_secs(20);

/// Answers where `group` is coordinated; `create` makes the internal topic
/// when it does not exist yet (through the controller leader).
#[instrument(skip_all, fields(group = %req.group))]
pub async fn handle<F, Fut>(node: Arc<Node>, req: FindCoordinatorRequest, create: F) -> Result<FindCoordinatorResponse>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    validate_group(&req.group)?;
    if coordinator_partition(&node, &req.group).is_none() {
        match create().await {
            Ok(()) | Err(NodeError::TopicAlreadyExists(_)) => {}
            Err(NodeError::Remote { code: replog_proto::codes::ErrorCode::TopicAlreadyExists, .. }) => {}
            Err(e) => return Err(e),
        }
        // The metadata reaches this node through the controller log.
        let mut watch = node.controller.watch();
        let _ = tokio::time::timeout(CREATE_WAIT, watch.wait_for(|m| m.topics.contains_key(GROUPS_TOPIC))).await;
    }
    let p = coordinator_partition(&node, &req.group)
        .ok_or_else(|| NodeError::Unavailable("the consumer groups topic is being created; retry".into()))?;
    let (group, replicas) = node.locate(GROUPS_TOPIC, p)?;
    let leader = node.leader_of(group, &replicas);
    let addr = leader.and_then(|l| node.members.addr(l)).unwrap_or_default();
    Ok(FindCoordinatorResponse { partition: p, node_id: leader.unwrap_or(0), addr })
}
