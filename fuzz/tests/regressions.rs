//! Every input in `fuzz/regressions/<target>/` — inputs that once crashed a
//! target or broke its allocation limit — passes its target now, under the
//! same allocation limit the fuzzers use.

use replog_fuzz::alloc_limit::LimitedAlloc;
use replog_fuzz::{engine, targets};

#[global_allocator]
static ALLOC: LimitedAlloc = LimitedAlloc;

#[test]
fn given_each_saved_regression_input_when_replayed_then_its_target_passes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    for dir in std::fs::read_dir(&root).expect("regressions dir") {
        let dir = dir.expect("entry").path();
        let name = dir.file_name().and_then(|n| n.to_str()).expect("utf-8 name").to_string();
        let target = targets::find(&name).unwrap_or_else(|| panic!("{}: no target {name:?}", dir.display()));
        for file in std::fs::read_dir(&dir).expect("target dir") {
            let file = file.expect("entry").path();
            let input = std::fs::read(&file).expect("read input");
            if let Err(msg) = engine::run_one(target, &input, None) {
                panic!("{}: {msg}", file.display());
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no regression inputs under {}", root.display());
}

#[test]
fn given_a_case_seed_when_replayed_then_the_input_is_the_same() {
    for case in [0, 1, 0xf3e2_39fc_d34c_9f1b, u64::MAX] {
        assert_eq!(engine::case_input(case), engine::case_input(case));
    }
}

#[test]
fn given_a_fixed_seed_when_every_target_runs_briefly_then_none_fails() {
    for t in targets::TARGETS {
        let r = engine::run_random(t, 7, std::time::Duration::from_millis(200), None);
        assert!(r.crashes.is_empty(), "{}: failing cases {:x?}", t.name, r.crashes);
        assert!(r.inputs > 0);
    }
}
