//! Moves spooled lines into Redis once it answers again.
//!
//! One task per api process. It replays the oldest file line by line
//! through the same calls the handlers make (`JobQueue::enqueue` with the
//! line's idempotency key, `forget_user`), so dedup keeps every message
//! exactly-once, and deletes the file only after its last line is in Redis.
//! While Redis is away it retries with a capped backoff and says so once;
//! it also adopts files left by stopped api processes. On shutdown it gives
//! Redis one short last chance; what is left stays on disk for the next
//! process.

use std::sync::Arc;
use std::time::Duration;

use ferry_common::queue::JobQueue;
use ferry_common::users::forget_user;
use tokio_util::sync::CancellationToken;

use super::{Pending, Spool, SpoolRecord};

/// How long one replayed line may take before Redis counts as away.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(3);
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(3);
/// How often an idle drainer looks for files left by stopped processes.
const IDLE_SCAN: Duration = Duration::from_secs(2);
/// The last chance given to Redis at shutdown.
const FINAL_PASS: Duration = Duration::from_secs(5);

/// Why a pass stopped early.
enum Stall {
    /// Redis did not take a line (down, slow, or refusing).
    Redis(String),
    /// The spool directory failed.
    Disk(std::io::Error),
}

/// Drains `spool` into `queue` until `stop`, then makes one last bounded pass.
pub async fn run(spool: Arc<Spool>, queue: JobQueue, stop: CancellationToken) {
    let mut backoff = MIN_BACKOFF;
    let mut stalled = false;
    loop {
        match drain(&spool, &queue).await {
            Ok(()) => {
                if stalled {
                    tracing::info!("Redis is back: the spool is drained");
                }
                stalled = false;
                backoff = MIN_BACKOFF;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = spool.appended() => {}
                    _ = tokio::time::sleep(IDLE_SCAN) => {}
                }
            }
            Err(stall) => {
                if !stalled {
                    let held = spool.stats().held_bytes;
                    match &stall {
                        Stall::Redis(reason) => tracing::warn!(
                            held_bytes = held,
                            "spooled messages wait for Redis ({reason}); retrying"
                        ),
                        Stall::Disk(e) => tracing::error!(
                            dir = %spool.dir().display(),
                            "cannot read the spool: {e}; retrying"
                        ),
                    }
                }
                stalled = true;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    match tokio::time::timeout(FINAL_PASS, drain(&spool, &queue)).await {
        Ok(Ok(())) => {}
        _ => {
            let stats = spool.stats();
            if stats.files > 0 {
                tracing::warn!(
                    dir = %spool.dir().display(),
                    held_bytes = stats.held_bytes,
                    "stopping with spooled messages on disk: the next api process replays them"
                );
            }
        }
    }
}

/// Replays every pending file, oldest first, until none is left.
async fn drain(spool: &Arc<Spool>, queue: &JobQueue) -> Result<(), Stall> {
    loop {
        let next = {
            let spool = Arc::clone(spool);
            tokio::task::spawn_blocking(move || spool.next_pending())
                .await
                .map_err(|e| Stall::Disk(std::io::Error::other(e)))?
                .map_err(Stall::Disk)?
        };
        let Some(pending) = next else {
            return Ok(());
        };
        replay_file(spool, queue, &pending).await?;
        let spool = Arc::clone(spool);
        let path = pending.path.clone();
        tokio::task::spawn_blocking(move || spool.finish(&path))
            .await
            .map_err(|e| Stall::Disk(std::io::Error::other(e)))?
            .map_err(Stall::Disk)?;
    }
}

/// Replays the lines of one file not yet replayed, recording progress.
async fn replay_file(spool: &Spool, queue: &JobQueue, pending: &Pending) -> Result<(), Stall> {
    let mut done = pending.first;
    let mut newly = 0;
    let mut result = Ok(());
    for line in &pending.lines[pending.first.min(pending.lines.len())..] {
        match serde_json::from_str::<SpoolRecord>(line) {
            Err(e) => tracing::warn!(
                file = %pending.path.display(),
                "skipping an unreadable spool line (a write cut short by a disk error?): {e}"
            ),
            Ok(record) => {
                match tokio::time::timeout(REPLAY_TIMEOUT, replay(&record, queue)).await {
                    Ok(Ok(())) => newly += 1,
                    Ok(Err(reason)) => {
                        result = Err(Stall::Redis(reason));
                        break;
                    }
                    Err(_) => {
                        result = Err(Stall::Redis("no answer in time".into()));
                        break;
                    }
                }
            }
        }
        done += 1;
    }
    spool.mark_replayed(&pending.path, done, newly);
    result
}

async fn replay(record: &SpoolRecord, queue: &JobQueue) -> Result<(), String> {
    match record {
        SpoolRecord::Enqueue { .. } => {
            let Some(job) = record.job() else {
                return Ok(());
            };
            let enqueued = queue.enqueue(&job).await.map_err(|e| e.to_string())?;
            if enqueued.created {
                tracing::debug!(job = %enqueued.id, "spooled message enqueued");
            } else {
                tracing::debug!(job = %enqueued.id, "spooled message was already enqueued");
            }
            Ok(())
        }
        SpoolRecord::Forget { openid, .. } => {
            forget_user(queue.store(), openid)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        }
    }
}
