//! The control interface: a unix socket beside the mount (never inside it,
//! so the program under test cannot see it), one command per line, one
//! answer line each.
//!
//! | command | answer |
//! |---|---|
//! | `ping` | `ok` once the mount serves requests |
//! | `crash` | `ok files=F bytes=B undone=U`: every unsynced write dropped (power loss) |
//! | `sync` | `ok`: everything made durable, as a clean shutdown would |
//! | `stats` | `ok dirty_files=… pending_bytes=… pending_ops=… fsyncs=… synced_bytes=… dir_fsyncs=… crashes=…` |
//! | `exit` | `ok`, then the daemon unmounts and exits (what is unsynced is lost) |
//!
//! Errors answer `error <message>`. [`Client`] speaks it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fs::{CrashReport, State, Stats};

/// What `exit` does: supplied by whoever owns the mount.
pub type OnExit = Box<dyn Fn() + Send + Sync>;

/// Serves the control socket at `path` on a thread of its own. The socket
/// file is replaced if it exists (a stale one from a killed daemon).
pub fn serve(path: &Path, state: Arc<Mutex<State>>, on_exit: OnExit) -> Result<PathBuf> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("remove stale socket {}", path.display()), e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| Error::io(format!("bind {}", path.display()), e))?;
    let on_exit = Arc::new(on_exit);
    std::thread::Builder::new()
        .name("faultfs-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let state = state.clone();
                let on_exit = on_exit.clone();
                // One thread per connection: a client that stalls does not
                // block a crash sent by another.
                let _ = std::thread::Builder::new().name("faultfs-conn".into()).spawn(move || {
                    let _ = handle(conn, &state, &on_exit);
                });
            }
        })
        .map_err(|e| Error::io("spawn control thread", e))?;
    Ok(path.to_path_buf())
}

fn handle(conn: UnixStream, state: &Mutex<State>, on_exit: &OnExit) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    for line in BufReader::new(conn).lines() {
        let line = line?;
        let answer = execute(line.trim(), state);
        writeln!(out, "{answer}")?;
        out.flush()?;
        if line.trim() == "exit" {
            on_exit();
            return Ok(());
        }
    }
    Ok(())
}

/// Runs one command against `state` and returns the answer line.
pub fn execute(cmd: &str, state: &Mutex<State>) -> String {
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    match cmd {
        "ping" | "exit" => "ok".into(),
        "crash" => match st.crash() {
            Ok(r) => {
                tracing::info!(files = r.files, bytes = r.bytes, undone = r.undone, "crash: unsynced writes dropped");
                format!("ok files={} bytes={} undone={}", r.files, r.bytes, r.undone)
            }
            Err(e) => format!("error crash: {e}"),
        },
        "sync" => match st.sync_all() {
            Ok(()) => "ok".into(),
            Err(e) => format!("error sync: {e}"),
        },
        "stats" => {
            let s = st.stats();
            format!(
                "ok dirty_files={} pending_bytes={} pending_ops={} fsyncs={} synced_bytes={} dir_fsyncs={} crashes={}",
                s.dirty_files, s.pending_bytes, s.pending_ops, s.fsyncs, s.synced_bytes, s.dir_fsyncs, s.crashes
            )
        }
        other => format!("error unknown command {other:?} (ping, crash, sync, stats, exit)"),
    }
}

/// A connection to a daemon's control socket.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

fn field(answer: &str, name: &str) -> Result<u64> {
    answer
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Protocol(format!("no {name} in {answer:?}")))
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client> {
        let s = UnixStream::connect(path).map_err(|e| Error::io(format!("connect {}", path.display()), e))?;
        // A crash of a large overlay takes well under this; a daemon that
        // does not answer at all is a finding, not something to wait for.
        let timeout = Some(Duration::from_secs(30));
        s.set_read_timeout(timeout).map_err(|e| Error::io("set timeout", e))?;
        let writer = s.try_clone().map_err(|e| Error::io("clone socket", e))?;
        Ok(Client { path: path.to_path_buf(), reader: BufReader::new(s), writer })
    }

    /// Sends `cmd` and returns the answer after `ok`.
    pub fn command(&mut self, cmd: &str) -> Result<String> {
        let ctx = || format!("{} on {}", cmd, self.path.display());
        writeln!(self.writer, "{cmd}").map_err(|e| Error::io(ctx(), e))?;
        let mut line = String::new();
        if self.reader.read_line(&mut line).map_err(|e| Error::io(ctx(), e))? == 0 {
            return Err(Error::Protocol(format!("{}: connection closed", ctx())));
        }
        let line = line.trim_end();
        match line.strip_prefix("ok") {
            Some(rest) => Ok(rest.trim().to_string()),
            None => Err(Error::Protocol(format!("{}: {line}", ctx()))),
        }
    }

    pub fn ping(&mut self) -> Result<()> {
        self.command("ping").map(|_| ())
    }

    /// Drops every unsynced write; see [`State::crash`].
    pub fn crash(&mut self) -> Result<CrashReport> {
        let a = self.command("crash")?;
        Ok(CrashReport { files: field(&a, "files")?, bytes: field(&a, "bytes")?, undone: field(&a, "undone")? })
    }

    pub fn sync(&mut self) -> Result<()> {
        self.command("sync").map(|_| ())
    }

    pub fn stats(&mut self) -> Result<Stats> {
        let a = self.command("stats")?;
        Ok(Stats {
            dirty_files: field(&a, "dirty_files")?,
            pending_bytes: field(&a, "pending_bytes")?,
            pending_ops: field(&a, "pending_ops")?,
            fsyncs: field(&a, "fsyncs")?,
            synced_bytes: field(&a, "synced_bytes")?,
            dir_fsyncs: field(&a, "dir_fsyncs")?,
            crashes: field(&a, "crashes")?,
        })
    }

    /// Asks the daemon to unmount and exit.
    pub fn exit(&mut self) -> Result<()> {
        self.command("exit").map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_answers_then_fields_parse_and_errors_are_named() {
        assert_eq!(field("files=2 bytes=8192 undone=1", "bytes").unwrap(), 8192);
        assert_eq!(field("dirty_files=3 files=2", "files").unwrap(), 2);
        assert!(field("files=x", "files").is_err());
        let dir = tempfile::tempdir().unwrap();
        let state = Mutex::new(State::new(dir.path(), Default::default()).unwrap());
        assert!(execute("explode", &state).starts_with("error unknown command"));
        assert_eq!(execute("crash", &state), "ok files=0 bytes=0 undone=0");
    }
}
