//! `replog group list`: `{"groups":[{"group","state","members"}]}`.

use serde_json::json;

use super::super::Output;
use crate::Client;

pub async fn run(client: Client, out: Output) -> anyhow::Result<()> {
    let groups = client.list_groups().await?;
    match out {
        Output::Json => println!("{}", json!({ "groups": groups })),
        Output::Text => {
            println!("{:<32}  {:<8}  {:>7}", "GROUP", "STATE", "MEMBERS");
            for g in groups {
                println!("{:<32}  {:<8}  {:>7}", g.group, g.state, g.members);
            }
        }
    }
    Ok(())
}
