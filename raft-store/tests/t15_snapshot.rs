//! The partition state machine keeps what it promises across snapshots and
//! restarts: a fresh replica that installs a snapshot serves exactly the
//! batches, at exactly the offsets, that the replica which built it serves —
//! even though its own Raft log is empty — and a partition of any size,
//! with idempotent-producer state, reopens with its offsets intact.

use std::sync::Arc;

use bytes::Bytes;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use openraft::{EntryPayload, LogId, RaftSnapshotBuilder};
use replog_proto::batch::{BatchBuilder, ProducerInfo, Record};
use replog_raft_store::{Entry, GroupStateMachine, LogStore, Request, Store, StoreConfig};

fn append_entry(index: u64, n: usize) -> Entry {
    append_entry_from(index, n, ProducerInfo::NONE)
}

fn append_entry_from(index: u64, n: usize, producer: ProducerInfo) -> Entry {
    let mut b = BatchBuilder::new().producer(producer);
    for i in 0..n {
        b.push(&Record::new(None, Bytes::from(format!("e{index}-r{i}")), index as i64));
    }
    let b = b.build();
    Entry {
        log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, index),
        payload: EntryPayload::Normal(Request::Append {
            batch: b,
            record_count: n as u32,
            max_timestamp_ms: index as i64,
        }),
    }
}

async fn apply(sm: &mut GroupStateMachine, entries: Vec<Entry>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for e in entries {
        tx.send(Ok((e, None))).unwrap();
    }
    drop(tx);
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    sm.apply(Box::pin(stream)).await.unwrap();
}

#[tokio::test]
async fn given_a_large_partition_with_producers_when_reopened_then_offsets_and_dedup_state_remain() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<Store> = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    let mut log = LogStore::open(store.clone(), 9).unwrap();
    let mut sm = GroupStateMachine::open_partition(&store, 9).unwrap();
    // Past 2^16 records, so the stored next offset has bits that any
    // confusion between state keys would expose.
    let pid = ProducerInfo { producer_id: 42, epoch: 0, base_sequence: 0 };
    let entries: Vec<Entry> = (1..=3)
        .map(|i| append_entry_from(i, 30_000, ProducerInfo { base_sequence: (i as i32 - 1) * 30_000, ..pid }))
        .collect();
    log.blocking_append(entries.clone()).await.unwrap();
    apply(&mut sm, entries.clone()).await;
    let before = sm.reader().unwrap().offsets();
    assert_eq!(before.high_watermark, 90_000);
    drop(sm);
    drop(log);
    drop(store);

    let store: Arc<Store> = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    let mut sm = GroupStateMachine::open_partition(&store, 9).expect("a large partition must reopen");
    assert_eq!(sm.reader().unwrap().offsets(), before);
    // The producer state came back too: a retry of the last batch is
    // recognised and answered with its first offset, not appended.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut retry = entries[2].clone();
    retry.log_id = LogId::new(LeaderId { term: 1, node_id: 1 }, 4);
    tx.send(Ok((retry, None))).unwrap();
    drop(tx);
    sm.apply(Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))).await.unwrap();
    assert_eq!(sm.reader().unwrap().offsets(), before, "a retried batch was appended again");
}

#[tokio::test]
async fn given_a_partition_snapshot_when_a_fresh_replica_installs_it_then_it_serves_every_record() {
    let dir_a = tempfile::tempdir().unwrap();
    let store_a: Arc<Store> = Store::open(dir_a.path(), &StoreConfig::default()).unwrap();
    let mut log_a = LogStore::open(store_a.clone(), 5).unwrap();
    let mut sm_a = GroupStateMachine::open_partition(&store_a, 5).unwrap();

    let entries: Vec<Entry> = (1..=20).map(|i| append_entry(i, 1 + (i as usize % 4))).collect();
    log_a.blocking_append(entries.clone()).await.unwrap();
    apply(&mut sm_a, entries).await;

    let served_a = sm_a.reader().unwrap().all_batches().unwrap();
    let offsets_a = sm_a.reader().unwrap().offsets();
    assert_eq!(offsets_a.high_watermark, (1..=20u64).map(|i| 1 + i % 4).sum::<u64>());

    let snap = sm_a.get_snapshot_builder().await.build_snapshot().await.unwrap();

    let dir_b = tempfile::tempdir().unwrap();
    let store_b: Arc<Store> = Store::open(dir_b.path(), &StoreConfig::default()).unwrap();
    let mut sm_b = GroupStateMachine::open_partition(&store_b, 5).unwrap();
    sm_b.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();

    let reader_b = sm_b.reader().unwrap();
    assert_eq!(reader_b.offsets(), offsets_a);
    assert_eq!(reader_b.all_batches().unwrap(), served_a, "installed replica serves different batches");
    // Reads from the middle of a batch find the batch holding the offset.
    let mid = reader_b.read(offsets_a.high_watermark - 2, 1, 1).unwrap();
    assert_eq!(mid.len(), 1);
    assert!(mid[0].base_offset <= offsets_a.high_watermark - 2);

    // And the state survives reopening the store.
    drop(reader_b);
    drop(sm_b);
    drop(store_b);
    let store_b: Arc<Store> = Store::open(dir_b.path(), &StoreConfig::default()).unwrap();
    let sm_b = GroupStateMachine::open_partition(&store_b, 5).unwrap();
    assert_eq!(sm_b.reader().unwrap().all_batches().unwrap(), served_a);
}

/// A batch at `index` whose records carry the timestamps `ts`.
fn timed_entry(index: u64, ts: &[i64]) -> Entry {
    let mut b = BatchBuilder::new();
    for (i, t) in ts.iter().enumerate() {
        b.push(&Record::new(None, Bytes::from(format!("e{index}-r{i}")), *t));
    }
    Entry {
        log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, index),
        payload: EntryPayload::Normal(Request::Append {
            batch: b.build(),
            record_count: ts.len() as u32,
            max_timestamp_ms: *ts.iter().max().unwrap(),
        }),
    }
}

#[tokio::test]
async fn given_records_with_timestamps_when_a_time_is_looked_up_then_the_first_record_at_or_after_it_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<Store> = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    let mut log = LogStore::open(store.clone(), 3).unwrap();
    let mut sm = GroupStateMachine::open_partition(&store, 3).unwrap();
    // Offsets 0..=2 at 100, 300, 200; 3..=4 at 150, 400 (out of order
    // inside and across batches); 5 at 400.
    let entries = vec![timed_entry(1, &[100, 300, 200]), timed_entry(2, &[150, 400]), timed_entry(3, &[400])];
    log.blocking_append(entries.clone()).await.unwrap();
    apply(&mut sm, entries).await;
    let r = sm.reader().unwrap();
    let cases = [(0, Some((0, 100))), (100, Some((0, 100))), (101, Some((1, 300))), (250, Some((1, 300)))];
    for (ts, want) in cases.into_iter().chain([(301, Some((4, 400))), (400, Some((4, 400))), (401, None)]) {
        assert_eq!(r.offset_for_time(ts).unwrap(), want, "lookup of {ts}");
    }
    // A replica that installs a snapshot answers the same.
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let store_b: Arc<Store> = Store::open(dir_b.path(), &StoreConfig::default()).unwrap();
    let mut sm_b = GroupStateMachine::open_partition(&store_b, 3).unwrap();
    sm_b.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
    for ts in [0, 101, 250, 301, 401] {
        assert_eq!(sm_b.reader().unwrap().offset_for_time(ts).unwrap(), r.offset_for_time(ts).unwrap(), "{ts}");
    }
}
