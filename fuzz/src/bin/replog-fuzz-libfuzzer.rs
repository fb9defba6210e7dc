//! `replog-fuzz-libfuzzer`: the fuzz targets under libFuzzer, coverage
//! guided. The target comes from `REPLOG_FUZZ_TARGET`; everything else on
//! the command line is libFuzzer's (`-max_total_time`, `-seed`, corpus
//! directories, a crash file to replay). Built by `make fuzz` with the
//! sanitizer-coverage flags (docs/fuzzing.md); without them it runs but
//! fuzzes blind.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use replog_fuzz::alloc_limit::{self, LimitedAlloc};
use replog_fuzz::targets::{self, Target};

#[global_allocator]
static ALLOC: LimitedAlloc = LimitedAlloc;

fn target() -> &'static Target {
    static TARGET: OnceLock<&'static Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let name = std::env::var("REPLOG_FUZZ_TARGET").unwrap_or_default();
        targets::find(&name).unwrap_or_else(|| {
            let names: Vec<_> = targets::TARGETS.iter().map(|t| t.name).collect();
            eprintln!("set REPLOG_FUZZ_TARGET to one of: {}", names.join(", "));
            std::process::exit(2)
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let t = target();
    alloc_limit::arm(true);
    (t.run)(data);
    alloc_limit::arm(false);
});
