//! AddAcl, RemoveAcl, ListAcls: permissions in the controller group.

use std::sync::Arc;

use replog_proto::pb;
use replog_raft_store::security::{Acl, Operation, ResourceType, SecurityCmd};
use tracing::{info, instrument};

use crate::error::{NodeError, Result};
use crate::node::Node;

/// The ACL a request names, checked.
pub fn parse(acl: Option<&pb::Acl>) -> Result<Acl> {
    let a = acl.ok_or_else(|| NodeError::InvalidAcl("no ACL in the request".into()))?;
    let resource_type = ResourceType::parse(&a.resource_type).ok_or_else(|| {
        NodeError::InvalidAcl(format!("resource type {:?} is not topic, group or cluster", a.resource_type))
    })?;
    let operation = Operation::parse(&a.operation).ok_or_else(|| {
        let all: Vec<&str> = Operation::ALL.iter().map(|o| o.name()).collect();
        NodeError::InvalidAcl(format!("operation {:?} is not one of {}", a.operation, all.join(", ")))
    })?;
    let acl = Acl { principal: a.principal.clone(), resource_type, resource: a.resource.clone(), operation };
    acl.validate().map_err(NodeError::InvalidAcl)?;
    Ok(acl)
}

pub fn to_pb(a: &Acl) -> pb::Acl {
    pb::Acl {
        principal: a.principal.clone(),
        resource_type: a.resource_type.name().into(),
        resource: a.resource.clone(),
        operation: a.operation.name().into(),
    }
}

/// Runs on the controller leader.
#[instrument(skip_all)]
pub async fn add(node: Arc<Node>, req: pb::AclRequest) -> Result<pb::AclResponse> {
    let acl = parse(req.acl.as_ref())?;
    info!(?acl, "ACL added");
    super::propose(&node, SecurityCmd::AddAcl(acl)).await?;
    Ok(pb::AclResponse {})
}

/// Runs on the controller leader.
#[instrument(skip_all)]
pub async fn remove(node: Arc<Node>, req: pb::AclRequest) -> Result<pb::AclResponse> {
    let acl = parse(req.acl.as_ref())?;
    info!(?acl, "ACL removed");
    super::propose(&node, SecurityCmd::RemoveAcl(acl)).await?;
    Ok(pb::AclResponse {})
}

/// Answered from this node's copy of the metadata.
pub fn list(node: &Node) -> pb::ListAclsResponse {
    pb::ListAclsResponse { acls: node.meta().security.acls.iter().map(to_pb).collect() }
}
