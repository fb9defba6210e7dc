//! Retention against three real nodes: time, size and all-consumed rules
//! each release exactly what they should, on every replica; the disk space
//! comes back; a read below the new log start gets OFFSET_OUT_OF_RANGE
//! naming it; a follower kept down past the released prefix rejoins through
//! a streamed snapshot and serves the same records as the leader; queue
//! groups hold all-consumed retention where they stopped settling; bad
//! settings get INVALID_CONFIG and change nothing.
//!
//! One cluster serves every case (each on its own topic), with 1 MiB
//! segments so that a few MiB produced make whole segment files to give
//! back, and retention applied every 200 ms.

mod common;

use std::path::Path;

use bytes::Bytes;
use common::{Cluster, WAIT, wait_for};
use replog_client::{Client, ErrorCode, QueueConfig, QueueConsumer};
use replog_proto::batch::{self, Record};
use replog_proto::pb::{self, replog_client::ReplogClient};
use tonic::transport::Channel;

const ARGS: [&str; 4] = ["--retention-check-ms", "200", "--segment-mb", "1"];
const HOUR_MS: i64 = 3_600_000;

async fn conn(addr: &str) -> ReplogClient<Channel> {
    ReplogClient::connect(format!("http://{addr}")).await.expect("connect")
}

/// A batch of `n` records of `size` bytes, values tagged `tag-i`.
fn batch_of(tag: &str, n: usize, size: usize, ts: i64) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| {
            let mut v = format!("{tag}-{i:05}-").into_bytes();
            v.resize(size, b'x');
            Record::new(None, Bytes::from(v), ts)
        })
        .collect();
    batch::encode(&records)
}

/// Appends `batch` to `topic`/0 and returns its base offset.
async fn append(client: &Client, topic: &str, batch: Bytes) -> u64 {
    let r = client.produce_batch(topic, 0, batch, pb::Acks::All).await.expect("produce");
    r.base_offset.expect("acks=all answers an offset")
}

/// `topic`/0's Raft group.
async fn group_of(cluster: &Cluster, topic: &str) -> u64 {
    let mut c = conn(&cluster.serving_addrs()[0]).await;
    let r = c.metadata(pb::MetadataRequest { topics: vec![topic.into()] }).await.expect("metadata").into_inner();
    r.topics[0].partitions[0].group_id
}

/// `(log start, high watermark)` of `group` as node `addr`'s own replica holds it.
async fn replica_offsets(addr: &str, group: u64) -> Option<(u64, u64)> {
    let mut c = ReplogClient::connect(format!("http://{addr}")).await.ok()?;
    let r = c.node_info(pb::NodeInfoRequest {}).await.ok()?.into_inner();
    r.groups.iter().find(|g| g.group_id == group).map(|g| (g.log_start_offset, g.high_watermark))
}

/// Waits until every running replica's log starts at `start`.
async fn wait_log_start(cluster: &Cluster, group: u64, start: u64, what: &str) {
    for addr in cluster.serving_addrs() {
        wait_for(&format!("{what}: log start {start} at {addr}"), WAIT, || async {
            let (s, _) = replica_offsets(&addr, group).await?;
            assert!(s <= start, "{what}: {addr} released too much: log start {s}, expected {start}");
            (s == start).then_some(())
        })
        .await;
    }
}

/// Bytes of the files under `dir` (hard links counted once).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if seen.insert(m.ino()) {
                total += m.len();
            }
        }
    }
    total
}

/// The first log index of the oldest segment file in a group's log
/// directory: above 1 once the log was purged.
fn first_segment(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".log").and_then(|n| n.parse().ok()))
                .min()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

fn log_dir(cluster: &Cluster, node: u64, group: u64) -> std::path::PathBuf {
    cluster.node(node).data_dir.join("logs").join(format!("{group:016x}"))
}

/// Every record of `topic`/0 from `from` as node `addr` serves it.
async fn read_at(client: &Client, addr: &str, topic: &str, from: u64) -> Vec<(u64, Bytes)> {
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let req = pb::FetchRequest {
            topic: topic.into(),
            partition: 0,
            offset: at,
            max_bytes: 4 << 20,
            max_records: 100_000,
            max_wait_ms: 0,
            replica_read: true,
            min_bytes: 0,
        };
        let r = client.fetch_raw(req, Some(addr)).await.expect("fetch");
        if r.batches.is_empty() {
            return out;
        }
        for b in r.batches {
            let (_, records) = batch::decode(&b.batch).expect("decode");
            for (i, rec) in records.into_iter().enumerate() {
                let offset = b.base_offset + i as u64;
                if offset >= at {
                    out.push((offset, rec.value));
                }
            }
        }
        at = out.last().map_or(at, |(o, _)| o + 1);
        if at >= r.high_watermark {
            return out;
        }
    }
}

/// A member of `group` reading `topic`: its coordinator's client, id and generation.
/// Checks that the follower serves every record the leader retains below
/// `hw`, byte for byte; returns how many were compared.
async fn same_records(client: &Client, group: u64, topic: &str, leader: &str, follower: &str, hw: u64) -> usize {
    let (fs, _) = replica_offsets(follower, group).await.expect("follower offsets");
    let (ls, _) = replica_offsets(leader, group).await.expect("leader offsets");
    let from = fs.max(ls);
    let at_leader = read_at(client, leader, topic, from).await;
    let at_follower = read_at(client, follower, topic, from).await;
    assert_eq!(at_leader.len() as u64, hw - from);
    assert!(at_follower == at_leader, "the follower serves the leader's records");
    at_leader.len()
}

/// A member of `group`: its id and generation. The coordinator is looked
/// up for every call, since its leadership may move under a loaded machine.
struct Member {
    any: String,
    id: String,
    generation: u64,
}

/// The coordinator of `group` as the cluster names it now.
async fn coordinator(any: &str, group: &str) -> Option<ReplogClient<Channel>> {
    let r = conn(any).await.find_coordinator(pb::FindCoordinatorRequest { group: group.into() }).await.ok()?;
    let r = r.into_inner();
    if r.node_id == 0 {
        return None;
    }
    Some(conn(&r.addr).await)
}

async fn join(cluster: &Cluster, group: &str, topic: &str) -> Member {
    let any = cluster.serving_addrs()[0].clone();
    let (id, generation) = wait_for("a join at the group's coordinator", WAIT, || async {
        let j = coordinator(&any, group)
            .await?
            .join_group(pb::JoinGroupRequest {
                group: group.into(),
                member_id: String::new(),
                client_id: "retention-test".into(),
                topics: vec![topic.into()],
                strategy: pb::AssignmentStrategy::Uniform as i32,
                session_timeout_ms: 60_000,
            })
            .await
            .ok()?
            .into_inner();
        Some((j.member_id, j.generation))
    })
    .await;
    Member { any, id, generation }
}

async fn commit(m: &Member, group: &str, topic: &str, offset: u64) {
    wait_for("a commit at the group's coordinator", WAIT, || async {
        coordinator(&m.any, group)
            .await?
            .commit_offsets(pb::CommitOffsetsRequest {
                group: group.into(),
                member_id: m.id.clone(),
                generation: m.generation,
                offsets: vec![pb::OffsetCommit { topic: topic.into(), partition: 0, offset, metadata: String::new() }],
            })
            .await
            .ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_retention_rules_when_they_apply_then_every_replica_releases_exactly_what_they_allow() {
    let mut cluster = common::start(3, &ARGS).await;
    let client = common::client(&cluster).await;
    let now = replog_proto::now_ms();

    // --- Bad settings: refused with INVALID_CONFIG, nothing created or changed.
    for (k, v) in [("retention.ms", "0"), ("retention.bytes", "-5"), ("retention.consumed", "maybe"), ("nope", "1")] {
        let e = client.create_topic_with("bad", 1, 3, &[(k, v)]).await.expect_err("refused");
        assert_eq!(e.code(), Some(ErrorCode::InvalidConfig), "{k}={v}: {e}");
    }
    assert!(client.list_topics().await.expect("list").iter().all(|t| t.name != "bad"));

    // --- Time: old batches go, new ones stay; the disk gets space back.
    client.create_topic("time", 1, 3).await.expect("create");
    let group = group_of(&cluster, "time").await;
    // One follower is down while the batches are written: it catches up on
    // all of them at once, and must still give whole segment files back.
    let (leader, replicas) = common::preferred_leader(&client, "time", 0).await;
    let late = replicas.iter().copied().find(|r| *r != leader).expect("a follower");
    cluster.kill(late).expect("kill");
    // 12 old batches of 256 KiB: 3 MiB, so whole 1 MiB segments lie below.
    for i in 0..12 {
        append(&client, "time", batch_of(&format!("old{i}"), 64, 4096, now - HOUR_MS)).await;
    }
    let first_new = append(&client, "time", batch_of("new0", 10, 100, now)).await;
    let end = append(&client, "time", batch_of("new1", 10, 100, now + 1)).await + 10;
    cluster.restart(late).expect("restart");
    // acks=all is a majority: the third replica may still be catching up.
    for addr in cluster.serving_addrs() {
        wait_for(&format!("{addr} to hold every record"), WAIT, || async {
            let (_, hw) = replica_offsets(&addr, group).await?;
            (hw >= end).then_some(())
        })
        .await;
    }
    let before: Vec<u64> = (1..=3).map(|n| disk_bytes(&log_dir(&cluster, n, group))).collect();
    assert!(before.iter().all(|b| *b > 3 << 20), "each replica holds the 3 MiB: {before:?}");
    let e = client.alter_topic_config("time", &[("retention.ms", "-7")], &[]).await.expect_err("refused");
    assert_eq!(e.code(), Some(ErrorCode::InvalidConfig));
    let t = client.alter_topic_config("time", &[("retention.ms", "600000")], &[]).await.expect("alter");
    assert_eq!(t.configs.get("retention.ms").map(String::as_str), Some("600000"));
    wait_log_start(&cluster, group, first_new, "time retention").await;
    for n in 1..=3u64 {
        let dir = log_dir(&cluster, n, group);
        wait_for(&format!("node {n} to give segment files back"), WAIT, || async {
            let now = disk_bytes(&dir);
            (now + (2 << 20) <= before[n as usize - 1]).then_some(())
        })
        .await;
    }
    // Below the log start: OFFSET_OUT_OF_RANGE naming it, on the leader and on replicas.
    let req = pb::FetchRequest {
        topic: "time".into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
        max_records: 10,
        max_wait_ms: 0,
        replica_read: false,
        min_bytes: 0,
    };
    let e = client.fetch_raw(req.clone(), None).await.expect_err("released");
    assert_eq!(e.code(), Some(ErrorCode::OffsetOutOfRange));
    assert!(e.to_string().contains(&format!("[{first_new}, ")), "names the log start: {e}");
    for addr in cluster.serving_addrs() {
        let read = read_at(&client, &addr, "time", first_new).await;
        let tags: Vec<String> = read.iter().map(|(_, v)| String::from_utf8_lossy(&v[..4]).into_owned()).collect();
        assert_eq!(read.len(), 20, "{addr}: the new records, all of them: {tags:?}");
        assert!(tags.iter().all(|t| t == "new0" || t == "new1"), "{addr}: {tags:?}");
    }

    // --- Size: at most retention.bytes of the newest batches stay.
    let limit = 100_000u64;
    client.create_topic_with("size", 1, 3, &[("retention.bytes", &limit.to_string())]).await.expect("create");
    let group = group_of(&cluster, "size").await;
    let mut batches = Vec::new();
    for i in 0..10 {
        let b = batch_of(&format!("s{i}"), 10, 3000, now);
        let base = append(&client, "size", b.clone()).await;
        batches.push((base, b.len() as u64));
    }
    // Keep the newest batches whose sizes sum to at most the limit.
    let (mut kept, mut start) = (0u64, batches.last().map_or(0, |(b, _)| b + 10));
    for (base, len) in batches.iter().rev() {
        if kept + len > limit {
            break;
        }
        kept += len;
        start = *base;
    }
    assert!(start > 0 && start < 90, "the case releases some batches and keeps some: {start}");
    wait_log_start(&cluster, group, start, "size retention").await;

    // --- Consumption: the lowest commit of the groups that read the topic.
    client.create_topic_with("consumed", 1, 3, &[("retention.consumed", "true")]).await.expect("create");
    let group = group_of(&cluster, "consumed").await;
    for i in 0..5 {
        append(&client, "consumed", batch_of(&format!("c{i}"), 10, 100, now)).await;
    }
    // One group far ahead, one that has read nothing yet: nothing goes.
    let behind = join(&cluster, "behind", "consumed").await;
    let ahead = join(&cluster, "ahead", "consumed").await;
    commit(&ahead, "ahead", "consumed", 40).await;
    // The slow group catches up to 20: the log then starts at 20, not 40
    // (and never went to 40, since a log start only moves forward).
    commit(&behind, "behind", "consumed", 20).await;
    wait_log_start(&cluster, group, 20, "consumed retention").await;
    // A queue group counts too: it settles 20..40, both consumer groups
    // move to the end, and the log then starts where the queue stopped.
    let mut cfg = QueueConfig::new("work");
    cfg.lock = std::time::Duration::from_secs(120);
    let mut q = QueueConsumer::new(client.clone(), "consumed", cfg).await.expect("queue consumer");
    let mut got = Vec::new();
    while got.len() < 20 {
        got.extend(q.receive(20 - got.len(), std::time::Duration::from_secs(5)).await.expect("receive"));
    }
    assert_eq!(got.iter().map(|m| m.offset).collect::<Vec<_>>(), (20..40).collect::<Vec<_>>());
    q.ack(&got).await.expect("ack");
    commit(&ahead, "ahead", "consumed", 50).await;
    commit(&behind, "behind", "consumed", 50).await;
    wait_log_start(&cluster, group, 40, "consumed retention with a queue group").await;

    // --- A follower kept down past the released prefix rejoins by snapshot.
    client.create_topic_with("rejoin", 1, 3, &[("retention.bytes", &(2u64 << 20).to_string())]).await.expect("create");
    let group = group_of(&cluster, "rejoin").await;
    let (leader, replicas) = common::preferred_leader(&client, "rejoin", 0).await;
    let follower = replicas.iter().copied().find(|r| *r != leader).expect("a follower");
    append(&client, "rejoin", batch_of("before", 10, 100, now)).await;
    cluster.kill(follower).expect("kill");
    for i in 0..32 {
        append(&client, "rejoin", batch_of(&format!("r{i:02}"), 64, 4096, now)).await;
    }
    // Both running replicas released what the follower lacks and purged
    // their logs, so whichever of them leads when the follower comes back
    // (leadership may move on a busy machine) has only a snapshot for it.
    let leader_addr = cluster.node(leader).addr.clone();
    let (start, hw) = wait_for("the leader to release the prefix", WAIT, || async {
        let (s, hw) = replica_offsets(&leader_addr, group).await?;
        (s > 10 && first_segment(&log_dir(&cluster, leader, group)) > 1).then_some((s, hw))
    })
    .await;
    for r in replicas.iter().copied().filter(|r| *r != leader && *r != follower) {
        let addr = cluster.node(r).addr.clone();
        wait_for(&format!("replica {r} to release the prefix"), WAIT, || async {
            let (s, _) = replica_offsets(&addr, group).await?;
            (s >= start && first_segment(&log_dir(&cluster, r, group)) > 1).then_some(())
        })
        .await;
    }
    cluster.restart(follower).expect("restart");
    let follower_addr = cluster.node(follower).addr.clone();
    wait_for("the follower to catch up", WAIT, || async {
        let (s, h) = replica_offsets(&follower_addr, group).await?;
        (h == hw && s >= start).then_some(())
    })
    .await;
    let installed = common::metric(&cluster.node(follower).metrics, "replog_raft_snapshots_installed_total");
    assert!(installed >= Some(1.0), "the follower caught up through a snapshot: {installed:?} installed");
    same_records(&client, group, "rejoin", &leader_addr, &follower_addr, hw).await;

    // Reads through the SDK at a released offset say where the log starts.
    let e = client.fetch_raw(pb::FetchRequest { topic: "rejoin".into(), ..req }, None).await.expect_err("released");
    assert_eq!(e.code(), Some(ErrorCode::OffsetOutOfRange));
}

/// Peak resident memory of process `pid` so far, in MiB (VmHWM).
fn peak_rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb / 1024
}

/// The must-show measurement, run by `make rejoin` (release build, a few
/// minutes, about 8 GB of disk): a follower kept down while the leader
/// takes `REJOIN_GIB` (default 1.5) GiB and releases an older prefix
/// rejoins through a streamed snapshot of at least 1 GiB; its peak RSS is
/// printed, and it serves exactly the leader's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement of minutes and gigabytes: make rejoin"]
async fn measure_a_follower_rejoining_through_a_snapshot_of_a_gibibyte() {
    let gib: f64 = std::env::var("REJOIN_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1.5);
    let total = (gib * (1u64 << 30) as f64) as u64;
    let mut cluster = common::start(3, &["--retention-check-ms", "1000"]).await;
    let client = common::client(&cluster).await;
    // Keep a little less than what is produced: the oldest segments go.
    let keep = total - (256 << 20);
    client.create_topic_with("big", 1, 3, &[("retention.bytes", &keep.to_string())]).await.expect("create");
    let group = group_of(&cluster, "big").await;
    let (leader, replicas) = common::preferred_leader(&client, "big", 0).await;
    let follower = replicas.iter().copied().find(|r| *r != leader).expect("a follower");
    append(&client, "big", batch_of("first", 10, 100, replog_proto::now_ms())).await;
    cluster.kill(follower).expect("kill");
    let t0 = std::time::Instant::now();
    let mut produced = 0u64;
    let mut i = 0;
    while produced < total {
        let b = batch_of(&format!("b{i:07}"), 240, 4096, replog_proto::now_ms());
        produced += b.len() as u64;
        append(&client, "big", b).await;
        i += 1;
    }
    println!("produced {:.2} GiB in {:.1} s", produced as f64 / (1u64 << 30) as f64, t0.elapsed().as_secs_f64());
    let leader_addr = cluster.node(leader).addr.clone();
    let (start, hw) = wait_for("the leader to release and purge the prefix", WAIT * 5, || async {
        let (s, hw) = replica_offsets(&leader_addr, group).await?;
        (s > 10 && first_segment(&log_dir(&cluster, leader, group)) > 1).then_some((s, hw))
    })
    .await;
    cluster.restart(follower).expect("restart");
    let pid = cluster.pid(follower).expect("follower pid");
    let follower_addr = cluster.node(follower).addr.clone();
    let t1 = std::time::Instant::now();
    wait_for("the follower to catch up", WAIT * 10, || async {
        let (s, h) = replica_offsets(&follower_addr, group).await?;
        (h == hw && s >= start).then_some(())
    })
    .await;
    let installed: u64 = std::fs::read_dir(log_dir(&cluster, follower, group))
        .expect("follower log dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("installed-"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    let peak = peak_rss_mb(pid);
    println!(
        "rejoin: snapshot installed {:.2} GiB in {:.1} s; follower peak RSS {} MiB",
        installed as f64 / (1u64 << 30) as f64,
        t1.elapsed().as_secs_f64(),
        peak
    );
    assert!(installed >= 1 << 30, "the follower rejoined through a snapshot of at least 1 GiB: {installed} bytes");
    assert!(peak < 512, "the follower's RSS stays bounded while it installs: {peak} MiB");
    let n = same_records(&client, group, "big", &leader_addr, &follower_addr, hw).await;
    println!("rejoin: {n} records compared, identical");
}
