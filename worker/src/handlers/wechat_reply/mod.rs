//! `wechat.reply`: answer a user's message with an AI reply, exactly as the
//! user should see it.
//!
//! 1. 继续 (`kept.rs`): a message equal to `FERRY_CONTINUE_KEYWORD` takes
//!    what an earlier answer left (and, with nothing left, is a question
//!    like any other). In passive mode an answer kept unseen becomes this
//!    push's reply at once.
//! 2. The user's limit (`user_limit.rs`): a user over it gets at most one
//!    notice per window and no AI answer (ARCHITECTURE.md, "Per-user
//!    message limit").
//! 3. The answer (`answer.rs`, `photo.rs` for a picture): reused from the
//!    job's notes if an earlier attempt got one, otherwise asked of the
//!    provider chain within what is left of the message's budget
//!    (`budget.rs`; ARCHITECTURE.md, "One AI budget per message"), noted,
//!    and the turn remembered. When the AI fails for good, the user gets
//!    one apology instead of silence.
//! 4. The delivery: through the customer-service API (`parts.rs`: fitted
//!    into what WeChat still allows for the user's message, the rest kept
//!    for 继续, each accepted part noted before the next goes;
//!    ARCHITECTURE.md, "The duplicate window"), or into the push's reply
//!    slot in passive mode (`passive.rs`). ARCHITECTURE.md, "WeChat's
//!    allowance, 继续 and passive replies".
//!
//! Every side effect is noted on the job the moment it happened
//! ([`JobNotes`]), so a retried or taken-over job never redoes it. The job's
//! result says who answered ([`AnsweredBy`]) and how the answer went out
//! (parts sent and whether some is kept; or `delivered`: `passive`/`kept`).

mod answer;
mod budget;
mod kept;
mod parts;
mod passive;
pub mod photo;
mod rules;
mod user_limit;

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;

use ferry_common::job::Delivery;
use ferry_common::job::kinds::{NOTE_PARTS_SENT, WeChatReply};
use ferry_common::queue::JobQueue;

use crate::handler::{Handler, HandlerError, JobNotes};
use crate::memory::ConversationMemory;
use crate::providers::Router;
use crate::reply::{ReplyCounters, ReplySink, SendError};
use ferry_common::config::ReplyMode;
use ferry_common::fleet::Delivered;
use ferry_common::fleet::cs_quota::AFTER_MESSAGE;
use kept::Continued;

pub use answer::AnsweredBy;
pub use budget::budget_left;
pub use rules::ReplyRules;
pub use user_limit::UserLimit;

/// The answer's text.
const NOTE_ANSWER: &str = "answer";
/// Who answered, as JSON ([`AnsweredBy`]).
const NOTE_ANSWERED_BY: &str = "answered_by";
/// `allowed` or `limited`: the per-user limit's verdict on this message.
const NOTE_USER_LIMIT: &str = "user_limit";
const NOTE_APOLOGY_SENT: &str = "apology_sent";
/// Messages WeChat's allowance granted this answer (taken once).
const NOTE_ALLOWANCE: &str = "allowance";
/// Bytes of the answer kept for 继续 (written once, before any part).
const NOTE_KEPT: &str = "kept";
/// Passive mode: `replied` (in the push's reply slot) or `kept`.
const NOTE_PASSIVE: &str = "passive";

/// What earlier attempts noted, by note name.
type Notes = HashMap<String, String>;

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
    /// (see `budget.rs`).
    pub total_budget: Duration,
    /// Show "typing..." while the provider works.
    pub typing_indicator: bool,
    /// Messages per minute per WeChat user (`None`: no limit) and the
    /// notice a user over it gets.
    pub user_limit: Option<UserLimit>,
    /// Sends, errcodes, token refreshes, apologies, limit notices.
    pub counters: ReplyCounters,
    /// WeChat's allowance, 继续 and passive replies.
    pub rules: ReplyRules,
    /// Downloads photos for the vision model (`None`: no WeChat
    /// credentials, as in `ferry dev`'s console mode).
    pub photos: Option<photo::Photos>,
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

impl WeChatReplyHandler {
    async fn reply(
        &self,
        job: &Delivery,
        book: JobNotes<'_>,
    ) -> Result<serde_json::Value, HandlerError> {
        let msg: WeChatReply = serde_json::from_value(job.payload.clone())
            .map_err(|e| HandlerError::Permanent(format!("bad wechat.reply payload: {e}")))?;
        let notes = book.read().await.map_err(redis_error)?;
        let (answer, answered_by) = match answer::noted(&notes) {
            Some(noted) => noted,
            None => match self.continue_kept(job, book, &msg).await? {
                Continued::Answer(text, by) => (text, by),
                Continued::Busy => return Ok(serde_json::json!({"continued": "busy"})),
                Continued::Ask => {
                    if msg.passive {
                        self.hand_over_unseen(job, &msg).await;
                    }
                    if let Some(limited) = self.over_limit(job, book, &msg, &notes).await? {
                        return Ok(limited);
                    }
                    self.answer(job, book, &msg, &notes).await?
                }
            },
        };
        let mut result = serde_json::to_value(&answered_by).expect("AnsweredBy serializes");
        if msg.passive {
            let delivered = self
                .reply_passively(job, book, &msg, &answer, &notes)
                .await?;
            result["delivered"] = match delivered {
                Delivered::Replied => "passive",
                Delivered::Kept => "kept",
            }
            .into();
        } else {
            let sent = self.send_answer(job, book, &msg, &answer, &notes).await?;
            result["parts"] = sent.parts.into();
            result["kept"] = sent.kept.into();
        }
        Ok(result)
    }
}

impl WeChatReplyHandler {
    /// Sends one short text of Ferry's own (an apology, a notice, the
    /// polite answer to an unreadable photo) to the user of `msg`: through
    /// the customer-service API, counted in WeChat's allowance (none left:
    /// not sent, as WeChat would refuse it with 45047), or as the push's
    /// passive reply.
    pub(super) async fn send_notice(
        &self,
        job: &Delivery,
        msg: &WeChatReply,
        text: &str,
    ) -> Result<(), SendError> {
        if msg.passive {
            return self
                .deliver_passively(job, msg, text)
                .await
                .map(|_| ())
                .map_err(|e| SendError::Retry(e.to_string()));
        }
        let granted = self
            .rules
            .quota
            .take(&msg.openid, action_ms(job), AFTER_MESSAGE, 1)
            .await
            .map_err(|e| SendError::Retry(e.to_string()))?;
        if granted == 0 {
            return Err(SendError::Permanent {
                errcode: 45047,
                reason: "WeChat's allowance for this user message is used up (counted by Ferry): not sent".into(),
            });
        }
        let sent = self.sink.send_text(&msg.openid, text).await;
        if let Err(SendError::Permanent {
            errcode: 48001,
            reason,
        }) = &sent
            && self.rules.mode == ReplyMode::Auto
        {
            self.switch_to_passive(reason).await;
        }
        sent
    }
}

/// When the user acted, as far as WeChat's allowance and what is kept go:
/// when the push reached Redis (Redis's clock, in ms, like the allowance's
/// record of messages sent; a spooled push counts from its replay, which
/// only makes the count stricter). WeChat's `CreateTime` has whole seconds
/// only, too coarse for two messages in one second.
fn action_ms(job: &Delivery) -> i64 {
    job.created_at.timestamp_millis()
}

/// A Redis failure of the reply path's own state: worth a retry.
fn store_error(e: ferry_common::store::RedisError) -> HandlerError {
    HandlerError::retry(format!("Redis: {e}"))
}

fn redis_error(e: ferry_common::queue::QueueError) -> HandlerError {
    HandlerError::retry(format!("Redis: {e}"))
}
