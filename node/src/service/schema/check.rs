//! CheckSchema: would this schema be taken as the subject's next version?

use std::sync::Arc;

use replog_proto::pb::{CheckSchemaRequest, CheckSchemaResponse};

use super::{format, subject_name};
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::schema::parse;

pub async fn handle(node: Arc<Node>, req: CheckSchemaRequest) -> Result<CheckSchemaResponse> {
    subject_name(&req.subject)?;
    let f = format(req.schema_type)?;
    let new = parse(f, &req.schema)?;
    let meta = node.meta();
    let compatibility = crate::schema::compatibility(meta.schemas.check_point(&req.subject).1).to_string();
    match super::register::check_against(&node, &meta, &req.subject, f, &new) {
        Ok(()) => Ok(CheckSchemaResponse { compatible: true, reason: String::new(), compatibility }),
        Err(NodeError::IncompatibleSchema { reason, .. }) => {
            Ok(CheckSchemaResponse { compatible: false, reason, compatibility })
        }
        Err(e) => Err(e),
    }
}
