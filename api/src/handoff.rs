//! Handing a push's work over so it can be acknowledged in time: to Redis
//! within the acknowledgement budget (`FERRY_ACK_BUDGET_MS`), or else to the
//! local spool, synced to disk, for the drainer to replay.
//!
//! A timeout does not mean Redis refused: the enqueue may still land. The
//! spooled copy carries the same idempotency key, so its replay then finds
//! the job and creates nothing. A push is answered with 503 (and WeChat
//! retries it) only when the spool cannot take it either: full, failing, or
//! slower than [`SPOOL_WRITE_LIMIT`]. At worst a push is answered after the
//! budget plus that limit, well under WeChat's 5 s.

use std::sync::Arc;
use std::time::Duration;

use ferry_common::job::NewJob;
use ferry_common::users::forget_user;

use crate::error::ApiError;
use crate::spool::{Spool, SpoolError, SpoolRecord};
use crate::state::AppState;

/// The longest a spool write (one fsync) may take before the push is
/// refused with 503 instead.
pub const SPOOL_WRITE_LIMIT: Duration = Duration::from_secs(1);

/// Where a push's work went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handed {
    /// In Redis; `created` is false for a retry of a message already there.
    Redis { created: bool },
    /// On the local disk, to be replayed into Redis.
    Spooled,
}

/// Enqueues `job` (batched with concurrent pushes) within the budget, else
/// spools it.
pub async fn enqueue(state: &AppState, job: NewJob) -> Result<Handed, ApiError> {
    let job = Arc::new(job);
    let attempt = state.batcher.enqueue(Arc::clone(&job));
    let reason = match tokio::time::timeout(state.wechat.ack_budget, attempt).await {
        Ok(Ok(enqueued)) => {
            if enqueued.created {
                tracing::debug!(job = %enqueued.id, "WeChat message enqueued");
            } else {
                tracing::debug!(job = %enqueued.id, "WeChat retry of a message already enqueued: dropped");
            }
            return Ok(Handed::Redis {
                created: enqueued.created,
            });
        }
        Ok(Err(e)) => e,
        Err(_) => "no answer within the acknowledgement budget".to_owned(),
    };
    spool(state, SpoolRecord::enqueue(&job), &reason).await
}

/// Forgets the user `openid` within the budget, else spools the request.
pub async fn forget(state: &AppState, openid: &str) -> Result<(), ApiError> {
    let attempt = async {
        forget_user(state.queue.store(), openid)
            .await
            .map_err(|e| e.to_string())
    };
    let reason = match tokio::time::timeout(state.wechat.ack_budget, attempt).await {
        Ok(Ok(deleted)) => {
            tracing::info!(keys_deleted = deleted, "a user unfollowed: forgotten");
            return Ok(());
        }
        Ok(Err(e)) => e,
        Err(_) => "no answer within the acknowledgement budget".to_owned(),
    };
    spool(state, SpoolRecord::forget(openid), &reason)
        .await
        .map(|_| ())
}

async fn spool(state: &AppState, record: SpoolRecord, reason: &str) -> Result<Handed, ApiError> {
    let spool: Arc<Spool> = Arc::clone(&state.spool);
    let write = tokio::task::spawn_blocking(move || spool.append(&record));
    let outcome = tokio::time::timeout(SPOOL_WRITE_LIMIT, write).await;
    match outcome {
        Ok(Ok(Ok(()))) => {
            if state.spool.starts_outage() {
                tracing::warn!(
                    dir = %state.spool.dir().display(),
                    "Redis did not take a message ({reason}): spooling to disk until it does"
                );
            }
            Ok(Handed::Spooled)
        }
        Ok(Ok(Err(e @ SpoolError::Full { .. }))) => {
            tracing::error!(
                "{e}: refusing pushes with 503 until Redis drains it (FERRY_SPOOL_MAX_BYTES)"
            );
            Err(ApiError::Unavailable)
        }
        Ok(Ok(Err(e))) => {
            tracing::error!(dir = %state.spool.dir().display(), "Redis unavailable and {e}");
            Err(ApiError::Unavailable)
        }
        Ok(Err(panicked)) => {
            tracing::error!("spool write failed: {panicked}");
            Err(ApiError::Unavailable)
        }
        Err(_) => {
            tracing::error!(
                dir = %state.spool.dir().display(),
                "Redis unavailable and the spool write took over {SPOOL_WRITE_LIMIT:?}: answering 503"
            );
            Err(ApiError::Unavailable)
        }
    }
}
