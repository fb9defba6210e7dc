//! The stable-toolchain engine: seeded random inputs for a set time.
//!
//! A run has one seed (printed first; `FUZZ_SEED` or `--seed` replays the
//! whole run). Each case draws its own seed from it, and a case's input is
//! a function of that seed alone, so a failing case replays by itself with
//! `replog-fuzz replay TARGET --case SEED`. No coverage feedback: the
//! targets' structure-aware mode ([`crate::generate`] + [`crate::mutate`])
//! gives random inputs their depth. Coverage-guided runs use libFuzzer
//! (`replog-fuzz-libfuzzer`) on the same targets.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::alloc_limit;
use crate::targets::Target;

/// Largest input any engine gives a target (`-max_len` for libFuzzer).
pub const MAX_INPUT_BYTES: usize = 64 << 10;
/// A target stops after this many failing cases: the first few say it all.
const MAX_CRASHES: usize = 10;

pub struct Report {
    pub inputs: u64,
    pub elapsed: Duration,
    /// Seeds of the failing cases.
    pub crashes: Vec<u64>,
    /// The largest single allocation seen, in bytes.
    pub largest_alloc: usize,
}

/// The input of one case: mostly short, sometimes up to the maximum, since
/// small inputs are where framing edge cases are dense.
pub fn case_input(case: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(case);
    let len = match rng.gen_range(0..8) {
        0..=2 => rng.gen_range(0..128),
        3..=5 => rng.gen_range(0..2048),
        6 => rng.gen_range(0..16 << 10),
        _ => rng.gen_range(0..=MAX_INPUT_BYTES),
    };
    let mut input = vec![0u8; len];
    rng.fill_bytes(&mut input);
    input
}

/// Runs one input with the allocation limit on; `Err` holds the panic.
pub fn run_one(target: &Target, input: &[u8], case: Option<u64>) -> Result<(), String> {
    alloc_limit::set_case(case);
    alloc_limit::arm(true);
    let r = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    alloc_limit::arm(false);
    alloc_limit::set_case(None);
    r.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())
    })
}

/// Fuzzes `target` for `budget`; failing inputs are saved in `crash_dir`.
pub fn run_random(target: &Target, seed: u64, budget: Duration, crash_dir: Option<&Path>) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let mut report = Report { inputs: 0, elapsed: Duration::ZERO, crashes: Vec::new(), largest_alloc: 0 };
    alloc_limit::take_largest();
    while start.elapsed() < budget && report.crashes.len() < MAX_CRASHES {
        let case = rng.next_u64();
        let input = case_input(case);
        report.inputs += 1;
        if let Err(msg) = run_one(target, &input, Some(case)) {
            eprintln!("fuzz: target={} case={case:#018x} failed: {msg}", target.name);
            eprintln!("fuzz: replay with: replog-fuzz replay {} --case {case:#018x}", target.name);
            report.crashes.push(case);
            if let Some(dir) = crash_dir {
                let path = dir.join(format!("{}-{case:016x}", target.name));
                if std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, &input)).is_ok() {
                    eprintln!("fuzz: input saved to {}", path.display());
                }
            }
        }
    }
    report.elapsed = start.elapsed();
    report.largest_alloc = alloc_limit::take_largest();
    report
}
