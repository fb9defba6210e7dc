//! Well-formed inputs built from the fuzzer's bytes: record batches and
//! the openraft messages peers exchange, as a correct sender would encode
//! them. Sizes stay small (a fuzz input is at most 64 KiB); edge values
//! (zero, extremes of each integer) come up often, since `arbitrary` reads
//! them straight from the input bytes.

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use openraft::entry::EntryPayload;
use openraft::vote::RaftLeaderId;
use openraft::{BasicNode, Membership};
use replog_proto::batch::{self, ProducerInfo, Record};
use replog_raft_store::controller::ControllerCmd;
use replog_raft_store::{Entry, LogId, NodeId, Request, SnapshotMeta, StoredMembership, TypeConfig, Vote};

type LeaderId = openraft::type_config::alias::LeaderIdOf<TypeConfig>;

fn small_bytes(u: &mut Unstructured, max: usize) -> Result<Bytes> {
    let n = u.int_in_range(0..=max)?;
    Ok(Bytes::copy_from_slice(u.bytes(n.min(u.len()))?))
}

fn small_string(u: &mut Unstructured, max: usize) -> Result<String> {
    let s: String = u.arbitrary()?;
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Ok(s[..end].to_string())
}

pub fn record(u: &mut Unstructured) -> Result<Record> {
    let key = if u.arbitrary()? { Some(small_bytes(u, 64)?) } else { None };
    let mut headers = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        headers.push((small_string(u, 32)?, small_bytes(u, 32)?));
    }
    Ok(Record { timestamp_ms: u.arbitrary()?, key, value: small_bytes(u, 256)?, headers })
}

pub fn records(u: &mut Unstructured) -> Result<Vec<Record>> {
    (0..u.int_in_range(0..=8)?).map(|_| record(u)).collect()
}

pub fn producer(u: &mut Unstructured) -> Result<ProducerInfo> {
    if u.arbitrary()? {
        return Ok(ProducerInfo::NONE);
    }
    Ok(ProducerInfo { producer_id: u.arbitrary()?, epoch: u.arbitrary()?, base_sequence: u.arbitrary()? })
}

pub fn compression(u: &mut Unstructured) -> Result<batch::Compression> {
    Ok(*u.choose(&[batch::Compression::None, batch::Compression::Lz4, batch::Compression::Zstd])?)
}

/// A batch as the producer encodes it (possibly empty, which validation
/// refuses), compressed or not. The codec is drawn last, so inputs saved
/// before compression existed still make the records they made then.
pub fn batch(u: &mut Unstructured) -> Result<Bytes> {
    let mut b = batch::BatchBuilder::new().producer(producer(u)?);
    for r in records(u)? {
        b.push(&r);
    }
    Ok(b.compression(compression(u)?).build())
}

pub fn node_id(u: &mut Unstructured) -> Result<NodeId> {
    // Mostly small ids, sometimes anything.
    if u.ratio(3, 4)? { u.int_in_range(0..=7) } else { u.arbitrary() }
}

/// Mostly small terms, sometimes anything (which reaches the peer
/// service's term bound).
fn term(u: &mut Unstructured) -> Result<u64> {
    if u.ratio(3, 4)? { u.int_in_range(0..=100) } else { u.arbitrary() }
}

pub fn vote(u: &mut Unstructured) -> Result<Vote> {
    let (term, node) = (term(u)?, node_id(u)?);
    Ok(if u.arbitrary()? { Vote::new_committed(term, node) } else { Vote::new(term, node) })
}

pub fn log_id(u: &mut Unstructured) -> Result<LogId> {
    Ok(LogId::new(LeaderId::new(term(u)?, node_id(u)?).to_committed(), u.arbitrary()?))
}

pub fn opt_log_id(u: &mut Unstructured) -> Result<Option<LogId>> {
    if u.arbitrary()? { Ok(Some(log_id(u)?)) } else { Ok(None) }
}

pub fn membership(u: &mut Unstructured) -> Result<Membership<NodeId, BasicNode>> {
    let mut configs = Vec::new();
    for _ in 0..u.int_in_range(1..=2)? {
        let voters: BTreeSet<NodeId> = (0..u.int_in_range(1..=5)?).map(|_| node_id(u)).collect::<Result<_>>()?;
        configs.push(voters);
    }
    let mut nodes = BTreeMap::new();
    for id in configs.iter().flatten() {
        nodes.insert(*id, BasicNode::new(small_string(u, 32)?));
    }
    // Extra non-voting nodes (learners).
    for _ in 0..u.int_in_range(0..=2)? {
        nodes.insert(node_id(u)?, BasicNode::new(small_string(u, 32)?));
    }
    Ok(Membership::new(configs.clone(), nodes).unwrap_or_else(|_| Membership::new_with_defaults(configs, [])))
}

fn topic_config(u: &mut Unstructured) -> Result<replog_raft_store::controller::TopicConfig> {
    Ok(replog_raft_store::controller::TopicConfig {
        retention_ms: u.arbitrary()?,
        retention_bytes: u.arbitrary()?,
        retention_consumed: u.arbitrary()?,
        schema_subject: if u.arbitrary()? { Some(small_string(u, 16)?) } else { None },
    })
}

pub fn controller_cmd(u: &mut Unstructured) -> Result<ControllerCmd> {
    use replog_raft_store::registry::{RegisterSchema, SchemaCompatibility, SchemaFormat, SubjectVersion};
    Ok(match u.int_in_range(0..=9)? {
        0 => ControllerCmd::RegisterNode { id: node_id(u)?, addr: small_string(u, 32)? },
        1 => ControllerCmd::CreateTopic {
            name: small_string(u, 32)?,
            replicas: (0..u.int_in_range(0..=4)?)
                .map(|_| (0..u.int_in_range(0..=3)?).map(|_| node_id(u)).collect())
                .collect::<Result<_>>()?,
            created_ms: u.arbitrary()?,
            config: topic_config(u)?,
        },
        2 => ControllerCmd::DeleteTopic { name: small_string(u, 32)? },
        3 => ControllerCmd::AlterTopicConfig { name: small_string(u, 32)?, config: topic_config(u)? },
        4 => ControllerCmd::AllocateProducerId,
        5 => ControllerCmd::RegisterSchema(RegisterSchema {
            subject: small_string(u, 16)?,
            format: [SchemaFormat::Json, SchemaFormat::Avro, SchemaFormat::Protobuf][u.int_in_range(0..=2)?],
            text: small_string(u, 64)?,
            checked: (
                (0..u.int_in_range(0..=3)?)
                    .map(|_| Ok(SubjectVersion { version: u.arbitrary()?, id: u.arbitrary()? }))
                    .collect::<Result<_>>()?,
                SchemaCompatibility::default(),
            ),
        }),
        6 => ControllerCmd::SetSchemaCompatibility {
            subject: small_string(u, 16)?,
            compatibility: if u.arbitrary()? { Some(SchemaCompatibility::Full) } else { None },
        },
        7 => ControllerCmd::DeleteSchema { subject: small_string(u, 16)?, version: u.arbitrary()? },
        8 => ControllerCmd::SetNodeRack {
            id: node_id(u)?,
            rack: if u.arbitrary()? { Some(small_string(u, 8)?) } else { None },
        },
        _ => ControllerCmd::SetClusterConfig {
            entries: (0..u.int_in_range(0..=3)?)
                .map(|_| Ok((small_string(u, 16)?, if u.arbitrary()? { Some(small_string(u, 16)?) } else { None })))
                .collect::<Result<_>>()?,
        },
    })
}

pub fn request(u: &mut Unstructured) -> Result<Request> {
    Ok(match u.int_in_range(0..=7)? {
        0..=5 => Request::Append { batch: batch(u)?, record_count: u.arbitrary()?, max_timestamp_ms: u.arbitrary()? },
        6 => Request::Truncate { log_start_offset: u.arbitrary()? },
        _ => Request::Controller(controller_cmd(u)?),
    })
}

pub fn entry(u: &mut Unstructured) -> Result<Entry> {
    let log_id = log_id(u)?;
    let payload = match u.int_in_range(0..=3)? {
        0 => EntryPayload::Blank,
        1 => EntryPayload::Membership(membership(u)?),
        _ => EntryPayload::Normal(request(u)?),
    };
    Ok(Entry { log_id, payload })
}

pub fn append_entries(u: &mut Unstructured) -> Result<openraft::raft::AppendEntriesRequest<TypeConfig>> {
    let entries = if u.arbitrary()? {
        Vec::new()
    } else {
        (0..u.int_in_range(0..=4)?).map(|_| entry(u)).collect::<Result<_>>()?
    };
    Ok(openraft::raft::AppendEntriesRequest {
        vote: vote(u)?,
        prev_log_id: opt_log_id(u)?,
        entries,
        leader_commit: opt_log_id(u)?,
    })
}

pub fn vote_request(u: &mut Unstructured) -> Result<openraft::raft::VoteRequest<TypeConfig>> {
    let mut r = openraft::raft::VoteRequest::new(vote(u)?, opt_log_id(u)?);
    r.leadership_transfer = u.arbitrary()?;
    Ok(r)
}

pub fn transfer_leader(u: &mut Unstructured) -> Result<openraft::raft::TransferLeaderRequest<TypeConfig>> {
    Ok(openraft::raft::TransferLeaderRequest::new(vote(u)?, node_id(u)?, opt_log_id(u)?))
}

pub fn snapshot(u: &mut Unstructured) -> Result<replog_node::raft_net::SnapshotChunkPayload> {
    let meta = SnapshotMeta {
        last_log_id: opt_log_id(u)?,
        last_membership: StoredMembership::new(opt_log_id(u)?, membership(u)?),
    };
    let offset = u.arbitrary()?;
    let n = u.int_in_range(0..=1024)?.min(u.len());
    Ok((vote(u)?, meta, offset, u.bytes(n)?.to_vec(), u.arbitrary()?))
}
