//! DeleteSchema: one version, or the subject. Ids stay readable, so records
//! written with a deleted version can still be decoded; new records must
//! name a live version.

use std::sync::Arc;

use replog_proto::pb::{DeleteSchemaRequest, DeleteSchemaResponse};
use replog_raft_store::controller::ControllerCmd;
use tracing::info;

use super::schema_result;
use crate::error::Result;
use crate::node::Node;

pub async fn handle(node: Arc<Node>, req: DeleteSchemaRequest) -> Result<DeleteSchemaResponse> {
    let version = (req.version != 0).then_some(req.version);
    let cmd = ControllerCmd::DeleteSchema { subject: req.subject.clone(), version };
    schema_result(node.controller.propose(cmd).await?)?;
    info!(subject = %req.subject, ?version, "schema deleted");
    Ok(DeleteSchemaResponse {})
}
