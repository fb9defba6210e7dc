//! `replog-faultfs`: mounts a backing directory through the lazy
//! filesystem and serves its control socket, or sends one control command.
//!
//! ```text
//! replog-faultfs mount --backing DIR --mountpoint DIR --control SOCK [--namespace lazy|immediate]
//! replog-faultfs ctl --control SOCK crash|sync|stats|ping|exit
//! ```
//!
//! `mount` prints `ready` once the mount serves requests and the control
//! socket listens, and runs until SIGTERM, SIGINT or the `exit` command;
//! then it unmounts (lazily if a file is still open) and exits. Needs root
//! (it mounts with mount(2), no fusermount helper) and `/dev/fuse`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use replog_faultfs::control::{self, Client};
use replog_faultfs::{MountedFs, NamespaceMode, Options};

#[derive(Parser)]
#[command(name = "replog-faultfs", about = "A FUSE filesystem that loses unsynced writes on command")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount BACKING at MOUNTPOINT and serve the control socket.
    Mount {
        /// The directory that plays the disk: it holds what was fsync'd.
        #[arg(long)]
        backing: PathBuf,
        /// Where the filesystem appears (an existing directory).
        #[arg(long)]
        mountpoint: PathBuf,
        /// The control socket to create (outside the mount).
        #[arg(long)]
        control: PathBuf,
        /// lazy: namespace changes are lost unless their directory is
        /// fsync'd; immediate: only file data is lost.
        #[arg(long, default_value = "lazy")]
        namespace: NamespaceMode,
        /// Threads serving kernel requests.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Send one command to a running daemon and print its answer.
    Ctl {
        #[arg(long)]
        control: PathBuf,
        /// ping, crash, sync, stats or exit.
        command: String,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match Cli::parse().cmd {
        Cmd::Mount { backing, mountpoint, control, namespace, threads } => {
            run_mount(backing, mountpoint, control, Options { namespace, threads })
        }
        Cmd::Ctl { control, command } => {
            let answer = Client::connect(&control)?.command(&command)?;
            println!("ok {answer}");
            Ok(())
        }
    }
}

/// Blocks the stop signals in this thread (and so in every thread spawned
/// after it), so that only `sigwait` below sees them.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local, zero-initialised set, then
    // pthread_sigmask on the current thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn run_mount(backing: PathBuf, mountpoint: PathBuf, control_path: PathBuf, opts: Options) -> Result<()> {
    let set = stop_signals();
    let fs = MountedFs::mount(&backing, &mountpoint, &opts)?;
    control::serve(
        &control_path,
        fs.state(),
        Box::new(|| {
            // SAFETY: kill(2) of our own pid; the main thread's sigwait
            // takes it and unmounts.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        }),
    )?;
    println!("ready");
    let mut sig: libc::c_int = 0;
    // SAFETY: set holds the blocked stop signals; sig is a valid out pointer.
    unsafe { libc::sigwait(&set, &mut sig) };
    tracing::info!("signal {sig}: unmounting {}", mountpoint.display());
    let _ = std::fs::remove_file(&control_path);
    fs.unmount().context("unmount")?;
    Ok(())
}
