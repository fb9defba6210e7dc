//! replog-faultfs: power loss as a fault. A FUSE passthrough filesystem
//! over a backing directory that keeps every write not yet fsync'd in
//! memory, as a page cache would, and throws it all away on command — what
//! a power cut does to a disk whose writes were never flushed. Mounted under
//! each chaos-test node's data directory, it lets the chaos suite show
//! whether replog fsyncs everything it acknowledges.
//!
//! Module map:
//!
//! - [`overlay`]: one file's unsynced pages and size over its backing file;
//!   reads merge them, `fsync` applies them.
//! - [`journal`]: namespace operations (create, rename, unlink, …) not yet
//!   made durable by a directory fsync, and how to undo them.
//! - [`fs`]: the FUSE filesystem ([`fs::LazyFs`]) over the shared
//!   [`fs::State`], whose [`fs::State::crash`] is the power failure.
//! - [`mount`]: [`mount::MountedFs`], a mount served from this process and
//!   unmounted on drop; stale-mount clean-up.
//! - [`control`]: the control socket (`ping`, `crash`, `sync`, `stats`,
//!   `exit`) and its [`control::Client`].
//! - [`error`]: the library's error type.
//!
//! The binary `replog-faultfs` mounts one backing directory and serves the
//! control socket; `docs/chaos.md` describes how the chaos harness uses it.

pub mod control;
pub mod error;
pub mod fs;
pub mod journal;
pub mod mount;
pub mod overlay;

pub use error::{Error, Result};
pub use fs::{CrashReport, NamespaceMode, Stats};
pub use mount::{MountedFs, Options};
