//! ListSchemas: subjects, their versions and compatibility.

use std::sync::Arc;

use replog_proto::pb::{ListSchemasRequest, ListSchemasResponse, SchemaVersion, SubjectInfo};

use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::schema::compatibility;

pub async fn handle(node: Arc<Node>, req: ListSchemasRequest) -> Result<ListSchemasResponse> {
    let meta = node.meta();
    let subjects = &meta.schemas.subjects;
    if !req.subject.is_empty() && !subjects.contains_key(&req.subject) {
        return Err(NodeError::UnknownSubject(format!("subject {:?} does not exist", req.subject)));
    }
    let subjects = subjects
        .iter()
        .filter(|(name, _)| req.subject.is_empty() || **name == req.subject)
        .map(|(name, s)| SubjectInfo {
            subject: name.clone(),
            compatibility: compatibility(s.compatibility()).to_string(),
            versions: s.versions.iter().map(|v| SchemaVersion { version: v.version, id: v.id }).collect(),
        })
        .collect();
    Ok(ListSchemasResponse { subjects })
}
