//! The replog chaos harness: fault injection against real clusters, and a
//! checker that proves nothing acknowledged is lost.
//!
//! Module map:
//!
//! - [`history`]: what a run did, as data. [`history::Recorder`] is shared
//!   by the producer and consumer tasks (a cheap clone over one
//!   `Arc<Mutex<..>>`) and records every send attempt
//!   ([`history::SendOp`] with an [`history::Outcome`]: acknowledged,
//!   refused, or indeterminate), every poll ([`history::PollOp`]) and the
//!   final read of each partition ([`history::FinalRead`]); a
//!   [`history::History`] is stored as JSON lines.
//! - [`checker`]: [`checker::check`] turns a history into a
//!   [`checker::Report`] naming every anomaly after Jepsen (lost-write,
//!   unseen, duplicate, inconsistent-offsets, nonmonotonic-poll, poll-skip,
//!   phantom-write, unexpected, nonmonotonic-send, send-skip), of topics
//!   created and deleted (resurrected, undeleted-topic, missing-topic) and
//!   of replicas compared over their whole logs (replica-divergence), with
//!   the values and offsets involved.
//!
//! - [`cluster`]: how a run sets up the test kit's
//!   [`replog_testkit::Cluster`] (N real `replog-node` processes, killed,
//!   stopped, paused and restarted by PID): node i on its own loopback
//!   address 127.0.0.(10+i), faultfs disks and planted bugs from the
//!   environment.
//! - [`net`]: [`net::Net`], packet-level faults between node addresses
//!   (iptables rules in a chain of our own, traffic control on `lo`);
//!   [`net_cmd`]: the same faults by hand, `chaos net partition|delay|heal|show`,
//!   which the scripts in `chaos-tests/scripts/` wrap.
//! - [`nemesis`]: the faults of `CHAOS_FAULTS` on a schedule drawn from a
//!   seed, each healed before the next.
//! - [`workload`]: acks=all producers and per-partition consumers that
//!   record everything, and the final reads from the leader and every
//!   replica.
//! - [`queue_workload`]: the queue workload (`CHAOS_WORKLOAD=queue`):
//!   queue consumers that crash, release, reject and overrun their locks
//!   under the faults, and its checker of exactly-once settlement.
//! - [`runner`]: one run end to end (cluster, topic, workload under the
//!   nemesis, heal, final reads, check); `src/bin/chaos.rs` is `make chaos`.
//! - [`soak`]: a long run at half of peak throughput with a fault at a
//!   fixed interval, each node's memory sampled; `src/bin/soak.rs` is
//!   `make soak`.
//!
//! It checks invariants 1 and 2 of the design (no acknowledged record lost;
//! no two readers see different records at one offset, offsets never go
//! backwards), and 3 once the idempotent producer is on (a retried write
//! appears once). docs/chaos.md has the faults, the knobs and the scripts.
//!
//! ```
//! use replog_chaos::checker::check;
//! use replog_chaos::history::{FinalRead, Outcome, ReadRecord, Recorder, SendOp};
//!
//! let rec = Recorder::new();
//! let start_us = rec.now_us();
//! rec.record(SendOp {
//!     producer: "p1".into(),
//!     topic: "chaos".into(),
//!     partition: Some(0),
//!     value: "w-1-0".into(),
//!     outcome: Outcome::Ok { partition: 0, offset: 0 },
//!     start_us,
//!     end_us: rec.now_us(),
//!     generation: 0,
//!     seq: Some(0),
//! });
//! rec.record(FinalRead {
//!     reader: "leader".into(),
//!     topic: "chaos".into(),
//!     partition: 0,
//!     start_offset: 0,
//!     high_watermark: 1,
//!     records: vec![ReadRecord::new(0, "w-1-0")],
//!     start_us: rec.now_us(),
//!     end_us: rec.now_us(),
//!     generation: 0,
//! });
//! let report = check(&rec.finish().unwrap());
//! assert!(report.is_valid());
//! assert_eq!(report.acknowledged, 1);
//! ```

pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod net_cmd;
pub mod queue_workload;
pub mod runner;
pub mod soak;
pub mod workload;
