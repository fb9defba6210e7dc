//! `replog acl add|remove|list`.

use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;

use super::Output;
use crate::Client;
use crate::security::Acl;

#[derive(Debug, Subcommand)]
pub enum AclCmd {
    /// Allow a principal an operation on a resource.
    Add(AclArgs),
    /// Take back what `add` allowed (the same arguments).
    Remove(AclArgs),
    /// Every ACL.
    List,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("resource").required(true).args(["topic", "group", "subject", "cluster"])))]
pub struct AclArgs {
    /// A user name or client-certificate CN; `*`: anyone.
    #[arg(long)]
    pub principal: String,
    /// produce, consume, describe, alter, delete, create or all.
    #[arg(long)]
    pub operation: String,
    /// A topic: a name, `*`, or a prefix ending in `*`.
    #[arg(long)]
    pub topic: Option<String>,
    /// A consumer or queue group: a name, `*`, or a prefix ending in `*`.
    #[arg(long)]
    pub group: Option<String>,
    /// A schema-registry subject: a name, `*`, or a prefix ending in `*`.
    #[arg(long)]
    pub subject: Option<String>,
    /// The cluster (create topics, manage users and ACLs, move partitions,
    /// describe it).
    #[arg(long)]
    pub cluster: bool,
}

impl AclArgs {
    fn acl(&self) -> Acl {
        let (rt, name) = match (&self.topic, &self.group, &self.subject) {
            (Some(t), _, _) => ("topic", t.as_str()),
            (None, Some(g), _) => ("group", g.as_str()),
            (None, None, Some(s)) => ("subject", s.as_str()),
            (None, None, None) => ("cluster", "*"),
        };
        Acl::new(&self.principal, rt, name, &self.operation)
    }
}

pub async fn run(client: Client, cmd: AclCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        AclCmd::Add(a) => {
            client.add_acl(&a.acl()).await?;
            println!("ACL added");
        }
        AclCmd::Remove(a) => {
            client.remove_acl(&a.acl()).await?;
            println!("ACL removed");
        }
        AclCmd::List => {
            let acls = client.list_acls().await?;
            match out {
                Output::Json => println!("{}", json!({ "acls": acls })),
                Output::Text => {
                    println!("{:<20}  {:<8}  {:<24}  OPERATION", "PRINCIPAL", "TYPE", "RESOURCE");
                    for a in &acls {
                        println!("{:<20}  {:<8}  {:<24}  {}", a.principal, a.resource_type, a.resource, a.operation);
                    }
                }
            }
        }
    }
    Ok(())
}
