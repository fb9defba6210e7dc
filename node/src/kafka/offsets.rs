//! OffsetCommit (v2–8) and OffsetFetch (v1–8, v8 for several groups at
//! once) on replog's committed offsets: the same offsets, committed through
//! Raft in the group's `__consumer_offsets` partition, that the SDK and
//! `replog group describe` read.
//!
//! A member commits what it holds (the coordinator's view, see
//! [`super::groups`]), and what it gave up when it last rejoined as long as
//! no other member holds it yet: an eager client commits the partitions it
//! revokes as it rejoins. A commit with generation -1 and no member id (a
//! consumer outside any group, or a tool) sets offsets of a group without
//! members, like `replog group reset-offsets`. Committed offsets only move
//! forward while a group has members, as for the SDK.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError as K;
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequest;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequest;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId as KGroupId, TopicName};
use kafka_protocol::protocol::StrBytes;
use replog_raft_store::groups::{Committed, GroupCmd, MAX_COMMIT_METADATA, OffsetCommit};

use super::groups::{group_code, loaded};
use crate::node::Node;

pub async fn commit(node: &Node, req: OffsetCommitRequest, _version: i16) -> OffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let member = req.member_id.to_string();
    // (topic, partition, offset, metadata), in request order, and the
    // answer for each.
    let mut wanted = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default();
            wanted.push((t.name.clone(), p.partition_index, p.committed_offset, metadata));
        }
    }
    let mut codes: Vec<i16> = vec![0; wanted.len()];
    match check_commit(node, &group, &member, req.generation_id_or_member_epoch, &wanted, &mut codes).await {
        Ok(()) => {}
        Err(code) => codes.iter_mut().filter(|c| **c == 0).for_each(|c| *c = code),
    }
    let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
    for ((name, index, _, _), code) in wanted.into_iter().zip(codes) {
        let p = OffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(code);
        match topics.iter_mut().find(|t| t.name == name) {
            Some(t) => t.partitions.push(p),
            None => topics.push(OffsetCommitResponseTopic::default().with_name(name).with_partitions(vec![p])),
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}

/// Checks and proposes the commit; per-partition refusals go into `codes`,
/// a refusal of the whole request is the error.
async fn check_commit(
    node: &Node,
    group: &str,
    member: &str,
    generation: i32,
    wanted: &[(TopicName, i32, i64, String)],
    codes: &mut [i16],
) -> Result<(), i16> {
    let (part, st) = loaded(node, group).await?;
    let simple = member.is_empty() && generation < 0;
    if !simple {
        super::groups::check_member(node, part.group(), group, &st, member, generation)?;
    }
    let meta = node.meta();
    let owned = node.coordinator.owned(part.group(), group, member).unwrap_or_default();
    let released = super::groups::released(node, part.group(), group, member);
    let others = node.coordinator.held_by_others(part.group(), group, member, &st);
    let mut offsets = Vec::new();
    for (i, (name, index, offset, metadata)) in wanted.iter().enumerate() {
        let topic = name.0.as_str();
        let known = meta.topics.get(topic).is_some_and(|t| (0..t.partitions.len() as i32).contains(index));
        codes[i] = if !known {
            K::UnknownTopicOrPartition.code()
        } else if metadata.len() > MAX_COMMIT_METADATA {
            K::OffsetMetadataTooLarge.code()
        } else if *offset < 0 {
            K::InvalidCommitOffsetSize.code()
        } else if simple {
            0
        } else {
            let p = *index as u32;
            let holds = owned.get(topic).is_some_and(|ps| ps.contains(&p));
            let gave_up =
                released.get(topic).is_some_and(|ps| ps.contains(&p)) && !others.contains(&(topic.to_string(), p));
            // Another member consumes it now (or it never was this one's).
            if holds || gave_up { 0 } else { K::IllegalGeneration.code() }
        };
        if codes[i] == 0 {
            offsets.push(OffsetCommit {
                topic: topic.to_string(),
                partition: *index as u32,
                offset: *offset as u64,
                metadata: metadata.clone(),
            });
        }
    }
    if offsets.is_empty() {
        return Ok(());
    }
    let now_ms = replog_proto::now_ms();
    let cmd = if simple {
        GroupCmd::Reset { group: group.to_string(), offsets, now_ms }
    } else {
        GroupCmd::CommitHeld { group: group.to_string(), member_id: member.to_string(), offsets, now_ms }
    };
    part.propose_group(cmd).await.map(|_| ()).map_err(|e| match e {
        // Offsets of a group with members are theirs to commit.
        crate::error::NodeError::Rejected(replog_raft_store::Rejection::GroupNotEmpty(_)) => K::UnknownMemberId.code(),
        e => group_code(&e),
    })
}

/// One group's committed offsets for `topics` (all it has when `None`), or
/// the group's error.
type Fetched = Result<Vec<(String, Vec<(i32, Option<Committed>)>)>, i16>;

async fn fetch_group(node: &Node, group: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> Fetched {
    let (part, _) = loaded(node, group).await?;
    let committed = part.committed(group).map_err(|e| group_code(&e))?;
    let mut by_topic: BTreeMap<String, BTreeMap<u32, Committed>> = BTreeMap::new();
    for (t, p, c) in committed {
        by_topic.entry(t).or_default().insert(p, c);
    }
    Ok(match topics {
        None => by_topic
            .into_iter()
            .map(|(t, ps)| (t, ps.into_iter().map(|(p, c)| (p as i32, Some(c))).collect()))
            .collect(),
        Some(wanted) => wanted
            .into_iter()
            .map(|(t, ps)| {
                let have = by_topic.get(&t);
                let ps = ps
                    .into_iter()
                    .map(|p| (p, u32::try_from(p).ok().and_then(|p| have.and_then(|h| h.get(&p)).cloned())))
                    .collect();
                (t, ps)
            })
            .collect(),
    })
}

fn offset_of(c: &Option<Committed>) -> (i64, Option<StrBytes>) {
    match c {
        Some(c) => (c.offset as i64, Some(StrBytes::from_string(c.metadata.clone()))),
        None => (-1, Some(StrBytes::default())),
    }
}

pub async fn fetch(node: &Node, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in req.groups {
            let topics =
                g.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
            let answer = match fetch_group(node, g.group_id.0.as_str(), topics).await {
                Ok(ts) => OffsetFetchResponseGroup::default().with_topics(
                    ts.into_iter()
                        .map(|(t, ps)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(StrBytes::from_string(t)))
                                .with_partitions(
                                    ps.iter()
                                        .map(|(p, c)| {
                                            let (offset, metadata) = offset_of(c);
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(*p)
                                                .with_committed_offset(offset)
                                                .with_committed_leader_epoch(-1)
                                                .with_metadata(metadata)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
                Err(code) => OffsetFetchResponseGroup::default().with_error_code(code),
            };
            groups.push(answer.with_group_id(KGroupId(g.group_id.0)));
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
    let asked: Vec<(String, Vec<i32>)> = topics.clone().unwrap_or_default();
    match fetch_group(node, req.group_id.0.as_str(), topics).await {
        Ok(ts) => OffsetFetchResponse::default().with_topics(
            ts.into_iter()
                .map(|(t, ps)| {
                    OffsetFetchResponseTopic::default().with_name(TopicName(StrBytes::from_string(t))).with_partitions(
                        ps.iter()
                            .map(|(p, c)| {
                                let (offset, metadata) = offset_of(c);
                                let r = OffsetFetchResponsePartition::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(offset)
                                    .with_metadata(metadata);
                                if version >= 5 { r.with_committed_leader_epoch(-1) } else { r }
                            })
                            .collect(),
                    )
                })
                .collect(),
        ),
        // v1 has no top-level error: each partition asked for carries it.
        Err(code) if version < 2 => OffsetFetchResponse::default().with_topics(
            asked
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchResponseTopic::default().with_name(TopicName(StrBytes::from_string(t))).with_partitions(
                        ps.into_iter()
                            .map(|p| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(-1)
                                    .with_metadata(Some(StrBytes::default()))
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
                })
                .collect(),
        ),
        Err(code) => OffsetFetchResponse::default().with_error_code(code),
    }
}
