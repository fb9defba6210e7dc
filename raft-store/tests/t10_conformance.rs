//! openraft's storage conformance suite against the sled store: the log
//! store and the state machine keep every promise openraft relies on
//! (append visibility, truncation, purge, vote durability, snapshots,
//! re-apply of committed entries at startup).

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use replog_raft_store::{GroupStateMachine, LogStore, Store, StoreConfig, TypeConfig};

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, GroupStateMachine, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, GroupStateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<Store> = Store::open(dir.path(), &StoreConfig::default()).expect("open store");
        let log = LogStore::open(store.clone(), 7).expect("log store");
        let sm = GroupStateMachine::open_partition(&store, 7).expect("state machine");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_passes_openraft_conformance_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(SledBuilder).await
}
