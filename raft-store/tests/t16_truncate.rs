//! Retention's truncation in the partition state machine: every replica
//! drops the same prefix whatever batches of entries its applies happen to
//! get (a truncation may share an apply with the appends before it), the
//! log start lands on a batch boundary and never moves back, size and time
//! look-ups name the right batch, and a snapshot taken afterwards carries
//! exactly the retained batches.

use std::sync::Arc;

use bytes::Bytes;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use openraft::{EntryPayload, LogId, RaftSnapshotBuilder};
use replog_proto::batch::{BatchBuilder, Record};
use replog_raft_store::{Entry, GroupStateMachine, LogStore, Request, Store, StoreConfig};

fn log_id(index: u64) -> LogId<LeaderId<u64, u64>> {
    LogId::new(LeaderId { term: 1, node_id: 1 }, index)
}

/// Entry `index`: a batch of `n` records stamped `ts`.
fn append(index: u64, n: usize, ts: i64) -> Entry {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b.push(&Record::new(None, Bytes::from(format!("e{index}-r{i}")), ts));
    }
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Request::Append {
            batch: b.build(),
            record_count: n as u32,
            max_timestamp_ms: ts,
        }),
    }
}

fn truncate(index: u64, to: u64) -> Entry {
    Entry { log_id: log_id(index), payload: EntryPayload::Normal(Request::Truncate { log_start_offset: to }) }
}

async fn apply(sm: &mut GroupStateMachine, entries: &[Entry]) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for e in entries {
        tx.send(Ok((e.clone(), None))).unwrap();
    }
    drop(tx);
    sm.apply(Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))).await.unwrap();
}

/// The entries: batches of 10 records (offsets 0, 10, 20, …) with rising
/// timestamps, truncations to the middle of a batch, below the log start,
/// and past the end of what was appended at that point.
fn history() -> Vec<Entry> {
    let mut v = Vec::new();
    let mut i = 1;
    for b in 0..6 {
        v.push(append(i, 10, 1000 + b));
        i += 1;
    }
    v.push(truncate(i, 25)); // → 20
    i += 1;
    v.push(truncate(i, 5)); // below: no change
    i += 1;
    for b in 6..9 {
        v.push(append(i, 10, 1000 + b));
        i += 1;
    }
    v.push(truncate(i, 70)); // a batch start
    v
}

async fn replica(entries: &[Entry], split: &[usize]) -> (tempfile::TempDir, GroupStateMachine) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<Store> = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    let mut log = LogStore::open(store.clone(), 3).unwrap();
    log.blocking_append(entries.to_vec()).await.unwrap();
    let mut sm = GroupStateMachine::open_partition(&store, 3).unwrap();
    let mut at = 0;
    for &end in split.iter().chain([entries.len()].iter()) {
        apply(&mut sm, &entries[at..end]).await;
        at = end;
    }
    (dir, sm)
}

#[tokio::test]
async fn given_the_same_entries_applied_in_different_runs_then_every_replica_keeps_the_same_batches() {
    let entries = history();
    let (_a, sm_a) = replica(&entries, &[]).await;
    let (_b, sm_b) = replica(&entries, &[1, 3, 6, 7, 9, 11]).await;
    let (_c, sm_c) = replica(&entries, &[6]).await;
    let want = sm_a.reader().unwrap().offsets();
    assert_eq!(want.log_start_offset, 70);
    assert_eq!(want.high_watermark, 90);
    let batches = sm_a.reader().unwrap().all_batches().unwrap();
    assert_eq!(batches.iter().map(|b| b.base_offset).collect::<Vec<_>>(), vec![70, 80]);
    assert_eq!(want.retained_bytes, batches.iter().map(|b| b.batch.len() as u64).sum::<u64>());
    for sm in [&sm_b, &sm_c] {
        assert_eq!(sm.reader().unwrap().offsets(), want);
        assert_eq!(sm.reader().unwrap().all_batches().unwrap(), batches);
    }
    // Below the log start nothing is served, even by a reader that did not
    // look at the offsets first.
    assert!(sm_a.reader().unwrap().read(69, 1 << 20, 100).is_err());
}

#[tokio::test]
async fn given_a_truncated_partition_when_its_snapshot_is_installed_then_the_replica_holds_only_retained_batches() {
    let entries = history();
    let (_a, mut sm_a) = replica(&entries, &[]).await;
    let r = sm_a.reader().unwrap();
    // Time: the first batch with a record at or after 1007 is offset 70.
    assert_eq!(r.start_for_time(1007).unwrap(), 70);
    assert_eq!(r.start_for_time(i64::MAX).unwrap(), 90);
    // Size: room for one batch keeps the last one only.
    let one = r.all_batches().unwrap()[1].batch.len() as u64;
    assert_eq!(r.start_for_size(one).unwrap(), 80);
    assert_eq!(r.start_for_size(one - 1).unwrap(), 90);
    assert_eq!(r.start_for_size(u64::MAX).unwrap(), 70);

    let snap = sm_a.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let store_b: Arc<Store> = Store::open(dir_b.path(), &StoreConfig::default()).unwrap();
    let mut sm_b = GroupStateMachine::open_partition(&store_b, 3).unwrap();
    sm_b.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
    assert_eq!(sm_b.reader().unwrap().offsets(), r.offsets());
    assert_eq!(sm_b.reader().unwrap().all_batches().unwrap(), r.all_batches().unwrap());
    // Releasing everything the installed data file held removes it.
    let next = entries.len() as u64 + 1;
    let more = [append(next, 10, 2000), truncate(next + 1, 90)];
    apply(&mut sm_b, &more).await;
    assert_eq!(sm_b.reader().unwrap().offsets().log_start_offset, 90);
    let installed: Vec<_> = std::fs::read_dir(dir_b.path().join("logs").join(format!("{:016x}", 3)))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("installed-"))
        .collect();
    assert!(installed.is_empty(), "the installed data file went: {installed:?}");
}
