//! What storage reports as it works, for the node's metrics: every flush
//! round, every log append once durable, every state-machine apply, every
//! snapshot built or installed. The
//! node installs one [`Observer`] on its [`crate::Store`]; storage itself
//! knows nothing of Prometheus, and without an observer it reports nothing.
//!
//! Calls come from the flusher thread and from Raft tasks, on the write
//! path: an observer must only record (a histogram observation), never
//! block.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Receives storage events; every method defaults to doing nothing.
pub trait Observer: Send + Sync {
    /// One group-commit round: how long it took (every fdatasync in it
    /// included), how many writes it made durable and how many files it
    /// synced.
    fn flush_round(&self, _took: Duration, _writes: usize, _files: usize) {}
    /// One Raft log append, from the write until it is durable.
    fn log_append(&self, _took: Duration, _entries: usize) {}
    /// One apply of committed entries to a state machine, until the
    /// results are stored.
    fn apply(&self, _took: Duration) {}
    /// A snapshot of a partition or the controller was built (to purge the
    /// log, or to send to a replica that lacks what was purged).
    fn snapshot_built(&self, _took: Duration) {}
    /// A snapshot sent by the leader was installed: this replica had fallen
    /// behind what the leader's log still holds.
    fn snapshot_installed(&self, _took: Duration) {}
}

/// The observer slot a store and its flusher thread share.
#[derive(Default, Clone)]
pub(crate) struct Slot(Arc<OnceLock<Arc<dyn Observer>>>);

impl Slot {
    /// Installs `o`; false if one is installed already (it stays).
    pub(crate) fn set(&self, o: Arc<dyn Observer>) -> bool {
        self.0.set(o).is_ok()
    }

    pub(crate) fn with(&self, f: impl FnOnce(&dyn Observer)) {
        if let Some(o) = self.0.get() {
            f(o.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Rounds(Mutex<Vec<usize>>);

    impl Observer for Rounds {
        fn flush_round(&self, _took: Duration, writes: usize, _files: usize) {
            self.0.lock().unwrap().push(writes);
        }
    }

    #[tokio::test]
    async fn given_an_observer_then_every_flush_round_is_reported_with_its_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::Store::open(dir.path(), &crate::StoreConfig { min_free_bytes: 0, ..Default::default() }).unwrap();
        let rounds = Arc::new(Rounds::default());
        assert!(store.set_observer(rounds.clone()));
        assert!(!store.set_observer(Arc::new(Rounds::default())), "the first observer stays");
        store.flush().await.unwrap();
        store.flush().await.unwrap();
        let seen = rounds.0.lock().unwrap().clone();
        assert_eq!(seen.iter().sum::<usize>(), 2, "each flush is one write made durable: {seen:?}");
    }
}
