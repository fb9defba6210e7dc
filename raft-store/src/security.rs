//! Users and ACLs, replicated in the controller group beside the rest of
//! the cluster metadata (docs/security.md).
//!
//! ACLs only allow; what no ACL allows is denied (when the node enforces
//! them at all: `--authorization`). An ACL names a principal (`*`: any),
//! a resource (a topic, a group — consumer or queue — or the cluster) by
//! exact name, `*` or a prefix ending in `*`, and an operation. Any
//! operation on a resource implies `describe` of it, and `all` implies
//! every operation.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// What the cluster keeps of a user's password: SCRAM-SHA-256's stored form
/// (see `replog_proto::scram`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    /// A subject of the schema registry.
    Subject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    Produce,
    Consume,
    Describe,
    Alter,
    Delete,
    Create,
    All,
}

impl ResourceType {
    pub const ALL: [ResourceType; 4] =
        [ResourceType::Topic, ResourceType::Group, ResourceType::Cluster, ResourceType::Subject];

    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::Cluster => "cluster",
            ResourceType::Subject => "subject",
        }
    }

    pub fn parse(s: &str) -> Option<ResourceType> {
        Self::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl Operation {
    pub const ALL: [Operation; 7] = [
        Operation::Produce,
        Operation::Consume,
        Operation::Describe,
        Operation::Alter,
        Operation::Delete,
        Operation::Create,
        Operation::All,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::Produce => "produce",
            Operation::Consume => "consume",
            Operation::Describe => "describe",
            Operation::Alter => "alter",
            Operation::Delete => "delete",
            Operation::Create => "create",
            Operation::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<Operation> {
        Self::ALL.into_iter().find(|o| o.name() == s)
    }

    /// Whether holding `self` allows `wanted`.
    pub fn implies(self, wanted: Operation) -> bool {
        self == Operation::All || self == wanted || wanted == Operation::Describe
    }
}

/// One permission: `principal` may do `operation` on the resources
/// `resource_type`/`resource` names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Acl {
    pub principal: String,
    pub resource_type: ResourceType,
    /// An exact name, `*`, or a prefix followed by `*`.
    pub resource: String,
    pub operation: Operation,
}

impl Acl {
    /// Whether this ACL's resource pattern covers `name`.
    pub fn covers(&self, name: &str) -> bool {
        match self.resource.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => self.resource == name,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let printable = |s: &str| !s.is_empty() && s.len() <= 255 && s.chars().all(|c| c.is_ascii_graphic());
        if !printable(&self.principal) {
            return Err("an ACL's principal is 1 to 255 printable ASCII characters".into());
        }
        if !printable(&self.resource) || self.resource[..self.resource.len() - 1].contains('*') {
            return Err("an ACL's resource is a name, `*`, or a prefix ending in `*` (255 characters at most)".into());
        }
        if self.resource_type == ResourceType::Cluster && self.resource != "*" {
            return Err("the cluster resource is named `*`".into());
        }
        Ok(())
    }
}

/// Users and ACLs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityMeta {
    pub users: BTreeMap<String, ScramCredential>,
    pub acls: BTreeSet<Acl>,
}

/// A change to users or ACLs, validated by the node before it is proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityCmd {
    UpsertUser { name: String, credential: ScramCredential },
    DeleteUser { name: String },
    AddAcl(Acl),
    RemoveAcl(Acl),
}

/// What applying a [`SecurityCmd`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityResult {
    Done,
    UnknownUser(String),
}

impl SecurityMeta {
    pub fn apply(&mut self, cmd: SecurityCmd) -> SecurityResult {
        match cmd {
            SecurityCmd::UpsertUser { name, credential } => {
                self.users.insert(name, credential);
            }
            SecurityCmd::DeleteUser { name } => {
                if self.users.remove(&name).is_none() {
                    return SecurityResult::UnknownUser(name);
                }
            }
            // Adding an ACL twice, or removing one that is not there, is
            // not an error: the result is what was asked for.
            SecurityCmd::AddAcl(acl) => {
                self.acls.insert(acl);
            }
            SecurityCmd::RemoveAcl(acl) => {
                self.acls.remove(&acl);
            }
        }
        SecurityResult::Done
    }

    /// Whether some ACL allows `principal` to do `op` on `rt`/`name`.
    pub fn allows(&self, principal: &str, rt: ResourceType, name: &str, op: Operation) -> bool {
        self.acls.iter().any(|a| {
            (a.principal == principal || a.principal == "*")
                && a.resource_type == rt
                && a.covers(name)
                && a.operation.implies(op)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(principal: &str, rt: ResourceType, resource: &str, op: Operation) -> Acl {
        Acl { principal: principal.into(), resource_type: rt, resource: resource.into(), operation: op }
    }

    #[test]
    fn given_acls_then_only_what_they_name_is_allowed() {
        use Operation::*;
        use ResourceType::*;
        let mut m = SecurityMeta::default();
        m.apply(SecurityCmd::AddAcl(acl("alice", Topic, "orders", Produce)));
        m.apply(SecurityCmd::AddAcl(acl("bob", Topic, "logs-*", Consume)));
        m.apply(SecurityCmd::AddAcl(acl("*", Group, "public", All)));
        assert!(m.allows("alice", Topic, "orders", Produce));
        assert!(m.allows("alice", Topic, "orders", Describe), "produce implies describe");
        assert!(!m.allows("alice", Topic, "orders", Consume));
        assert!(!m.allows("alice", Topic, "orders2", Produce));
        assert!(m.allows("bob", Topic, "logs-a", Consume));
        assert!(!m.allows("bob", Topic, "log", Consume));
        assert!(m.allows("carol", Group, "public", Delete));
        assert!(!m.allows("carol", Cluster, "*", Describe));
        m.apply(SecurityCmd::RemoveAcl(acl("alice", Topic, "orders", Produce)));
        assert!(!m.allows("alice", Topic, "orders", Produce));
    }

    #[test]
    fn given_bad_acls_then_validation_refuses_them() {
        use ResourceType::*;
        assert!(acl("a", Topic, "x*y", Operation::All).validate().is_err());
        assert!(acl("", Topic, "x", Operation::All).validate().is_err());
        assert!(acl("a", Cluster, "x", Operation::All).validate().is_err());
        acl("a", Cluster, "*", Operation::Create).validate().unwrap();
        acl("a", Topic, "pre*", Operation::Consume).validate().unwrap();
    }
}
