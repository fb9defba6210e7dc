//! `replog group delete G`: refused (GROUP_NOT_EMPTY) while it has members.

use clap::Args;
use serde_json::json;

use super::super::Output;
use crate::Client;

#[derive(Debug, Args)]
pub struct DeleteArgs {
    pub group: String,
}

pub async fn run(client: Client, a: DeleteArgs, out: Output) -> anyhow::Result<()> {
    client.delete_group(&a.group).await?;
    match out {
        Output::Json => println!("{}", json!({ "deleted": a.group })),
        Output::Text => println!("deleted group {}", a.group),
    }
    Ok(())
}
