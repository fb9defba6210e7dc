//! The durability contract of the lazy filesystem, on real mounts: after a
//! crash, exactly what was fsync'd is there.
//!
//! - file data survives a crash only if the file was fsync'd (or written
//!   through an `O_DSYNC` descriptor) after it was written; until then
//!   readers see it, and the backing directory does not have it;
//! - a new, renamed or unlinked name survives only if its directory was
//!   fsync'd afterwards (lazy namespace); with the immediate namespace mode
//!   only data is lost;
//! - the daemon binary mounts, answers its control socket, crashes on
//!   command and unmounts on `exit`.
//!
//! Needs root and `/dev/fuse`; without them each test says why and passes,
//! except under CI (`CI` set), where it must run.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use replog_faultfs::control::Client;
use replog_faultfs::mount::mounts_under;
use replog_faultfs::{MountedFs, NamespaceMode, Options};

fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to mount");
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("needs /dev/fuse");
    }
    None
}

macro_rules! require_fuse {
    () => {
        if let Some(why) = skip_reason() {
            assert!(std::env::var_os("CI").is_none(), "the FUSE tests cannot run in CI: {why}");
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// A mount over a fresh backing directory. Field order matters: the mount
/// is dropped (unmounted) before the directories are removed.
struct Fixture {
    fs: MountedFs,
    mnt: PathBuf,
    backing: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(namespace: NamespaceMode) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("disk");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&backing).unwrap();
        std::fs::create_dir(&mnt).unwrap();
        let fs = MountedFs::mount(&backing, &mnt, &Options { namespace, ..Options::default() }).unwrap();
        Fixture { fs, mnt, backing, _dir: dir }
    }

    fn lazy() -> Fixture {
        Fixture::new(NamespaceMode::Lazy)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }

    fn read(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(name)).ok()
    }

    fn sync_dir(&self, name: &str) {
        File::open(self.path(name)).unwrap().sync_all().unwrap();
    }

    /// Creates `name` with `data` and makes both durable.
    fn durable_file(&self, name: &str, data: &[u8]) {
        let mut f = File::create(self.path(name)).unwrap();
        f.write_all(data).unwrap();
        f.sync_all().unwrap();
        drop(f);
        self.sync_dir(".");
    }
}

#[test]
fn given_write_without_fsync_when_crashed_then_the_write_is_gone_but_was_readable_before() {
    require_fuse!();
    let fx = Fixture::lazy();
    fx.durable_file("log", b"durable|");
    let mut f = OpenOptions::new().append(true).open(fx.path("log")).unwrap();
    f.write_all(b"unsynced").unwrap();
    drop(f);
    assert_eq!(fx.read("log").unwrap(), b"durable|unsynced", "readers see unsynced writes");
    assert_eq!(std::fs::read(fx.backing.join("log")).unwrap(), b"durable|", "the disk does not have them");

    let report = fx.fs.crash().unwrap();
    assert_eq!(report.files, 1);
    assert_eq!(fx.read("log").unwrap(), b"durable|");
}

#[test]
fn given_write_then_fsync_when_crashed_then_the_write_is_kept() {
    require_fuse!();
    let fx = Fixture::lazy();
    fx.durable_file("log", b"a");
    let mut f = OpenOptions::new().write(true).open(fx.path("log")).unwrap();
    f.write_all(b"bcd").unwrap();
    f.sync_data().unwrap();
    f.write_all(b"-lost").unwrap();
    drop(f);
    fx.fs.crash().unwrap();
    assert_eq!(fx.read("log").unwrap(), b"bcd");
}

#[test]
fn given_o_dsync_descriptor_when_written_then_each_write_is_durable() {
    require_fuse!();
    let fx = Fixture::lazy();
    fx.durable_file("wal", b"");
    let mut f = OpenOptions::new().write(true).custom_flags(libc::O_DSYNC).open(fx.path("wal")).unwrap();
    f.write_all(b"record").unwrap();
    drop(f);
    fx.fs.crash().unwrap();
    assert_eq!(fx.read("wal").unwrap(), b"record");
}

#[test]
fn given_truncate_without_fsync_when_crashed_then_the_old_length_and_bytes_return() {
    require_fuse!();
    let fx = Fixture::lazy();
    fx.durable_file("seg", &[7u8; 10_000]);
    let f = OpenOptions::new().write(true).open(fx.path("seg")).unwrap();
    f.set_len(100).unwrap();
    f.set_len(5000).unwrap();
    drop(f);
    let seen = fx.read("seg").unwrap();
    assert_eq!(seen.len(), 5000);
    assert!(seen[100..].iter().all(|b| *b == 0), "truncated bytes do not come back while mounted");
    fx.fs.crash().unwrap();
    assert_eq!(fx.read("seg").unwrap(), vec![7u8; 10_000]);
}

#[test]
fn given_new_file_fsynced_but_not_its_directory_when_crashed_then_the_file_is_gone() {
    require_fuse!();
    let fx = Fixture::lazy();
    let mut f = File::create(fx.path("segment-1")).unwrap();
    f.write_all(b"data").unwrap();
    f.sync_all().unwrap();
    drop(f);
    fx.fs.crash().unwrap();
    assert!(!fx.path("segment-1").exists(), "a name is durable only after its directory is fsync'd");
}

#[test]
fn given_new_file_and_directory_fsynced_when_crashed_then_the_file_is_kept() {
    require_fuse!();
    let fx = Fixture::lazy();
    fx.durable_file("segment-1", b"data");
    fx.fs.crash().unwrap();
    assert_eq!(fx.read("segment-1").unwrap(), b"data");
}

#[test]
fn given_rename_over_a_file_without_directory_fsync_when_crashed_then_both_names_return() {
    require_fuse!();
    let fx = Fixture::lazy();
    fx.durable_file("current", b"old");
    fx.durable_file("current.tmp", b"new");
    std::fs::rename(fx.path("current.tmp"), fx.path("current")).unwrap();
    assert_eq!(fx.read("current").unwrap(), b"new");
    assert!(fx.read("current.tmp").is_none());
    fx.fs.crash().unwrap();
    assert_eq!(fx.read("current").unwrap(), b"old");
    assert_eq!(fx.read("current.tmp").unwrap(), b"new");
}

#[test]
fn given_rename_then_directory_fsync_when_crashed_then_the_rename_is_kept() {
    require_fuse!();
    let fx = Fixture::lazy();
    fx.durable_file("current", b"old");
    fx.durable_file("current.tmp", b"new");
    std::fs::rename(fx.path("current.tmp"), fx.path("current")).unwrap();
    fx.sync_dir(".");
    fx.fs.crash().unwrap();
    assert_eq!(fx.read("current").unwrap(), b"new");
    assert!(fx.read("current.tmp").is_none());
    assert_eq!(std::fs::read_dir(&fx.mnt).unwrap().count(), 1, "the trash is not visible");
}

#[test]
fn given_unlink_without_directory_fsync_when_crashed_then_the_file_returns_with_its_synced_data() {
    require_fuse!();
    let fx = Fixture::lazy();
    fx.durable_file("old-segment", b"records");
    let mut f = OpenOptions::new().append(true).open(fx.path("old-segment")).unwrap();
    f.write_all(b" unsynced").unwrap();
    drop(f);
    std::fs::remove_file(fx.path("old-segment")).unwrap();
    fx.fs.crash().unwrap();
    assert_eq!(fx.read("old-segment").unwrap(), b"records");

    std::fs::remove_file(fx.path("old-segment")).unwrap();
    fx.sync_dir(".");
    fx.fs.crash().unwrap();
    assert!(fx.read("old-segment").is_none());
}

#[test]
fn given_directory_tree_synced_inside_but_not_at_its_parent_when_crashed_then_the_tree_is_gone() {
    require_fuse!();
    let fx = Fixture::lazy();
    std::fs::create_dir(fx.path("blobs")).unwrap();
    let f = File::create(fx.path("blobs/1")).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fx.sync_dir("blobs");
    fx.fs.crash().unwrap();
    assert!(!fx.path("blobs").exists(), "the directory's own entry was never made durable");

    std::fs::create_dir(fx.path("blobs")).unwrap();
    fx.sync_dir(".");
    fx.durable_file("blobs/1", b"x");
    fx.sync_dir("blobs");
    fx.fs.crash().unwrap();
    assert_eq!(fx.read("blobs/1").unwrap(), b"x");
}

#[test]
fn given_immediate_namespace_when_crashed_then_names_stay_and_only_data_is_lost() {
    require_fuse!();
    let fx = Fixture::new(NamespaceMode::Immediate);
    std::fs::write(fx.path("new"), b"unsynced").unwrap();
    std::fs::write(fx.path("gone"), b"").unwrap();
    std::fs::remove_file(fx.path("gone")).unwrap();
    fx.fs.crash().unwrap();
    assert_eq!(fx.read("new").unwrap(), b"", "the name is kept, its unsynced data is not");
    assert!(fx.read("gone").is_none());
}

#[test]
fn given_megabytes_of_appends_with_periodic_fsync_when_crashed_then_exactly_the_synced_prefix_remains() {
    require_fuse!();
    let fx = Fixture::lazy();
    fx.durable_file("db", b"");
    let mut f = OpenOptions::new().append(true).open(fx.path("db")).unwrap();
    let chunk: Vec<u8> = (0..10_007u32).map(|i| (i % 251) as u8).collect();
    let mut synced = 0usize;
    let started = Instant::now();
    for i in 0..800 {
        f.write_all(&chunk).unwrap();
        if i % 10 == 9 {
            f.sync_data().unwrap();
            synced = (i + 1) * chunk.len();
        }
        if i == 795 {
            break;
        }
    }
    let written = 796 * chunk.len();
    let elapsed = started.elapsed();
    drop(f);
    assert_eq!(fx.read("db").unwrap().len(), written);
    assert!(fx.fs.stats().pending_bytes > 0);
    fx.fs.crash().unwrap();
    let after = fx.read("db").unwrap();
    assert_eq!(after.len(), synced);
    assert!(after.chunks(chunk.len()).all(|c| c == chunk.as_slice()), "the synced prefix is intact");
    // 8 MB through the mount: a chaos run writes a few MB/s per node.
    assert!(elapsed < Duration::from_secs(20), "8 MB of appends took {elapsed:?}");
    eprintln!("8 MB of appends with an fsync every 100 KB: {elapsed:?}");
}

/// The daemon as the chaos harness runs it. Killed on drop if still alive.
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn given_daemon_when_controlled_over_its_socket_then_it_crashes_on_command_and_unmounts_on_exit() {
    require_fuse!();
    let dir = tempfile::tempdir().unwrap();
    let (backing, mnt, sock) = (dir.path().join("disk"), dir.path().join("mnt"), dir.path().join("ctl.sock"));
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let mut daemon = Daemon {
        child: Command::new(env!("CARGO_BIN_EXE_replog-faultfs"))
            .arg("mount")
            .arg("--backing")
            .arg(&backing)
            .arg("--mountpoint")
            .arg(&mnt)
            .arg("--control")
            .arg(&sock)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    };
    // `ready` comes once the mount serves and the socket listens.
    let mut line = String::new();
    BufReader::new(daemon.child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    assert_eq!(mounts_under(dir.path()), vec![mnt.canonicalize().unwrap()]);

    let mut ctl = Client::connect(&sock).unwrap();
    ctl.ping().unwrap();
    std::fs::write(mnt.join("f"), b"unsynced").unwrap();
    let stats = ctl.stats().unwrap();
    assert_eq!((stats.dirty_files, stats.pending_ops), (1, 1));
    let report = ctl.crash().unwrap();
    assert_eq!((report.files, report.undone), (1, 1));
    assert!(!mnt.join("f").exists());
    assert!(ctl.command("explode").is_err());

    ctl.exit().unwrap();
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(mounts_under(dir.path()).is_empty(), "unmounted on exit");
    let mut leftover = String::new();
    let _ = File::open(mnt.join("f")).map(|mut f| f.read_to_string(&mut leftover));
    assert!(leftover.is_empty());
}
