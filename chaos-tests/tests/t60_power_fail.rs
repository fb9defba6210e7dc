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
