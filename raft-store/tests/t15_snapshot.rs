//! A partition snapshot carries every retained record: a fresh replica that
//! installs one serves exactly the batches, at exactly the offsets, that the
//! replica which built it serves — even though its own Raft log is empty.

use std::sync::Arc;

use bytes::Bytes;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use openraft::{EntryPayload, LogId, RaftSnapshotBuilder};
use replog_proto::batch::{self, Record};
use replog_raft_store::{Entry, GroupStateMachine, LogStore, Request, Store, StoreConfig};

fn append_entry(index: u64, n: usize) -> Entry {
    let records: Vec<Record> =
        (0..n).map(|i| Record::new(None, Bytes::from(format!("e{index}-r{i}")), index as i64)).collect();
    let b = batch::encode(&records);
    Entry {
        log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, index),
        payload: EntryPayload::Normal(Request::Append {
            batch: b,
            record_count: n as u32,
            max_timestamp_ms: index as i64,
        }),
    }
}

#[tokio::test]
async fn given_a_partition_snapshot_when_a_fresh_replica_installs_it_then_it_serves_every_record() {
    let dir_a = tempfile::tempdir().unwrap();
    let store_a: Arc<Store> = Store::open(dir_a.path(), &StoreConfig::default()).unwrap();
    let mut log_a = LogStore::open(store_a.clone(), 5).unwrap();
    let mut sm_a = GroupStateMachine::open_partition(&store_a, 5).unwrap();

    let entries: Vec<Entry> = (1..=20).map(|i| append_entry(i, 1 + (i as usize % 4))).collect();
    log_a.blocking_append(entries.clone()).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for e in entries {
        tx.send(Ok((e, None))).unwrap();
    }
    drop(tx);
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    sm_a.apply(Box::pin(stream)).await.unwrap();

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
