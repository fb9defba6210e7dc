//! SetSchemaCompatibility: a subject's rule for its next versions.

use std::sync::Arc;

use replog_proto::pb::{SetSchemaCompatibilityRequest, SetSchemaCompatibilityResponse};
use replog_raft_store::controller::ControllerCmd;

use super::{schema_result, subject_name};
use crate::error::Result;
use crate::node::Node;
use crate::schema::{compatibility, parse_compatibility};

pub fn prepare(req: &SetSchemaCompatibilityRequest) -> Result<()> {
    subject_name(&req.subject)?;
    if !req.compatibility.is_empty() {
        parse_compatibility(&req.compatibility)?;
    }
    Ok(())
}

pub async fn handle(node: Arc<Node>, req: SetSchemaCompatibilityRequest) -> Result<SetSchemaCompatibilityResponse> {
    prepare(&req)?;
    let c = if req.compatibility.is_empty() { None } else { Some(parse_compatibility(&req.compatibility)?) };
    let cmd = ControllerCmd::SetSchemaCompatibility { subject: req.subject.clone(), compatibility: c };
    schema_result(node.controller.propose(cmd).await?)?;
    Ok(SetSchemaCompatibilityResponse { compatibility: compatibility(c.unwrap_or_default()).to_string() })
}
