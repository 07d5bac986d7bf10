//! `wechat.reply`: answer a user's message with an AI reply, exactly as the
//! user should see it.
//!
//! 0. The user's limit: a user over `FERRY_USER_MESSAGES_PER_MINUTE` is not
//!    answered by the AI; the first message over the limit in a window gets
//!    one polite notice, the others nothing, and the job succeeds with a
//!    result saying it was rate limited. The verdict is noted, so a retry
//!    neither counts the message twice nor changes its mind.
//! 1. The answer: reused from the job's notes if an earlier attempt got one
//!    (a retry must not ask the model again and send different text),
//!    otherwise asked of the provider chain, with the user's recent
//!    conversation, within what is left of the message's time budget, while
//!    WeChat shows the user "typing..." (best effort, `FERRY_TYPING_INDICATOR`).
//!    The turn is remembered right after the answer is noted, so exactly once.
//! 2. The parts: the answer split under WeChat's size limit, sent in order;
//!    after each part WeChat accepts, the count is noted on the job before
//!    the next part goes, so a retried or taken-over job never resends a
//!    delivered part (the one remaining window is in ARCHITECTURE.md, "The
//!    duplicate window"). WeChat busy (-1) is a job retry with the queue's
//!    backoff; a refusal (45015, 45047, 45009, 48001, ...) dead-letters the
//!    job with WeChat's reason and is never retried.
//! 3. When the AI fails for good, the user gets one short apology instead of
//!    silence (`FERRY_APOLOGY_TEXT`), noted so a take-over never sends a
//!    second one.
//!
//! The job's result says who answered: provider, model, tokens and the
//! answering call's latency, and how many parts were sent.
//!
//! # One budget per message
//!
//! The user waits for one answer, however Ferry gets it, so the time from the
//! message's arrival (the job's `created_at`) to its answer is bounded by one
//! budget (`FERRY_AI_TOTAL_BUDGET`), and every retry layer spends from it
//! instead of starting its own:
//!
//! - Each attempt gives the router only what is left of the budget: the
//!   router's waits, retries and failovers never outlast it, and an attempt
//!   that starts with nothing left asks no provider.
//! - Only a job's first attempt retries within the call (the configured
//!   attempts per provider). A later attempt is itself the retry, so it asks
//!   each provider of the chain once: the calls a message can cost add up,
//!   chain × (attempts per provider + job retries), instead of multiplying,
//!   chain × attempts per provider × job attempts.
//! - A retryable failure (every provider transient or rate limited) becomes
//!   a job retry only while the job has attempts left, some budget is left,
//!   and the provider's hint (if any) is shorter than what is left. Otherwise
//!   the user gets the apology at once and the job fails for good: waiting
//!   out a hint longer than the budget would only delay the same apology.
//!
//! Job times are Redis server time and the budget is measured with the
//! worker's clock, so hosts are assumed to keep NTP time (a skew moves the
//! budget by as much).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use ferry_common::fleet::{RateLimit, Verdict};
use ferry_common::job::Delivery;
use ferry_common::job::kinds::WeChatReply;
use ferry_common::keys::UserKey;
use ferry_common::queue::JobQueue;

use crate::handler::{Handler, HandlerError, JobNotes};
use crate::memory::ConversationMemory;
use crate::providers::{Allowance, Answer, Router, RouterError, Usage};
use crate::reply::split::{MAX_PART_BYTES, split};
use crate::reply::{ReplyCounters, ReplySink, SendError};

const NOTE_ANSWER: &str = "answer";
/// Who answered, as JSON ([`AnsweredBy`]).
const NOTE_ANSWERED_BY: &str = "answered_by";
const NOTE_PARTS_SENT: &str = "parts_sent";
/// `allowed` or `limited`: the per-user limit's verdict on this message.
const NOTE_USER_LIMIT: &str = "user_limit";
const NOTE_APOLOGY_SENT: &str = "apology_sent";

/// A user over the limit gets at most one notice in this long (or in the
/// limit's own wait, if longer).
const NOTICE_WINDOW: Duration = Duration::from_secs(60);
/// The typing indicator may hold back the first part no longer than this.
const TYPING_WAIT: Duration = Duration::from_secs(2);

pub struct WeChatReplyHandler {
    pub queue: JobQueue,
    pub router: Router,
    pub sink: ReplySink,
    /// The users' recent turns, sent with each new message.
    pub memory: ConversationMemory,
    pub system_prompt: Option<String>,
    /// Sent when no provider can answer.
    pub apology: String,
    /// Time from a message's arrival to its answer, every attempt included
    /// (see the module's "One budget per message").
    pub total_budget: Duration,
    /// Show "typing..." while the provider works.
    pub typing_indicator: bool,
    /// Messages per minute per WeChat user (`None`: no limit) and the
    /// notice a user over it gets.
    pub user_limit: Option<UserLimit>,
    /// Sends, errcodes, token refreshes, apologies, limit notices.
    pub counters: ReplyCounters,
}

/// The fleet-wide limit on each user's messages, and what a user over it
/// is told.
pub struct UserLimit {
    pub limit: RateLimit,
    pub notice: String,
}

/// Who answered and what it cost: noted with the answer, and the job's
/// result (with the number of parts sent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnsweredBy {
    pub provider: String,
    pub model: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    /// The answering call, from sending the request to the parsed answer.
    pub latency_ms: u64,
}

impl From<&Answer> for AnsweredBy {
    fn from(a: &Answer) -> Self {
        let Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens,
        } = a.usage;
        Self {
            provider: a.provider.clone(),
            model: a.model.clone(),
            prompt_tokens,
            completion_tokens,
            total_tokens,
            latency_ms: u64::try_from(a.latency.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl Handler for WeChatReplyHandler {
    fn handle<'a>(
        &'a self,
        job: &'a Delivery,
        notes: JobNotes<'a>,
    ) -> BoxFuture<'a, Result<serde_json::Value, HandlerError>> {
        Box::pin(self.reply(job, notes))
    }
}

type Notes = HashMap<String, String>;

impl WeChatReplyHandler {
    async fn reply(
        &self,
        job: &Delivery,
        book: JobNotes<'_>,
    ) -> Result<serde_json::Value, HandlerError> {
        let msg: WeChatReply = serde_json::from_value(job.payload.clone())
            .map_err(|e| HandlerError::Permanent(format!("bad wechat.reply payload: {e}")))?;
        let notes = book.read().await.map_err(redis_error)?;
        let noted = notes.get(NOTE_ANSWER).zip(
            notes
                .get(NOTE_ANSWERED_BY)
                .and_then(|by| serde_json::from_str::<AnsweredBy>(by).ok()),
        );
        let (answer, answered_by) = match noted {
            Some((answer, by)) => (answer.clone(), by),
            None => {
                if let Some(limited) = self.over_limit(job, book, &msg, &notes).await? {
                    return Ok(limited);
                }
                self.answer(job, book, &msg, &notes).await?
            }
        };
        let parts = split(&answer, MAX_PART_BYTES);
        let already: usize = notes
            .get(NOTE_PARTS_SENT)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        for (i, part) in parts.iter().enumerate().skip(already) {
            let which = format!("part {} of {}", i + 1, parts.len());
            match self.sink.send_text(&msg.openid, part).await {
                // Noted the moment WeChat's answer is read, before anything
                // else: the one window in which a crash resends this part.
                Ok(()) => {
                    book.write(&[(NOTE_PARTS_SENT, &(i + 1).to_string())])
                        .await?
                }
                Err(SendError::Retry(e)) => {
                    return Err(HandlerError::retry(format!("{which} not sent: {e}")));
                }
                Err(e @ SendError::Permanent { .. }) => {
                    return Err(HandlerError::Permanent(format!("{e} ({which} not sent)")));
                }
            }
        }
        let mut result = serde_json::to_value(&answered_by).expect("AnsweredBy serializes");
        result["parts"] = parts.len().into();
        Ok(result)
    }

    /// The per-user limit, once per message: `Some(result)` when the user
    /// is over it (and was told, once per window), `None` to go on.
    async fn over_limit(
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
                .check_key(&self.queue.keys().user(UserKey::Limit, &msg.openid))
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
        match self.sink.send_text(&msg.openid, &user_limit.notice).await {
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

    /// Asks the chain within what is left of the budget; notes the answer
    /// and remembers the turn. On failure decides between a job retry and
    /// the apology.
    async fn answer(
        &self,
        job: &Delivery,
        book: JobNotes<'_>,
        msg: &WeChatReply,
        notes: &Notes,
    ) -> Result<(String, AnsweredBy), HandlerError> {
        let left = budget_left(self.total_budget, job.created_at, Utc::now());
        if left.is_zero() {
            let spent = format!(
                "the AI time budget ({} s from the message's arrival) was spent before attempt {}",
                self.total_budget.as_secs_f64(),
                job.attempt
            );
            return Err(self.apologise(job, book, msg, notes, spent).await);
        }
        let prompt = self
            .memory
            .prompt(&msg.openid, self.system_prompt.as_deref(), &msg.content)
            .await
            .map_err(|e| HandlerError::retry(e.to_string()))?;
        let allowance = allowance(self.router.policy().max_attempts_per_provider, job, left);
        // The indicator goes while the provider works; both are awaited, so
        // it never reaches WeChat after the answer.
        let typing = async {
            if self.typing_indicator {
                let _ = tokio::time::timeout(TYPING_WAIT, self.sink.typing(&msg.openid)).await;
            }
        };
        let ((), answered) = tokio::join!(typing, self.router.chat_within(&prompt, allowance));
        match answered {
            Ok(a) => {
                let by = AnsweredBy::from(&a);
                let by_json = serde_json::to_string(&by).expect("AnsweredBy serializes");
                book.write(&[(NOTE_ANSWER, &a.text), (NOTE_ANSWERED_BY, &by_json)])
                    .await?;
                // Noted: a retry reuses this answer and never gets here, so
                // the turn is remembered once. Losing it is better than
                // failing a reply that is ready.
                if let Err(e) = self
                    .memory
                    .remember(&msg.openid, &msg.content, &a.text)
                    .await
                {
                    tracing::warn!(job = %job.id, error = %e, "the turn was not remembered");
                }
                Ok((a.text, by))
            }
            Err(e) => {
                let left = budget_left(self.total_budget, job.created_at, Utc::now());
                match after_failure(&e, job, left) {
                    AfterFailure::Retry { after } => Err(HandlerError::Retry {
                        error: e.to_string(),
                        after,
                    }),
                    AfterFailure::GiveUp => {
                        let reason = format!("no provider could answer: {e}");
                        Err(self.apologise(job, book, msg, notes, reason).await)
                    }
                }
            }
        }
    }

    /// Sends the apology once (best effort; noted, so a take-over of this
    /// job does not send it again) and fails the job for good.
    async fn apologise(
        &self,
        job: &Delivery,
        book: JobNotes<'_>,
        msg: &WeChatReply,
        notes: &Notes,
        reason: String,
    ) -> HandlerError {
        if notes.contains_key(NOTE_APOLOGY_SENT) {
            return HandlerError::Permanent(reason);
        }
        match self.sink.send_text(&msg.openid, &self.apology).await {
            Ok(()) => {
                self.counters.apology();
                if let Err(lost) = book.write(&[(NOTE_APOLOGY_SENT, "1")]).await {
                    return lost.into();
                }
            }
            Err(send) => {
                tracing::warn!(job = %job.id, error = %send, "could not send the apology");
            }
        }
        HandlerError::Permanent(reason)
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

/// What is left of `total` for a job created at `created_at`, at `now`.
pub fn budget_left(total: Duration, created_at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    let elapsed = (now - created_at).to_std().unwrap_or_default();
    total.saturating_sub(elapsed)
}

/// What this attempt may spend: what is left, and retries within the call
/// on the first attempt only.
fn allowance(policy_attempts: u32, job: &Delivery, left: Duration) -> Allowance {
    Allowance {
        time: left,
        attempts_per_provider: if job.attempt <= 1 { policy_attempts } else { 1 },
    }
}

#[derive(Debug, PartialEq, Eq)]
enum AfterFailure {
    Retry { after: Option<Duration> },
    GiveUp,
}

/// After the chain failed with `error`, with `left` of the budget.
fn after_failure(error: &RouterError, job: &Delivery, left: Duration) -> AfterFailure {
    let hint = error.retry_after();
    let worth_a_retry = error.class().is_retryable()
        && job.attempt < job.max_attempts
        && !left.is_zero()
        && hint.is_none_or(|h| h < left);
    if worth_a_retry {
        AfterFailure::Retry { after: hint }
    } else {
        AfterFailure::GiveUp
    }
}

fn redis_error(e: ferry_common::queue::QueueError) -> HandlerError {
    HandlerError::retry(format!("Redis: {e}"))
}

#[cfg(test)]
mod tests {
    use ferry_common::job::JobId;

    use super::*;
    use crate::providers::{FailureClass, ProviderError};

    const MINUTE: Duration = Duration::from_secs(60);

    fn job(attempt: u32, max_attempts: u32) -> Delivery {
        Delivery {
            id: JobId::new("wechat"),
            entry_id: "1-0".into(),
            kind: "wechat.reply".into(),
            payload: serde_json::Value::Null,
            attempt,
            max_attempts,
            created_at: Utc::now(),
        }
    }

    fn failed(class: FailureClass, hint: Option<Duration>) -> RouterError {
        let mut last = ProviderError::new("p", class, "m");
        last.retry_after = hint;
        RouterError {
            tried: vec!["p".into()],
            last: Some(last),
        }
    }

    #[test]
    fn the_budget_left_is_the_total_less_the_time_since_the_message_arrived() {
        let created = Utc::now();
        let later = |secs| created + chrono::Duration::seconds(secs);
        assert_eq!(
            budget_left(MINUTE, created, later(20)),
            Duration::from_secs(40)
        );
        assert_eq!(budget_left(MINUTE, created, later(60)), Duration::ZERO);
        assert_eq!(budget_left(MINUTE, created, later(600)), Duration::ZERO);
        // A worker clock behind Redis's: nothing spent yet.
        assert_eq!(budget_left(MINUTE, created, later(-5)), MINUTE);
    }

    #[test]
    fn only_the_first_attempt_retries_within_the_call() {
        let first = allowance(3, &job(1, 4), MINUTE);
        let second = allowance(3, &job(2, 4), Duration::from_secs(30));
        assert_eq!((first.attempts_per_provider, first.time), (3, MINUTE));
        assert_eq!(
            (second.attempts_per_provider, second.time),
            (1, Duration::from_secs(30))
        );
    }

    #[test]
    fn a_transient_failure_with_budget_and_attempts_left_is_retried_after_the_hint() {
        let hint = Some(Duration::from_secs(5));
        assert_eq!(
            after_failure(&failed(FailureClass::Transient, None), &job(1, 4), MINUTE),
            AfterFailure::Retry { after: None }
        );
        assert_eq!(
            after_failure(&failed(FailureClass::RateLimited, hint), &job(3, 4), MINUTE),
            AfterFailure::Retry { after: hint }
        );
    }

    #[test]
    fn the_job_gives_up_when_budget_attempts_or_hope_are_gone() {
        let long_hint = Some(Duration::from_secs(61));
        let cases = [
            (failed(FailureClass::Transient, None), job(4, 4), MINUTE),
            (
                failed(FailureClass::Transient, None),
                job(1, 4),
                Duration::ZERO,
            ),
            (
                failed(FailureClass::RateLimited, long_hint),
                job(1, 4),
                MINUTE,
            ),
            (failed(FailureClass::Quota, None), job(1, 4), MINUTE),
            (failed(FailureClass::Auth, None), job(1, 4), MINUTE),
            (failed(FailureClass::BadRequest, None), job(1, 4), MINUTE),
            (
                failed(FailureClass::ContentFiltered, None),
                job(1, 4),
                MINUTE,
            ),
        ];
        for (error, job, left) in cases {
            assert_eq!(
                after_failure(&error, &job, left),
                AfterFailure::GiveUp,
                "{error} at attempt {} with {left:?} left",
                job.attempt
            );
        }
    }

    #[test]
    fn the_result_names_provider_model_tokens_and_latency() {
        let answer = Answer {
            provider: "deepseek".into(),
            model: "deepseek-chat".into(),
            text: "hi".into(),
            usage: Usage {
                prompt_tokens: 12,
                completion_tokens: 3,
                total_tokens: 15,
            },
            latency: Duration::from_millis(1234),
        };
        let json = serde_json::to_value(AnsweredBy::from(&answer)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "provider": "deepseek", "model": "deepseek-chat",
                "prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                "latency_ms": 1234,
            })
        );
    }
}
