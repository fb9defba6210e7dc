//! Users and ACLs (docs/security.md): SCRAM-SHA-256 credentials computed
//! here, so that the password never enters the cluster's state, and ACLs
//! as the broker lists them.

use replog_proto::pb;
use replog_proto::scram::{Credential, DEFAULT_ITERATIONS};

use crate::client::{Call, Client};
use crate::error::Result;

/// One permission: `principal` may do `operation` on `resource_type`
/// (`topic`, `group` or `cluster`) `resource` (a name, `*`, or a prefix
/// ending in `*`; the cluster is `*`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Acl {
    pub principal: String,
    pub resource_type: String,
    pub resource: String,
    /// produce, consume, describe, alter, delete, create or all.
    pub operation: String,
}

impl Acl {
    pub fn new(principal: &str, resource_type: &str, resource: &str, operation: &str) -> Acl {
        Acl {
            principal: principal.into(),
            resource_type: resource_type.into(),
            resource: resource.into(),
            operation: operation.into(),
        }
    }

    fn to_pb(&self) -> pb::Acl {
        pb::Acl {
            principal: self.principal.clone(),
            resource_type: self.resource_type.clone(),
            resource: self.resource.clone(),
            operation: self.operation.clone(),
        }
    }
}

/// Who the broker takes this client for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WhoAmI {
    pub principal: String,
    pub super_user: bool,
}

impl Client {
    async fn admin<T, F, Fut>(&self, call: Call, f: F) -> Result<T>
    where
        F: Fn(crate::client::Conn) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.any_node(call, |c, _| f(c)).await
    }

    /// Creates user `name`, or sets its password.
    pub async fn upsert_user(&self, name: &str, password: &str) -> Result<()> {
        let salt: [u8; 16] = rand::random();
        let c = Credential::new(password, &salt, DEFAULT_ITERATIONS);
        let credential = pb::ScramCredential {
            salt: c.salt.into(),
            iterations: c.iterations,
            stored_key: c.stored_key.into(),
            server_key: c.server_key.into(),
        };
        let req = pb::UpsertUserRequest { name: name.into(), credential: Some(credential) };
        self.admin(Call::Write, |mut c| {
            let req = req.clone();
            async move { c.upsert_user(req).await }
        })
        .await?;
        Ok(())
    }

    pub async fn delete_user(&self, name: &str) -> Result<()> {
        let req = pb::DeleteUserRequest { name: name.into() };
        self.admin(Call::Write, |mut c| {
            let req = req.clone();
            async move { c.delete_user(req).await }
        })
        .await?;
        Ok(())
    }

    pub async fn list_users(&self) -> Result<Vec<String>> {
        Ok(self.admin(Call::Read, |mut c| async move { c.list_users(pb::ListUsersRequest {}).await }).await?.names)
    }

    pub async fn add_acl(&self, acl: &Acl) -> Result<()> {
        let req = pb::AclRequest { acl: Some(acl.to_pb()) };
        self.admin(Call::Write, |mut c| {
            let req = req.clone();
            async move { c.add_acl(req).await }
        })
        .await?;
        Ok(())
    }

    pub async fn remove_acl(&self, acl: &Acl) -> Result<()> {
        let req = pb::AclRequest { acl: Some(acl.to_pb()) };
        self.admin(Call::Write, |mut c| {
            let req = req.clone();
            async move { c.remove_acl(req).await }
        })
        .await?;
        Ok(())
    }

    pub async fn list_acls(&self) -> Result<Vec<Acl>> {
        let r = self.admin(Call::Read, |mut c| async move { c.list_acls(pb::ListAclsRequest {}).await }).await?;
        let mut v: Vec<Acl> = r
            .acls
            .into_iter()
            .map(|a| Acl {
                principal: a.principal,
                resource_type: a.resource_type,
                resource: a.resource,
                operation: a.operation,
            })
            .collect();
        v.sort();
        Ok(v)
    }

    pub async fn who_am_i(&self) -> Result<WhoAmI> {
        let r = self.admin(Call::Read, |mut c| async move { c.who_am_i(pb::WhoAmIRequest {}).await }).await?;
        Ok(WhoAmI { principal: r.principal, super_user: r.super_user })
    }
}
