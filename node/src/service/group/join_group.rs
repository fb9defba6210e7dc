//! JoinGroup: a member joins (or rejoins) and the coordinator assigns it
//! partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use replog_proto::pb::{JoinGroupRequest, JoinGroupResponse};
use replog_raft_store::groups::{GroupCmd, GroupResult};
use tracing::instrument;

use super::{coordinator, heartbeat_interval_ms, strategy_from, to_pb};
use crate::error::{NodeError, Result};
use crate::node::Node;

#[instrument(skip_all, fields(group = %req.group, member = %req.member_id))]
pub async fn handle(node: Arc<Node>, req: JoinGroupRequest) -> Result<JoinGroupResponse> {
    let part = coordinator(&node, &req.group)?;
    let strategy = strategy_from(req.strategy)?;
    let cfg = &node.config;
    let session = match req.session_timeout_ms {
        0 => cfg.group_session_timeout_ms,
        t if (cfg.group_min_session_timeout_ms..=cfg.group_max_session_timeout_ms).contains(&t) => t,
        t => {
            return Err(NodeError::InvalidRequest(format!(
                "session timeout {t} ms is outside {}..={} ms",
                cfg.group_min_session_timeout_ms, cfg.group_max_session_timeout_ms
            )));
        }
    };
    if req.topics.is_empty() {
        return Err(NodeError::InvalidRequest("a member must subscribe to at least one topic".into()));
    }
    let meta = node.meta();
    let mut partitions = BTreeMap::new();
    for t in &req.topics {
        let tm = meta.topics.get(t).ok_or_else(|| node.unknown_topic(t))?;
        if t.starts_with("__") {
            return Err(NodeError::InvalidRequest(format!("{t} is an internal topic")));
        }
        partitions.insert(t.clone(), tm.partitions.len() as u32);
    }
    let cmd = GroupCmd::Join {
        group: req.group.clone(),
        member_id: (!req.member_id.is_empty()).then(|| req.member_id.clone()),
        client_id: req.client_id,
        topics: req.topics.into_iter().collect::<BTreeSet<_>>(),
        partitions,
        strategy,
        session_timeout_ms: session,
    };
    let GroupResult::Joined { member_id, generation, session_timeout_ms, .. } = part.propose_group(cmd).await? else {
        return Err(NodeError::Internal("join answered without a member".into()));
    };
    let groups = part.groups_here();
    node.coordinator.ensure(part.group(), &groups);
    // A joining member consumes nothing yet; it takes what it is granted.
    node.coordinator.heard(part.group(), &req.group, &member_id, Some(Default::default()));
    let st = groups.get(&req.group).cloned().unwrap_or_default();
    let granted = node.coordinator.grant(part.group(), &req.group, &member_id, &st);
    Ok(JoinGroupResponse {
        member_id,
        generation,
        assignment: to_pb(&granted),
        session_timeout_ms,
        heartbeat_interval_ms: heartbeat_interval_ms(session_timeout_ms),
    })
}
