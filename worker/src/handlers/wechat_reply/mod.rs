//! `wechat.reply`: answer a user's message with an AI reply, exactly as the
//! user should see it.
//!
//! 1. The user's limit (`user_limit.rs`): a user over it gets at most one
//!    notice per window and no AI answer (ARCHITECTURE.md, "Per-user
//!    message limit").
//! 2. The answer (`answer.rs`): reused from the job's notes if an earlier
//!    attempt got one, otherwise asked of the provider chain within what is
//!    left of the message's budget (`budget.rs`; ARCHITECTURE.md, "One AI
//!    budget per message"), noted, and the turn remembered. When the AI
//!    fails for good, the user gets one apology instead of silence.
//! 3. The parts (`parts.rs`): the answer split under WeChat's size limit and
//!    sent in order, each accepted part noted before the next goes
//!    (ARCHITECTURE.md, "The duplicate window").
//!
//! Every side effect is noted on the job the moment it happened
//! ([`JobNotes`]), so a retried or taken-over job never redoes it. The job's
//! result says who answered ([`AnsweredBy`]) and how many parts were sent.

mod answer;
mod budget;
mod parts;
mod user_limit;

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;

use ferry_common::job::Delivery;
use ferry_common::job::kinds::WeChatReply;
use ferry_common::queue::JobQueue;

use crate::handler::{Handler, HandlerError, JobNotes};
use crate::memory::ConversationMemory;
use crate::providers::Router;
use crate::reply::split::{MAX_PART_BYTES, split};
use crate::reply::{ReplyCounters, ReplySink};

pub use answer::AnsweredBy;
pub use budget::budget_left;
pub use user_limit::UserLimit;

/// The answer's text.
const NOTE_ANSWER: &str = "answer";
/// Who answered, as JSON ([`AnsweredBy`]).
const NOTE_ANSWERED_BY: &str = "answered_by";
const NOTE_PARTS_SENT: &str = "parts_sent";
/// `allowed` or `limited`: the per-user limit's verdict on this message.
const NOTE_USER_LIMIT: &str = "user_limit";
const NOTE_APOLOGY_SENT: &str = "apology_sent";

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
            None => {
                if let Some(limited) = self.over_limit(job, book, &msg, &notes).await? {
                    return Ok(limited);
                }
                self.answer(job, book, &msg, &notes).await?
            }
        };
        let parts = split(&answer, MAX_PART_BYTES);
        self.send_parts(book, &msg, &parts, &notes).await?;
        let mut result = serde_json::to_value(&answered_by).expect("AnsweredBy serializes");
        result["parts"] = parts.len().into();
        Ok(result)
    }
}

fn redis_error(e: ferry_common::queue::QueueError) -> HandlerError {
    HandlerError::retry(format!("Redis: {e}"))
}
