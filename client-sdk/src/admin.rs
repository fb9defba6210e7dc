//! Consumer-group administration and offset lookups, as methods of
//! [`Client`]: where a group is coordinated, its members and committed
//! offsets, listing, resetting and deleting groups, and the offset of a
//! partition by position or by time.
//!
//! A group lives in one partition of the internal topic
//! [`GROUPS_TOPIC`]; that partition's leader is the group's coordinator.
//! Group calls are routed like any partition request — to the leader of
//! that partition, following NOT_LEADER hints — so a coordinator failover
//! costs a retry, not an error.

use std::fmt;
use std::time::Duration;

use replog_proto::pb;

use crate::client::{Call, Client};
use crate::error::{Error, Result};
use crate::group::Assignor;

/// The internal topic whose partitions keep consumer groups.
pub const GROUPS_TOPIC: &str = "__consumer_offsets";

/// One partition of one topic.
///
/// ```
/// use replog_client::TopicPartition;
/// let tp = TopicPartition::new("orders", 3);
/// assert_eq!(tp.to_string(), "orders/3");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: u32) -> TopicPartition {
        TopicPartition { topic: topic.into(), partition }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Which offset of a partition [`Client::list_offsets`] looks up.
///
/// ```no_run
/// # async fn f(client: replog_client::Client) -> replog_client::Result<()> {
/// use replog_client::OffsetSpec;
/// let first = client.list_offsets("orders", 0, OffsetSpec::Earliest).await?.offset;
/// let end = client.list_offsets("orders", 0, OffsetSpec::Latest).await?.offset;
/// let an_hour_ago = replog_client::now_ms() - 3_600_000;
/// let since = client.list_offsets("orders", 0, OffsetSpec::Timestamp(an_hour_ago)).await?.offset;
/// assert!(first <= since && since <= end);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first retained offset (the log start).
    Earliest,
    /// The high watermark: where the next record will go.
    Latest,
    /// The first record whose timestamp (ms since the epoch) is at or after
    /// this one; the high watermark when there is none.
    Timestamp(i64),
}

/// The answer of [`Client::list_offsets`].
///
/// ```no_run
/// # async fn f(client: replog_client::Client) -> replog_client::Result<()> {
/// let o = client.list_offsets("orders", 0, replog_client::OffsetSpec::Timestamp(1_700_000_000_000)).await?;
/// match o.timestamp_ms {
///     Some(ts) => println!("first record at or after: offset {} (timestamp {ts})", o.offset),
///     None => println!("no record that late; the end is {}", o.offset),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ListedOffset {
    pub offset: u64,
    /// The timestamp of the record found by [`OffsetSpec::Timestamp`];
    /// `None` for the other specs and when no record is that late.
    pub timestamp_ms: Option<i64>,
    pub log_start_offset: u64,
    pub high_watermark: u64,
}

/// An offset to commit (or to reset a group to) for one partition.
///
/// ```
/// let o = replog_client::OffsetCommit::new("orders", 0, 42).with_metadata("batch 7");
/// assert_eq!((o.offset, o.metadata.as_str()), (42, "batch 7"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: u32,
    /// The next offset to consume: one past the last record processed.
    pub offset: u64,
    /// Free text stored with the offset (at most 4 KiB).
    pub metadata: String,
}

impl OffsetCommit {
    pub fn new(topic: impl Into<String>, partition: u32, offset: u64) -> OffsetCommit {
        OffsetCommit { topic: topic.into(), partition, offset, metadata: String::new() }
    }

    pub fn with_metadata(mut self, metadata: impl Into<String>) -> OffsetCommit {
        self.metadata = metadata.into();
        self
    }

    fn to_pb(&self) -> pb::OffsetCommit {
        pb::OffsetCommit {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            metadata: self.metadata.clone(),
        }
    }
}

/// An offset a group committed.
///
/// ```no_run
/// # async fn f(client: replog_client::Client) -> replog_client::Result<()> {
/// for c in client.committed_offsets("billing", &[]).await? {
///     println!("{}/{} at {} ({:?})", c.topic, c.partition, c.offset, c.metadata);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub metadata: String,
    /// When it was committed, by the coordinator's clock (ms since the epoch).
    pub commit_timestamp_ms: i64,
}

impl From<pb::CommittedOffset> for CommittedOffset {
    fn from(c: pb::CommittedOffset) -> Self {
        CommittedOffset {
            topic: c.topic,
            partition: c.partition,
            offset: c.offset,
            metadata: c.metadata,
            commit_timestamp_ms: c.commit_timestamp_ms,
        }
    }
}

/// Where a group is coordinated.
///
/// ```no_run
/// # async fn f(client: replog_client::Client) -> replog_client::Result<()> {
/// let c = client.find_coordinator("billing").await?;
/// println!("__consumer_offsets/{} led by node {:?}", c.partition, c.node_id);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Coordinator {
    /// The partition of [`GROUPS_TOPIC`] that keeps the group.
    pub partition: u32,
    /// Its leader, the coordinator; `None` while it has none.
    pub node_id: Option<u64>,
    pub addr: Option<String>,
}

/// A member of a group, as [`Client::describe_group`] shows it.
///
/// ```no_run
/// # async fn f(client: replog_client::Client) -> replog_client::Result<()> {
/// for m in client.describe_group("billing").await?.members {
///     println!("{} ({}) holds {:?}", m.member_id, m.client_id, m.assignment);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupMemberInfo {
    pub member_id: String,
    pub client_id: String,
    /// What the coordinator assigns it (partitions moving to it are its own
    /// once their previous owner let go).
    pub assignment: Vec<TopicPartition>,
    pub last_heartbeat_ms_ago: u64,
}

/// A group: members, assignment, committed offsets.
///
/// ```no_run
/// # async fn f(client: replog_client::Client) -> replog_client::Result<()> {
/// let g = client.describe_group("billing").await?;
/// println!("{} is {} in generation {} with {} members", g.group, g.state, g.generation, g.members.len());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupDescription {
    pub group: String,
    /// `stable` (it has members) or `empty` (offsets only).
    pub state: String,
    pub generation: u64,
    pub assignor: Assignor,
    pub topics: Vec<String>,
    pub members: Vec<GroupMemberInfo>,
    pub offsets: Vec<CommittedOffset>,
}

/// One group in [`Client::list_groups`].
///
/// ```no_run
/// # async fn f(client: replog_client::Client) -> replog_client::Result<()> {
/// for g in client.list_groups().await? {
///     println!("{} {} ({} members)", g.group, g.state, g.members);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupListing {
    pub group: String,
    pub state: String,
    pub members: u32,
}

pub(crate) fn partitions_of(a: &[pb::TopicPartitions]) -> Vec<TopicPartition> {
    a.iter().flat_map(|t| t.partitions.iter().map(|p| TopicPartition::new(t.topic.clone(), *p))).collect()
}

pub(crate) fn to_pb_partitions<'a>(tps: impl IntoIterator<Item = &'a TopicPartition>) -> Vec<pb::TopicPartitions> {
    let mut by_topic: std::collections::BTreeMap<&str, Vec<u32>> = Default::default();
    for tp in tps {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    by_topic.into_iter().map(|(t, partitions)| pb::TopicPartitions { topic: t.to_string(), partitions }).collect()
}

impl Client {
    /// The offset of `topic`/`partition` by position or time, at its leader.
    pub async fn list_offsets(&self, topic: &str, partition: u32, spec: OffsetSpec) -> Result<ListedOffset> {
        let (spec_pb, ts) = match spec {
            OffsetSpec::Earliest => (pb::OffsetSpec::Earliest, 0),
            OffsetSpec::Latest => (pb::OffsetSpec::Latest, 0),
            OffsetSpec::Timestamp(ts) => (pb::OffsetSpec::Timestamp, ts),
        };
        let timeout = self.config().request_timeout;
        let r = self
            .at_leader(topic, partition, Call::Read, |mut c, _| {
                let mut req = tonic::Request::new(pb::ListOffsetsRequest {
                    topic: topic.to_string(),
                    partition,
                    spec: spec_pb as i32,
                    timestamp_ms: ts,
                });
                req.set_timeout(timeout);
                async move { c.list_offsets(req).await }
            })
            .await?;
        Ok(ListedOffset {
            offset: r.offset,
            timestamp_ms: (spec_pb == pb::OffsetSpec::Timestamp && r.timestamp_ms >= 0).then_some(r.timestamp_ms),
            log_start_offset: r.log_start_offset,
            high_watermark: r.high_watermark,
        })
    }

    /// Where `group` is coordinated. The first call in a cluster creates
    /// the internal groups topic.
    pub async fn find_coordinator(&self, group: &str) -> Result<Coordinator> {
        // Creating the internal topic on first use waits for its partitions
        // to elect leaders.
        let timeout = self.config().request_timeout + Duration::from_secs(20);
        let r = self
            .any_node(Call::Read, |mut c, _| {
                let mut req = tonic::Request::new(pb::FindCoordinatorRequest { group: group.to_string() });
                req.set_timeout(timeout);
                async move { c.find_coordinator(req).await }
            })
            .await?;
        Ok(Coordinator {
            partition: r.partition,
            node_id: (r.node_id != 0).then_some(r.node_id),
            addr: (!r.addr.is_empty()).then_some(r.addr),
        })
    }

    /// Runs a group request at the coordinator — the leader of the group's
    /// partition of [`GROUPS_TOPIC`] — retrying NOT_LEADER and transport
    /// errors until `deadline`.
    pub(crate) async fn group_call<T, F, Fut>(&self, partition: u32, call: Call, deadline: Duration, f: F) -> Result<T>
    where
        F: Fn(crate::client::Conn) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.at_leader_within(GROUPS_TOPIC, partition, call, deadline, |c, _| f(c)).await
    }

    async fn on_coordinator<T, F, Fut>(&self, group: &str, call: Call, f: F) -> Result<T>
    where
        F: Fn(crate::client::Conn) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let partition = self.find_coordinator(group).await?.partition;
        self.group_call(partition, call, self.config().retry_deadline, f).await
    }

    /// Members, their assignment and the committed offsets of `group`
    /// (UNKNOWN_GROUP if it does not exist).
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let timeout = self.config().request_timeout;
        let r = self
            .on_coordinator(group, Call::Read, |mut c| {
                let mut req = tonic::Request::new(pb::DescribeGroupRequest { group: group.to_string() });
                req.set_timeout(timeout);
                async move { c.describe_group(req).await }
            })
            .await?;
        Ok(GroupDescription {
            group: r.group,
            state: r.state,
            generation: r.generation,
            assignor: Assignor::from_pb(r.strategy),
            topics: r.topics,
            members: r
                .members
                .into_iter()
                .map(|m| GroupMemberInfo {
                    member_id: m.member_id,
                    client_id: m.client_id,
                    assignment: partitions_of(&m.assignment),
                    last_heartbeat_ms_ago: m.last_heartbeat_ms_ago,
                })
                .collect(),
            offsets: r.offsets.into_iter().map(CommittedOffset::from).collect(),
        })
    }

    /// Every consumer group of the cluster, by name.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let infos = self.refresh_metadata(&[GROUPS_TOPIC.to_string()]).await?;
        let Some(topic) = infos.into_iter().find(|t| t.name == GROUPS_TOPIC) else {
            return Ok(Vec::new()); // no group was ever used
        };
        let timeout = self.config().request_timeout;
        let mut out = Vec::new();
        for p in &topic.partitions {
            let partition = p.partition;
            let r = self
                .group_call(partition, Call::Read, self.config().retry_deadline, |mut c| {
                    let mut req = tonic::Request::new(pb::ListGroupsRequest { partition });
                    req.set_timeout(timeout);
                    async move { c.list_groups(req).await }
                })
                .await?;
            out.extend(r.groups.into_iter().map(|g| GroupListing {
                group: g.group,
                state: g.state,
                members: g.members,
            }));
        }
        out.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(out)
    }

    /// Committed offsets of `group` for `partitions` (all when empty).
    pub async fn committed_offsets(&self, group: &str, partitions: &[TopicPartition]) -> Result<Vec<CommittedOffset>> {
        let partition = self.find_coordinator(group).await?.partition;
        self.committed_at(partition, group, partitions).await
    }

    pub(crate) async fn committed_at(
        &self,
        coordinator_partition: u32,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<CommittedOffset>> {
        let timeout = self.config().request_timeout;
        let wanted = to_pb_partitions(partitions);
        let r = self
            .group_call(coordinator_partition, Call::Read, self.config().retry_deadline, |mut c| {
                let mut req = tonic::Request::new(pb::FetchOffsetsRequest {
                    group: group.to_string(),
                    partitions: wanted.clone(),
                });
                req.set_timeout(timeout);
                async move { c.fetch_offsets(req).await }
            })
            .await?;
        Ok(r.offsets.into_iter().map(CommittedOffset::from).collect())
    }

    /// Sets committed offsets of a group that has no members — backwards
    /// too: the one way a committed offset moves back. A group with members
    /// is refused with GROUP_NOT_EMPTY; stop its consumers first.
    pub async fn reset_offsets(&self, group: &str, offsets: &[OffsetCommit]) -> Result<()> {
        if offsets.is_empty() {
            return Err(Error::InvalidArgument("a reset needs at least one offset".into()));
        }
        let timeout = self.config().request_timeout;
        let offsets: Vec<pb::OffsetCommit> = offsets.iter().map(OffsetCommit::to_pb).collect();
        self.on_coordinator(group, Call::Write, |mut c| {
            let mut req =
                tonic::Request::new(pb::ResetOffsetsRequest { group: group.to_string(), offsets: offsets.clone() });
            req.set_timeout(timeout);
            async move { c.reset_offsets(req).await }
        })
        .await?;
        Ok(())
    }

    /// Deletes a group without members and its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let timeout = self.config().request_timeout;
        self.on_coordinator(group, Call::Write, |mut c| {
            let mut req = tonic::Request::new(pb::DeleteGroupRequest { group: group.to_string() });
            req.set_timeout(timeout);
            async move { c.delete_group(req).await }
        })
        .await?;
        Ok(())
    }

    /// Commits offsets as member `member_id` of `group` in `generation`: the
    /// raw call under [`crate::GroupConsumer::commit`], for tools that keep
    /// group membership themselves. The coordinator refuses a member it
    /// does not know (UNKNOWN_MEMBER), a generation older than the member's
    /// assignment (STALE_GENERATION) and a partition not assigned to the
    /// member (PARTITION_NOT_ASSIGNED); a commit never moves an offset back.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        generation: u64,
        offsets: &[OffsetCommit],
    ) -> Result<()> {
        let partition = self.find_coordinator(group).await?.partition;
        self.commit_at(partition, group, member_id, generation, offsets).await
    }

    pub(crate) async fn commit_at(
        &self,
        coordinator_partition: u32,
        group: &str,
        member_id: &str,
        generation: u64,
        offsets: &[OffsetCommit],
    ) -> Result<()> {
        let timeout = self.config().request_timeout;
        let offsets: Vec<pb::OffsetCommit> = offsets.iter().map(OffsetCommit::to_pb).collect();
        self.group_call(coordinator_partition, Call::Write, self.config().retry_deadline, |mut c| {
            let mut req = tonic::Request::new(pb::CommitOffsetsRequest {
                group: group.to_string(),
                member_id: member_id.to_string(),
                generation,
                offsets: offsets.clone(),
            });
            req.set_timeout(timeout);
            async move { c.commit_offsets(req).await }
        })
        .await?;
        Ok(())
    }
}
