//! Who a request comes from, and whether it may do what it asks.
//!
//! Every request on the client listener passes [`Authenticate`] first,
//! which puts its [`Principal`] into the request's extensions: the user
//! named in its metadata if the password matches (else
//! AUTHENTICATION_FAILED, certificate or not), else the CN of the client
//! certificate the TLS handshake verified, else `ANONYMOUS`. Requests on
//! the peer listener come from nodes ([`Principal::Peer`]), which mutual
//! TLS vouches for; an admin request a node forwards was authorized where
//! it came in.
//!
//! [`authorize`] then checks the principal against the ACLs when the node
//! enforces them (`--authorization`); super users pass every check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use replog_proto::codes::{PASSWORD_KEY, USER_KEY};
use replog_proto::scram::Credential;
use replog_raft_store::security::{Operation, ResourceType, ScramCredential};
use sha2::Sha256;
use tonic::{Request, Status};

use super::conn::ConnInfo;
use crate::error::{NodeError, Result};
use crate::node::Node;

/// Whom a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Another node, on the peer listener.
    Peer,
    /// No password and no client certificate.
    Anonymous,
    /// A user who gave the right password, or a client certificate's CN.
    User(Arc<str>),
}

/// The name ACLs give principals that showed nothing.
pub const ANONYMOUS: &str = "ANONYMOUS";

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::Peer => "node",
            Principal::Anonymous => ANONYMOUS,
            Principal::User(u) => u,
        }
    }

    /// The principal a request carries; a request with none came from
    /// inside the node.
    pub fn of<T>(req: &Request<T>) -> Principal {
        req.extensions().get::<Principal>().cloned().unwrap_or(Principal::Peer)
    }
}

/// Passwords already checked, so that only a user's first request (and
/// the first after a password change) pays for PBKDF2: user → (a keyed
/// hash of the password, the stored key it matched).
#[derive(Default)]
pub struct VerifiedPasswords {
    key: [u8; 32],
    seen: Mutex<HashMap<String, Verified>>,
}

/// A keyed hash of a checked password, and the stored key it matched.
type Verified = ([u8; 32], Vec<u8>);

/// Users remembered at most; past it the memory starts afresh.
const MAX_VERIFIED: usize = 10_000;

impl VerifiedPasswords {
    pub fn new() -> VerifiedPasswords {
        VerifiedPasswords { key: rand::random(), seen: Mutex::default() }
    }

    fn mac(&self, password: &str) -> [u8; 32] {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        m.update(password.as_bytes());
        m.finalize().into_bytes().into()
    }

    /// Whether `password` matches `cred`, the credential `user` has now.
    pub fn check(&self, user: &str, password: &str, cred: &ScramCredential) -> bool {
        let mac = self.mac(password);
        if let Some((m, stored)) = self.seen.lock().expect("verified lock").get(user)
            && *stored == cred.stored_key
        {
            use subtle::ConstantTimeEq;
            return m.ct_eq(&mac).into();
        }
        let c = Credential {
            salt: cred.salt.clone(),
            iterations: cred.iterations,
            stored_key: cred.stored_key.clone(),
            server_key: cred.server_key.clone(),
        };
        if !c.verify(password) {
            return false;
        }
        let mut seen = self.seen.lock().expect("verified lock");
        if seen.len() >= MAX_VERIFIED {
            seen.clear();
        }
        seen.insert(user.to_string(), (mac, cred.stored_key.clone()));
        true
    }
}

/// The client listener's interceptor: authenticates each request.
#[derive(Clone)]
pub struct Authenticate {
    pub node: Arc<Node>,
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut req: Request<()>) -> std::result::Result<Request<()>, Status> {
        let info = req.extensions().get::<ConnInfo>().cloned().unwrap_or_default();
        let principal = authenticate(&self.node, req.metadata(), &info).map_err(Status::from)?;
        req.extensions_mut().insert(principal);
        Ok(req)
    }
}

/// The peer listener's interceptor: every request there is a node's.
#[derive(Clone)]
pub struct FromPeer;

impl tonic::service::Interceptor for FromPeer {
    fn call(&mut self, mut req: Request<()>) -> std::result::Result<Request<()>, Status> {
        req.extensions_mut().insert(Principal::Peer);
        Ok(req)
    }
}

fn authenticate(node: &Node, md: &tonic::metadata::MetadataMap, info: &ConnInfo) -> Result<Principal> {
    let Some(user) = md.get(USER_KEY) else {
        return Ok(match &info.cert_cn {
            Some(cn) => Principal::User(cn.clone()),
            None => Principal::Anonymous,
        });
    };
    let failed = || NodeError::AuthenticationFailed("unknown user or wrong password".into());
    let user = user.to_str().map_err(|_| failed())?;
    let password = md.get(PASSWORD_KEY).and_then(|p| p.to_str().ok()).ok_or_else(failed)?;
    let meta = node.meta();
    let cred = meta.security.users.get(user).ok_or_else(failed)?;
    if !node.verified.check(user, password, cred) {
        return Err(failed());
    }
    Ok(Principal::User(Arc::from(user)))
}

/// Whether `principal` may do `op` on `rt`/`name`: always when the node
/// does not enforce ACLs, for nodes and for super users; else as the ACLs
/// say.
pub fn allowed(node: &Node, principal: &Principal, rt: ResourceType, name: &str, op: Operation) -> bool {
    let name_of = principal.name();
    !node.config.authorization
        || *principal == Principal::Peer
        || node.config.super_users.iter().any(|s| s == name_of)
        || node.meta().security.allows(name_of, rt, name, op)
}

/// [`allowed`], as PERMISSION_DENIED when it is not.
pub fn authorize(node: &Node, principal: &Principal, rt: ResourceType, name: &str, op: Operation) -> Result<()> {
    if allowed(node, principal, rt, name, op) {
        return Ok(());
    }
    let resource = match rt {
        ResourceType::Cluster => "the cluster".to_string(),
        _ => format!("{} {name:?}", rt.name()),
    };
    Err(NodeError::PermissionDenied { principal: principal.name().to_string(), operation: op.name(), resource })
}
