//! RegisterSchema: parse, check compatibility against the versions as they
//! stand, propose with what was checked; a stale check is made again.

use std::sync::Arc;

use replog_proto::pb::{RegisterSchemaRequest, RegisterSchemaResponse};
use replog_raft_store::controller::ControllerCmd;
use replog_raft_store::registry::{RegisterSchema, SchemaFormat, SchemaResult};
use replog_schema::Schema;
use tracing::info;

use super::{format, schema_result, subject_name};
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::schema::{compatibility, parse};

/// Attempts when concurrent registrations keep changing the subject.
const ATTEMPTS: usize = 5;

/// Refuses bad names and schemas where the request arrives.
pub fn prepare(req: &RegisterSchemaRequest) -> Result<()> {
    subject_name(&req.subject)?;
    parse(format(req.schema_type)?, &req.schema).map(|_| ())
}

/// Checks `new` against the subject's versions in `meta` under its
/// compatibility; the error names the version it breaks with.
pub fn check_against(
    node: &Node,
    meta: &replog_raft_store::controller::ClusterMeta,
    subject: &str,
    f: SchemaFormat,
    new: &Schema,
) -> Result<()> {
    let (versions, compat) = meta.schemas.check_point(subject);
    let mut old = Vec::with_capacity(versions.len());
    for v in &versions {
        let s = node.schemas.get(meta, v.id)?.ok_or(NodeError::UnknownSchemaId { id: v.id, index: None })?;
        old.push((v.version, s));
    }
    if let Some((v, s)) = old.last()
        && meta.schemas.schemas.get(&versions[versions.len() - 1].id).is_some_and(|x| x.format != f)
    {
        return Err(NodeError::IncompatibleSchema {
            subject: subject.to_string(),
            reason: format!("version {v} is {}; a subject keeps one schema type", s.format()),
        });
    }
    let refs: Vec<(u32, &Schema)> = old.iter().map(|(v, s)| (*v, s.as_ref())).collect();
    replog_schema::compat::check(compatibility(compat), new, &refs)
        .map_err(|reason| NodeError::IncompatibleSchema { subject: subject.to_string(), reason })
}

pub async fn handle(node: Arc<Node>, req: RegisterSchemaRequest) -> Result<RegisterSchemaResponse> {
    prepare(&req)?;
    let f = format(req.schema_type)?;
    let new = parse(f, &req.schema)?;
    for _ in 0..ATTEMPTS {
        let meta = node.meta();
        if let Some(v) = meta.schemas.find(&req.subject, f, &req.schema) {
            return Ok(RegisterSchemaResponse { id: v.id, version: v.version, created: false });
        }
        check_against(&node, &meta, &req.subject, f, &new)?;
        let cmd = RegisterSchema {
            subject: req.subject.clone(),
            format: f,
            text: req.schema.clone(),
            checked: meta.schemas.check_point(&req.subject),
        };
        match schema_result(node.controller.propose(ControllerCmd::RegisterSchema(cmd)).await?)? {
            SchemaResult::Registered { id, version, new } => {
                info!(subject = %req.subject, id, version, new, "schema registered");
                return Ok(RegisterSchemaResponse { id, version, created: new });
            }
            SchemaResult::Stale => continue,
            other => return Err(NodeError::Internal(format!("register answered {other:?}"))),
        }
    }
    Err(NodeError::Unavailable(format!("subject {:?} kept changing during registration; retry", req.subject)))
}
