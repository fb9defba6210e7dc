//! Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup) on replog's own consumer groups (docs/kafka.md, "Consumer
//! groups"): a Kafka member is a member of the replicated group like an
//! SDK member, so one group can mix both kinds and `replog group describe`
//! lists them all.
//!
//! - **Assignment is the server's.** JoinGroup proposes the same `Join` as
//!   the SDK's (the subscription read from the member's
//!   ConsumerProtocolSubscription); the group's assignor decides, and
//!   SyncGroup answers each member its part as a
//!   ConsumerProtocolAssignment. The leader still gets the members'
//!   metadata and may send a proposal; it is not used.
//! - **Generation = the replicated group's generation.** Any change of
//!   membership or assignment (an SDK member too) raises it; a Kafka member
//!   of an older generation is told REBALANCE_IN_PROGRESS on its next
//!   heartbeat and rejoins.
//! - **Eager rounds.** A JoinGroup waits until every Kafka member of the
//!   group has rejoined (or, past the rebalance timeout, is expired), so
//!   they all come out with one generation, as in Kafka. What rounds and
//!   generations each Kafka member went through is kept in memory at the
//!   coordinator ([`KafkaGroups`]), beside the liveness [`Coordinator`]
//!   keeps: like heartbeats, none of it goes through Raft.
//! - **Safe revocation.** An eager client gives up every partition before it
//!   sends JoinGroup, so a join clears what the member owns; SyncGroup
//!   grants only what no other member still owns (the hand-over rule of
//!   [`Coordinator::grant`]). A member granted less than its assignment is
//!   sent REBALANCE_IN_PROGRESS once the rest is free, and rejoins for it.
//!
//! [`Coordinator`]: crate::coordinator::Coordinator
//! [`Coordinator::grant`]: crate::coordinator::Coordinator::grant

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError as K;
use kafka_protocol::messages::consumer_protocol_assignment::{ConsumerProtocolAssignment, TopicPartition};
use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::join_group_request::JoinGroupRequest;
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::leave_group_request::LeaveGroupRequest;
use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::sync_group_request::SyncGroupRequest;
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use kafka_protocol::messages::{RequestHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use replog_raft_store::GroupId;
use replog_raft_store::groups::{Assignment, GroupCmd, GroupResult, GroupState, Strategy};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::error::NodeError;
use crate::node::Node;
use crate::partition::Partition;
use crate::service::group::coordinator;

/// The only protocol type served: consumers, whose subscription and
/// assignment formats the coordinator reads and writes.
pub const CONSUMER: &str = "consumer";
/// The incremental cooperative protocol, which this coordinator does not
/// speak (members are told to give up everything on a rebalance).
const COOPERATIVE: &str = "cooperative-sticky";
/// How long a group request waits for the coordinator to have applied
/// everything committed (a new leader loading its groups).
const LOAD_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting JoinGroup checks whether its round is complete.
const ROUND_TICK: Duration = Duration::from_millis(100);
/// The highest ConsumerProtocolSubscription version the codec knows; later
/// ones only append fields, so they are read as this.
const SUBSCRIPTION_MAX: i16 = 3;

/// What the coordinator keeps in memory about the Kafka members of the
/// groups it coordinates: their protocols, the generation each was last
/// given, and the open rebalance round of each group.
#[derive(Default)]
pub struct KafkaGroups {
    groups: Mutex<HashMap<(GroupId, String), KGroup>>,
}

#[derive(Default)]
struct KGroup {
    members: BTreeMap<String, KMember>,
    round: Option<Round>,
    /// The leader of the last completed round.
    leader: Option<String>,
    /// The protocol chosen in the last completed round.
    protocol: Option<String>,
    /// JoinGroups whose `Join` is being proposed: the member may already be
    /// in the replicated group but not yet here, so no round completes.
    proposing: usize,
    /// Member ids handed out with MEMBER_ID_REQUIRED (KIP-394) and not yet
    /// joined, until when they may.
    expected: HashMap<String, Instant>,
}

struct KMember {
    /// `(name, metadata)` as the member listed them in its JoinGroup.
    protocols: Vec<(String, Bytes)>,
    /// The generation given in the member's last JoinGroup answer, and the
    /// one before (a commit of what it gave up may carry that one).
    generation: u64,
    previous: u64,
    /// Whether it has synced since its last join.
    synced: bool,
    /// What it gave up when it last joined, which it may still commit
    /// while no other member holds it.
    released: Assignment,
}

struct Round {
    deadline: Instant,
    waiting: BTreeMap<String, oneshot::Sender<Joined>>,
}

/// A completed round, as one member's JoinGroup answer.
#[derive(Debug, Clone)]
struct Joined {
    generation: u64,
    protocol: String,
    leader: String,
    /// Every member's metadata, for the leader only.
    members: Vec<(String, Bytes)>,
}

/// Where a round stands.
enum Check {
    Done,
    Waiting,
    /// Past the deadline: these members never rejoined.
    Laggards(Vec<String>),
}

impl KafkaGroups {
    fn with<R>(&self, part: GroupId, group: &str, f: impl FnOnce(&mut KGroup) -> R) -> R {
        let mut g = self.groups.lock().expect("kafka groups lock");
        f(g.entry((part, group.to_string())).or_default())
    }

    /// A new member id for a first join, which may join as itself until
    /// `until`.
    fn expect_member(&self, part: GroupId, group: &str, id: String, until: Instant) {
        self.with(part, group, |g| {
            let now = Instant::now();
            g.expected.retain(|_, t| *t > now);
            g.expected.insert(id, until);
        });
    }

    /// Whether `id` was handed out here for a first join and may still join.
    fn expects(&self, part: GroupId, group: &str, id: &str) -> bool {
        self.with(part, group, |g| g.expected.get(id).is_some_and(|t| *t > Instant::now()))
    }

    /// Forgets Kafka members the replicated group no longer has (expired,
    /// left, or removed by a round's deadline).
    fn prune(&self, part: GroupId, group: &str, st: &GroupState) {
        self.with(part, group, |g| {
            g.members.retain(|id, _| st.members.contains_key(id));
            if let Some(r) = &mut g.round {
                r.waiting.retain(|id, _| st.members.contains_key(id));
            }
        });
    }

    /// Completes the round of `group` when every Kafka member has rejoined.
    fn check(&self, part: GroupId, group: &str, st: &GroupState) -> Check {
        self.prune(part, group, st);
        self.with(part, group, |g| {
            let Some(round) = &g.round else { return Check::Done };
            if g.proposing > 0 {
                return Check::Waiting;
            }
            let missing: Vec<String> = g.members.keys().filter(|id| !round.waiting.contains_key(*id)).cloned().collect();
            if !missing.is_empty() {
                return if Instant::now() >= round.deadline { Check::Laggards(missing) } else { Check::Waiting };
            }
            let round = g.round.take().expect("round");
            let ids: Vec<&String> = round.waiting.keys().collect();
            let leader = g.leader.clone().filter(|l| round.waiting.contains_key(l)).unwrap_or_else(|| ids[0].clone());
            let protocol = choose_protocol(&g.members, &leader);
            let members: Vec<(String, Bytes)> = ids
                .iter()
                .map(|id| {
                    let m = &g.members[*id];
                    let meta = m.protocols.iter().find(|(n, _)| *n == protocol).map(|(_, b)| b.clone());
                    ((*id).clone(), meta.unwrap_or_default())
                })
                .collect();
            for (id, tx) in round.waiting {
                let m = g.members.get_mut(&id).expect("waiting member");
                if m.generation != st.generation {
                    m.previous = m.generation;
                }
                m.generation = st.generation;
                m.synced = false;
                let _ = tx.send(Joined {
                    generation: st.generation,
                    protocol: protocol.clone(),
                    leader: leader.clone(),
                    members: if id == leader { members.clone() } else { Vec::new() },
                });
            }
            info!(group, generation = st.generation, leader = %leader, protocol = %protocol, "kafka group round complete");
            g.leader = Some(leader);
            g.protocol = Some(protocol);
            Check::Done
        })
    }

    /// Forgets `group` once it has no Kafka member and nothing in flight.
    fn tidy(&self, part: GroupId, group: &str) {
        let mut g = self.groups.lock().expect("kafka groups lock");
        let key = (part, group.to_string());
        if g.get(&key).is_some_and(|k| k.members.is_empty() && k.round.is_none() && k.proposing == 0) {
            g.remove(&key);
        }
    }

    fn round_open(&self, part: GroupId, group: &str) -> bool {
        self.with(part, group, |g| g.round.is_some())
    }
}

/// The protocol every member lists, in the leader's order of preference.
fn choose_protocol(members: &BTreeMap<String, KMember>, leader: &str) -> String {
    let Some(l) = members.get(leader) else { return String::new() };
    l.protocols
        .iter()
        .map(|(n, _)| n)
        .find(|n| members.values().all(|m| m.protocols.iter().any(|(x, _)| x == *n)))
        .or_else(|| l.protocols.first().map(|(n, _)| n))
        .cloned()
        .unwrap_or_default()
}

/// The Kafka error code for a replog error met by a group request: a node
/// that does not lead the group's partition is not its coordinator; one
/// that leads it but cannot yet answer from its state is loading.
pub fn group_code(e: &NodeError) -> i16 {
    match e {
        NodeError::NotLeader { .. } => K::NotCoordinator.code(),
        NodeError::Unavailable(_) | NodeError::Timeout(_) => K::CoordinatorLoadInProgress.code(),
        // The groups topic does not exist yet (no FindCoordinator so far).
        NodeError::UnknownGroup(_) => K::CoordinatorNotAvailable.code(),
        NodeError::InvalidRequest(_) => K::InvalidGroupId.code(),
        NodeError::Rejected(r) => match r {
            // A group that does not exist has no such member.
            replog_raft_store::Rejection::UnknownMember(_) | replog_raft_store::Rejection::UnknownGroup(_) => {
                K::UnknownMemberId.code()
            }
            replog_raft_store::Rejection::StaleGeneration(_) | replog_raft_store::Rejection::NotAssigned(_) => {
                K::IllegalGeneration.code()
            }
            replog_raft_store::Rejection::InvalidRequest(_) => K::InvalidRequest.code(),
            replog_raft_store::Rejection::GroupNotEmpty(_) => K::NonEmptyGroup.code(),
            _ => K::UnknownServerError.code(),
        },
        _ => super::errors::code(e),
    }
}

/// How long a waiting JoinGroup tolerates this node leading the group's
/// partition without its lease (a busy node, a slow majority) before it
/// answers NOT_COORDINATOR.
const LEASE_GRACE: Duration = Duration::from_secs(2);
/// How often a request waiting for the lease to come back looks again.
const LEASE_POLL: Duration = Duration::from_millis(50);

/// The coordinator partition of `group` for requests that change nothing
/// replicated (Heartbeat, a waiting JoinGroup): led here by Raft's own
/// account, even while the lease that writes need has lapsed for a moment
/// (answering NOT_COORDINATOR then would send every member looking for a
/// coordinator that is still this node).
fn coordinating(node: &Node, group: &str) -> Result<Arc<Partition>, NodeError> {
    match coordinator(node, group) {
        Err(NodeError::NotLeader { what, leader }) => {
            let p = crate::service::group::coordinator_partition(node, group);
            match p.and_then(|p| node.local_partition(crate::coordinator::GROUPS_TOPIC, p).ok()) {
                Some(part) if part.led_here() => Ok(part),
                _ => Err(NodeError::NotLeader { what, leader }),
            }
        }
        r => r,
    }
}

/// The coordinator partition of `group`, led here, with its groups loaded
/// (a ReadIndex round: everything committed is applied). A node that leads
/// the partition by Raft's account but has lost its lease for a moment (a
/// busy node, a slow majority) waits for it rather than sending the client
/// to look for another coordinator: NOT_COORDINATOR only where another node
/// leads or none does, COORDINATOR_LOAD_IN_PROGRESS (the client retries
/// here) if it is not back within [`LOAD_WAIT`].
pub async fn loaded(node: &Node, group: &str) -> Result<(Arc<Partition>, GroupState), i16> {
    let deadline = Instant::now() + LOAD_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = match coordinator(node, group) {
            Ok(part) => match tokio::time::timeout(left, part.groups()).await {
                Ok(Ok(groups)) => {
                    node.coordinator.ensure(part.group(), &groups);
                    return Ok((part, groups.get(group).cloned().unwrap_or_default()));
                }
                Ok(Err(e)) => e,
                Err(_) => return Err(K::CoordinatorLoadInProgress.code()),
            },
            Err(e) => e,
        };
        if !matches!(e, NodeError::NotLeader { .. }) || coordinating(node, group).is_err() {
            return Err(group_code(&e));
        }
        if left.is_zero() {
            return Err(K::CoordinatorLoadInProgress.code());
        }
        tokio::time::sleep(LEASE_POLL).await;
    }
}

/// The subscription a member sends as its protocol metadata.
pub fn subscription(metadata: &Bytes) -> Option<ConsumerProtocolSubscription> {
    let mut b = metadata.clone();
    if b.len() < 2 {
        return None;
    }
    let version = b.get_i16();
    if version < 0 {
        return None;
    }
    ConsumerProtocolSubscription::decode(&mut b, version.min(SUBSCRIPTION_MAX)).ok()
}

/// `assignment` as a ConsumerProtocolAssignment (version 0, which every
/// consumer reads).
pub fn encode_assignment(assignment: &Assignment) -> Bytes {
    let parts = assignment
        .iter()
        .map(|(t, ps)| {
            TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_string(t.clone())))
                .with_partitions(ps.iter().map(|p| *p as i32).collect())
        })
        .collect();
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(parts);
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    a.encode(&mut buf, 0).expect("a consumer assignment encodes");
    buf.freeze()
}

/// Kafka's assignor names mapped to replog's, for a group a Kafka member
/// creates (an existing group keeps its assignor).
fn strategy_for(protocol: &str) -> Strategy {
    match protocol {
        "range" => Strategy::Range,
        "roundrobin" => Strategy::RoundRobin,
        _ => Strategy::Uniform,
    }
}

fn join_error(version: i16, code: i16, member_id: StrBytes) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(code)
        .with_generation_id(-1)
        .with_member_id(member_id)
        .with_protocol_name(if version >= 7 { None } else { Some(StrBytes::default()) })
}

pub async fn join(node: &Node, header: &RequestHeader, req: JoinGroupRequest, version: i16) -> JoinGroupResponse {
    let group = req.group_id.0.to_string();
    let asked_id = req.member_id.clone();
    let fail = |code: i16| join_error(version, code, asked_id.clone());
    let (part, st) = match loaded(node, &group).await {
        Ok(x) => x,
        Err(code) => return fail(code),
    };
    if req.protocol_type.as_str() != CONSUMER {
        return fail(K::InconsistentGroupProtocol.code());
    }
    let protocols: Vec<(String, Bytes)> = req
        .protocols
        .iter()
        .filter(|p| p.name.as_str() != COOPERATIVE)
        .map(|p| (p.name.to_string(), p.metadata.clone()))
        .collect();
    let Some(sub) = protocols.first().and_then(|(_, m)| subscription(m)) else {
        return fail(K::InconsistentGroupProtocol.code());
    };
    let cfg = &node.config;
    let session = u32::try_from(req.session_timeout_ms).unwrap_or(0);
    if !(cfg.group_min_session_timeout_ms..=cfg.group_max_session_timeout_ms).contains(&session) {
        return fail(K::InvalidSessionTimeout.code());
    }
    let client_id = header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
    let client_id = if client_id.is_empty() { "kafka".to_string() } else { client_id };
    // KIP-394: a client that can take MEMBER_ID_REQUIRED (JoinGroup v4 on)
    // gets its member id before it is a member, and joins again with it.
    // A first join whose answer is lost (its coordinator died, the client
    // timed out) then leaves no member behind to hold partitions until its
    // session expires: the retry is the same member.
    if asked_id.is_empty() && version >= 4 {
        let id = format!("{client_id}-{}", uuid::Uuid::from_u128(rand::random()));
        let until = Instant::now() + Duration::from_millis(session as u64);
        node.kafka_groups.expect_member(part.group(), &group, id.clone(), until);
        return join_error(version, K::MemberIdRequired.code(), StrBytes::from_string(id));
    }
    let member_id = (!asked_id.is_empty()).then(|| asked_id.to_string());
    // A member id handed out here, joining for the first time.
    let first_join = member_id
        .as_ref()
        .is_some_and(|id| !st.members.contains_key(id) && node.kafka_groups.expects(part.group(), &group, id));
    if let Some(id) = &member_id
        && !st.members.contains_key(id)
        && !first_join
    {
        return fail(K::UnknownMemberId.code());
    }
    // Every Kafka member must share a protocol with the others.
    let shared = node.kafka_groups.with(part.group(), &group, |g| {
        g.members
            .iter()
            .filter(|(id, _)| Some(*id) != member_id.as_ref())
            .all(|(_, m)| m.protocols.iter().any(|(n, _)| protocols.iter().any(|(x, _)| x == n)))
    });
    if !shared {
        return fail(K::InconsistentGroupProtocol.code());
    }
    let meta = node.meta();
    let mut partitions = BTreeMap::new();
    for t in &sub.topics {
        if let Some(tm) = meta.topics.get(t.as_str())
            && !t.starts_with("__")
        {
            partitions.insert(t.to_string(), tm.partitions.len() as u32);
        }
    }
    let topics = partitions.keys().cloned().collect::<BTreeSet<_>>();
    let strategy = strategy_for(&protocols[0].0);
    let cmd = match member_id {
        Some(member_id) if first_join => GroupCmd::JoinAs {
            group: group.clone(),
            member_id,
            client_id,
            topics,
            partitions,
            strategy,
            session_timeout_ms: session,
        },
        member_id => GroupCmd::Join {
            group: group.clone(),
            member_id,
            client_id,
            topics,
            partitions,
            strategy,
            session_timeout_ms: session,
        },
    };
    node.kafka_groups.with(part.group(), &group, |g| g.proposing += 1);
    let joined = part.propose_group(cmd).await;
    let done = || node.kafka_groups.with(part.group(), &group, |g| g.proposing -= 1);
    let id = match joined {
        Ok(GroupResult::Joined { member_id, .. }) => member_id,
        Ok(_) => {
            done();
            return fail(K::UnknownServerError.code());
        }
        Err(e) => {
            done();
            return fail(group_code(&e));
        }
    };
    // An eager member gave up everything before joining.
    let released = node.coordinator.owned(part.group(), &group, &id).unwrap_or_default();
    node.coordinator.ensure(part.group(), &part.groups_here());
    node.coordinator.heard(part.group(), &group, &id, Some(Assignment::new()));
    let rebalance = Duration::from_millis(if version == 0 {
        session as u64
    } else {
        u64::try_from(req.rebalance_timeout_ms).unwrap_or(session as u64).max(session as u64)
    });
    let (tx, mut rx) = oneshot::channel();
    node.kafka_groups.with(part.group(), &group, |g| {
        let m = g.members.entry(id.clone()).or_insert_with(|| KMember {
            protocols: Vec::new(),
            generation: 0,
            previous: 0,
            synced: false,
            released: Assignment::new(),
        });
        m.protocols = protocols;
        m.synced = false;
        m.released = released;
        let deadline = Instant::now() + rebalance;
        let r = g.round.get_or_insert_with(|| Round { deadline, waiting: BTreeMap::new() });
        r.deadline = r.deadline.max(deadline);
        r.waiting.insert(id.clone(), tx);
        g.proposing -= 1;
    });
    info!(group = %group, member = %id, "kafka member joins");
    let member = StrBytes::from_string(id.clone());
    let mut unleased_since: Option<Instant> = None;
    loop {
        let leads = part.is_leader();
        unleased_since = if leads { None } else { unleased_since.or(Some(Instant::now())) };
        if !part.led_here() || unleased_since.is_some_and(|t| t.elapsed() > LEASE_GRACE) {
            // The client will join again (at the new coordinator); a
            // member this join created would only hold up rounds there.
            abandon(node, &part, &group, &id, asked_id.is_empty() || first_join).await;
            return join_error(version, K::NotCoordinator.code(), asked_id);
        }
        // A member waiting in JoinGroup does not heartbeat: its waiting
        // keeps it alive.
        node.coordinator.heard(part.group(), &group, &id, None);
        let st = part.groups_here().get(&group).cloned().unwrap_or_default();
        if !st.members.contains_key(&id) {
            return join_error(version, K::UnknownMemberId.code(), member);
        }
        if let Check::Laggards(ids) = node.kafka_groups.check(part.group(), &group, &st) {
            warn!(group = %group, members = ?ids, "kafka members did not rejoin within the rebalance timeout");
            if let Err(e) = part.propose_group(GroupCmd::Expire { group: group.clone(), member_ids: ids.clone() }).await
            {
                warn!(group = %group, "expiring kafka members: {e}");
            }
            for i in &ids {
                node.coordinator.forget(part.group(), &group, i);
            }
            node.kafka_groups.with(part.group(), &group, |g| g.members.retain(|m, _| !ids.contains(m)));
            continue;
        }
        match tokio::time::timeout(ROUND_TICK, &mut rx).await {
            Ok(Ok(j)) => {
                return JoinGroupResponse::default()
                    .with_generation_id(j.generation as i32)
                    .with_protocol_type(Some(StrBytes::from_static_str(CONSUMER)))
                    .with_protocol_name(Some(StrBytes::from_string(j.protocol)))
                    .with_leader(StrBytes::from_string(j.leader))
                    .with_member_id(member)
                    .with_members(
                        j.members
                            .into_iter()
                            .map(|(id, meta)| {
                                JoinGroupResponseMember::default()
                                    .with_member_id(StrBytes::from_string(id))
                                    .with_metadata(meta)
                            })
                            .collect(),
                    );
            }
            // Replaced by a newer JoinGroup of the same member.
            Ok(Err(_)) => return join_error(version, K::RebalanceInProgress.code(), member),
            Err(_) => {}
        }
    }
}

/// Takes `id` out of the round it waits in; a member this join created
/// (the client will get no id from it, and joins again without one) leaves
/// the group, best effort (if it stays, its session expires).
async fn abandon(node: &Node, part: &Partition, group: &str, id: &str, created: bool) {
    node.kafka_groups.with(part.group(), group, |g| {
        if let Some(r) = &mut g.round {
            r.waiting.remove(id);
        }
        if created {
            g.members.remove(id);
        }
    });
    if created {
        node.coordinator.forget(part.group(), group, id);
        let leave = GroupCmd::Leave { group: group.to_string(), member_id: id.to_string() };
        if let Err(e) = part.propose_group(leave).await {
            info!(group, member = id, "an abandoned kafka join's member stays until its session expires: {e}");
        }
    }
}

/// Membership and generation checks shared by SyncGroup, Heartbeat and
/// OffsetCommit. Registers a member this coordinator has not seen join
/// (it joined at a previous coordinator) at the generation it names, as
/// owning its assignment, as [`Coordinator`](crate::coordinator::Coordinator)
/// assumes when it takes over.
pub(super) fn check_member(
    node: &Node,
    part: GroupId,
    group: &str,
    st: &GroupState,
    member: &str,
    generation: i32,
) -> Result<(), i16> {
    if !st.members.contains_key(member) {
        return Err(K::UnknownMemberId.code());
    }
    let Ok(g) = u64::try_from(generation) else { return Err(K::IllegalGeneration.code()) };
    if g > st.generation {
        return Err(K::IllegalGeneration.code());
    }
    node.kafka_groups.with(part, group, |kg| {
        let m = kg.members.entry(member.to_string()).or_insert_with(|| KMember {
            protocols: Vec::new(),
            generation: g,
            previous: g,
            synced: true,
            released: Assignment::new(),
        });
        if g > m.generation {
            // Given by another coordinator in the meantime.
            m.previous = m.generation;
            m.generation = g;
            m.synced = true;
        }
        if g == m.generation || (g == m.previous && !m.synced) { Ok(()) } else { Err(K::IllegalGeneration.code()) }
    })
}

/// What `member` gave up when it last joined.
pub(super) fn released(node: &Node, part: GroupId, group: &str, member: &str) -> Assignment {
    node.kafka_groups.with(part, group, |g| g.members.get(member).map(|m| m.released.clone()).unwrap_or_default())
}

pub async fn sync(node: &Node, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let group = req.group_id.0.to_string();
    let member = req.member_id.to_string();
    let fail = |code: i16| SyncGroupResponse::default().with_error_code(code);
    let (part, st) = match loaded(node, &group).await {
        Ok(x) => x,
        Err(code) => return fail(code),
    };
    if !st.members.contains_key(&member) {
        return fail(K::UnknownMemberId.code());
    }
    let (known, generation, protocol) = node.kafka_groups.with(part.group(), &group, |g| {
        let m = g.members.get(&member);
        (m.is_some(), m.map_or(0, |m| m.generation), g.protocol.clone().unwrap_or_default())
    });
    if !known {
        // Joined at another coordinator: join here again.
        return fail(K::RebalanceInProgress.code());
    }
    if u64::try_from(req.generation_id).ok() != Some(generation) {
        return fail(K::IllegalGeneration.code());
    }
    if generation < st.generation || node.kafka_groups.round_open(part.group(), &group) {
        return fail(K::RebalanceInProgress.code());
    }
    if version >= 5
        && !protocol.is_empty()
        && req.protocol_name.as_ref().is_some_and(|p| !p.is_empty() && p.as_str() != protocol)
    {
        return fail(K::InconsistentGroupProtocol.code());
    }
    let granted = node.coordinator.grant(part.group(), &group, &member, &st);
    node.kafka_groups.with(part.group(), &group, |g| {
        if let Some(m) = g.members.get_mut(&member) {
            m.synced = true;
        }
    });
    info!(group = %group, member = %member, generation, ?granted, "kafka member synced");
    SyncGroupResponse::default()
        .with_protocol_type(Some(StrBytes::from_static_str(CONSUMER)))
        .with_protocol_name(Some(StrBytes::from_string(protocol)))
        .with_assignment(encode_assignment(&granted))
}

pub async fn heartbeat(node: &Node, req: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
    let group = req.group_id.0.to_string();
    let member = req.member_id.to_string();
    let code = heartbeat_code(node, &group, &member, req.generation_id);
    HeartbeatResponse::default().with_error_code(code)
}

fn heartbeat_code(node: &Node, group: &str, member: &str, generation: i32) -> i16 {
    let part = match coordinating(node, group) {
        Ok(p) => p,
        Err(e) => return group_code(&e),
    };
    // Membership as applied here, as for the SDK's heartbeats: only Raft
    // changes it, and a member removed a moment ago learns next time.
    let groups = part.groups_here();
    let st = groups.get(group).cloned().unwrap_or_default();
    node.coordinator.ensure(part.group(), &groups);
    if let Err(code) = check_member(node, part.group(), group, &st, member, generation) {
        return code;
    }
    node.coordinator.heard(part.group(), group, member, None);
    let (synced, stale) = node.kafka_groups.with(part.group(), group, |g| {
        g.members.get(member).map_or((false, true), |m| (m.synced, m.generation < st.generation))
    });
    if stale || !synced || node.kafka_groups.round_open(part.group(), group) {
        return K::RebalanceInProgress.code();
    }
    // Granted less than its assignment, and the rest is free now.
    let target = st.members.get(member).map(|m| m.assignment.clone()).unwrap_or_default();
    let owned = node.coordinator.owned(part.group(), group, member).unwrap_or_default();
    if owned != target && node.coordinator.grantable(part.group(), group, member, &st) == target {
        return K::RebalanceInProgress.code();
    }
    0
}

pub async fn leave(node: &Node, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group = req.group_id.0.to_string();
    let ids: Vec<StrBytes> = if version >= 3 {
        req.members.iter().map(|m| m.member_id.clone()).collect()
    } else {
        vec![req.member_id.clone()]
    };
    let (part, _) = match loaded(node, &group).await {
        Ok(x) => x,
        Err(code) => return LeaveGroupResponse::default().with_error_code(code),
    };
    let mut answers = Vec::with_capacity(ids.len());
    for id in ids {
        let member = id.to_string();
        let r = part.propose_group(GroupCmd::Leave { group: group.clone(), member_id: member.clone() }).await;
        node.coordinator.forget(part.group(), &group, &member);
        node.kafka_groups.with(part.group(), &group, |g| {
            g.members.remove(&member);
            if let Some(r) = &mut g.round {
                r.waiting.remove(&member);
            }
        });
        let code = match r {
            Ok(_) => {
                info!(group = %group, member = %member, "kafka member left");
                0
            }
            Err(e) => group_code(&e),
        };
        answers.push(MemberResponse::default().with_member_id(id).with_error_code(code));
    }
    node.kafka_groups.tidy(part.group(), &group);
    // A round may now be complete: the waiting members see it on their
    // next tick.
    if version >= 3 {
        LeaveGroupResponse::default().with_members(answers)
    } else {
        LeaveGroupResponse::default().with_error_code(answers.first().map_or(0, |a| a.error_code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_group_errors_then_kafka_clients_get_the_coordinator_codes() {
        let not_leader = NodeError::NotLeader { what: "g".into(), leader: None };
        assert_eq!(group_code(&not_leader), 16, "NOT_COORDINATOR");
        assert_eq!(group_code(&NodeError::Unavailable("catching up".into())), 14, "COORDINATOR_LOAD_IN_PROGRESS");
        assert_eq!(group_code(&NodeError::UnknownGroup("no topic yet".into())), 15);
        let unknown = NodeError::Rejected(replog_raft_store::Rejection::UnknownMember("m".into()));
        assert_eq!(group_code(&unknown), 25);
        let stale = NodeError::Rejected(replog_raft_store::Rejection::StaleGeneration("g".into()));
        assert_eq!(group_code(&stale), 22);
    }

    #[test]
    fn given_an_assignment_then_it_reads_back_as_a_consumer_assignment() {
        let a: Assignment = [("orders".to_string(), [0u32, 3, 5].into_iter().collect())].into_iter().collect();
        let mut b = encode_assignment(&a);
        assert_eq!(b.get_i16(), 0);
        let back = ConsumerProtocolAssignment::decode(&mut b, 0).unwrap();
        assert_eq!(back.assigned_partitions[0].topic.0.as_str(), "orders");
        assert_eq!(back.assigned_partitions[0].partitions, vec![0, 3, 5]);
    }

    #[test]
    fn given_subscriptions_of_any_version_then_their_topics_are_read() {
        for v in [0i16, 1, 3, 7] {
            let s = ConsumerProtocolSubscription::default()
                .with_topics(vec![StrBytes::from_static_str("a"), StrBytes::from_static_str("b")]);
            let mut buf = BytesMut::new();
            buf.put_i16(v);
            s.encode(&mut buf, v.min(SUBSCRIPTION_MAX)).unwrap();
            let got = subscription(&buf.freeze()).unwrap_or_else(|| panic!("v{v}"));
            assert_eq!(got.topics.len(), 2, "v{v}");
        }
        assert!(subscription(&Bytes::from_static(b"\xff")).is_none());
    }

    fn kmember(protocols: &[&str]) -> KMember {
        KMember {
            protocols: protocols.iter().map(|p| (p.to_string(), Bytes::new())).collect(),
            generation: 0,
            previous: 0,
            synced: false,
            released: Assignment::new(),
        }
    }

    fn state(generation: u64, members: &[&str]) -> GroupState {
        GroupState {
            generation,
            members: members.iter().map(|m| (m.to_string(), Default::default())).collect(),
            ..Default::default()
        }
    }

    /// Registers `id` as joined and waiting, as JoinGroup does.
    fn wait(k: &KafkaGroups, id: &str, deadline: Instant) -> oneshot::Receiver<Joined> {
        let (tx, rx) = oneshot::channel();
        k.with(1, "g", |g| {
            g.members.entry(id.to_string()).or_insert_with(|| kmember(&["range"]));
            g.round.get_or_insert_with(|| Round { deadline, waiting: BTreeMap::new() }).waiting.insert(id.into(), tx);
        });
        rx
    }

    #[test]
    fn given_a_round_then_it_completes_once_every_kafka_member_rejoined_with_one_generation() {
        let k = KafkaGroups::default();
        let later = Instant::now() + Duration::from_secs(60);
        let mut a = wait(&k, "a", later);
        assert!(matches!(k.check(1, "g", &state(3, &["a"])), Check::Done));
        let ja = a.try_recv().unwrap();
        assert_eq!((ja.generation, ja.leader.as_str(), ja.members.len()), (3, "a", 1));
        // b joins: the round waits for a, then answers both at generation 4,
        // the members' metadata to the leader only.
        let mut b = wait(&k, "b", later);
        assert!(matches!(k.check(1, "g", &state(4, &["a", "b"])), Check::Waiting));
        assert!(k.round_open(1, "g"));
        // A join being proposed holds the round too.
        k.with(1, "g", |g| g.proposing += 1);
        let mut a = wait(&k, "a", later);
        assert!(matches!(k.check(1, "g", &state(4, &["a", "b"])), Check::Waiting));
        k.with(1, "g", |g| g.proposing -= 1);
        assert!(matches!(k.check(1, "g", &state(4, &["a", "b"])), Check::Done));
        let (ja, jb) = (a.try_recv().unwrap(), b.try_recv().unwrap());
        assert_eq!((ja.generation, jb.generation), (4, 4));
        assert_eq!((ja.leader.as_str(), ja.members.len(), jb.members.len()), ("a", 2, 0));
        k.with(1, "g", |g| assert_eq!((g.members["a"].generation, g.members["a"].previous), (4, 3)));
    }

    #[test]
    fn given_a_member_that_never_rejoins_then_the_deadline_names_it_and_a_gone_one_does_not_hold_the_round() {
        let k = KafkaGroups::default();
        let now = Instant::now();
        k.with(1, "g", |g| {
            g.members.insert("gone".into(), kmember(&["range"]));
            g.members.insert("slow".into(), kmember(&["range"]));
        });
        let _c = wait(&k, "c", now);
        // "gone" left the replicated group: it is forgotten; "slow" is
        // still a member and past the deadline.
        match k.check(1, "g", &state(5, &["slow", "c"])) {
            Check::Laggards(ids) => assert_eq!(ids, vec!["slow".to_string()]),
            _ => panic!("the laggard is named"),
        }
        k.with(1, "g", |g| g.members.remove("slow"));
        assert!(matches!(k.check(1, "g", &state(6, &["c"])), Check::Done));
        k.with(1, "g", |g| g.members.clear());
        k.tidy(1, "g");
        assert!(k.groups.lock().unwrap().is_empty(), "an empty group is forgotten");
    }

    #[test]
    fn given_members_then_the_protocol_is_the_leaders_first_shared_one() {
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), kmember(&["range", "roundrobin"]));
        m.insert("b".to_string(), kmember(&["roundrobin"]));
        assert_eq!(choose_protocol(&m, "a"), "roundrobin");
        m.remove("b");
        assert_eq!(choose_protocol(&m, "a"), "range");
    }
}
