//! Queue-group state is part of the partition's state machine: it survives
//! a reopen of the store, and a replica that installs a snapshot holds the
//! same locks, settled ranges, dead letters and counters — and so decides
//! the next command exactly as the replica that built the snapshot.

use std::sync::Arc;

use bytes::Bytes;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use openraft::{EntryPayload, LogId, RaftSnapshotBuilder};
use replog_proto::batch::{BatchBuilder, Record};
use replog_raft_store::queues::{QueueCmd, QueueSettings};
use replog_raft_store::{Entry, GroupStateMachine, LogStore, Request, Store, StoreConfig};

fn entry(index: u64, req: Request) -> Entry {
    Entry { log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, index), payload: EntryPayload::Normal(req) }
}

fn append(n: usize) -> Request {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b.push(&Record::new(None, Bytes::from(format!("r{i}")), 0));
    }
    Request::Append { batch: b.build(), record_count: n as u32, max_timestamp_ms: 0 }
}

fn settings() -> QueueSettings {
    QueueSettings { max_deliveries: 2, dead_letter_topic: "t.dlq".into() }
}

fn lock(consumer: &str, max: u32, now_ms: i64) -> Request {
    Request::Queue(QueueCmd::Lock {
        group: "g".into(),
        consumer: consumer.into(),
        max,
        lock_ms: 1000,
        now_ms,
        settings: settings(),
    })
}

async fn apply(sm: &mut GroupStateMachine, entries: Vec<Entry>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for e in entries {
        tx.send(Ok((e, None))).unwrap();
    }
    drop(tx);
    sm.apply(Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))).await.unwrap();
}

#[tokio::test]
async fn given_queue_state_when_reopened_or_installed_from_a_snapshot_then_it_is_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<Store> = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    let mut log = LogStore::open(store.clone(), 7).unwrap();
    let mut sm = GroupStateMachine::open_partition(&store, 7).unwrap();
    let reqs = vec![
        append(10),
        lock("a", 4, 0),
        Request::Queue(QueueCmd::Ack { group: "g".into(), consumer: "a".into(), offsets: vec![0, 2], now_ms: 10 }),
        Request::Queue(QueueCmd::Reject {
            group: "g".into(),
            consumer: "a".into(),
            offsets: vec![3],
            reason: "bad".into(),
            now_ms: 10,
        }),
        // `a`'s lock on 1 expires: `b` gets 1 again, then 4 and 5.
        lock("b", 3, 2000),
    ];
    let entries: Vec<Entry> = reqs.into_iter().enumerate().map(|(i, r)| entry(i as u64 + 1, r)).collect();
    log.blocking_append(entries.clone()).await.unwrap();
    apply(&mut sm, entries).await;
    let before = sm.reader().unwrap().queues();
    let g = &before["g"];
    assert_eq!((g.floor, g.acked, g.delivered, g.redelivered), (1, 2, 7, 1), "{g:?}");
    assert_eq!(g.locks.keys().copied().collect::<Vec<_>>(), vec![1, 4, 5]);
    assert_eq!(g.locks[&1].deliveries, 2);
    assert!(g.dead.contains_key(&3));

    // Reopened: the same.
    drop(sm);
    drop(log);
    drop(store);
    let store: Arc<Store> = Store::open(dir.path(), &StoreConfig::default()).unwrap();
    let mut sm = GroupStateMachine::open_partition(&store, 7).unwrap();
    assert_eq!(sm.reader().unwrap().queues(), before, "queue state changed across a reopen");

    // Installed from a snapshot: the same, and the next lock decides alike.
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let store_b: Arc<Store> = Store::open(dir_b.path(), &StoreConfig::default()).unwrap();
    let mut log_b = LogStore::open(store_b.clone(), 7).unwrap();
    let mut sm_b = GroupStateMachine::open_partition(&store_b, 7).unwrap();
    sm_b.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
    assert_eq!(sm_b.reader().unwrap().queues(), before, "queue state changed through a snapshot");
    let next = vec![entry(6, lock("c", 10, 5000))];
    log_b.blocking_append(next.clone()).await.unwrap();
    apply(&mut sm_b, next).await;
    let mut log = LogStore::open(store.clone(), 7).unwrap();
    let next = vec![entry(6, lock("c", 10, 5000))];
    log.blocking_append(next.clone()).await.unwrap();
    apply(&mut sm, next).await;
    assert_eq!(sm_b.reader().unwrap().queues(), sm.reader().unwrap().queues());
    // 1 had two deliveries (max 2): a dead letter now, beside 3.
    let g = &sm.reader().unwrap().queues()["g"];
    assert_eq!(g.dead.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
}
