//! `wechat.reply`: answer a user's message with an AI reply.
//!
//! 1. The answer: reused from the job's notes if an earlier attempt got one
//!    (a retry must not ask the model again and send different text),
//!    otherwise asked of the provider chain.
//! 2. The parts: the answer split under WeChat's size limit, sent in order;
//!    after each part WeChat accepts, the count is noted on the job, so a
//!    retried or taken-over job never resends a delivered part.
//! 3. When the AI fails for good, the user gets one short apology instead of
//!    silence.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::json;

use ferry_common::job::Delivery;
use ferry_common::job::kinds::WeChatReply;
use ferry_common::queue::JobQueue;

use crate::handler::{Handler, HandlerError};
use crate::providers::{ChatMessage, ChatRequest, Router};
use crate::reply::split::{MAX_PART_BYTES, split};
use crate::reply::{ReplySink, SendError};

const NOTE_ANSWER: &str = "answer";
const NOTE_PROVIDER: &str = "provider";
const NOTE_PARTS_SENT: &str = "parts_sent";

pub struct WeChatReplyHandler {
    pub queue: JobQueue,
    pub router: Router,
    pub sink: ReplySink,
    pub system_prompt: Option<String>,
    /// Sent when no provider can answer.
    pub apology: String,
    /// Time the provider chain may take for one attempt, retries included.
    pub ai_budget: Duration,
}

impl Handler for WeChatReplyHandler {
    fn handle<'a>(
        &'a self,
        job: &'a Delivery,
    ) -> BoxFuture<'a, Result<serde_json::Value, HandlerError>> {
        Box::pin(self.reply(job))
    }
}

impl WeChatReplyHandler {
    async fn reply(&self, job: &Delivery) -> Result<serde_json::Value, HandlerError> {
        let msg: WeChatReply = serde_json::from_value(job.payload.clone())
            .map_err(|e| HandlerError::Permanent(format!("bad wechat.reply payload: {e}")))?;
        let notes = self.queue.read_notes(&job.id).await.map_err(redis_error)?;
        let (answer, provider) = match (notes.get(NOTE_ANSWER), notes.get(NOTE_PROVIDER)) {
            (Some(answer), Some(provider)) => (answer.clone(), provider.clone()),
            _ => {
                self.sink.typing(&msg.openid).await;
                match self.ask(&msg.content).await {
                    Ok(a) => {
                        self.queue
                            .write_notes(
                                &job.id,
                                &[(NOTE_ANSWER, &a.text), (NOTE_PROVIDER, &a.provider)],
                            )
                            .await
                            .map_err(redis_error)?;
                        (a.text, a.provider)
                    }
                    Err(e) if e.class().is_retryable() && job.attempt < job.max_attempts => {
                        return Err(HandlerError::Retry {
                            error: e.to_string(),
                            after: e.retry_after(),
                        });
                    }
                    Err(e) => {
                        // Out of providers or attempts: apologise once, then
                        // dead-letter the job with the reason.
                        if let Err(send) = self.sink.send_text(&msg.openid, &self.apology).await {
                            tracing::warn!(job = %job.id, error = %send, "could not send the apology");
                        }
                        return Err(HandlerError::Permanent(format!(
                            "no provider could answer: {e}"
                        )));
                    }
                }
            }
        };
        let parts = split(&answer, MAX_PART_BYTES);
        let already: usize = notes
            .get(NOTE_PARTS_SENT)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        for (i, part) in parts.iter().enumerate().skip(already) {
            match self.sink.send_text(&msg.openid, part).await {
                Ok(()) => {
                    let sent = (i + 1).to_string();
                    self.queue
                        .write_notes(&job.id, &[(NOTE_PARTS_SENT, &sent)])
                        .await
                        .map_err(redis_error)?;
                }
                Err(SendError::Retry(e)) => return Err(HandlerError::retry(e)),
                Err(e @ SendError::Permanent { .. }) => {
                    return Err(HandlerError::Permanent(e.to_string()));
                }
            }
        }
        Ok(json!({"provider": provider, "parts": parts.len()}))
    }

    async fn ask(
        &self,
        content: &str,
    ) -> Result<crate::providers::Answer, crate::providers::RouterError> {
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = &self.system_prompt {
            messages.push(ChatMessage::system(system.clone()));
        }
        messages.push(ChatMessage::user(content.to_owned()));
        self.router
            .chat(&ChatRequest::new(messages), self.ai_budget)
            .await
    }
}

fn redis_error(e: ferry_common::queue::QueueError) -> HandlerError {
    HandlerError::retry(format!("Redis: {e}"))
}
