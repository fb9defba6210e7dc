//! `replog group list|describe|reset-offsets|delete`, one file each.

mod delete;
mod describe;
mod list;
mod reset_offsets;

use clap::Subcommand;

use super::Output;
use crate::Client;

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Every consumer group, with its state and member count.
    List,
    /// A group's members and, per partition, committed offset, end and lag.
    Describe(describe::DescribeArgs),
    /// Move a group's committed offsets (the group must have no members).
    ResetOffsets(reset_offsets::ResetArgs),
    /// Delete a group without members, with its committed offsets.
    Delete(delete::DeleteArgs),
}

pub async fn run(client: Client, cmd: GroupCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        GroupCmd::List => list::run(client, out).await,
        GroupCmd::Describe(a) => describe::run(client, a, out).await,
        GroupCmd::ResetOffsets(a) => reset_offsets::run(client, a, out).await,
        GroupCmd::Delete(a) => delete::run(client, a, out).await,
    }
}
