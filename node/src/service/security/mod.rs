//! Users and ACLs (docs/security.md), one file per kind: proposed to the
//! controller group by its leader; `who_am_i` answers here.

pub mod acls;
pub mod users;
pub mod who_am_i;

use replog_raft_store::controller::{ControllerCmd, ControllerResult};
use replog_raft_store::security::{SecurityCmd, SecurityResult};

use crate::error::{NodeError, Result};
use crate::node::Node;

/// Proposes `cmd` (on the controller leader) and maps what applying it did.
async fn propose(node: &Node, cmd: SecurityCmd) -> Result<()> {
    match node.controller.propose(ControllerCmd::Security(cmd)).await? {
        ControllerResult::Security(SecurityResult::Done) => Ok(()),
        ControllerResult::Security(SecurityResult::UnknownUser(u)) => Err(NodeError::UnknownUser(u)),
        other => Err(NodeError::Internal(format!("security command answered {other:?}"))),
    }
}
