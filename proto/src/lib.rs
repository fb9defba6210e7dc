//! replog wire types.
//!
//! - [`pb`]: the generated gRPC services and messages (`proto/replog.proto`):
//!   the client service `Replog` and the peer-only service `RaftPeer`.
//! - [`batch`]: the record batch format — the unit a producer sends, a Raft
//!   entry carries, a log segment stores and a fetch returns, byte for byte.
//! - [`codes`]: stable numeric error codes and the metadata keys that carry
//!   them on a gRPC status.

pub mod batch;
pub mod codes;
pub mod scram;
pub mod transport;

/// Now, in milliseconds since the Unix epoch: the clock of record
/// timestamps and of everything the broker stamps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("replog.v1");
}
