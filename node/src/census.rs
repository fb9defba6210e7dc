//! The node's partition groups sorted into quiet ones and awake ones, made
//! again only when that can have changed.
//!
//! Every peer asks each node for its `NodeInfo` twice a second, and the
//! quiescer looks for idle leaders as often. With ten thousand groups on a
//! node, most of them quiet, a walk over all of them for each of those
//! touched ten thousand partitions scattered over the heap: it was most of
//! what an idle node spent. A quiet group's report does not move until it
//! wakes ([`crate::quiesce::QuietView`]), so a [`Census`] keeps the quiet
//! groups' reports, summed where a report needs only their sum, and the
//! list of the awake groups, which each report still reads afresh. It
//! holds until a group goes quiet or wakes ([`Quiescer::changes`]), a
//! partition opens or closes, or the metadata changes.
//!
//! [`Quiescer::changes`]: crate::quiesce::Quiescer::changes

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use replog_proto::pb;
use replog_raft_store::controller::ClusterMeta;
use replog_raft_store::{GroupId, NodeId};

use crate::node::{Node, PartitionMap};
use crate::partition::Partition;
use crate::quiesce::QuietView;

/// One reading of the node's groups ([`Node::census`]).
pub struct Census {
    /// Made at this count of quiet changes, over this map of the open
    /// partitions and this metadata.
    changes: u64,
    open: PartitionMap,
    meta: Arc<ClusterMeta>,
    /// The open groups not quiet, each with whether the metadata places it
    /// here (then its readiness counts).
    pub awake: Vec<(Arc<Partition>, bool)>,
    /// What `NodeInfo` says of each quiet group, in group order.
    pub quiet: Vec<pb::GroupStatus>,
    /// The quiet groups led here by Raft's account, by voter set: whether
    /// each leads with a lease depends on which peers answered pings
    /// lately, so it is judged per report, once per voter set.
    pub quiet_led: Vec<QuietLed>,
    /// The quiet groups led here by Raft's account, each by its id.
    pub quiet_led_here: Vec<(GroupId, Arc<Partition>)>,
    /// Every partition the metadata places here is open, and every quiet
    /// one is caught up: the node's readiness then rests on the controller
    /// and the awake groups alone.
    pub settled_ready: bool,
}

/// Quiet groups led here with the same voters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietLed {
    pub voters: Vec<NodeId>,
    pub groups: u32,
    /// Of those, the groups with a voter behind.
    pub under_replicated: u32,
}

impl Census {
    /// Whether this reading still holds for `changes`, `open` and `meta`.
    pub fn holds(&self, changes: u64, open: &PartitionMap, meta: &Arc<ClusterMeta>) -> bool {
        self.changes == changes && Arc::ptr_eq(&self.open, open) && Arc::ptr_eq(&self.meta, meta)
    }

    /// Reads every group of `open`: a quiet group's view as kept for its
    /// nap, or read now and kept. `changes` is read before `open`, so a
    /// group that sleeps or wakes during the walk makes the next call read
    /// again.
    pub fn take(node: &Node, changes: u64, open: PartitionMap, meta: Arc<ClusterMeta>) -> Census {
        let placed: HashSet<GroupId> = meta
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|pm| pm.replicas.contains(&node.id))
            .map(|pm| pm.group)
            .collect();
        let mut settled_ready = placed.iter().all(|g| open.contains_key(g));
        let mut awake = Vec::new();
        let mut quiet = Vec::new();
        let mut led: HashMap<Vec<NodeId>, (u32, u32)> = HashMap::new();
        let mut quiet_led_here = Vec::new();
        for p in open.values() {
            let Some(nap) = p.quiet.nap() else {
                awake.push((p.clone(), placed.contains(&p.group())));
                continue;
            };
            let v = p.quiet.with_view(QuietView::clone).unwrap_or_else(|| {
                let (v, _) = node.read_view(p, true);
                p.quiet.keep_view(nap, v.clone());
                v
            });
            quiet.push(node_status(p.group(), &v));
            settled_ready &= v.behind.is_none() || !placed.contains(&p.group());
            if v.led {
                quiet_led_here.push((p.group(), p.clone()));
                let e = led.entry(v.voters).or_default();
                e.0 += 1;
                e.1 += u32::from(v.under_replicated);
            }
        }
        quiet.sort_unstable_by_key(|g| g.group_id);
        let mut quiet_led: Vec<QuietLed> = led
            .into_iter()
            .map(|(voters, (groups, under_replicated))| QuietLed { voters, groups, under_replicated })
            .collect();
        quiet_led.sort_unstable_by(|a, b| a.voters.cmp(&b.voters));
        Census { changes, open, meta, awake, quiet, quiet_led, quiet_led_here, settled_ready }
    }
}

/// What `NodeInfo` says of `group` from its view `v`.
pub fn node_status(group: GroupId, v: &QuietView) -> pb::GroupStatus {
    pb::GroupStatus {
        group_id: group,
        leader: v.leader.unwrap_or(0),
        log_start_offset: v.log_start_offset,
        high_watermark: v.high_watermark,
        last_applied_index: v.applied,
    }
}

/// `a` and `b`, each in group order, as one list in group order.
pub fn merged(a: &[pb::GroupStatus], mut b: Vec<pb::GroupStatus>) -> Vec<pb::GroupStatus> {
    b.sort_unstable_by_key(|g| g.group_id);
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut b = b.into_iter().peekable();
    for g in a {
        while let Some(x) = b.next_if(|x| x.group_id < g.group_id) {
            out.push(x);
        }
        out.push(*g);
    }
    out.extend(b);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(group_id: u64) -> pb::GroupStatus {
        pb::GroupStatus { group_id, ..Default::default() }
    }

    #[test]
    fn given_two_lists_in_group_order_then_the_merge_holds_each_once_in_order() {
        let quiet: Vec<_> = [2, 3, 7, 9].into_iter().map(status).collect();
        let awake: Vec<_> = [10, 1, 5].into_iter().map(status).collect();
        let ids: Vec<u64> = merged(&quiet, awake).iter().map(|g| g.group_id).collect();
        assert_eq!(ids, [1, 2, 3, 5, 7, 9, 10]);
        assert_eq!(merged(&[], Vec::new()), Vec::<pb::GroupStatus>::new());
        let ids: Vec<u64> = merged(&quiet, Vec::new()).iter().map(|g| g.group_id).collect();
        assert_eq!(ids, [2, 3, 7, 9]);
    }
}
