//! Crash recovery of the Raft log store: an append whose `IOFlushed`
//! callback reported `Ok` survives a SIGKILL of the process.
//!
//! The test re-runs its own binary as a child process (selected with
//! `--exact <name> --nocapture`, which both libtest and cargo-nextest accept)
//! with `REPLOG_CRASH_CHILD=<dir>` set. The child opens the sled [`Store`] at
//! `<dir>`, appends Raft entries carrying realistic `Request::Append` record
//! batches through [`LogStore`] (`RaftLogStorage::append` with an
//! `IOFlushed::signal` callback, many appends in flight at once so that they
//! share group-commit flushes), saves ever-increasing votes alongside, and
//! reports on stdout what it was told is durable:
//!
//! - `SENT <first> <last>` before it submits entries `first..=last`,
//! - `ACK <index> <crc32c of the record batch>` once the callback of the
//!   append holding `index` completed with `Ok`,
//! - `VOTE <term>` once `save_vote` of that term returned `Ok`.
//!
//! The parent SIGKILLs the child after a random number of acks, reopens the
//! store and checks, after every one of several kill/reopen rounds on the
//! same directory:
//!
//! 1. every acknowledged entry is present and bit-identical to what was sent;
//! 2. the log is a contiguous prefix `1..=last` (no holes); entries past the
//!    acknowledged ones may or may not be there, but any that are must be
//!    intact entries some child actually sent, and not a stale version of
//!    an index that an earlier recovery had already found missing;
//! 3. entries found after one recovery are still there, unchanged, after
//!    every later one;
//! 4. `get_log_state()` agrees with what `try_get_log_entries(..)` returns;
//! 5. the vote read back is the last acknowledged one or the single
//!    `save_vote` that may have been in progress at the kill.
//!
//! The next round's child continues appending after the last present entry,
//! so the rounds also exercise sled's recovery from repeated kills.
//!
//! A SIGKILL loses what the process had not yet handed to the kernel, not
//! what the kernel had not yet written to the drive: this test catches an
//! acknowledgement given before sled's `flush()`, not a missing `fdatasync`.
//!
//! The seed is printed; set `CRASH_SEED=<seed>` to replay a run's payloads,
//! batch sizes and the number of acks before each kill (where exactly the
//! kill lands still depends on timing). `CRASH_KEEP_DIR=1` keeps the store
//! directory.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::EntryPayload;
use openraft::RaftLogReader;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderIdExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use replog_proto::batch::{self, Record};
use replog_raft_store::{Entry, LogId, LogStore, Request, Store, StoreConfig, TypeConfig, Vote};

/// This test's name as libtest knows it (the file is the crate root).
const TEST_NAME: &str = "acked_appends_survive_sigkill";
const CHILD_ENV: &str = "REPLOG_CRASH_CHILD";
const CHILD_SEED_ENV: &str = "REPLOG_CRASH_CHILD_SEED";
const CHILD_ROUND_ENV: &str = "REPLOG_CRASH_CHILD_ROUND";

const GROUP: u64 = 3;
const ROUNDS: u32 = 5;
/// The child is killed after 1..=MAX_ACKS_BEFORE_KILL acknowledged entries.
const MAX_ACKS_BEFORE_KILL: usize = 800;
/// Appends in flight at once in the child (each of 1..=4 entries).
const IN_FLIGHT: usize = 16;
/// Small segments, so that kills land around segment rolls too.
const SEGMENT_BYTES: u64 = 256 << 10;
/// A child that nobody kills gives up after this long.
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

#[test]
fn acked_appends_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let seed = std::env::var(CHILD_SEED_ENV).expect("child seed").parse().expect("child seed");
        let round = std::env::var(CHILD_ROUND_ENV).expect("child round").parse().expect("child round");
        run_child(Path::new(&dir), seed, round);
        return;
    }
    run_parent();
}

// ---------------------------------------------------------------------------
// What gets written: a pure function of (seed, round, index), so the parent
// can regenerate any entry bit for bit.

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn log_id(index: u64) -> LogId {
    LogId::new(openraft::impls::leader_id_adv::LeaderId::new_committed(1, 1), index)
}

/// The entry round `round` writes at `index`.
fn make_entry(seed: u64, round: u32, index: u64) -> Entry {
    let mut rng = StdRng::seed_from_u64(mix(seed ^ mix(((round as u64) << 48) ^ index)));
    let count = rng.gen_range(1..=8usize);
    let base_ts = 1_700_000_000_000i64 + index as i64 * 1000;
    let records: Vec<Record> = (0..count)
        .map(|j| {
            let len = match rng.gen_range(0..200u32) {
                0 => rng.gen_range(64 << 10..=256 << 10), // now and then a large batch
                1..=19 => rng.gen_range(2048..=16 << 10),
                _ => rng.gen_range(0..=1024),
            };
            let mut value = vec![0u8; len];
            rng.fill(&mut value[..]);
            let key = format!("{round}:{index}:{j}");
            Record::new(Some(Bytes::from(key)), Bytes::from(value), base_ts + j as i64)
        })
        .collect();
    let max_ts = records.iter().map(|r| r.timestamp_ms).max().unwrap();
    let batch = batch::encode(&records);
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Request::Append { batch, record_count: count as u32, max_timestamp_ms: max_ts }),
    }
}

fn append_batch(e: &Entry) -> Option<&Bytes> {
    match &e.payload {
        EntryPayload::Normal(Request::Append { batch, .. }) => Some(batch),
        _ => None,
    }
}

/// The round that wrote `e`, from its first record's key.
fn writer_round(e: &Entry) -> Option<u32> {
    let (_, records) = batch::decode(append_batch(e)?).ok()?;
    let key = records.first()?.key.as_ref()?;
    std::str::from_utf8(key).ok()?.split(':').next()?.parse().ok()
}

/// Bit-identical comparison (Request has no PartialEq).
fn same_entry(a: &Entry, b: &Entry) -> bool {
    if a.log_id != b.log_id {
        return false;
    }
    match (&a.payload, &b.payload) {
        (
            EntryPayload::Normal(Request::Append { batch: b1, record_count: c1, max_timestamp_ms: t1 }),
            EntryPayload::Normal(Request::Append { batch: b2, record_count: c2, max_timestamp_ms: t2 }),
        ) => b1 == b2 && c1 == c2 && t1 == t2,
        _ => false,
    }
}

fn vote_term(v: &Vote) -> u64 {
    v.leader_id.term
}

// ---------------------------------------------------------------------------
// The child: append until killed.

fn run_child(dir: &Path, seed: u64, round: u32) {
    // Never outlive a parent that failed to kill us.
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_DEADLINE);
        eprintln!("crash child: not killed within {CHILD_DEADLINE:?}, exiting");
        std::process::exit(3);
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(child_main(dir, seed, round));
}

/// Marks the child's report lines: libtest may have written
/// `test <name> ... ` without a newline before the first one.
const MARK: &str = "@@crash@@ ";

/// Writes one report line to the real stdout and flushes it; exits if the
/// parent has gone away.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(MARK.as_bytes())
        .and_then(|_| out.write_all(line.as_bytes()))
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush())
        .is_err()
    {
        std::process::exit(4);
    }
}

async fn child_main(dir: &Path, seed: u64, round: u32) {
    let store = Store::open(
        dir,
        &StoreConfig { cache_capacity_bytes: 64 << 20, segment_bytes: SEGMENT_BYTES, ..StoreConfig::default() },
    )
    .expect("child: open store");
    let mut log = LogStore::open(store.clone(), GROUP).expect("child: open log store");
    let state = log.get_log_state().await.expect("child: log state");
    let mut next = state.last_log_id.map_or(1, |l| l.index + 1);
    let first_term = log.read_vote().await.expect("child: read vote").map_or(0, |v| vote_term(&v)) + 1;
    emit(&format!("START {next} {first_term}"));

    // Votes, saved one after another beside the appends.
    let mut vote_log = log.clone();
    tokio::spawn(async move {
        let mut term = first_term;
        loop {
            vote_log.save_vote(&Vote::new_committed(term, 1)).await.expect("child: save_vote");
            emit(&format!("VOTE {term}"));
            term += 1;
            tokio::task::yield_now().await;
        }
    });

    let mut rng = StdRng::seed_from_u64(mix(seed ^ 0xc41d ^ round as u64));
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    loop {
        let permit = slots.clone().acquire_owned().await.unwrap();
        let n = rng.gen_range(1..=4u64);
        let entries: Vec<Entry> = (next..next + n).map(|i| make_entry(seed, round, i)).collect();
        let acks: Vec<String> = entries
            .iter()
            .map(|e| format!("ACK {} {}", e.log_id.index, crc32c::crc32c(append_batch(e).unwrap())))
            .collect();
        emit(&format!("SENT {} {}", next, next + n - 1));
        let (tx, rx) = TypeConfig::oneshot();
        log.append(entries, IOFlushed::signal(tx)).await.expect("child: append");
        tokio::spawn(async move {
            match rx.await {
                Ok(Ok(())) => {
                    for a in &acks {
                        emit(a);
                    }
                }
                Ok(Err(e)) => {
                    eprintln!("crash child: append failed: {e}");
                    std::process::exit(5);
                }
                Err(_) => {
                    eprintln!("crash child: IOFlushed callback dropped without being called");
                    std::process::exit(6);
                }
            }
            drop(permit);
        });
        next += n;
    }
}

// ---------------------------------------------------------------------------
// The parent: kill, reopen, check.

/// Kills and reaps the child if the parent panics.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Default)]
struct RoundReport {
    start: u64,
    first_vote_term: u64,
    /// index → crc32c of the acknowledged batch
    acked: HashMap<u64, u32>,
    /// highest index submitted to `append`
    last_sent: Option<u64>,
    last_acked_vote: Option<u64>,
}

fn run_child_round(dir: &Path, seed: u64, round: u32, kill_after: usize) -> RoundReport {
    let exe = std::env::current_exe().expect("current_exe");
    let child = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, dir)
        .env(CHILD_SEED_ENV, seed.to_string())
        .env(CHILD_ROUND_ENV, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let mut guard = ChildGuard(Some(child));
    let stdout = guard.0.as_mut().unwrap().stdout.take().unwrap();
    let lines = BufReader::new(stdout).lines();

    let mut rep = RoundReport::default();
    let mut started = false;
    let mut killed = false;
    // Read until `kill_after` acks, kill, then drain: lines the child wrote
    // before it died are acknowledgements too.
    for line in lines {
        let line = line.expect("read child stdout");
        let Some((_, report)) = line.split_once(MARK) else {
            continue; // libtest's own output
        };
        let mut w = report.split_whitespace();
        match w.next() {
            Some("START") => {
                rep.start = w.next().unwrap().parse().unwrap();
                rep.first_vote_term = w.next().unwrap().parse().unwrap();
                started = true;
            }
            Some("SENT") => {
                let _first: u64 = w.next().unwrap().parse().unwrap();
                let last: u64 = w.next().unwrap().parse().unwrap();
                rep.last_sent = Some(last);
            }
            Some("ACK") => {
                let index: u64 = w.next().unwrap().parse().unwrap();
                let crc: u32 = w.next().unwrap().parse().unwrap();
                assert!(rep.acked.insert(index, crc).is_none(), "index {index} acknowledged twice");
                if !killed && rep.acked.len() >= kill_after {
                    // Child::kill is SIGKILL on Unix.
                    guard.0.as_mut().unwrap().kill().expect("kill child");
                    killed = true;
                }
            }
            Some("VOTE") => rep.last_acked_vote = Some(w.next().unwrap().parse().unwrap()),
            _ => panic!("round {round}: unexpected child output {line:?}"),
        }
    }
    let status = guard.0.take().unwrap().wait().expect("wait child");
    assert!(killed, "round {round}: child exited ({status}) after {} acks, before it was killed", rep.acked.len());
    assert!(started, "round {round}: child never reported START");
    rep
}

/// Blocks until no open file holds sled's lock on `<dir>/sled/db`, i.e. until
/// every handle of the parent's last `Store` (including its flusher thread)
/// is gone, so that the next child can open the database.
fn wait_until_db_unlocked(dir: &Path) {
    let f = std::fs::File::open(dir.join("sled").join("db")).expect("open db file");
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    drop(f); // closing releases it
}

/// What the parent has learned about each index over the rounds.
#[derive(Default)]
struct History {
    /// Entries found after a recovery; they must never change again.
    found: BTreeMap<u64, Entry>,
    /// index → the last round after whose kill it was missing.
    missing_after: HashMap<u64, u32>,
    /// index → rounds whose child submitted it.
    sent_by: HashMap<u64, Vec<u32>>,
    vote_term: u64,
}

async fn verify(dir: &Path, seed: u64, round: u32, rep: &RoundReport, hist: &mut History) -> String {
    let store = Store::open(dir, &StoreConfig::default()).expect("reopen store");
    let mut log = LogStore::open(store.clone(), GROUP).expect("reopen log store");
    let entries = log.try_get_log_entries(..).await.expect("read log");
    let state = log.get_log_state().await.expect("log state");
    let vote = log.read_vote().await.expect("read vote");
    drop(log);
    drop(store);

    // 2. A contiguous prefix 1..=last, each entry under its own index.
    for (pos, e) in entries.iter().enumerate() {
        assert_eq!(
            e.log_id.index,
            pos as u64 + 1,
            "round {round}: log is not a contiguous prefix from 1: position {pos} holds index {}",
            e.log_id.index
        );
    }
    let last = entries.len() as u64;

    // 4. The log state agrees with the entries.
    assert_eq!(state.last_purged_log_id, None, "round {round}: nothing was purged");
    assert_eq!(
        state.last_log_id,
        entries.last().map(|e| e.log_id),
        "round {round}: get_log_state() disagrees with the entries present"
    );

    // 1. Every acknowledged entry is there, bit for bit.
    let mut acked: Vec<u64> = rep.acked.keys().copied().collect();
    acked.sort_unstable();
    let max_acked = acked.last().copied().unwrap_or(0);
    assert!(
        max_acked <= last,
        "round {round}: entry {max_acked} was acknowledged durable but the log ends at {last} \
         ({} of {} acknowledged entries lost)",
        acked.iter().filter(|&&i| i > last).count(),
        acked.len()
    );
    for &i in &acked {
        let e = &entries[i as usize - 1];
        let want = make_entry(seed, round, i);
        assert!(
            same_entry(e, &want),
            "round {round}: acknowledged entry {i} came back different from what was written \
             (writer round in entry: {:?})",
            writer_round(e)
        );
        assert_eq!(crc32c::crc32c(append_batch(e).unwrap()), rep.acked[&i], "round {round}: crc of entry {i}");
    }

    // Bookkeeping for checks 2 (rest) and 3.
    for i in rep.start..=rep.last_sent.unwrap_or(0) {
        hist.sent_by.entry(i).or_default().push(round);
    }
    for (i, old) in &hist.found {
        let e = entries.get(*i as usize - 1);
        assert!(
            e.is_some_and(|e| same_entry(e, old)),
            "round {round}: entry {i}, present after an earlier recovery, is now {}",
            if e.is_some() { "different" } else { "missing" }
        );
    }
    // Entries past what was acknowledged: intact, sent, and not resurrected.
    for e in &entries {
        let i = e.log_id.index;
        if hist.found.contains_key(&i) || rep.acked.contains_key(&i) {
            continue;
        }
        let r = writer_round(e)
            .unwrap_or_else(|| panic!("round {round}: unacknowledged entry {i} is not a readable record batch"));
        assert!(
            same_entry(e, &make_entry(seed, r, i)),
            "round {round}: unacknowledged entry {i} (from round {r}) is corrupt"
        );
        assert!(
            hist.sent_by.get(&i).is_some_and(|v| v.contains(&r)),
            "round {round}: entry {i} claims round {r}, which never sent it"
        );
        if let Some(&m) = hist.missing_after.get(&i) {
            assert!(
                r > m,
                "round {round}: entry {i} is the version written in round {r}, but it was already \
                 missing after round {m}'s kill: a lost write came back"
            );
        }
    }
    for i in last + 1..=rep.last_sent.unwrap_or(0) {
        hist.missing_after.insert(i, round);
    }
    hist.found = entries.iter().map(|e| (e.log_id.index, e.clone())).collect();

    // 5. The vote.
    let got = vote.map(|v| vote_term(&v));
    let acked_vote = rep.last_acked_vote.unwrap_or(hist.vote_term);
    // The vote task saves one term at a time, so at most the next term was
    // in progress at the kill.
    let ok = match got {
        Some(t) => t == acked_vote || t == acked_vote + 1,
        None => acked_vote == 0,
    };
    assert!(
        ok,
        "round {round}: vote read back is {got:?}, but term {acked_vote} was acknowledged as saved \
         (and at most term {} was in progress)",
        acked_vote + 1
    );
    if let Some(v) = vote {
        assert!(v.committed && v.leader_id.node_id == 1, "round {round}: vote {v:?} is not what was saved");
    }
    hist.vote_term = got.unwrap_or(0);

    format!(
        "round {round}: started at {}, {} acked (up to {max_acked}), {} sent (up to {}), {last} present; vote {got:?} (acked {acked_vote})",
        rep.start,
        rep.acked.len(),
        rep.last_sent.map_or(0, |l| l + 1 - rep.start),
        rep.last_sent.unwrap_or(0),
    )
}

fn run_parent() {
    let seed: u64 = match std::env::var("CRASH_SEED") {
        Ok(s) => s.parse().expect("CRASH_SEED must be a u64"),
        Err(_) => rand::random(),
    };
    println!("crash recovery seed: {seed} (reproduce with CRASH_SEED={seed})");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    println!("store directory: {}", dir.display());
    if std::env::var_os("CRASH_KEEP_DIR").is_some() {
        let _ = tmp.keep();
    }

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut hist = History::default();
    let t0 = Instant::now();
    for round in 0..ROUNDS {
        let kill_after = rng.gen_range(1..=MAX_ACKS_BEFORE_KILL);
        let rep = run_child_round(&dir, seed, round, kill_after);
        let expected_start = hist.found.len() as u64 + 1;
        assert_eq!(rep.start, expected_start, "round {round}: child started at the wrong index");
        assert_eq!(
            rep.first_vote_term,
            hist.vote_term + 1,
            "round {round}: child read a different vote than the parent"
        );
        let summary = rt.block_on(verify(&dir, seed, round, &rep, &mut hist));
        println!("{summary} [{:.1?}]", t0.elapsed());
        wait_until_db_unlocked(&dir);
    }
}
