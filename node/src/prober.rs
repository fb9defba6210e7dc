//! The peer prober: asks every known node for its `NodeInfo` twice a second,
//! to know which nodes are alive and who leads the groups this node does
//! not host (and at what offsets).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use replog_proto::pb;
use replog_raft_store::{GroupId, NodeId};

use crate::raft_net::PeerPool;

/// How often every peer is asked for its `NodeInfo`.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// A peer that has not answered for this long counts as down.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(3);

/// What the prober last heard from a peer.
#[derive(Clone)]
pub struct PeerView {
    pub last_ok: Option<Instant>,
    pub info: Option<pb::NodeInfoResponse>,
    /// A probe found nothing listening (connection refused) and none has
    /// answered since: the process is gone, whatever `last_ok` says. A probe
    /// that merely timed out does not count, a busy node is not a dead one.
    pub refused: bool,
}

impl PeerView {
    /// Answered recently, and not stopping (a stopping node is given no
    /// leadership and no new replicas).
    pub fn alive(&self) -> bool {
        self.last_ok.is_some_and(|t| t.elapsed() < ALIVE_WITHIN)
            && !self.refused
            && !self.info.as_ref().is_some_and(|i| i.stopping)
    }
}

/// Whether a failed call found nothing listening at the address.
fn refused(s: &tonic::Status) -> bool {
    use std::error::Error;
    let mut source = s.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = e.source();
    }
    false
}

#[derive(Default)]
pub struct Prober {
    peers: Mutex<BTreeMap<NodeId, PeerView>>,
}

impl Prober {
    /// One round of `NodeInfo` calls to `targets` (id → address), over the
    /// node's shared peer connections. Returns the peers that answered the
    /// last round and now refused: their process is gone (a peer that is
    /// only slow or cut off times out instead, and is not named).
    pub async fn probe(&self, targets: BTreeMap<NodeId, String>, pool: &PeerPool) -> Vec<NodeId> {
        let calls = targets.into_iter().filter_map(|(id, addr)| {
            let mut client = pool.replog_client(&addr).ok()?;
            Some(async move {
                let mut req = tonic::Request::new(pb::NodeInfoRequest {});
                req.set_timeout(PROBE_INTERVAL * 2);
                let r = tokio::time::timeout(PROBE_INTERVAL * 2, client.node_info(req)).await;
                let refused = matches!(&r, Ok(Err(s)) if refused(s));
                (id, r.ok().and_then(|r| r.ok()).map(|r| r.into_inner()), refused)
            })
        });
        let results = futures::future::join_all(calls).await;
        let mut peers = self.peers.lock().expect("peers lock");
        let mut gone = Vec::new();
        for (id, info, refused) in results {
            let v = peers.entry(id).or_insert(PeerView { last_ok: None, info: None, refused: false });
            if let Some(info) = info {
                v.last_ok = Some(Instant::now());
                v.info = Some(by_group(info));
                v.refused = false;
            } else if refused && !v.refused {
                v.refused = true;
                gone.push(id);
            }
        }
        gone
    }

    pub fn views(&self) -> BTreeMap<NodeId, PeerView> {
        self.peers.lock().expect("peers lock").clone()
    }

    pub fn alive(&self, id: NodeId) -> bool {
        self.peers.lock().expect("peers lock").get(&id).is_some_and(PeerView::alive)
    }

    /// The leader of `group` as one of `replicas` last reported it, passing
    /// over leaders this node sees stopping or down (`me` always counts as
    /// up): a report can be up to a probe old, and a client sent to a node
    /// that has stopped would only back off and ask again.
    pub fn reported_leader(&self, group: GroupId, replicas: &[NodeId], me: NodeId) -> Option<NodeId> {
        let peers = self.peers.lock().expect("peers lock");
        replicas
            .iter()
            .filter_map(|r| peers.get(r).filter(|v| v.alive())?.info.as_ref())
            .filter_map(|i| reported(&i.groups, group))
            .filter(|g| g.leader != 0)
            .map(|g| g.leader)
            .find(|l| *l == me || peers.get(l).is_some_and(PeerView::alive))
    }

    /// `(log start, high watermark)` of `group` as node `from` last
    /// reported them.
    pub fn reported_offsets(&self, group: GroupId, from: NodeId) -> Option<(u64, u64)> {
        let peers = self.peers.lock().expect("peers lock");
        reported(&peers.get(&from)?.info.as_ref()?.groups, group).map(|g| (g.log_start_offset, g.high_watermark))
    }
}

/// A peer's report with its groups in id order, as [`reported`] looks them
/// up (the sender sorts them already; then this costs one pass).
fn by_group(mut info: pb::NodeInfoResponse) -> pb::NodeInfoResponse {
    info.groups.sort_by_key(|g| g.group_id);
    info
}

/// `group`'s entry in a peer's report kept [`by_group`] (a metadata answer
/// looks up every partition in it).
fn reported(groups: &[pb::GroupStatus], group: GroupId) -> Option<&pb::GroupStatus> {
    groups.binary_search_by_key(&group, |g| g.group_id).ok().map(|i| &groups[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_report_in_any_order_then_every_group_in_it_is_found_and_no_other() {
        let status = |group_id| pb::GroupStatus { group_id, leader: group_id + 10, ..Default::default() };
        let info =
            by_group(pb::NodeInfoResponse { groups: vec![status(7), status(2), status(5)], ..Default::default() });
        for g in [2, 5, 7] {
            assert_eq!(reported(&info.groups, g).map(|s| s.leader), Some(g + 10));
        }
        assert!(reported(&info.groups, 3).is_none());
    }

    #[tokio::test]
    async fn given_nothing_listening_then_a_probe_counts_as_refused() {
        // A port just bound and released: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect_lazy();
        let mut client = pb::replog_client::ReplogClient::new(channel);
        let status = client.node_info(pb::NodeInfoRequest {}).await.unwrap_err();
        assert!(refused(&status), "{status:?}");
        assert!(!refused(&tonic::Status::deadline_exceeded("slow")));
    }
}
