//! GetSchema: a schema by id, or by subject and version (0: the latest).

use std::sync::Arc;

use replog_proto::pb::{GetSchemaRequest, GetSchemaResponse, SchemaInfo};

use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::schema::schema_type;

pub async fn handle(node: Arc<Node>, req: GetSchemaRequest) -> Result<GetSchemaResponse> {
    let meta = node.meta();
    let reg = &meta.schemas;
    let (id, subject, version) = if req.id != 0 {
        (req.id, String::new(), 0)
    } else {
        let s = reg
            .subjects
            .get(&req.subject)
            .ok_or_else(|| NodeError::UnknownSubject(format!("subject {:?} does not exist", req.subject)))?;
        let v = match req.version {
            0 => s.latest(),
            n => s.version(n),
        }
        .ok_or_else(|| match req.version {
            0 => NodeError::UnknownSubject(format!("subject {:?} has no version", req.subject)),
            n => NodeError::UnknownSubject(format!("subject {:?} has no version {n}", req.subject)),
        })?;
        (v.id, req.subject, v.version)
    };
    let s = reg.schemas.get(&id).ok_or(NodeError::UnknownSchemaId { id, index: None })?;
    Ok(GetSchemaResponse {
        schema: Some(SchemaInfo {
            id,
            schema_type: schema_type(s.format) as i32,
            schema: s.text.clone(),
            subject,
            version,
        }),
    })
}
