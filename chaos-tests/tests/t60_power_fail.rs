//! Power loss against a real cluster: with every node's data directory on
//! a `replog-faultfs` mount, every record acknowledged with acks=all is
//! still at its offset after all three nodes lose power at once, with
//! writes in flight, and restart on what their disks kept — replog fsyncs
//! what it acknowledges. The mounts are gone once the cluster is dropped.
//!
//! Needs root, `/dev/fuse` and built `replog-node` and `replog-faultfs`
//! binaries; without them it says why and passes, except under CI (`CI`
//! set), where it must run.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use replog_chaos::cluster::chaos_options;
use replog_client::{ClientConfig, PartitionReader, Producer, ProducerConfig, Record};
use replog_faultfs::mount::mounts_under;
use replog_testkit::{Cluster, ClusterOptions, Need, runnable};

/// Cluster start, elections after a restart of every node: generous for a
/// busy 2-core machine.
const READY: Duration = Duration::from_secs(60);
const RECORDS: usize = 400;
/// Acknowledgements awaited before the power goes, so that the rest are
/// still in flight when it does.
const ACKED_BEFORE_FAILURE: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_acknowledged_records_when_every_node_loses_power_then_all_are_there_after_restart() {
    if !runnable("the power-fail test", &[Need::Root, Need::Fuse, Need::FaultfsBin]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let opts = ClusterOptions { faultfs: true, ..chaos_options(&run_dir) };
    let mut cluster = Cluster::start(3, opts).await.unwrap();
    assert_eq!(mounts_under(&run_dir).len(), 3, "one faultfs mount per node");
    let client = cluster.client(ClientConfig::default()).await.unwrap();
    client.create_topic("power", 1, 3).await.unwrap();
    cluster.wait_leaders(&client, "power", READY).await.unwrap();

    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut handles = Vec::new();
    for i in 0..RECORDS {
        let record = Record::new(None, Bytes::from(format!("v{i}")), 0);
        handles.push((i, producer.enqueue("power", Some(0), record).await.unwrap()));
    }
    let rest = handles.split_off(ACKED_BEFORE_FAILURE);
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    for (i, h) in handles {
        let (_, offset) = h.wait().await.unwrap();
        acked.insert(offset, format!("v{i}"));
    }

    let lost = cluster.power_fail_all().unwrap();
    eprintln!("power failure lost: {lost:?}");
    cluster.restart_all().unwrap();
    cluster.wait_ready(READY).await.unwrap();
    cluster.wait_leaders(&client, "power", READY).await.unwrap();
    // Writes in flight at the failure either fail or are retried by the
    // SDK and acknowledged: those count too.
    for (i, h) in rest {
        if let Ok((_, offset)) = h.wait().await {
            acked.insert(offset, format!("v{i}"));
        }
    }

    let records = PartitionReader::new(client.clone(), "power", 0, 0).read_to_end().await.unwrap();
    let read: BTreeMap<u64, String> =
        records.iter().map(|r| (r.offset, String::from_utf8_lossy(&r.value).into_owned())).collect();
    for (offset, value) in &acked {
        assert_eq!(read.get(offset), Some(value), "acknowledged {value} at offset {offset} after the power failure");
    }
    assert!(acked.len() >= ACKED_BEFORE_FAILURE);

    drop(cluster);
    assert!(mounts_under(&run_dir).is_empty(), "every faultfs mount is unmounted on drop");
}

/// A topic deleted just before every node loses power stays deleted, and
/// no write to it is acknowledged: the nodes come back with metadata rolled
/// back to before the delete (the state machine's writes were not yet
/// synced; the controller applies its committed log again once it has a
/// quorum), and a node takes no write until its metadata has caught up
/// with the controller. Five nodes: the controller's voters are 1–3 and the
/// partition lives on 3–5, so that with only 3–5 back the partition has a
/// majority while the controller has none and cannot catch anyone up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_deleted_topic_when_every_node_loses_power_then_no_write_to_it_is_acknowledged() {
    if !runnable("the power-fail test", &[Need::Root, Need::Fuse, Need::FaultfsBin]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let opts = ClusterOptions { faultfs: true, ..chaos_options(&run_dir) };
    let mut cluster = Cluster::start(5, opts).await.unwrap();
    let config = ClientConfig { retry_deadline: Duration::from_secs(5), ..ClientConfig::default() };
    let client = cluster.client(config).await.unwrap();
    client.cluster_config(&[("balance.auto", "false")]).await.unwrap();
    // Once every node is registered (the controller leader does it).
    let shrink = || async { client.controller_voters(&[], &[4, 5]).await.ok() };
    let (voters, _) = replog_testkit::wait::poll_until("voters 1, 2, 3", READY, shrink).await.unwrap();
    assert_eq!(voters, [1, 2, 3]);
    client.create_topic("gone", 1, 3).await.unwrap();
    if let Some(m) = client.move_partition("gone", 0, &[3, 4, 5], false).await.unwrap() {
        let done = || async { client.moves_done(std::slice::from_ref(&m)).await.ok()?.then_some(()) };
        replog_testkit::wait::poll_until("the move to 3, 4, 5", READY, done).await.unwrap();
    }
    cluster.wait_leaders(&client, "gone", READY).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let send = |v: &'static str| {
        let producer = producer.clone();
        // Refused at enqueue once the client has learnt the topic is gone.
        async move { producer.enqueue("gone", Some(0), Record::new(None, Bytes::from(v), 0)).await?.wait().await }
    };
    send("before").await.expect("a write before the delete");
    client.delete_topic("gone").await.expect("delete");
    let lost = cluster.power_fail_all().unwrap();
    eprintln!("power failure lost: {lost:?}");
    for id in [3, 4, 5] {
        cluster.restart(id).unwrap();
    }
    // The client still knows the topic and its replicas; the SDK retries
    // for 5 s while the partition elects a leader.
    let after = send("after").await;
    assert!(after.is_err(), "a write to a deleted topic was acknowledged after the power failure: {after:?}");
    for id in [1, 2] {
        cluster.restart(id).unwrap();
    }
    cluster.wait_ready(READY).await.unwrap();
    let again = send("again").await;
    assert!(again.is_err(), "a write to a deleted topic was acknowledged: {again:?}");
    // Each node's metadata catches up and drops the topic again.
    for addr in cluster.serving_addrs() {
        let gone = || async {
            match client.metadata_at(&addr, &["gone".to_string()], Duration::from_secs(5)).await {
                Ok(m) => m.topics.iter().all(|t| t.name != "gone").then_some(()),
                Err(e) => (e.code() == Some(replog_proto::codes::ErrorCode::UnknownTopic)).then_some(()),
            }
        };
        replog_testkit::wait::poll_until(&format!("{addr} to forget the deleted topic"), READY, gone).await.unwrap();
    }
}
