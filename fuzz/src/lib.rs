//! Fuzz targets for the decoders that take bytes from the network.
//!
//! - [`targets`]: the targets, one function per decoder, each taking raw
//!   bytes, and the properties each one checks besides "no panic".
//! - [`generate`]: structure-aware inputs — well-formed record batches and
//!   openraft messages built from the fuzzer's bytes — so that a run gets
//!   past checksums and length checks and into the code behind them.
//! - [`mutate`]: byte-level corruption of those well-formed inputs
//!   (bit flips, truncation, hostile length prefixes).
//! - [`alloc_limit`]: a global allocator that aborts on any single
//!   allocation above a limit, so that a decoder trusting a length prefix
//!   is a crash, not a slow swap.
//! - [`engine`]: the stable-toolchain driver: seeded random inputs for a
//!   set time, per-target counts, replay of a case by its seed or of a
//!   saved input file.
//!
//! The same target functions run under libFuzzer (`replog-fuzz-libfuzzer`,
//! coverage-guided, `make fuzz`) and under the random engine (`replog-fuzz`,
//! the smoke in `make test`). See docs/fuzzing.md.

pub mod alloc_limit;
pub mod engine;
pub mod generate;
pub mod mutate;
pub mod targets;
