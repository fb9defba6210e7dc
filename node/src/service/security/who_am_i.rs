//! WhoAmI: the principal this node takes the caller for.

use replog_proto::pb::WhoAmIResponse;

use crate::node::Node;
use crate::security::auth::Principal;

pub fn handle(node: &Node, principal: &Principal) -> WhoAmIResponse {
    let name = principal.name();
    WhoAmIResponse {
        principal: name.to_string(),
        super_user: *principal == Principal::Peer || node.config.super_users.iter().any(|s| s == name),
    }
}
