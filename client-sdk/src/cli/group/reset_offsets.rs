//! `replog group reset-offsets G [--topic T [--partition P]] (--to-earliest
//! | --to-latest | --to-offset O | --to-timestamp MS | --shift-by N)
//! [--dry-run]`: moves a group's committed offsets — backwards too — while
//! the group has no members (GROUP_NOT_EMPTY otherwise). Targets are
//! clamped to the partition's retained range. `--output json` gives
//! `{"group","dry_run","partitions":[{"topic","partition","previous_offset","new_offset"}]}`.

use std::collections::{BTreeMap, BTreeSet};

use clap::{ArgGroup, Args};
use serde::Serialize;
use serde_json::json;

use super::super::Output;
use crate::{Client, Error, ErrorCode, GroupDescription, OffsetCommit, OffsetSpec};

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .args(["to_earliest", "to_latest", "to_offset", "to_timestamp", "shift_by"])
))]
pub struct ResetArgs {
    pub group: String,
    /// The topic whose offsets to move (default: every topic the group
    /// subscribes to or has offsets for).
    #[arg(long)]
    pub topic: Option<String>,
    /// Only this partition of `--topic`.
    #[arg(long, requires = "topic")]
    pub partition: Option<u32>,
    /// To the first retained record.
    #[arg(long)]
    pub to_earliest: bool,
    /// To the end: only records produced from now on.
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset.
    #[arg(long)]
    pub to_offset: Option<u64>,
    /// To the first record with a timestamp (ms since the epoch) at or after this one.
    #[arg(long)]
    pub to_timestamp: Option<i64>,
    /// By this many records from the committed offset (negative: back).
    #[arg(long, allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
    /// Show the new offsets without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize)]
struct Planned {
    topic: String,
    partition: u32,
    previous_offset: Option<u64>,
    new_offset: u64,
}

pub async fn run(client: Client, a: ResetArgs, out: Output) -> anyhow::Result<()> {
    // A reset may create a group (offsets, no members yet) when a topic is named.
    let g = match client.describe_group(&a.group).await {
        Ok(g) => Some(g),
        Err(e) if e.code() == Some(ErrorCode::UnknownGroup) && a.topic.is_some() => None,
        Err(e) => return Err(e.into()),
    };
    let plan = plan(&client, &a, g.as_ref()).await?;
    if plan.is_empty() {
        return Err(Error::InvalidArgument(format!("no partition of group {:?} to reset", a.group)).into());
    }
    let members = g.as_ref().map_or(0, |g| g.members.len());
    if a.dry_run && members > 0 {
        eprintln!("warning: group {} has {members} active members; the reset itself would be refused", a.group);
    }
    if !a.dry_run {
        let offsets: Vec<OffsetCommit> =
            plan.iter().map(|p| OffsetCommit::new(&p.topic, p.partition, p.new_offset)).collect();
        client.reset_offsets(&a.group, &offsets).await?;
    }
    match out {
        Output::Json => println!("{}", json!({"group": a.group, "dry_run": a.dry_run, "partitions": plan})),
        Output::Text => {
            println!("{:<24}  {:>9}  {:>16}  {:>16}", "TOPIC", "PARTITION", "PREVIOUS", "NEW");
            for p in &plan {
                let prev = p.previous_offset.map_or("-".to_string(), |v| v.to_string());
                println!("{:<24}  {:>9}  {:>16}  {:>16}", p.topic, p.partition, prev, p.new_offset);
            }
            if a.dry_run {
                println!("dry run: nothing changed");
            } else {
                println!("reset {} offsets of group {}", plan.len(), a.group);
            }
        }
    }
    Ok(())
}

async fn plan(client: &Client, a: &ResetArgs, g: Option<&GroupDescription>) -> anyhow::Result<Vec<Planned>> {
    let committed: BTreeMap<(String, u32), u64> =
        g.iter().flat_map(|g| g.offsets.iter()).map(|o| ((o.topic.clone(), o.partition), o.offset)).collect();
    let topics: BTreeSet<String> = match &a.topic {
        Some(t) => [t.clone()].into(),
        None => {
            g.iter().flat_map(|g| g.topics.iter().cloned().chain(g.offsets.iter().map(|o| o.topic.clone()))).collect()
        }
    };
    let mut out = Vec::new();
    for t in topics {
        let info = client.describe_topic(&t).await?;
        for p in &info.partitions {
            if a.partition.is_some_and(|want| want != p.partition) {
                continue;
            }
            let previous = committed.get(&(t.clone(), p.partition)).copied();
            let bounds = client.list_offsets(&t, p.partition, OffsetSpec::Earliest).await?;
            let clamp = |o: u64| o.clamp(bounds.log_start_offset, bounds.high_watermark);
            let new_offset = if a.to_earliest {
                bounds.log_start_offset
            } else if a.to_latest {
                bounds.high_watermark
            } else if let Some(o) = a.to_offset {
                clamp(o)
            } else if let Some(ts) = a.to_timestamp {
                client.list_offsets(&t, p.partition, OffsetSpec::Timestamp(ts)).await?.offset
            } else if let Some(n) = a.shift_by {
                let Some(from) = previous else {
                    eprintln!("warning: {t}/{}: no committed offset to shift; left as it is", p.partition);
                    continue;
                };
                clamp(from.saturating_add_signed(n))
            } else {
                unreachable!("clap requires one target")
            };
            out.push(Planned { topic: t.clone(), partition: p.partition, previous_offset: previous, new_offset });
        }
    }
    if let Some(want) = a.partition
        && out.iter().all(|p| p.partition != want)
    {
        return Err(Error::InvalidArgument(format!("partition {want} is not a partition of the topic")).into());
    }
    Ok(out)
}
