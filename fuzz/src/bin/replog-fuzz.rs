//! `replog-fuzz`: the fuzz targets under the stable random engine, and
//! replay of saved inputs (from either engine). See docs/fuzzing.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use replog_fuzz::alloc_limit::{self, LimitedAlloc};
use replog_fuzz::engine;
use replog_fuzz::targets::{self, TARGETS, Target};

#[global_allocator]
static ALLOC: LimitedAlloc = LimitedAlloc;

#[derive(Parser)]
#[command(about = "Fuzz replog's decoders with seeded random inputs (stable toolchain)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Lists the targets.
    List,
    /// Fuzzes each target (all by default) for a set time.
    Run {
        /// Seconds per target.
        #[arg(long, env = "FUZZ_SECONDS", default_value_t = 60.0)]
        seconds: f64,
        /// Seed of the run (hex with 0x, or decimal); random if not given.
        #[arg(long, env = "FUZZ_SEED", value_parser = parse_seed)]
        seed: Option<u64>,
        /// Where failing inputs are saved.
        #[arg(long, default_value = "target/fuzz/crashes")]
        crash_dir: PathBuf,
        targets: Vec<String>,
    },
    /// Runs one target on one case seed or on saved input files.
    Replay {
        target: String,
        #[arg(long, value_parser = parse_seed)]
        case: Option<u64>,
        files: Vec<PathBuf>,
    },
}

fn parse_seed(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("bad seed {s:?}: {e}"))
}

fn target(name: &str) -> Result<&'static Target, String> {
    targets::find(name).ok_or_else(|| {
        let names: Vec<_> = TARGETS.iter().map(|t| t.name).collect();
        format!("unknown target {name:?}; targets: {}", names.join(", "))
    })
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("replog-fuzz: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<bool, String> {
    match cli.cmd {
        Cmd::List => {
            for t in TARGETS {
                println!("{:<24} {}", t.name, t.about);
            }
            Ok(true)
        }
        Cmd::Run { seconds, seed, crash_dir, targets } => {
            let chosen: Vec<&Target> = if targets.is_empty() {
                TARGETS.iter().collect()
            } else {
                targets.iter().map(|n| target(n)).collect::<Result<_, _>>()?
            };
            let seed = seed.unwrap_or_else(rand::random);
            let budget = Duration::try_from_secs_f64(seconds).map_err(|e| format!("bad --seconds: {e}"))?;
            println!(
                "fuzz: engine=random seed={seed:#018x} seconds_per_target={seconds} alloc_limit={} (replay the run with FUZZ_SEED={seed:#x})",
                alloc_limit::limit()
            );
            let (mut inputs, mut crashes) = (0, 0);
            for (i, t) in chosen.iter().enumerate() {
                // Each target gets its own stream, so that adding one does
                // not change the others' cases.
                let r = engine::run_random(
                    t,
                    seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    budget,
                    Some(&crash_dir),
                );
                println!(
                    "fuzz: target={} inputs={} seconds={:.1} crashes={} largest_alloc={}",
                    t.name,
                    r.inputs,
                    r.elapsed.as_secs_f64(),
                    r.crashes.len(),
                    r.largest_alloc
                );
                inputs += r.inputs;
                crashes += r.crashes.len();
            }
            println!("fuzz: targets={} inputs={inputs} crashes={crashes}", chosen.len());
            Ok(crashes == 0)
        }
        Cmd::Replay { target: name, case, files } => {
            let t = target(&name)?;
            let mut inputs: Vec<(String, Vec<u8>, Option<u64>)> = Vec::new();
            if let Some(c) = case {
                inputs.push((format!("case {c:#018x}"), engine::case_input(c), Some(c)));
            }
            for f in files {
                let data = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
                inputs.push((f.display().to_string(), data, None));
            }
            let mut ok = true;
            for (what, data, case) in inputs {
                match engine::run_one(t, &data, case) {
                    Ok(()) => println!("fuzz: {name} {what}: ok"),
                    Err(msg) => {
                        println!("fuzz: {name} {what}: FAILED: {msg}");
                        ok = false;
                    }
                }
            }
            Ok(ok)
        }
    }
}
