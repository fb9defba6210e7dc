//! AlterTopicConfig: settings checked where the request arrives, applied
//! to the topic as it stands on the controller leader.

use std::sync::Arc;

use replog_proto::pb::{AlterTopicConfigRequest, AlterTopicConfigResponse};
use replog_raft_store::controller::{ControllerCmd, ControllerResult, TopicConfig};
use tracing::info;

use super::metadata::topic_metadata;
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::topic_config;

/// Refuses unknown keys and values out of range before any forwarding.
pub fn prepare(req: &AlterTopicConfigRequest) -> Result<()> {
    topic_config::apply(&TopicConfig::default(), &req.set, &req.delete).map(|_| ())
}

pub async fn handle(node: Arc<Node>, req: AlterTopicConfigRequest) -> Result<AlterTopicConfigResponse> {
    node.controller.ensure_registered().await?;
    let current =
        node.meta().topics.get(&req.name).cloned().ok_or_else(|| NodeError::UnknownTopic(req.name.clone()))?;
    if req.name.starts_with("__") {
        return Err(NodeError::InvalidConfig {
            key: req.set.keys().chain(req.delete.iter()).next().cloned().unwrap_or_default(),
            reason: format!("{} is internal; its settings are replog's", req.name),
        });
    }
    let config = topic_config::apply(&current.config, &req.set, &req.delete)?;
    topic_config::check_subject(&node.meta(), &config)?;
    match node.controller.propose(ControllerCmd::AlterTopicConfig { name: req.name.clone(), config }).await? {
        ControllerResult::Done => {}
        ControllerResult::UnknownTopic(n) => return Err(NodeError::UnknownTopic(n)),
        other => return Err(NodeError::Internal(format!("alter config answered {other:?}"))),
    }
    let topic = node.meta().topics.get(&req.name).cloned().ok_or_else(|| NodeError::UnknownTopic(req.name.clone()))?;
    info!(topic = %req.name, configs = ?topic_config::render(&topic.config), "topic settings changed");
    Ok(AlterTopicConfigResponse { topic: Some(topic_metadata(&node, &topic)) })
}
