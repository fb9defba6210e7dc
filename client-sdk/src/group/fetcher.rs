//! One task per owned partition: finds where to start, then long-polls the
//! partition's leader and queues what it gets for the application.
//!
//! Failovers and lost connections are retried here for as long as it
//! takes — the application never hears of them. What it must hear of (the
//! topic deleted, a batch that cannot be decoded) is queued as an error.

use std::sync::Arc;
use std::time::Duration;

use replog_proto::codes::ErrorCode;
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use super::AutoOffsetReset;
use super::member::{Fetched, Inner, transient};
use crate::admin::{OffsetSpec, TopicPartition};
use crate::consumer::PartitionReader;
use crate::error::{Error, Result};

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Pause after an error the application was told about, before trying again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Where a fetch task starts.
pub(crate) enum Start {
    At(u64),
    /// The group's committed offset, else the auto-offset-reset policy.
    Resolve,
}

pub(crate) fn spawn(inner: Arc<Inner>, tp: TopicPartition, epoch: u64, start: Start) -> AbortHandle {
    tokio::spawn(run(inner, tp, epoch, start)).abort_handle()
}

async fn run(inner: Arc<Inner>, tp: TopicPartition, epoch: u64, start: Start) {
    let mut backoff = Backoff::default();
    let offset = match start {
        Start::At(o) => o,
        Start::Resolve => loop {
            match resolve(&inner, &tp).await {
                Ok((offset, committed)) => {
                    if !inner.started(&tp, epoch, offset, committed) {
                        return;
                    }
                    break offset;
                }
                Err(e) if transient(&e) => backoff.wait(&tp, &e).await,
                Err(e) => {
                    if !inner.report(&tp, epoch, e).await {
                        return;
                    }
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            }
        },
    };
    debug!(group = %inner.group, %tp, offset, "fetching");
    let mut reader =
        PartitionReader::new(inner.client.clone(), &tp.topic, tp.partition, offset).with_options(inner.cfg.fetch);
    backoff = Backoff::default();
    loop {
        match reader.poll().await {
            Ok(records) => {
                backoff = Backoff::default();
                if records.is_empty() {
                    continue;
                }
                let f = Fetched { tp: tp.clone(), epoch, records: Ok(records) };
                if inner.tx.send(f).await.is_err() {
                    return;
                }
            }
            Err(e) if e.code() == Some(ErrorCode::OffsetOutOfRange) => match out_of_range(&inner, &tp, &reader).await {
                Ok(Some(to)) => reader.seek(to),
                Ok(None) => backoff.wait(&tp, &e).await,
                Err(e2) if transient(&e2) => backoff.wait(&tp, &e2).await,
                Err(e2) => {
                    if !inner.report(&tp, epoch, e2).await {
                        return;
                    }
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            },
            Err(e) if transient(&e) => backoff.wait(&tp, &e).await,
            Err(e) => {
                let gone = matches!(e.code(), Some(ErrorCode::UnknownTopic | ErrorCode::UnknownPartition));
                if !inner.report(&tp, epoch, e).await || gone {
                    return;
                }
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
}

/// The start of a partition newly granted: the group's committed offset
/// (returned as the second value too), else by the reset policy.
pub(crate) async fn resolve(inner: &Inner, tp: &TopicPartition) -> Result<(u64, Option<u64>)> {
    let part = inner.coordinator_partition()?;
    let committed = inner.client.committed_at(part, &inner.group, std::slice::from_ref(tp)).await?;
    if let Some(c) = committed.into_iter().find(|c| c.topic == tp.topic && c.partition == tp.partition) {
        return Ok((c.offset, Some(c.offset)));
    }
    let spec = match inner.cfg.auto_offset_reset {
        AutoOffsetReset::Earliest => OffsetSpec::Earliest,
        AutoOffsetReset::Latest => OffsetSpec::Latest,
    };
    let o = inner.client.list_offsets(&tp.topic, tp.partition, spec).await?;
    debug!(group = %inner.group, %tp, offset = o.offset, "no committed offset; starting by the reset policy");
    Ok((o.offset, None))
}

/// Where to go on from a position outside the log: below its start
/// (retention released those records) by the reset policy; `None` when the
/// position is above the high watermark, which only a leader not yet caught
/// up can answer — worth asking again.
async fn out_of_range(inner: &Inner, tp: &TopicPartition, reader: &PartitionReader) -> Result<Option<u64>> {
    let pos = reader.position();
    let start = inner.client.list_offsets(&tp.topic, tp.partition, OffsetSpec::Earliest).await?;
    if pos >= start.log_start_offset && pos <= start.high_watermark {
        return Ok(Some(pos));
    }
    if pos > start.high_watermark {
        return Ok(None);
    }
    let to = match inner.cfg.auto_offset_reset {
        AutoOffsetReset::Earliest => start.log_start_offset,
        AutoOffsetReset::Latest => start.high_watermark,
    };
    warn!(
        group = %inner.group, %tp, position = pos, log_start = start.log_start_offset, to,
        "position below the log start (released by retention); moving on by the reset policy"
    );
    Ok(Some(to))
}

struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(BACKOFF_MIN)
    }
}

impl Backoff {
    async fn wait(&mut self, tp: &TopicPartition, e: &Error) {
        debug!(%tp, "fetch failed, retrying in {:?}: {e}", self.0);
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
    }
}
