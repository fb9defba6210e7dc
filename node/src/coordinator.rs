//! The group coordinator: what the leader of a `__consumer_offsets`
//! partition keeps in memory for the groups of that partition — when each
//! member was last heard from and what it says it consumes — and the timer
//! that expires silent members through Raft.
//!
//! Assignments live in the replicated group state (`raft-store` groups);
//! this module decides only what a member may take *now*: a partition moving
//! from A to B is handed to B once A has reported that it let go (or A's
//! session expired), so no two members of a group ever consume one partition
//! at the same time. A coordinator that just took over assumes every member
//! still owns what it was assigned and gives each a full session timeout to
//! check in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use replog_raft_store::GroupId;
use replog_raft_store::groups::{Assignment, GroupCmd, GroupState};
use tracing::{info, warn};

use crate::node::Node;

/// The internal topic that keeps consumer groups.
pub const GROUPS_TOPIC: &str = "__consumer_offsets";
/// How often the coordinator looks for expired members.
const EXPIRE_TICK: Duration = Duration::from_millis(250);

/// Which `__consumer_offsets` partition keeps `group`.
pub fn partition_of(group: &str, partitions: u32) -> u32 {
    crc32c::crc32c(group.as_bytes()) % partitions.max(1)
}

struct MemberLive {
    last_seen: Instant,
    /// What the member last said it consumes.
    owned: Assignment,
}

#[derive(Default)]
struct Led {
    /// Groups of partitions this node leads, by name.
    groups: HashMap<String, HashMap<String, MemberLive>>,
}

/// Liveness of the members of the groups this node coordinates.
#[derive(Default)]
pub struct Coordinator {
    /// Per `__consumer_offsets` partition (Raft group) led here.
    led: Mutex<HashMap<GroupId, Led>>,
}

impl Coordinator {
    /// Starts coordinating `part` if this node has not yet (a request can
    /// arrive before the timer notices the new leadership).
    pub fn ensure(&self, part: GroupId, groups: &BTreeMap<String, GroupState>) {
        if !self.led.lock().expect("coordinator lock").contains_key(&part) {
            self.take_over(part, groups);
        }
    }

    /// Notes that `member` was heard from, consuming `owned`. Call
    /// [`Coordinator::ensure`] first.
    pub fn heard(&self, part: GroupId, group: &str, member: &str, owned: Option<Assignment>) {
        let mut led = self.led.lock().expect("coordinator lock");
        let g = led.entry(part).or_default().groups.entry(group.to_string()).or_default();
        let m = g
            .entry(member.to_string())
            .or_insert_with(|| MemberLive { last_seen: Instant::now(), owned: Assignment::new() });
        m.last_seen = Instant::now();
        if let Some(o) = owned {
            m.owned = o;
        }
    }

    pub fn forget(&self, part: GroupId, group: &str, member: &str) {
        let mut led = self.led.lock().expect("coordinator lock");
        if let Some(g) = led.get_mut(&part).and_then(|l| l.groups.get_mut(group)) {
            g.remove(member);
        }
    }

    /// Milliseconds since `member` was last heard from.
    pub fn silent_for(&self, part: GroupId, group: &str, member: &str) -> Option<Duration> {
        let led = self.led.lock().expect("coordinator lock");
        led.get(&part)?.groups.get(group)?.get(member).map(|m| m.last_seen.elapsed())
    }

    /// What `member` may consume now: its assignment minus what another
    /// member still reports owning. What is granted counts as owned by
    /// `member` from here on (it starts consuming it on the answer), until
    /// its next heartbeat says otherwise.
    pub fn grant(&self, part: GroupId, group: &str, member: &str, st: &GroupState) -> Assignment {
        let mut led = self.led.lock().expect("coordinator lock");
        let live = led.get_mut(&part).and_then(|l| l.groups.get_mut(group));
        let granted = grantable(live.as_deref(), member, st);
        if let Some(m) = live.and_then(|l| l.get_mut(member)) {
            for (t, ps) in &granted {
                m.owned.entry(t.clone()).or_default().extend(ps.iter().copied());
            }
        }
        granted
    }

    /// What [`Coordinator::grant`] would give `member` now, granting nothing.
    pub fn grantable(&self, part: GroupId, group: &str, member: &str, st: &GroupState) -> Assignment {
        let led = self.led.lock().expect("coordinator lock");
        grantable(led.get(&part).and_then(|l| l.groups.get(group)), member, st)
    }

    /// What `member` owns as this coordinator knows it.
    pub fn owned(&self, part: GroupId, group: &str, member: &str) -> Option<Assignment> {
        let led = self.led.lock().expect("coordinator lock");
        led.get(&part)?.groups.get(group)?.get(member).map(|m| m.owned.clone())
    }

    /// Partitions other current members of `group` own.
    pub fn held_by_others(&self, part: GroupId, group: &str, member: &str, st: &GroupState) -> BTreeSet<(String, u32)> {
        let led = self.led.lock().expect("coordinator lock");
        led.get(&part)
            .and_then(|l| l.groups.get(group))
            .map(|live| held_elsewhere(live, member, st).into_iter().map(|(t, p)| (t.clone(), *p)).collect())
            .unwrap_or_default()
    }

    /// Starts coordinating `part` (just became its leader): every member of
    /// its groups gets a fresh session and is assumed to own its assignment.
    fn take_over(&self, part: GroupId, groups: &BTreeMap<String, GroupState>) {
        let now = Instant::now();
        let led = Led {
            groups: groups
                .iter()
                .map(|(name, st)| {
                    let members = st
                        .members
                        .iter()
                        .map(|(id, m)| (id.clone(), MemberLive { last_seen: now, owned: m.assignment.clone() }))
                        .collect();
                    (name.clone(), members)
                })
                .collect(),
        };
        self.led.lock().expect("coordinator lock").insert(part, led);
    }

    /// Members of `part`'s groups silent past their session timeout. A
    /// member not seen yet (it joined a moment ago) starts its session now.
    fn expired(&self, part: GroupId, groups: &BTreeMap<String, GroupState>) -> Vec<(String, Vec<String>)> {
        let mut led = self.led.lock().expect("coordinator lock");
        let Some(live) = led.get_mut(&part) else { return Vec::new() };
        let mut out = Vec::new();
        for (name, st) in groups {
            let g = live.groups.entry(name.clone()).or_default();
            let mut gone = Vec::new();
            for (id, m) in &st.members {
                let l = g
                    .entry(id.clone())
                    .or_insert_with(|| MemberLive { last_seen: Instant::now(), owned: m.assignment.clone() });
                if l.last_seen.elapsed() > Duration::from_millis(m.session_timeout_ms as u64) {
                    gone.push(id.clone());
                }
            }
            if !gone.is_empty() {
                out.push((name.clone(), gone));
            }
        }
        out
    }

    fn led_parts(&self) -> BTreeSet<GroupId> {
        self.led.lock().expect("coordinator lock").keys().copied().collect()
    }

    fn drop_part(&self, part: GroupId) {
        self.led.lock().expect("coordinator lock").remove(&part);
    }
}

/// Partitions that members of `group` other than `member` own.
fn held_elsewhere<'a>(
    live: &'a HashMap<String, MemberLive>,
    member: &str,
    st: &GroupState,
) -> BTreeSet<(&'a String, &'a u32)> {
    live.iter()
        .filter(|(id, _)| id.as_str() != member && st.members.contains_key(id.as_str()))
        .flat_map(|(_, m)| m.owned.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t, p))))
        .collect()
}

/// `member`'s assignment minus what other members own (all of it when the
/// group has no liveness here yet).
fn grantable(live: Option<&HashMap<String, MemberLive>>, member: &str, st: &GroupState) -> Assignment {
    let Some(target) = st.members.get(member).map(|m| m.assignment.clone()) else {
        return Assignment::new();
    };
    let Some(live) = live else { return target };
    let held = held_elsewhere(live, member, st);
    target
        .into_iter()
        .map(|(t, ps)| {
            let free = ps.into_iter().filter(|p| !held.contains(&(&t, p))).collect();
            (t, free)
        })
        .filter(|(_, ps): &(String, BTreeSet<u32>)| !ps.is_empty())
        .collect()
}

/// Keeps the coordinator's view in step with leadership of the
/// `__consumer_offsets` partitions, and expires silent members.
pub async fn run(node: Arc<Node>) {
    loop {
        tokio::time::sleep(EXPIRE_TICK).await;
        let meta = node.meta();
        let Some(topic) = meta.topics.get(GROUPS_TOPIC) else { continue };
        let parts: Vec<GroupId> = topic.partitions.iter().map(|p| p.group).collect();
        let was_led = node.coordinator.led_parts();
        for gid in parts {
            let Some(p) = node.partition(gid) else { continue };
            if !p.is_leader() {
                // Only a lost leadership ends coordination: a lease lapsing
                // for a moment on a busy node would otherwise restart every
                // member's session each time, and a member that is gone
                // would never expire. Nothing expires without the lease.
                if was_led.contains(&gid) && !p.led_here() {
                    node.coordinator.drop_part(gid);
                }
                continue;
            }
            let groups = p.groups_here();
            if !was_led.contains(&gid) {
                info!(
                    partition = p.name(),
                    groups = groups.len(),
                    "coordinating the consumer groups of this partition"
                );
                node.coordinator.ensure(gid, &groups);
                continue;
            }
            for (group, member_ids) in node.coordinator.expired(gid, &groups) {
                info!(group = %group, members = ?member_ids, "consumer group members timed out");
                let cmd = GroupCmd::Expire { group, member_ids };
                if let Err(e) = p.propose_group(cmd).await {
                    warn!(partition = p.name(), "expiring group members: {e}");
                }
            }
        }
    }
}
