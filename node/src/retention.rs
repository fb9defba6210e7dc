//! Topic retention: what each partition lets go, decided at its leader and
//! applied through its Raft group, then given back to the disk on every
//! replica.
//!
//! Every `retention_check_ms` the task:
//! 1. on each partition this node leads whose topic has a rule, works out
//!    the log start each rule allows — time (the first batch holding a
//!    record newer than `retention.ms`), size (the newest batches within
//!    `retention.bytes`), consumption (the lowest offset committed by the
//!    consumer groups that read the topic, and settled up to by its queue
//!    groups) — and proposes the furthest one
//!    as a `Truncate` entry, so every replica drops the same prefix;
//! 2. on each partition this node hosts, once a whole segment file lies
//!    below the first retained batch, takes a snapshot (references to the
//!    retained batches, no copy) and lets Raft purge the prefix, which
//!    deletes those segment files.
//!
//! Consumption is asked of every `__consumer_offsets` partition leader
//! (GroupFloors), twice in a row so that a group joining while the first
//! pass runs is not missed (see [`settled_floors`]); if any of them does
//! not answer, consumption releases nothing that round, since an unseen
//! group may not have read it yet.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use replog_proto::pb::GroupFloorsRequest;
use replog_raft_store::controller::TopicConfig;
use tracing::{debug, info, warn};

use crate::coordinator::GROUPS_TOPIC;
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::partition::Partition;

/// Lowest committed offset per (topic, partition) over all groups.
type Floors = HashMap<(String, u32), u64>;

/// How long a replica waits for the snapshot that lets it purge.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);
const FLOORS_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_millis(node.config.retention_check_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        round(&node).await;
    }
}

/// One pass of both steps over every partition here.
pub async fn round(node: &Arc<Node>) {
    let meta = node.meta();
    let mut floors: Option<Option<Floors>> = None;
    for t in meta.topics.values().filter(|t| t.config.has_retention()) {
        for (i, p) in t.partitions.iter().enumerate() {
            let Some(part) = node.partition(p.group).filter(|part| part.is_leader()) else { continue };
            if t.config.retention_consumed && floors.is_none() {
                floors = Some(settled_floors(node).await);
            }
            // Consumer groups: None when unknown (a coordinator did not
            // answer), Some(None) when none reads this partition.
            let groups = floors.as_ref().and_then(|f| f.as_ref()).map(|f| f.get(&(t.name.clone(), i as u32)).copied());
            // Queue groups keep their state in the partition itself.
            let queues = part.queues_here().values().map(|q| q.floor).min();
            let consumed = match (groups, queues) {
                (None, _) | (Some(None), None) => None,
                (Some(g), q) => g.into_iter().chain(q).min(),
            };
            match target(&part, &t.config, replog_proto::now_ms(), consumed) {
                Ok(Some(to)) => match part.truncate(to).await {
                    Ok(start) => info!(partition = part.name(), log_start = start, "retention released records"),
                    Err(e) => debug!(partition = part.name(), "retention: {e}"),
                },
                Ok(None) => {}
                Err(e) => warn!(partition = part.name(), "retention: {e}"),
            }
        }
    }
    for part in node.partitions() {
        if let Err(e) = part.release_log(SNAPSHOT_WAIT).await {
            debug!(partition = part.name(), "releasing log segments: {e}");
        }
    }
}

/// The log start the topic's rules allow, if beyond the current one.
/// `consumed` is the lowest offset the consumer groups have committed and
/// the queue groups have settled up to (None: unknown, or no group at all,
/// which releases nothing by consumption).
fn target(part: &Partition, config: &TopicConfig, now_ms: i64, consumed: Option<u64>) -> Result<Option<u64>> {
    let o = part.offsets();
    let mut to = o.log_start_offset;
    if let Some(ms) = config.retention_ms {
        to = to.max(part.start_for_time(now_ms.saturating_sub(ms))?);
    }
    if let Some(bytes) = config.retention_bytes {
        to = to.max(part.start_for_size(bytes)?);
    }
    if config.retention_consumed
        && let Some(c) = consumed
    {
        to = to.max(c.min(o.high_watermark));
    }
    Ok((to > o.log_start_offset).then_some(to))
}

/// The group floors of two passes, one after the other, each partition's
/// the lower of the two.
///
/// One pass reads the `__consumer_offsets` partitions one by one, so it
/// can miss a group that joined one partition after it was read while
/// seeing a commit that another group made later elsewhere; releasing up
/// to that commit would drop records the new group, whose join was
/// answered before, has not read. A second pass starts after the first
/// ended, so it sees every group that joined before any commit the first
/// one saw: a floor both passes name counts every such group. A floor
/// only the second pass names holds its partition at 0 this round (a
/// group appeared while the first pass ran); one only the first names
/// counts as it was (a group left meanwhile).
async fn settled_floors(node: &Arc<Node>) -> Option<Floors> {
    let first = group_floors(node).await?;
    let second = group_floors(node).await?;
    Some(merge_passes(first, second))
}

fn merge_passes(mut first: Floors, second: Floors) -> Floors {
    for (k, offset) in second {
        first.entry(k).and_modify(|f| *f = (*f).min(offset)).or_insert(0);
    }
    first
}

/// Every group's lowest committed offset per topic partition, from every
/// `__consumer_offsets` partition's leader; None if any did not answer.
async fn group_floors(node: &Arc<Node>) -> Option<Floors> {
    let meta = node.meta();
    let Some(t) = meta.topics.get(GROUPS_TOPIC) else {
        return Some(Floors::new());
    };
    let mut out = Floors::new();
    for (i, p) in t.partitions.iter().enumerate() {
        let req = GroupFloorsRequest { partition: i as u32 };
        let answer = match node.leader_of(p.group, &p.replicas) {
            Some(l) if l == node.id => crate::service::group::floors::handle(node.clone(), req).await,
            Some(l) => ask(node, l, req).await,
            None => Err(NodeError::Unavailable(format!("{GROUPS_TOPIC}/{i} has no leader"))),
        };
        match answer {
            Ok(r) => {
                for f in r.floors {
                    out.entry((f.topic, f.partition)).and_modify(|o| *o = (*o).min(f.offset)).or_insert(f.offset);
                }
            }
            Err(e) => {
                debug!("retention by consumption waits: {GROUPS_TOPIC}/{i}: {e}");
                return None;
            }
        }
    }
    Some(out)
}

async fn ask(node: &Node, leader: u64, req: GroupFloorsRequest) -> Result<replog_proto::pb::GroupFloorsResponse> {
    let addr = node.members.addr(leader).ok_or_else(|| NodeError::Unavailable(format!("node {leader} unknown")))?;
    let mut client = node.pool.replog_client(&addr).map_err(NodeError::Unavailable)?;
    let mut r = tonic::Request::new(req);
    r.set_timeout(FLOORS_TIMEOUT);
    client.group_floors(r).await.map(|r| r.into_inner()).map_err(|s| NodeError::from_remote(&addr, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floors(v: &[(&str, u32, u64)]) -> Floors {
        v.iter().map(|(t, p, o)| ((t.to_string(), *p), *o)).collect()
    }

    #[test]
    fn a_floor_counts_at_the_lower_pass_and_one_the_first_pass_missed_holds_everything() {
        let first = floors(&[("a", 0, 40), ("a", 1, 7), ("gone", 0, 3)]);
        let second = floors(&[("a", 0, 50), ("a", 1, 5), ("new", 0, 40)]);
        assert_eq!(merge_passes(first, second), floors(&[("a", 0, 40), ("a", 1, 5), ("gone", 0, 3), ("new", 0, 0)]));
    }
}
