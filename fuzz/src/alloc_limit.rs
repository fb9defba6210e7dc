//! A global allocator that refuses any single allocation above a limit.
//!
//! Every target gets inputs of at most [`crate::engine::MAX_INPUT_BYTES`];
//! a decoder whose allocations are bounded by what it was given stays far
//! below [`DEFAULT_LIMIT`]. One that trusts a length prefix or a record
//! count from the input (`Vec::with_capacity(len)`) goes above it, and the
//! process aborts with a message — libFuzzer saves the input as a crash,
//! the random engine has printed the case seed before running it.
//!
//! The binaries install it with `#[global_allocator]`; `REPLOG_FUZZ_ALLOC_LIMIT`
//! (bytes) overrides the limit.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// 4 MiB: 64 times the largest input, and above serde's own cap on what a
/// sequence preallocates from its length prefix (1 MiB).
pub const DEFAULT_LIMIT: usize = 4 << 20;

static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_LIMIT);
static ARMED: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
/// The random engine's current case seed, for the abort message.
static CASE: AtomicU64 = AtomicU64::new(NO_CASE);
const NO_CASE: u64 = u64::MAX;

/// The allocator: the system one, with the check in front.
pub struct LimitedAlloc;

impl LimitedAlloc {
    fn check(size: usize) {
        if !ARMED.load(Ordering::Relaxed) {
            return;
        }
        LARGEST.fetch_max(size, Ordering::Relaxed);
        let limit = LIMIT.load(Ordering::Relaxed);
        if size > limit {
            over_limit(size, limit);
        }
    }
}

/// Reports without allocating (we are inside the allocator) and aborts.
#[cold]
fn over_limit(size: usize, limit: usize) -> ! {
    let mut msg = StackStr::default();
    let _ = write!(msg, "\nreplog-fuzz: allocation of {size} bytes is above the limit of {limit} bytes");
    match CASE.load(Ordering::Relaxed) {
        NO_CASE => {}
        case => {
            let _ = write!(msg, " (case {case:#018x})");
        }
    }
    let _ = msg.write_str("\n");
    let _ = std::io::stderr().write_all(msg.as_bytes());
    std::process::abort();
}

// SAFETY: forwards every call to `System` unchanged; the check only reads
// the requested size.
unsafe impl GlobalAlloc for LimitedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Turns the check on (for the targets) or off (for the harness's own
/// bookkeeping). Reads `REPLOG_FUZZ_ALLOC_LIMIT` the first time.
pub fn arm(on: bool) {
    if on {
        static READ_ENV: std::sync::Once = std::sync::Once::new();
        READ_ENV.call_once(|| {
            if let Some(n) = std::env::var("REPLOG_FUZZ_ALLOC_LIMIT").ok().and_then(|v| v.parse().ok()) {
                LIMIT.store(n, Ordering::Relaxed);
            }
        });
    }
    ARMED.store(on, Ordering::Relaxed);
}

/// Names the case being run, for the message if it aborts.
pub fn set_case(case: Option<u64>) {
    CASE.store(case.unwrap_or(NO_CASE), Ordering::Relaxed);
}

pub fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// The largest single allocation seen while armed, and resets it.
pub fn take_largest() -> usize {
    LARGEST.swap(0, Ordering::Relaxed)
}

/// A fixed buffer to format into without the heap.
struct StackStr {
    buf: [u8; 200],
    len: usize,
}

impl Default for StackStr {
    fn default() -> Self {
        StackStr { buf: [0; 200], len: 0 }
    }
}

impl StackStr {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
