//! Schema registry RPCs, one file each. All run on the controller leader
//! (other nodes forward), so a read follows every registration it answered.

pub mod check;
pub mod delete;
pub mod get;
pub mod list;
pub mod register;
pub mod set_compatibility;

use replog_proto::pb::SchemaType;
use replog_raft_store::controller::ControllerResult;
use replog_raft_store::registry::{SchemaFormat, SchemaResult};

use crate::error::{NodeError, Result};

/// Longest subject name.
const MAX_SUBJECT_BYTES: usize = 255;

fn subject_name(s: &str) -> Result<()> {
    if s.is_empty() || s.len() > MAX_SUBJECT_BYTES || s.chars().any(char::is_control) {
        return Err(NodeError::InvalidRequest(format!(
            "a subject name has 1 to {MAX_SUBJECT_BYTES} bytes and no control characters"
        )));
    }
    Ok(())
}

fn format(t: i32) -> Result<SchemaFormat> {
    SchemaType::try_from(t)
        .map(crate::schema::format_of)
        .map_err(|_| NodeError::InvalidSchema(format!("unknown schema type {t}")))
}

fn schema_result(r: ControllerResult) -> Result<SchemaResult> {
    match r {
        ControllerResult::Schema(SchemaResult::UnknownSubject(s)) => {
            Err(NodeError::UnknownSubject(format!("subject {s:?} does not exist")))
        }
        ControllerResult::Schema(SchemaResult::UnknownVersion { subject, version }) => {
            Err(NodeError::UnknownSubject(format!("subject {subject:?} has no version {version}")))
        }
        ControllerResult::Schema(r) => Ok(r),
        ControllerResult::Invalid(m) => Err(NodeError::InvalidRequest(m)),
        other => Err(NodeError::Internal(format!("schema command answered {other:?}"))),
    }
}
