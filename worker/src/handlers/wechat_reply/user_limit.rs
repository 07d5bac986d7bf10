//! The per-user message limit, decided once per message (ARCHITECTURE.md,
//! "Per-user message limit"): the verdict is noted, so a retry neither
//! counts the message twice nor changes its mind.

use std::time::Duration;

use ferry_common::fleet::{RateLimit, Verdict};
use ferry_common::job::Delivery;
use ferry_common::job::kinds::WeChatReply;
use ferry_common::keys::UserKey;

use super::{NOTE_USER_LIMIT, Notes, WeChatReplyHandler};
use crate::handler::{HandlerError, JobNotes};

/// A user over the limit gets at most one notice in this long (or in the
/// limit's own wait, if longer).
const NOTICE_WINDOW: Duration = Duration::from_secs(60);

/// The fleet-wide limit on each user's messages, and what a user over it
/// is told.
pub struct UserLimit {
    pub limit: RateLimit,
    pub notice: String,
}

impl WeChatReplyHandler {
    /// The per-user limit, once per message: `Some(result)` when the user
    /// is over it (and was told, once per window), `None` to go on.
    pub(super) async fn over_limit(
        &self,
        job: &Delivery,
        book: JobNotes<'_>,
        msg: &WeChatReply,
        notes: &Notes,
    ) -> Result<Option<serde_json::Value>, HandlerError> {
        let Some(user_limit) = &self.user_limit else {
            return Ok(None);
        };
        let wait = match notes.get(NOTE_USER_LIMIT).map(String::as_str) {
            Some("allowed") => return Ok(None),
            // Decided by an earlier attempt; its notice (if any) went then.
            Some(_) => return Ok(Some(rate_limited(None))),
            None => match user_limit
                .limit
                .check(&self.queue.keys().user(UserKey::Limit, &msg.openid))
                .await
            {
                Ok(Verdict::Allowed) => None,
                Ok(Verdict::Limited(wait)) => Some(wait),
                Err(e) => {
                    // Losing the limit for a moment beats losing the reply.
                    tracing::warn!(job = %job.id, error = %e, "per-user limit unavailable; the message is answered");
                    return Ok(None);
                }
            },
        };
        let verdict = if wait.is_some() { "limited" } else { "allowed" };
        book.write(&[(NOTE_USER_LIMIT, verdict)]).await?;
        let Some(wait) = wait else {
            return Ok(None);
        };
        self.counters.rate_limited();
        let noticed = self.notify_limited(job, msg, wait, user_limit).await;
        Ok(Some(rate_limited(Some((wait, noticed)))))
    }

    /// Sends the limit notice if this is the first message over the limit
    /// in the window (a `SET NX PX` flag per user); whether it was sent.
    async fn notify_limited(
        &self,
        job: &Delivery,
        msg: &WeChatReply,
        wait: Duration,
        user_limit: &UserLimit,
    ) -> bool {
        let limit = &user_limit.limit;
        let key = self.queue.keys().user(UserKey::LimitNotice, &msg.openid);
        match limit
            .first_notice(&key, &job.id.to_string(), wait.max(NOTICE_WINDOW))
            .await
        {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "could not check the limit notice flag; no notice sent");
                return false;
            }
        }
        match self.send_notice(job, msg, &user_limit.notice).await {
            Ok(()) => {
                self.counters.limit_notice();
                true
            }
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "could not send the limit notice");
                // Let the next message over the limit try again.
                if let Err(e) = limit.clear_notice(&key).await {
                    tracing::debug!(job = %job.id, error = %e, "the limit notice flag stays until it expires");
                }
                false
            }
        }
    }
}

/// The result of a message over the user's limit (not asked of the AI):
/// with the limit's wait and whether this job sent the notice, when this
/// attempt decided (a retry of a decided job knows neither).
fn rate_limited(decided: Option<(Duration, bool)>) -> serde_json::Value {
    let mut result = serde_json::json!({"rate_limited": true});
    if let Some((wait, notice_sent)) = decided {
        result["retry_after_ms"] = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).into();
        result["notice_sent"] = notice_sent.into();
    }
    result
}
