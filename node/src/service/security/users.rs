//! UpsertUser, DeleteUser, ListUsers: SCRAM-SHA-256 credentials in the
//! controller group.

use std::sync::Arc;

use replog_proto::pb::{
    DeleteUserRequest, DeleteUserResponse, ListUsersResponse, UpsertUserRequest, UpsertUserResponse,
};
use replog_proto::scram::Credential;
use replog_raft_store::security::{ScramCredential, SecurityCmd};
use tracing::{info, instrument};

use crate::error::{NodeError, Result};
use crate::node::Node;

/// A user name: what a principal is called in ACLs.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || !name.chars().all(|c| c.is_ascii_graphic()) || name.contains('*') {
        return Err(NodeError::InvalidRequest(
            "a user name is 1 to 255 printable ASCII characters, without `*`".into(),
        ));
    }
    if name == crate::security::auth::ANONYMOUS {
        return Err(NodeError::InvalidRequest(format!("{name} names clients that show nothing")));
    }
    Ok(())
}

/// Checks the request before it goes anywhere.
pub fn prepare(req: &UpsertUserRequest) -> Result<()> {
    validate_name(&req.name)?;
    let c = req.credential.as_ref().ok_or_else(|| NodeError::InvalidRequest("no credential".into()))?;
    let c = Credential {
        salt: c.salt.to_vec(),
        iterations: c.iterations,
        stored_key: c.stored_key.to_vec(),
        server_key: c.server_key.to_vec(),
    };
    c.validate().map_err(|e| NodeError::InvalidRequest(format!("credential: {e}")))
}

/// Runs on the controller leader.
#[instrument(skip_all, fields(user = %req.name))]
pub async fn upsert(node: Arc<Node>, req: UpsertUserRequest) -> Result<UpsertUserResponse> {
    prepare(&req)?;
    let c = req.credential.unwrap_or_default();
    let credential = ScramCredential {
        salt: c.salt.to_vec(),
        iterations: c.iterations,
        stored_key: c.stored_key.to_vec(),
        server_key: c.server_key.to_vec(),
    };
    super::propose(&node, SecurityCmd::UpsertUser { name: req.name, credential }).await?;
    info!("user created or its password changed");
    Ok(UpsertUserResponse {})
}

/// Runs on the controller leader.
#[instrument(skip_all, fields(user = %req.name))]
pub async fn delete(node: Arc<Node>, req: DeleteUserRequest) -> Result<DeleteUserResponse> {
    super::propose(&node, SecurityCmd::DeleteUser { name: req.name }).await?;
    info!("user deleted");
    Ok(DeleteUserResponse {})
}

/// Answered from this node's copy of the metadata.
pub fn list(node: &Node) -> ListUsersResponse {
    ListUsersResponse { names: node.meta().security.users.keys().cloned().collect() }
}
