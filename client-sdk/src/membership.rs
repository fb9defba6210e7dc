//! Cluster membership as methods of [`Client`]: partition moves and their
//! progress, decommissioning a node, balancing (see docs/membership.md).
//! Each is served by the controller leader, whichever node is asked.

use replog_proto::pb;

use crate::client::{Call, Client};
use crate::error::Result;

pub use replog_proto::pb::{ClusterSetting, MoveStatusResponse, PartitionMove, ReplicaProgress};

impl Client {
    /// Starts moving `topic`/`partition` to `replicas` (the first is the
    /// preferred leader) and returns at once with the move, or `None` when
    /// `replicas` is the current set reordered (only the preferred leader
    /// changes, at once). A set smaller than the current one needs `force`.
    /// Asking again for the same set while it moves is harmless.
    pub async fn move_partition(
        &self,
        topic: &str,
        partition: u32,
        replicas: &[u64],
        force: bool,
    ) -> Result<Option<PartitionMove>> {
        let timeout = self.config().request_timeout;
        let r = self
            .any_node(Call::Write, |mut c, _| {
                let mut req = tonic::Request::new(pb::MovePartitionRequest {
                    topic: topic.to_string(),
                    partition,
                    replicas: replicas.to_vec(),
                    force,
                });
                req.set_timeout(timeout);
                async move { c.move_partition(req).await }
            })
            .await?;
        Ok(r.r#move)
    }

    /// Moves under way, with each new replica's progress, and the nodes
    /// being decommissioned.
    pub async fn move_status(&self) -> Result<pb::MoveStatusResponse> {
        let timeout = self.config().request_timeout;
        self.any_node(Call::Read, |mut c, _| {
            let mut req = tonic::Request::new(pb::MoveStatusRequest {});
            req.set_timeout(timeout);
            async move { c.move_status(req).await }
        })
        .await
    }

    /// Starts moving every replica off node `id`; the node leaves the
    /// cluster once it holds none (then stop its process). Returns the
    /// moves.
    pub async fn decommission_node(&self, id: u64) -> Result<Vec<PartitionMove>> {
        let timeout = self.config().request_timeout;
        let r = self
            .any_node(Call::Write, |mut c, _| {
                let mut req = tonic::Request::new(pb::DecommissionNodeRequest { node_id: id });
                req.set_timeout(timeout);
                async move { c.decommission_node(req).await }
            })
            .await?;
        Ok(r.moves)
    }

    /// Plans (and unless `dry_run`, starts) the moves that spread replicas
    /// and preferred leaders evenly over the live nodes.
    pub async fn balance_cluster(&self, dry_run: bool) -> Result<Vec<PartitionMove>> {
        let timeout = self.config().request_timeout;
        let r = self
            .any_node(Call::Write, |mut c, _| {
                let mut req = tonic::Request::new(pb::BalanceClusterRequest { dry_run });
                req.set_timeout(timeout);
                async move { c.balance_cluster(req).await }
            })
            .await?;
        Ok(r.moves)
    }

    /// Sets (or, with an empty value, clears) cluster-wide settings such
    /// as `move.throttle`, then returns every setting with its cluster-wide
    /// value (empty: each node's own applies). With nothing to set, only
    /// reads. A bad key or value changes nothing (INVALID_CONFIG).
    pub async fn cluster_config(&self, set: &[(&str, &str)]) -> Result<Vec<ClusterSetting>> {
        let timeout = self.config().request_timeout;
        let set: Vec<ClusterSetting> = set
            .iter()
            .map(|(k, v)| ClusterSetting { key: k.to_string(), value: v.to_string(), doc: String::new() })
            .collect();
        let call = if set.is_empty() { Call::Read } else { Call::Write };
        let r = self
            .any_node(call, |mut c, _| {
                let mut req = tonic::Request::new(pb::ClusterConfigRequest { set: set.clone() });
                req.set_timeout(timeout);
                async move { c.cluster_config(req).await }
            })
            .await?;
        Ok(r.settings)
    }

    /// Adds and removes voters of the controller group in one joint change
    /// (a removed voter stays a learner); returns the voters and learners
    /// after it. Nothing to add or remove only reads them. Refused with
    /// CONTROLLER_QUORUM when a voter added is not a live follower of the
    /// metadata, or either set of voters would lack a live majority.
    pub async fn controller_voters(&self, add: &[u64], remove: &[u64]) -> Result<(Vec<u64>, Vec<u64>)> {
        let timeout = self.config().request_timeout;
        let call = if add.is_empty() && remove.is_empty() { Call::Read } else { Call::Write };
        let r = self
            .any_node(call, |mut c, _| {
                let mut req =
                    tonic::Request::new(pb::ControllerVotersRequest { add: add.to_vec(), remove: remove.to_vec() });
                req.set_timeout(timeout);
                async move { c.controller_voters(req).await }
            })
            .await?;
        Ok((r.voters, r.learners))
    }

    /// Whether every move in `moves` is done: each partition's replica set
    /// is the move's target, as the answering node knows it (a node that
    /// lags says not yet, never done too early).
    pub async fn moves_done(&self, moves: &[PartitionMove]) -> Result<bool> {
        let mut topics = std::collections::BTreeMap::new();
        for m in moves {
            if !topics.contains_key(&m.topic) {
                topics.insert(m.topic.clone(), self.describe_topic(&m.topic).await?);
            }
            let done = topics[&m.topic].partitions.get(m.partition as usize).is_some_and(|p| p.replicas == m.to);
            if !done {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether node `id` has left the cluster (after a decommission).
    pub async fn node_removed(&self, id: u64) -> Result<bool> {
        Ok(!self.cluster_status().await?.nodes.iter().any(|n| n.id == id))
    }
}
