//! `replog schema register|check|get|list|delete|compatibility`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use replog_schema::{Compatibility, Format};

use super::Output;
use crate::Client;
use crate::error::Error;
use crate::schema::SchemaInfo;

#[derive(Debug, Subcommand)]
pub enum SchemaCmd {
    /// Register a schema as a subject's next version (or find the version
    /// holding it); prints its id and version.
    Register(SchemaArgs),
    /// Say whether a schema would be accepted as a subject's next version.
    Check(SchemaArgs),
    /// Print a schema: by --id, or a subject's version (the latest by default).
    Get {
        subject: Option<String>,
        #[arg(long)]
        version: Option<u32>,
        #[arg(long, conflicts_with_all = ["subject", "version"])]
        id: Option<u32>,
    },
    /// List subjects with their versions and compatibility.
    List { subject: Option<String> },
    /// Delete one version of a subject, or the whole subject. Records
    /// written with it stay readable.
    Delete {
        subject: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Set a subject's compatibility: none, backward, backward_transitive,
    /// forward, forward_transitive, full, full_transitive; `default` resets.
    Compatibility { subject: String, level: String },
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    pub subject: String,
    /// json, avro or protobuf.
    #[arg(long = "type", value_parser = parse_format)]
    pub format: Format,
    /// The file holding the schema text (`-`: standard input).
    #[arg(long)]
    pub file: PathBuf,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        return Ok(std::io::read_to_string(std::io::stdin())?);
    }
    std::fs::read_to_string(path).map_err(|e| Error::InvalidArgument(format!("reading {}: {e}", path.display())).into())
}

fn print_schema(s: &SchemaInfo, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string(s)?),
        Output::Text => {
            let at = match (&s.subject, s.version) {
                (Some(sub), Some(v)) => format!(" ({sub} version {v})"),
                _ => String::new(),
            };
            println!("id {} {}{at}\n{}", s.id, s.format, s.schema);
        }
    }
    Ok(())
}

pub async fn run(client: Client, cmd: SchemaCmd, output: Output) -> anyhow::Result<()> {
    match cmd {
        SchemaCmd::Register(a) => {
            let r = client.register_schema(&a.subject, a.format, &read(&a.file)?).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string(&r)?),
                Output::Text => println!(
                    "{} {} version {} (id {})",
                    if r.created { "registered" } else { "already registered:" },
                    a.subject,
                    r.version,
                    r.id
                ),
            }
        }
        SchemaCmd::Check(a) => {
            let r = client.check_schema(&a.subject, a.format, &read(&a.file)?).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string(&r)?),
                Output::Text if r.compatible => println!("compatible ({})", r.compatibility),
                Output::Text => println!("incompatible ({}): {}", r.compatibility, r.reason),
            }
            if !r.compatible {
                std::process::exit(1);
            }
        }
        SchemaCmd::Get { subject, version, id } => {
            let s = match (id, subject) {
                (Some(id), _) => client.schema_by_id(id).await?,
                (None, Some(subject)) => client.schema_version(&subject, version).await?,
                (None, None) => return Err(Error::InvalidArgument("name a subject or an --id".into()).into()),
            };
            print_schema(&s, output)?;
        }
        SchemaCmd::List { subject } => {
            let subjects = client.list_schemas(subject.as_deref()).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string(&subjects)?),
                Output::Text => {
                    for s in subjects {
                        let versions: Vec<String> = s.versions.iter().map(|(v, id)| format!("v{v}=id {id}")).collect();
                        println!("{}  {}  {}", s.subject, s.compatibility, versions.join(", "));
                    }
                }
            }
        }
        SchemaCmd::Delete { subject, version } => {
            client.delete_schema(&subject, version).await?;
            match version {
                Some(v) => println!("deleted {subject} version {v}"),
                None => println!("deleted subject {subject}"),
            }
        }
        SchemaCmd::Compatibility { subject, level } => {
            let c = match level.as_str() {
                "default" => None,
                l => Some(l.parse::<Compatibility>().map_err(Error::InvalidArgument)?),
            };
            client.set_schema_compatibility(&subject, c).await?;
            println!("{subject}: {}", c.unwrap_or_default());
        }
    }
    Ok(())
}
