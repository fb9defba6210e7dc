//! replog wire types.
//!
//! - [`pb`]: the generated gRPC services and messages (`proto/replog.proto`):
//!   the client service `Replog` and the peer-only service `RaftPeer`.
//! - [`batch`]: the record batch format — the unit a producer sends, a Raft
//!   entry carries, sled stores and a fetch returns, byte for byte.
//! - [`codes`]: stable numeric error codes and the metadata keys that carry
//!   them on a gRPC status.

pub mod batch;
pub mod codes;

#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("replog.v1");
}
