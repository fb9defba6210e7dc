//! `replog group describe G`: the members with their assignment, and per
//! partition of the group's topics its committed offset, high watermark,
//! lag and owner. `--output json` gives `members` and `partitions` (each
//! with `topic`, `partition`, `committed_offset`, `high_watermark`, `lag`,
//! `member`, `metadata`); `committed_offset` and `lag` are null where the
//! group has committed nothing.

use std::collections::{BTreeMap, BTreeSet};

use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::super::Output;
use crate::{Client, GroupDescription, OffsetSpec, TopicPartition};

#[derive(Debug, Args)]
pub struct DescribeArgs {
    pub group: String,
}

/// One partition of a group's topics.
#[derive(Debug, Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    pub committed_offset: Option<u64>,
    pub high_watermark: u64,
    /// Records between the committed offset and the high watermark.
    pub lag: Option<u64>,
    /// The member assigned the partition, if any.
    pub member: Option<String>,
    pub metadata: Option<String>,
}

pub async fn run(client: Client, a: DescribeArgs, out: Output) -> anyhow::Result<()> {
    let g = client.describe_group(&a.group).await?;
    let rows = lag(&client, &g).await?;
    match out {
        Output::Json => {
            let members: Vec<_> = g
                .members
                .iter()
                .map(|m| {
                    json!({"member_id": m.member_id, "client_id": m.client_id, "assignment": m.assignment,
                           "last_heartbeat_ms_ago": m.last_heartbeat_ms_ago})
                })
                .collect();
            println!(
                "{}",
                json!({"group": g.group, "state": g.state, "generation": g.generation, "assignor": g.assignor,
                       "topics": g.topics, "members": members, "partitions": rows})
            );
        }
        Output::Text => {
            println!(
                "group {} ({}, generation {}, {} assignor), {} members",
                g.group,
                g.state,
                g.generation,
                g.assignor.name(),
                g.members.len()
            );
            if !g.members.is_empty() {
                println!("\n{:<40}  {:<24}  {:>9}  ASSIGNMENT", "MEMBER", "CLIENT", "SILENT_MS");
                for m in &g.members {
                    let asg = m.assignment.iter().map(TopicPartition::to_string).collect::<Vec<_>>().join(",");
                    println!("{:<40}  {:<24}  {:>9}  {asg}", m.member_id, m.client_id, m.last_heartbeat_ms_ago);
                }
            }
            println!(
                "\n{:<24}  {:>9}  {:>16}  {:>16}  {:>10}  MEMBER",
                "TOPIC", "PARTITION", "COMMITTED", "HIGH_WATERMARK", "LAG"
            );
            let dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            for r in &rows {
                println!(
                    "{:<24}  {:>9}  {:>16}  {:>16}  {:>10}  {}",
                    r.topic,
                    r.partition,
                    dash(r.committed_offset),
                    r.high_watermark,
                    dash(r.lag),
                    r.member.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(())
}

/// Every partition of the topics the group subscribes to or has offsets
/// for, with the high watermark from its leader (exact, so that a group
/// that consumed everything shows lag 0).
pub async fn lag(client: &Client, g: &GroupDescription) -> anyhow::Result<Vec<PartitionLag>> {
    let topics: BTreeSet<&str> =
        g.topics.iter().map(String::as_str).chain(g.offsets.iter().map(|o| o.topic.as_str())).collect();
    let committed: BTreeMap<(&str, u32), &crate::CommittedOffset> =
        g.offsets.iter().map(|o| ((o.topic.as_str(), o.partition), o)).collect();
    let owner: BTreeMap<&TopicPartition, &str> =
        g.members.iter().flat_map(|m| m.assignment.iter().map(move |tp| (tp, m.member_id.as_str()))).collect();
    let mut rows = Vec::new();
    for t in topics {
        let info = match client.describe_topic(t).await {
            Ok(i) => i,
            Err(e) if e.code() == Some(crate::ErrorCode::UnknownTopic) => {
                eprintln!("warning: the group has offsets for topic {t}, which no longer exists");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let ends = futures::future::try_join_all(
            info.partitions.iter().map(|p| client.list_offsets(t, p.partition, OffsetSpec::Latest)),
        )
        .await?;
        for (p, end) in info.partitions.iter().zip(ends) {
            let c = committed.get(&(t, p.partition));
            let tp = TopicPartition::new(t, p.partition);
            rows.push(PartitionLag {
                topic: t.to_string(),
                partition: p.partition,
                committed_offset: c.map(|c| c.offset),
                high_watermark: end.high_watermark,
                lag: c.map(|c| end.high_watermark.saturating_sub(c.offset)),
                member: owner.get(&tp).map(|m| m.to_string()),
                metadata: c.map(|c| c.metadata.clone()).filter(|m| !m.is_empty()),
            });
        }
    }
    Ok(rows)
}
