//! `replog topic create|list|describe|alter-config|delete`.

use clap::{Args, Subcommand};
use serde_json::json;

use super::Output;
use crate::{Client, TopicInfo};

#[derive(Debug, Subcommand)]
pub enum TopicCmd {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics.
    List,
    /// Show a topic's settings and partitions: leader, replicas, offsets.
    Describe { name: String },
    /// Change a topic's settings: retention.ms, retention.bytes,
    /// retention.consumed, schema.subject (see `topic create --config`).
    AlterConfig(AlterArgs),
    /// Delete a topic and all its records.
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub name: String,
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    #[arg(long, default_value_t = 3)]
    pub replication_factor: u32,
    /// A setting, NAME=VALUE; repeat for several. retention.ms=MS releases
    /// batches older than MS; retention.bytes=B keeps at most B bytes per
    /// partition; retention.consumed=true releases what every consumer
    /// group has committed past. -1 removes a time or size rule.
    /// schema.subject=S makes the brokers validate every record against
    /// the versions of subject S (see `replog schema`).
    #[arg(long = "config", value_name = "NAME=VALUE", value_parser = parse_setting)]
    pub configs: Vec<(String, String)>,
    /// Bind the topic to a schema subject (the same as --config
    /// schema.subject=SUBJECT).
    #[arg(long)]
    pub schema_subject: Option<String>,
}

#[derive(Debug, Args)]
pub struct AlterArgs {
    pub name: String,
    /// Set NAME to VALUE; repeat for several.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_setting)]
    pub set: Vec<(String, String)>,
    /// Remove a setting (back to its default); repeat for several.
    #[arg(long = "delete", value_name = "NAME")]
    pub delete: Vec<String>,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

pub async fn run(client: Client, cmd: TopicCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        TopicCmd::Create(a) => {
            let mut configs = a.configs.clone();
            if let Some(s) = &a.schema_subject {
                configs.push(("schema.subject".into(), s.clone()));
            }
            let t = client.create_topic_with(&a.name, a.partitions, a.replication_factor, &pairs(&configs)).await?;
            match out {
                Output::Json => println!("{}", describe_json(&t)),
                Output::Text => println!(
                    "created topic {} with {} partitions, replication factor {}",
                    t.name,
                    t.partitions.len(),
                    a.replication_factor
                ),
            }
        }
        TopicCmd::List => {
            let topics = client.list_topics().await?;
            match out {
                Output::Json => {
                    let v: Vec<_> = topics
                        .iter()
                        .map(|t| {
                            json!({"name": t.name, "partitions": t.partitions.len(),
                            "replication_factor": t.partitions.first().map_or(0, |p| p.replicas.len())})
                        })
                        .collect();
                    println!("{}", json!({ "topics": v }));
                }
                Output::Text => {
                    for t in topics {
                        println!("{}", t.name);
                    }
                }
            }
        }
        TopicCmd::Describe { name } => {
            let t = client.describe_topic(&name).await?;
            match out {
                Output::Json => println!("{}", describe_json(&t)),
                Output::Text => {
                    println!("topic {} (id {}), {} partitions", t.name, t.topic_id, t.partitions.len());
                    for (k, v) in &t.configs {
                        println!("  {k}={v}");
                    }
                    println!(
                        "{:>9}  {:>6}  {:<12}  {:>16}  {:>16}",
                        "PARTITION", "LEADER", "REPLICAS", "LOG_START", "HIGH_WATERMARK"
                    );
                    for p in &t.partitions {
                        let replicas = p.replicas.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
                        let leader = p.leader.map_or("-".to_string(), |l| l.to_string());
                        println!(
                            "{:>9}  {:>6}  {:<12}  {:>16}  {:>16}",
                            p.partition, leader, replicas, p.log_start_offset, p.high_watermark
                        );
                    }
                }
            }
        }
        TopicCmd::AlterConfig(a) => {
            let delete: Vec<&str> = a.delete.iter().map(String::as_str).collect();
            if a.set.is_empty() && delete.is_empty() {
                anyhow::bail!("nothing to change: give --set NAME=VALUE or --delete NAME");
            }
            let t = client.alter_topic_config(&a.name, &pairs(&a.set), &delete).await?;
            match out {
                Output::Json => println!("{}", describe_json(&t)),
                Output::Text => {
                    println!("topic {} settings:", t.name);
                    for (k, v) in &t.configs {
                        println!("  {k}={v}");
                    }
                }
            }
        }
        TopicCmd::Delete { name } => {
            client.delete_topic(&name).await?;
            match out {
                Output::Json => println!("{}", json!({ "deleted": name })),
                Output::Text => println!("deleted topic {name}"),
            }
        }
    }
    Ok(())
}

fn describe_json(t: &TopicInfo) -> serde_json::Value {
    let parts: Vec<_> = t
        .partitions
        .iter()
        .map(|p| {
            json!({
                "partition": p.partition,
                "leader": p.leader,
                "replicas": p.replicas,
                "log_start_offset": p.log_start_offset,
                "high_watermark": p.high_watermark,
            })
        })
        .collect();
    json!({ "name": t.name, "topic_id": t.topic_id, "partitions": parts, "configs": t.configs })
}
