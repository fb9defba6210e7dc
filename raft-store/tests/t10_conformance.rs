//! openraft's storage conformance suite against the store: the log store
//! and the state machine keep every promise openraft relies on (append
//! visibility, truncation, purge, vote durability, snapshots, re-apply of
//! committed entries at startup) — once with the default segment size, and
//! once with segments so small that nearly every entry starts a new one, so
//! truncation and purge cross segment boundaries.

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use replog_raft_store::{GroupStateMachine, LogStore, Store, StoreConfig, TypeConfig};

struct Builder {
    segment_bytes: u64,
}

impl StoreBuilder<TypeConfig, LogStore, GroupStateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, GroupStateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = StoreConfig { segment_bytes: self.segment_bytes, ..StoreConfig::default() };
        let store: Arc<Store> = Store::open(dir.path(), &cfg).expect("open store");
        let log = LogStore::open(store.clone(), 7).expect("log store");
        let sm = GroupStateMachine::open_partition(&store, 7).expect("state machine");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_passes_openraft_conformance_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Builder { segment_bytes: StoreConfig::default().segment_bytes }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_with_tiny_segments_passes_openraft_conformance_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Builder { segment_bytes: 64 }).await
}
