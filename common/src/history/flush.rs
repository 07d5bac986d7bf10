//! Adding a process's counts to Redis: every [`super::FLUSH_EVERY`], one
//! pipeline of `HINCRBY` per field and `EXPIRE` per minute (all keys under
//! the `history` tag: one slot, so one round trip on a cluster too). A
//! flush that fails puts the counts back for the next one; it never blocks
//! the requests and jobs that count (they only take the lock for an add).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::Pipeline;

use super::History;
use crate::store::{RedisError, Store};

impl History {
    /// Adds every pending minute to Redis in one pipeline. On failure the
    /// counts are kept (bounded) and added by the next flush. Returns the
    /// number of minutes written.
    pub async fn flush(&self, store: &Store) -> Result<usize, RedisError> {
        let taken = self.take();
        if taken.is_empty() {
            return Ok(0);
        }
        let mut pipe = Pipeline::new();
        for (&minute, counts) in &taken {
            let key = store.keys().history_minute(minute);
            for (field, n) in counts.fields() {
                pipe.cmd("HINCRBY").arg(&key).arg(field).arg(n).ignore();
            }
            pipe.cmd("EXPIRE")
                .arg(&key)
                .arg(super::RETENTION.as_secs())
                .ignore();
        }
        let written = taken.len();
        let result = async {
            let mut conn = store.conn().await?;
            pipe.query_async::<()>(&mut conn).await?;
            Ok::<_, RedisError>(())
        }
        .await;
        match result {
            Ok(()) => Ok(written),
            Err(e) => {
                self.restore(taken);
                Err(e)
            }
        }
    }

    /// Flushes every `every` until `stop` completes, then once more (what
    /// was counted since the last flush). Failures are logged at debug
    /// level: the counts wait in memory for Redis to come back.
    pub async fn flush_every(
        self: Arc<Self>,
        store: Store,
        every: Duration,
        stop: impl Future<Output = ()>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {
                    if let Err(e) = self.flush(&store).await {
                        tracing::debug!(error = %e, "fleet history: flush failed, counts kept for the next one");
                    }
                }
            }
        }
        if let Err(e) = self.flush(&store).await {
            tracing::warn!(error = %e, "fleet history: the last flush at shutdown failed");
        }
    }
}
