//! Consumer groups: membership, assignment and committed offsets, kept by the
//! state machine of the `__consumer_offsets` partition each group hashes to.
//!
//! What goes through Raft here is what must survive a coordinator failover:
//! who the members are, what each is assigned (so that a new coordinator
//! fences exactly the members the old one did) and every committed offset.
//! Heartbeats do not: the coordinator keeps liveness in memory and proposes
//! [`GroupCmd::Expire`] for members that went silent.
//!
//! Everything here is decided in `apply`, from the command and the state
//! alone, so every replica reaches the same groups: member ids are numbered
//! by the group, assignments are computed by deterministic assignors, and
//! the partition counts of subscribed topics travel inside the command.
//!
//! Committed offsets only move forward: a commit below the committed offset
//! (a late retry, a member that lost the partition a moment ago) leaves it
//! where it is. Only [`GroupCmd::Reset`] of a group without members moves
//! one back.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::Rejection;

/// Key prefix of a group's state in the state machine tree.
pub(crate) const GROUP_PREFIX: u8 = b'G';
/// Key prefix of committed offsets in the state machine tree.
pub(crate) const OFFSET_PREFIX: u8 = b'O';
/// Longest metadata string stored with a committed offset.
pub const MAX_COMMIT_METADATA: usize = 4096;
/// Longest group name.
pub const MAX_GROUP_NAME: usize = 249;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// Even spread, moving as few partitions as possible on a change.
    #[default]
    Uniform,
    /// Per topic, contiguous ranges to members in id order.
    Range,
    /// Every partition dealt to members in turn.
    RoundRobin,
}

/// Partitions per topic.
pub type Assignment = BTreeMap<String, BTreeSet<u32>>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub client_id: String,
    pub topics: BTreeSet<String>,
    pub session_timeout_ms: u32,
    pub assignment: Assignment,
    /// The generation in which `assignment` was last changed: commits of an
    /// older generation come from a member that has not seen it yet.
    pub assigned_generation: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// Grows with every change of membership or assignment.
    pub generation: u64,
    pub strategy: Strategy,
    /// Partition count of every topic some member subscribes to.
    pub topics: BTreeMap<String, u32>,
    pub members: BTreeMap<String, Member>,
    /// Numbers new member ids, so that ids are the same on every replica.
    pub next_member: u64,
}

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: u64,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub metadata: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCmd {
    /// A member joins (`member_id: None`, or an id the group no longer
    /// knows) or changes its subscription. `partitions` gives the partition
    /// count of every topic in `topics`, as the coordinator saw them.
    Join {
        group: String,
        member_id: Option<String>,
        client_id: String,
        topics: BTreeSet<String>,
        partitions: BTreeMap<String, u32>,
        strategy: Strategy,
        session_timeout_ms: u32,
    },
    Leave {
        group: String,
        member_id: String,
    },
    /// Members whose session timed out at the coordinator.
    Expire {
        group: String,
        member_ids: Vec<String>,
    },
    Commit {
        group: String,
        member_id: String,
        generation: u64,
        offsets: Vec<OffsetCommit>,
        now_ms: i64,
    },
    /// Sets offsets of a group without members, backwards too.
    Reset {
        group: String,
        offsets: Vec<OffsetCommit>,
        now_ms: i64,
    },
    Delete {
        group: String,
    },
    /// A commit the coordinator has checked against what the member holds
    /// right now rather than its replicated assignment: a Kafka member
    /// (eager protocol) commits the partitions it gives up as it rejoins,
    /// after the new assignment may already have moved them, and the
    /// coordinator lets it while no other member holds them yet
    /// (docs/kafka.md). Applying it checks only that the member exists.
    CommitHeld {
        group: String,
        member_id: String,
        offsets: Vec<OffsetCommit>,
        now_ms: i64,
    },
    /// A Kafka member's first join under the id its coordinator handed out
    /// beforehand (KIP-394, MEMBER_ID_REQUIRED): `member_id` becomes a
    /// member as it is (or rejoins, if it is one already); otherwise as
    /// [`GroupCmd::Join`]. Appended last: commands in existing logs keep
    /// their encoding.
    JoinAs {
        group: String,
        member_id: String,
        client_id: String,
        topics: BTreeSet<String>,
        partitions: BTreeMap<String, u32>,
        strategy: Strategy,
        session_timeout_ms: u32,
    },
}

impl GroupCmd {
    pub fn group(&self) -> &str {
        match self {
            GroupCmd::Join { group, .. }
            | GroupCmd::JoinAs { group, .. }
            | GroupCmd::Leave { group, .. }
            | GroupCmd::Expire { group, .. }
            | GroupCmd::Commit { group, .. }
            | GroupCmd::Reset { group, .. }
            | GroupCmd::CommitHeld { group, .. }
            | GroupCmd::Delete { group } => group,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupResult {
    Joined { member_id: String, generation: u64, assignment: Assignment, session_timeout_ms: u32 },
    Done,
}

pub(crate) fn group_key(group: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + group.len());
    k.push(GROUP_PREFIX);
    k.extend_from_slice(group.as_bytes());
    k
}

/// `O | u16 group length | group | u16 topic length | topic | u32 partition`:
/// a group's offsets sort together, by topic and partition.
pub(crate) fn offset_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut k = offsets_prefix(group);
    k.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    k.extend_from_slice(topic.as_bytes());
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// The key prefix of every offset of `group`.
pub(crate) fn offsets_prefix(group: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + group.len());
    k.push(OFFSET_PREFIX);
    k.extend_from_slice(&(group.len() as u16).to_be_bytes());
    k.extend_from_slice(group.as_bytes());
    k
}

/// `(topic, partition)` of an offset key of any group.
pub(crate) fn parse_offset_key(k: &[u8]) -> Option<(String, String, u32)> {
    let rest = k.strip_prefix(&[OFFSET_PREFIX])?;
    let (glen, rest) = rest.split_at_checked(2)?;
    let (group, rest) = rest.split_at_checked(u16::from_be_bytes(glen.try_into().ok()?) as usize)?;
    let (tlen, rest) = rest.split_at_checked(2)?;
    let (topic, rest) = rest.split_at_checked(u16::from_be_bytes(tlen.try_into().ok()?) as usize)?;
    let partition = u32::from_be_bytes(rest.try_into().ok()?);
    Some((String::from_utf8(group.to_vec()).ok()?, String::from_utf8(topic.to_vec()).ok()?, partition))
}

/// Offset keys with what to store there (None: delete).
pub(crate) type OffsetWrites = Vec<(Vec<u8>, Option<Committed>)>;

/// What applying a group command changes: the group's new state (None:
/// deleted) and offsets to write, for the caller to put in its sled batch.
pub(crate) struct Applied {
    pub result: GroupResult,
    pub state: Option<Option<GroupState>>,
    pub offsets: OffsetWrites,
}

/// Reads a committed offset; the state machine passes its tree.
pub(crate) type ReadOffset<'a> = &'a dyn Fn(&[u8]) -> Option<Committed>;

/// `id` joins `st` (or, a member already, updates its subscription); the
/// group rebalances if anything changed.
fn join(
    mut st: GroupState,
    id: String,
    client_id: String,
    topics: BTreeSet<String>,
    partitions: BTreeMap<String, u32>,
    session_timeout_ms: u32,
) -> Applied {
    let m = st.members.entry(id.clone()).or_default();
    let changed = m.topics != topics || m.client_id != client_id || m.session_timeout_ms != session_timeout_ms;
    let new_member = m.topics.is_empty() && m.assignment.is_empty() && m.client_id.is_empty();
    m.client_id = client_id;
    m.topics = topics;
    m.session_timeout_ms = session_timeout_ms;
    for (t, n) in partitions {
        st.topics.insert(t, n);
    }
    if changed || new_member {
        rebalance(&mut st);
    }
    let m = &st.members[&id];
    let result = GroupResult::Joined {
        member_id: id.clone(),
        generation: st.generation,
        assignment: m.assignment.clone(),
        session_timeout_ms: m.session_timeout_ms,
    };
    Applied { result, state: Some(Some(st)), offsets: Vec::new() }
}

/// Applies `cmd` to `current` (the group's state, if it exists).
pub(crate) fn apply(
    cmd: GroupCmd,
    current: Option<&GroupState>,
    committed: ReadOffset<'_>,
    all_offsets: &dyn Fn(&str) -> Vec<Vec<u8>>,
) -> Result<Applied, Rejection> {
    let unknown = |g: &str| Rejection::UnknownGroup(format!("group {g:?} does not exist"));
    match cmd {
        GroupCmd::Join { group: _, member_id, client_id, topics, partitions, strategy, session_timeout_ms } => {
            let mut st = current.cloned().unwrap_or_else(|| GroupState { strategy, ..Default::default() });
            let id = match member_id.filter(|id| st.members.contains_key(id)) {
                Some(id) => id,
                None => {
                    st.next_member += 1;
                    format!("{}-{}", if client_id.is_empty() { "member" } else { &client_id }, st.next_member)
                }
            };
            Ok(join(st, id, client_id, topics, partitions, session_timeout_ms))
        }
        GroupCmd::JoinAs { group: _, member_id, client_id, topics, partitions, strategy, session_timeout_ms } => {
            let st = current.cloned().unwrap_or_else(|| GroupState { strategy, ..Default::default() });
            Ok(join(st, member_id, client_id, topics, partitions, session_timeout_ms))
        }
        GroupCmd::Leave { group, member_id } => {
            let mut st = current.cloned().ok_or_else(|| unknown(&group))?;
            if st.members.remove(&member_id).is_none() {
                return Err(Rejection::UnknownMember(format!("{member_id:?} is not a member of group {group:?}")));
            }
            rebalance(&mut st);
            Ok(Applied { result: GroupResult::Done, state: Some(Some(st)), offsets: Vec::new() })
        }
        GroupCmd::Expire { group, member_ids } => {
            let mut st = current.cloned().ok_or_else(|| unknown(&group))?;
            let before = st.members.len();
            st.members.retain(|id, _| !member_ids.contains(id));
            if st.members.len() != before {
                rebalance(&mut st);
            }
            Ok(Applied { result: GroupResult::Done, state: Some(Some(st)), offsets: Vec::new() })
        }
        GroupCmd::Commit { group, member_id, generation, offsets, now_ms } => {
            let st = current.ok_or_else(|| unknown(&group))?;
            let m = st.members.get(&member_id).ok_or_else(|| {
                Rejection::UnknownMember(format!(
                    "{member_id:?} is not a member of group {group:?} (its session may have expired); rejoin"
                ))
            })?;
            if generation < m.assigned_generation {
                return Err(Rejection::StaleGeneration(format!(
                    "generation {generation} is older than the member's assignment (generation {})",
                    m.assigned_generation
                )));
            }
            for o in &offsets {
                if !m.assignment.get(&o.topic).is_some_and(|ps| ps.contains(&o.partition)) {
                    return Err(Rejection::NotAssigned(format!(
                        "{}/{} is not assigned to member {member_id:?} of group {group:?}",
                        o.topic, o.partition
                    )));
                }
            }
            let writes = commits(&group, offsets, now_ms, committed, false)?;
            Ok(Applied { result: GroupResult::Done, state: None, offsets: writes })
        }
        GroupCmd::CommitHeld { group, member_id, offsets, now_ms } => {
            let st = current.ok_or_else(|| unknown(&group))?;
            if !st.members.contains_key(&member_id) {
                return Err(Rejection::UnknownMember(format!(
                    "{member_id:?} is not a member of group {group:?} (its session may have expired); rejoin"
                )));
            }
            let writes = commits(&group, offsets, now_ms, committed, false)?;
            Ok(Applied { result: GroupResult::Done, state: None, offsets: writes })
        }
        GroupCmd::Reset { group, offsets, now_ms } => {
            if let Some(st) = current
                && !st.members.is_empty()
            {
                return Err(Rejection::GroupNotEmpty(format!(
                    "group {group:?} has {} active members; stop them before resetting its offsets",
                    st.members.len()
                )));
            }
            let writes = commits(&group, offsets, now_ms, committed, true)?;
            // A reset can create a group (offsets without members).
            let state = current.is_none().then(|| Some(GroupState::default()));
            Ok(Applied { result: GroupResult::Done, state, offsets: writes })
        }
        GroupCmd::Delete { group } => {
            let st = current.ok_or_else(|| unknown(&group))?;
            if !st.members.is_empty() {
                return Err(Rejection::GroupNotEmpty(format!(
                    "group {group:?} has {} active members; stop them before deleting it",
                    st.members.len()
                )));
            }
            let offsets = all_offsets(&group).into_iter().map(|k| (k, None)).collect();
            Ok(Applied { result: GroupResult::Done, state: Some(None), offsets })
        }
    }
}

fn commits(
    group: &str,
    offsets: Vec<OffsetCommit>,
    now_ms: i64,
    committed: ReadOffset<'_>,
    reset: bool,
) -> Result<OffsetWrites, Rejection> {
    let mut out = Vec::with_capacity(offsets.len());
    for o in offsets {
        if o.metadata.len() > MAX_COMMIT_METADATA {
            return Err(Rejection::InvalidRequest(format!(
                "commit metadata of {} bytes exceeds {MAX_COMMIT_METADATA}",
                o.metadata.len()
            )));
        }
        let key = offset_key(group, &o.topic, o.partition);
        // Forward only, unless this is an explicit reset.
        if !reset && committed(&key).is_some_and(|c| c.offset > o.offset) {
            continue;
        }
        out.push((key, Some(Committed { offset: o.offset, metadata: o.metadata, commit_timestamp_ms: now_ms })));
    }
    Ok(out)
}

/// Recomputes every member's assignment and bumps the generation. A member
/// whose assignment changed gets the new generation as its own.
fn rebalance(st: &mut GroupState) {
    st.generation += 1;
    // Only topics someone still subscribes to are assigned.
    let wanted: BTreeSet<&String> = st.members.values().flat_map(|m| m.topics.iter()).collect();
    st.topics.retain(|t, _| wanted.contains(t));
    let target = assign(st.strategy, &st.members, &st.topics);
    for (id, m) in st.members.iter_mut() {
        let new = target.get(id).cloned().unwrap_or_default();
        if new != m.assignment {
            m.assignment = new;
            m.assigned_generation = st.generation;
        }
    }
}

/// The assignment of `topics` (partition counts) to `members` under
/// `strategy`. Each member gets only topics it subscribes to.
pub fn assign(
    strategy: Strategy,
    members: &BTreeMap<String, Member>,
    topics: &BTreeMap<String, u32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members.keys().map(|id| (id.clone(), Assignment::new())).collect();
    let subscribers =
        |t: &str| -> Vec<&String> { members.iter().filter(|(_, m)| m.topics.contains(t)).map(|(id, _)| id).collect() };
    match strategy {
        Strategy::Range => {
            for (t, &n) in topics {
                let subs = subscribers(t);
                if subs.is_empty() {
                    continue;
                }
                let (base, extra) = (n as usize / subs.len(), n as usize % subs.len());
                let mut p = 0u32;
                for (i, id) in subs.iter().enumerate() {
                    let take = base + usize::from(i < extra);
                    let e = out.get_mut(*id).expect("member").entry(t.clone()).or_default();
                    for _ in 0..take {
                        e.insert(p);
                        p += 1;
                    }
                }
            }
        }
        Strategy::RoundRobin => {
            let mut turn = 0usize;
            let ids: Vec<&String> = members.keys().collect();
            for (t, &n) in topics {
                for p in 0..n {
                    // The next member in turn that subscribes to `t`.
                    for _ in 0..ids.len() {
                        let id = ids[turn % ids.len()];
                        turn += 1;
                        if members[id].topics.contains(t) {
                            out.get_mut(id).expect("member").entry(t.clone()).or_default().insert(p);
                            break;
                        }
                    }
                }
            }
        }
        Strategy::Uniform => {
            for (t, &n) in topics {
                let subs = subscribers(t);
                if subs.is_empty() {
                    continue;
                }
                let (base, extra) = (n as usize / subs.len(), n as usize % subs.len());
                // Members holding the most of this topic keep the larger quotas.
                let held =
                    |id: &String| members[id].assignment.get(t).map_or(0, |s| s.iter().filter(|p| **p < n).count());
                let mut order = subs.clone();
                order.sort_by(|a, b| held(b).cmp(&held(a)).then(a.cmp(b)));
                let quota: BTreeMap<&String, usize> =
                    order.iter().enumerate().map(|(i, id)| (*id, base + usize::from(i < extra))).collect();
                let mut taken = BTreeSet::new();
                // First, what each member already has, up to its quota.
                for id in &order {
                    let keep: Vec<u32> = members[*id]
                        .assignment
                        .get(t)
                        .into_iter()
                        .flatten()
                        .copied()
                        .filter(|p| *p < n)
                        .take(quota[id])
                        .collect();
                    let e = out.get_mut(*id).expect("member").entry(t.clone()).or_default();
                    for p in keep {
                        if taken.insert(p) {
                            e.insert(p);
                        }
                    }
                }
                // Then the rest, to whoever is below quota, in order.
                let mut free = (0..n).filter(|p| !taken.contains(p));
                for id in &order {
                    let e = out.get_mut(*id).expect("member").entry(t.clone()).or_default();
                    while e.len() < quota[id] {
                        match free.next() {
                            Some(p) => {
                                e.insert(p);
                            }
                            None => break,
                        }
                    }
                }
            }
        }
    }
    for a in out.values_mut() {
        a.retain(|_, ps| !ps.is_empty());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(topics: &[&str]) -> Member {
        Member { topics: topics.iter().map(|t| t.to_string()).collect(), ..Default::default() }
    }

    fn members(n: usize, topics: &[&str]) -> BTreeMap<String, Member> {
        (0..n).map(|i| (format!("m{i}"), member(topics))).collect()
    }

    fn topics(list: &[(&str, u32)]) -> BTreeMap<String, u32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn all_assigned_once(a: &BTreeMap<String, Assignment>, topics: &BTreeMap<String, u32>) {
        let mut seen = BTreeSet::new();
        for asg in a.values() {
            for (t, ps) in asg {
                for p in ps {
                    assert!(seen.insert((t.clone(), *p)), "{t}/{p} assigned twice: {a:?}");
                }
            }
        }
        let want: BTreeSet<_> = topics.iter().flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p))).collect();
        assert_eq!(seen, want, "every partition assigned exactly once");
    }

    fn counts(a: &BTreeMap<String, Assignment>) -> Vec<usize> {
        a.values().map(|x| x.values().map(BTreeSet::len).sum()).collect()
    }

    #[test]
    fn every_strategy_assigns_each_partition_once_and_evenly() {
        let t = topics(&[("a", 6), ("b", 5)]);
        for s in [Strategy::Uniform, Strategy::Range, Strategy::RoundRobin] {
            let a = assign(s, &members(3, &["a", "b"]), &t);
            all_assigned_once(&a, &t);
            let c = counts(&a);
            assert!(
                c.iter().max().unwrap() - c.iter().min().unwrap() <= if s == Strategy::Range { 2 } else { 1 },
                "{s:?}: {c:?}"
            );
        }
    }

    #[test]
    fn members_only_get_topics_they_subscribe_to() {
        let mut m = members(2, &["a"]);
        m.insert("z".into(), member(&["b"]));
        let t = topics(&[("a", 4), ("b", 2)]);
        for s in [Strategy::Uniform, Strategy::Range, Strategy::RoundRobin] {
            let a = assign(s, &m, &t);
            all_assigned_once(&a, &t);
            assert_eq!(a["z"].keys().collect::<Vec<_>>(), vec!["b"], "{s:?}");
            assert!(!a["m0"].contains_key("b"));
        }
    }

    #[test]
    fn uniform_moves_only_what_must_move() {
        let t = topics(&[("a", 6)]);
        let mut m = members(3, &["a"]);
        let first = assign(Strategy::Uniform, &m, &t);
        for (id, a) in &first {
            m.get_mut(id).unwrap().assignment = a.clone();
        }
        // A fourth member takes one partition from someone with two; nobody
        // else's partitions move.
        m.insert("m3".into(), member(&["a"]));
        let second = assign(Strategy::Uniform, &m, &t);
        all_assigned_once(&second, &t);
        let moved: usize = first
            .iter()
            .map(|(id, a)| a["a"].difference(second[id].get("a").unwrap_or(&BTreeSet::new())).count())
            .sum();
        assert_eq!(moved, 1, "{first:?} -> {second:?}");
        // A member leaving hands only its own partitions to the others.
        for (id, a) in &second {
            m.get_mut(id).unwrap().assignment = a.clone();
        }
        m.remove("m1");
        let third = assign(Strategy::Uniform, &m, &t);
        all_assigned_once(&third, &t);
        for (id, a) in &third {
            assert!(second[id]["a"].is_subset(&a["a"]), "{id} lost partitions it kept: {second:?} -> {third:?}");
        }
    }

    fn no_offsets(_: &[u8]) -> Option<Committed> {
        None
    }

    fn no_keys(_: &str) -> Vec<Vec<u8>> {
        Vec::new()
    }

    fn join(group: &str, id: Option<&str>, topics: &[(&str, u32)]) -> GroupCmd {
        GroupCmd::Join {
            group: group.into(),
            member_id: id.map(String::from),
            client_id: "c".into(),
            topics: topics.iter().map(|(t, _)| t.to_string()).collect(),
            partitions: topics.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
            strategy: Strategy::Uniform,
            session_timeout_ms: 10_000,
        }
    }

    fn run(cmd: GroupCmd, st: Option<&GroupState>) -> Result<Applied, Rejection> {
        apply(cmd, st, &no_offsets, &no_keys)
    }

    #[test]
    fn given_an_id_handed_out_beforehand_then_join_as_makes_that_member_once() {
        let join_as = |id: &str| GroupCmd::JoinAs {
            group: "g".into(),
            member_id: id.into(),
            client_id: "c".into(),
            topics: ["t".to_string()].into(),
            partitions: [("t".to_string(), 2)].into(),
            strategy: Strategy::Uniform,
            session_timeout_ms: 10_000,
        };
        let a = run(join_as("c-7f3a"), None).unwrap();
        let st = a.state.unwrap().unwrap();
        let GroupResult::Joined { member_id, generation, .. } = a.result else { panic!() };
        assert_eq!(member_id, "c-7f3a");
        assert_eq!(st.members.keys().collect::<Vec<_>>(), ["c-7f3a"]);
        // The same join again (a retry) is a rejoin: no second member, no rebalance.
        let again = run(join_as("c-7f3a"), Some(&st)).unwrap();
        let st2 = again.state.unwrap().unwrap();
        assert_eq!(st2.members.len(), 1);
        assert_eq!(st2.generation, generation);
        // A plain first join still gets a generated id.
        let b = run(join("g", None, &[("t", 2)]), Some(&st2)).unwrap();
        let GroupResult::Joined { member_id, .. } = b.result else { panic!() };
        assert_ne!(member_id, "c-7f3a");
        assert_eq!(b.state.unwrap().unwrap().members.len(), 2);
    }

    #[test]
    fn commits_are_fenced_by_membership_assignment_and_generation() {
        let a = run(join("g", None, &[("t", 2)]), None).unwrap();
        let st = a.state.unwrap().unwrap();
        let GroupResult::Joined { member_id, generation, .. } = a.result else { panic!() };
        let commit = |member: &str, generation, p| GroupCmd::Commit {
            group: "g".into(),
            member_id: member.into(),
            generation,
            offsets: vec![OffsetCommit { topic: "t".into(), partition: p, offset: 5, metadata: String::new() }],
            now_ms: 1,
        };
        assert!(run(commit(&member_id, generation, 1), Some(&st)).is_ok());
        assert!(matches!(run(commit("nobody", generation, 1), Some(&st)), Err(Rejection::UnknownMember(_))));
        assert!(matches!(run(commit(&member_id, generation - 1, 1), Some(&st)), Err(Rejection::StaleGeneration(_))));
        // A second member takes partition 1 away from the first.
        let b = run(join("g", None, &[("t", 2)]), Some(&st)).unwrap();
        let st2 = b.state.unwrap().unwrap();
        let owner_of_1 = st2.members.iter().find(|(_, m)| m.assignment["t"].contains(&1)).unwrap().0.clone();
        let other = st2.members.keys().find(|id| **id != owner_of_1).unwrap().clone();
        let g2 = st2.generation;
        assert!(matches!(run(commit(&other, g2, 1), Some(&st2)), Err(Rejection::NotAssigned(_))));
        assert!(run(commit(&owner_of_1, g2, 1), Some(&st2)).is_ok());
        assert!(matches!(run(commit("x", 1, 0), None), Err(Rejection::UnknownGroup(_))));
    }

    #[test]
    fn commits_never_move_an_offset_back_but_a_reset_of_an_empty_group_does() {
        let stored = Committed { offset: 10, metadata: String::new(), commit_timestamp_ms: 0 };
        let read = move |_: &[u8]| Some(stored.clone());
        let a = run(join("g", None, &[("t", 1)]), None).unwrap();
        let st = a.state.unwrap().unwrap();
        let GroupResult::Joined { member_id, generation, .. } = a.result else { panic!() };
        let o = |offset| vec![OffsetCommit { topic: "t".into(), partition: 0, offset, metadata: String::new() }];
        let back =
            GroupCmd::Commit { group: "g".into(), member_id: member_id.clone(), generation, offsets: o(3), now_ms: 1 };
        assert!(apply(back, Some(&st), &read, &no_keys).unwrap().offsets.is_empty(), "a commit moved the offset back");
        let reset = GroupCmd::Reset { group: "g".into(), offsets: o(3), now_ms: 1 };
        assert!(matches!(apply(reset.clone(), Some(&st), &read, &no_keys), Err(Rejection::GroupNotEmpty(_))));
        let left = run(GroupCmd::Leave { group: "g".into(), member_id }, Some(&st)).unwrap().state.unwrap().unwrap();
        let r = apply(reset, Some(&left), &read, &no_keys).unwrap();
        assert_eq!(r.offsets[0].1.as_ref().unwrap().offset, 3);
    }

    #[test]
    fn a_held_commit_needs_only_membership_and_still_moves_forward_only() {
        let a = run(join("g", None, &[("t", 2)]), None).unwrap();
        let st = a.state.unwrap().unwrap();
        let GroupResult::Joined { member_id, .. } = a.result else { panic!() };
        // A second member takes partition 1: the first may still commit it
        // as the holder the coordinator vouched for.
        let st2 = run(join("g", None, &[("t", 2)]), Some(&st)).unwrap().state.unwrap().unwrap();
        let held = |member: &str, offset| GroupCmd::CommitHeld {
            group: "g".into(),
            member_id: member.into(),
            offsets: vec![OffsetCommit { topic: "t".into(), partition: 1, offset, metadata: "m".into() }],
            now_ms: 1,
        };
        let r = run(held(&member_id, 7), Some(&st2)).unwrap();
        assert_eq!(r.offsets.len(), 1);
        assert!(matches!(run(held("nobody", 7), Some(&st2)), Err(Rejection::UnknownMember(_))));
        assert!(matches!(run(held(&member_id, 7), None), Err(Rejection::UnknownGroup(_))));
        let stored = Committed { offset: 10, metadata: String::new(), commit_timestamp_ms: 0 };
        let read = move |_: &[u8]| Some(stored.clone());
        assert!(apply(held(&member_id, 3), Some(&st2), &read, &no_keys).unwrap().offsets.is_empty());
    }

    #[test]
    fn rejoining_keeps_the_member_and_its_assignment() {
        let a = run(join("g", None, &[("t", 4)]), None).unwrap();
        let st = a.state.unwrap().unwrap();
        let GroupResult::Joined { member_id, generation, assignment, .. } = a.result else { panic!() };
        let b = run(join("g", Some(&member_id), &[("t", 4)]), Some(&st)).unwrap();
        let GroupResult::Joined { member_id: id2, generation: g2, assignment: a2, .. } = b.result else { panic!() };
        assert_eq!((id2, g2, a2), (member_id, generation, assignment), "an unchanged rejoin must not rebalance");
        // An id the group no longer knows joins as a new member.
        let c = run(join("g", Some("gone-7"), &[("t", 4)]), Some(&st)).unwrap();
        let GroupResult::Joined { member_id: id3, .. } = c.result else { panic!() };
        assert_ne!(id3, "gone-7");
    }

    #[test]
    fn offset_keys_round_trip_and_group_prefixes_do_not_overlap() {
        let k = offset_key("g", "topic", 7);
        assert_eq!(parse_offset_key(&k), Some(("g".into(), "topic".into(), 7)));
        assert!(!offset_key("gg", "t", 0).starts_with(&offsets_prefix("g")));
    }
}
