//! `replog user create|delete|list` and `replog user whoami`.

use clap::Subcommand;
use serde_json::json;

use super::Output;
use crate::Client;

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user, or set its password (SCRAM-SHA-256: the cluster keeps
    /// a salted hash, computed here).
    Create {
        name: String,
        /// The new user's password; without it, the first line of standard
        /// input.
        #[arg(long, env = "REPLOG_NEW_PASSWORD", hide_env_values = true)]
        new_password: Option<String>,
    },
    /// Delete a user (its ACLs stay until removed).
    Delete { name: String },
    /// List the users.
    List,
    /// Who the cluster takes this client for.
    Whoami,
}

pub async fn run(client: Client, cmd: UserCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Create { name, new_password } => {
            let password = match new_password {
                Some(p) => p,
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if password.is_empty() {
                anyhow::bail!(crate::Error::InvalidArgument("the password is empty".into()));
            }
            client.upsert_user(&name, &password).await?;
            println!("user {name} saved");
        }
        UserCmd::Delete { name } => {
            client.delete_user(&name).await?;
            println!("user {name} deleted");
        }
        UserCmd::List => {
            let users = client.list_users().await?;
            match out {
                Output::Json => println!("{}", json!({ "users": users })),
                Output::Text => users.iter().for_each(|u| println!("{u}")),
            }
        }
        UserCmd::Whoami => {
            let me = client.who_am_i().await?;
            match out {
                Output::Json => println!("{}", serde_json::to_string(&me)?),
                Output::Text => {
                    println!("{}{}", me.principal, if me.super_user { " (super user)" } else { "" })
                }
            }
        }
    }
    Ok(())
}
