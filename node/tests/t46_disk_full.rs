//! A node whose data volume fills up.
//!
//! Contract checked, on three real nodes where node 1's data directory is a
//! small loop-mounted ext4 volume that the test fills with a file of its
//! own until the volume has no byte left:
//!
//! - as a **leader**, node 1 refuses produce with DISK_FULL, a clear error,
//!   and appends nothing; it keeps serving reads;
//! - as a **follower**, it holds back its own appends: partitions it
//!   follows keep acknowledging writes through the other two replicas;
//! - nothing acknowledged before is damaged, and the node neither crashes
//!   nor stops: it is the same process throughout;
//! - once the file is removed it serves produce again by itself, catches up
//!   as a follower to a byte-identical copy, and after a SIGKILL restart its
//!   store opens with everything in place.
//!
//! Needs root (mount, loop devices) and mkfs.ext4, like the chaos tests.

mod common;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use common::{Cluster, WAIT, wait_for};
use replog_client::{Client, ConsumedRecord, ErrorCode, PartitionReader, Producer, ProducerConfig, Record};

/// Size of node 1's data volume.
const VOLUME_MB: u64 = 160;
/// Free space every node keeps; node 1's volume goes far below it.
const MIN_FREE_MB: u64 = 32;
const TOPIC: &str = "fill";
const PARTITIONS: u32 = 3;
/// Written to the partition node 1 follows while its disk is full: more
/// than the room it has left, so its appends must hold back.
const WHILE_FULL_BYTES: usize = 24 << 20;

/// A loop-mounted ext4 volume, unmounted on drop.
struct Volume {
    mount: PathBuf,
}

impl Volume {
    fn new(image: &Path, mount: &Path, mb: u64) -> Volume {
        File::create(image).and_then(|f| f.set_len(mb << 20)).expect("volume image");
        run("mkfs.ext4", &["-q", "-F", image.to_str().expect("path")]);
        std::fs::create_dir_all(mount).expect("mount point");
        run("mount", &["-o", "loop", image.to_str().expect("path"), mount.to_str().expect("path")]);
        Volume { mount: mount.to_path_buf() }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        // Lazy: a node killed a moment ago may still hold files open.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd).args(args).status().unwrap_or_else(|e| panic!("{cmd}: {e} (needs root)"));
    assert!(st.success(), "{cmd} {args:?} failed ({st}); this test needs root, loop devices and mkfs.ext4");
}

/// Writes to `path` until the volume refuses another byte.
fn fill(path: &Path) {
    let mut f = File::create(path).expect("filler");
    let chunk = vec![7u8; 1 << 20];
    loop {
        if let Err(e) = f.write_all(&chunk).and_then(|_| f.sync_data()) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling the volume: {e}");
            break;
        }
    }
    // Whatever is left after the last partial chunk.
    let _ = f.write_all(&chunk[..4096]).and_then(|_| f.sync_data());
}

fn record(i: usize, size: usize) -> Record {
    let mut v = format!("r{i}-").into_bytes();
    v.resize(size, b'x');
    Record::new(None, Bytes::from(v), i as i64)
}

/// Produces `n` records of `size` bytes to `partition`; their offsets.
async fn produce(client: &Client, partition: u32, n: usize, size: usize) -> Result<Vec<u64>, replog_client::Error> {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        handles.push(producer.enqueue(TOPIC, Some(partition), record(i, size)).await?);
    }
    let mut offsets = Vec::with_capacity(n);
    for h in handles {
        offsets.push(h.wait().await?.1);
    }
    Ok(offsets)
}

async fn read_all(client: &Client, p: u32, replica: Option<&str>) -> Option<Vec<ConsumedRecord>> {
    let mut r = PartitionReader::new(client.clone(), TOPIC, p, 0);
    if let Some(addr) = replica {
        r = r.from_replica(addr);
    }
    r.read_to_end().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_node_whose_volume_fills_up_then_it_refuses_produce_keeps_data_and_recovers_once_space_is_freed() {
    let min_free = MIN_FREE_MB.to_string();
    let cluster = Cluster::prepare(3, common::options(&["--min-free-mb", &min_free])).expect("prepare");
    let node1_dir = cluster.node(1).dir.clone();
    let volume = Volume::new(&cluster.dir().join("node-1.img"), &node1_dir, VOLUME_MB);
    let mut cluster = cluster.launch().await.expect("start the cluster");
    let client = common::client(&cluster).await;
    client.create_topic(TOPIC, PARTITIONS, 3).await.expect("create topic");

    // Given: node 1 leads one partition and follows another, and each has
    // acknowledged records.
    let (led, followed) = wait_for("node 1 to lead one partition and follow another", WAIT, || async {
        let l = cluster.wait_leaders(&client, TOPIC, WAIT).await.ok()?;
        let led = l.iter().find(|(_, n)| **n == 1).map(|(p, _)| *p)?;
        let followed = l.iter().find(|(_, n)| **n != 1).map(|(p, _)| *p)?;
        Some((led, followed))
    })
    .await;
    let before_led = produce(&client, led, 300, 200).await.expect("produce before the disk fills");
    let before_followed = produce(&client, followed, 300, 200).await.expect("produce before the disk fills");
    let pid = cluster.pid(1).expect("node 1 runs");

    // When: node 1's volume fills up completely.
    let filler = volume.mount.join("filler");
    fill(&filler);

    // Then: as leader it refuses produce with DISK_FULL and appends nothing.
    let hw_before = client.describe_topic(TOPIC).await.expect("describe").partitions[led as usize].high_watermark;
    let err = wait_for("produce to node 1's partition to be refused", WAIT, || async {
        produce(&client, led, 1, 100).await.err().filter(|e| e.code() == Some(ErrorCode::DiskFull))
    })
    .await;
    assert!(err.to_string().contains("DISK_FULL"), "the error must say what is wrong: {err}");
    // As follower it holds back, and the partition goes on without it.
    let while_full = produce(&client, followed, WHILE_FULL_BYTES / 4096, 4096)
        .await
        .expect("a partition with a full follower must still acknowledge writes");
    // Reads still work, nothing acknowledged is damaged, and nothing
    // refused was appended.
    let led_now = read_all(&client, led, None).await.expect("node 1 still serves reads");
    assert_eq!(led_now.len() as u64, hw_before, "a refused produce must append nothing");
    assert_eq!(led_now.iter().map(|r| r.offset).collect::<Vec<_>>(), before_led);
    let followed_now = read_all(&client, followed, None).await.expect("read followed partition");
    assert_eq!(followed_now.len(), before_followed.len() + while_full.len());
    let log1 = cluster.log(1);
    assert!(log1.contains("released the"), "the ballast must go when the volume is full:\n{log1}");
    assert!(log1.contains("log appends wait"), "node 1 must have held back its follower appends:\n{log1}");
    let exited = cluster.exited();
    assert!(!exited.iter().any(|(id, _)| *id == 1), "node 1 exited on a full disk: {exited:?}");
    assert_eq!(cluster.pid(1), Some(pid));

    // When: space comes back.
    std::fs::remove_file(&filler).expect("remove filler");

    // Then: node 1 takes produce again by itself…
    wait_for("node 1 to accept produce again", WAIT, || async { produce(&client, led, 50, 100).await.ok() }).await;
    // …and catches up as a follower to an identical copy.
    let addr1 = cluster.node(1).addr.clone();
    let leader_copy = read_all(&client, followed, None).await.expect("leader copy");
    wait_for("node 1 to catch up on the partition it follows", WAIT, || async {
        (read_all(&client, followed, Some(&addr1)).await? == leader_copy).then_some(())
    })
    .await;

    // And after a SIGKILL its store opens with everything in place.
    let led_copy = read_all(&client, led, None).await.expect("led copy");
    cluster.kill(1).expect("kill");
    cluster.restart(1).expect("restart");
    for (p, want) in [(led, &led_copy), (followed, &leader_copy)] {
        wait_for("node 1 to serve its copy after a restart", WAIT, || async {
            let got = read_all(&client, p, Some(&addr1)).await?;
            (got.len() >= want.len() && got[..want.len()] == want[..]).then_some(())
        })
        .await;
    }
    assert!(!cluster.log(1).contains("panicked"), "node 1 panicked:\n{}", cluster.log(1));
    drop(cluster);
    drop(volume);
}
