//! Ports for test nodes that nothing else on the machine takes.
//!
//! A port found free by binding port 0 comes from the kernel's ephemeral
//! range, and stays free only until someone binds it: another test picking
//! ports at the same moment, or any outgoing connection, which takes its
//! local port from that same range. A node stopped and restarted by a test
//! (its ports unbound in between) is exposed the whole time it is down.
//! With many tests running at once, one of them now and then found its node
//! unable to bind and waited out its start.
//!
//! So a node's ports come from a *slot* below the ephemeral range: slot `s`
//! is client port `BASE + s`, peer port `BASE + s + PEER_PORT_OFFSET`
//! (`replog-node`'s default distance), metrics port
//! `BASE + s + 2 × PEER_PORT_OFFSET` and Kafka port
//! `BASE + s + 3 × PEER_PORT_OFFSET`. A test process claims a slot by
//! holding an exclusive `flock` on its file under the temporary directory,
//! for as long as its cluster lives; the kernel drops the claim when the
//! process ends, however it ends, so nothing is left to clean up.

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// The default distance of a node's peer port from its client port
/// (`replog-node --peer-port-offset`).
pub const PEER_PORT_OFFSET: u16 = 1000;

/// The first client port; every port of every slot lies below the
/// ephemeral range (32768 and up on Linux by default).
const BASE: u16 = 20_000;

/// How many slots there are: each slot's four ports stay below
/// `BASE + 4 × PEER_PORT_OFFSET`.
const SLOTS: u16 = PEER_PORT_OFFSET;

/// A claimed slot: its ports are this process's until it is dropped.
#[derive(Debug)]
pub struct Slot {
    slot: u16,
    _lock: File,
}

impl Slot {
    pub fn client_port(&self) -> u16 {
        BASE + self.slot
    }

    pub fn peer_port(&self) -> u16 {
        self.client_port() + PEER_PORT_OFFSET
    }

    pub fn metrics_port(&self) -> u16 {
        self.client_port() + 2 * PEER_PORT_OFFSET
    }

    /// The node's Kafka listener, for clusters that start one.
    pub fn kafka_port(&self) -> u16 {
        self.client_port() + 3 * PEER_PORT_OFFSET
    }
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("replog-test-ports")
}

/// Claims a slot whose four ports are free on `ip`, starting the search at
/// a place that differs per process so that concurrent tests rarely try the
/// same files.
pub fn claim(ip: Ipv4Addr) -> Result<Slot> {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let start =
        (std::process::id() as u64).wrapping_mul(7919).wrapping_add(replog_proto::now_ms() as u64) % SLOTS as u64;
    for i in 0..SLOTS as u64 {
        let slot = ((start + i) % SLOTS as u64) as u16;
        let path = dir.join(format!("slot-{slot}"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue;
        }
        let s = Slot { slot, _lock: file };
        // A port may still be bound by something that does not claim slots
        // (a node left over from a killed test, another program).
        let free = [s.client_port(), s.peer_port(), s.metrics_port(), s.kafka_port()]
            .into_iter()
            .all(|p| TcpListener::bind((ip, p)).is_ok());
        if free {
            return Ok(s);
        }
    }
    bail!("no free port slot on {ip}: all {SLOTS} slots under {} are claimed or bound", dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_claimed_slot_then_no_other_claim_gets_it_until_it_is_dropped() {
        let a = claim(Ipv4Addr::LOCALHOST).unwrap();
        let b = claim(Ipv4Addr::LOCALHOST).unwrap();
        assert_ne!(a.slot, b.slot, "two live claims share a slot");
        assert_eq!(a.peer_port(), a.client_port() + PEER_PORT_OFFSET);
        assert!(a.kafka_port() < 32768, "every port lies below the ephemeral range");
        // flock is per open file: a second open of the same slot file in
        // this process is refused while the first claim lives.
        let f = File::open(lock_dir().join(format!("slot-{}", a.slot))).unwrap();
        // SAFETY: flock(2) on a descriptor this test owns.
        assert_ne!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
        drop(a);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    }
}
