//! The answer: asked of the provider chain once per message (a retry must
//! not ask the model again and send different text), noted, and the turn
//! remembered right after, so exactly once. When the AI fails for good, the
//! user gets one short apology instead of silence (`FERRY_APOLOGY_TEXT`),
//! noted so a take-over never sends a second one. A photo (`media_id`) is
//! downloaded and shown to a vision model with `FERRY_IMAGE_PROMPT`
//! (`photo.rs`).

use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use ferry_common::job::Delivery;
use ferry_common::job::kinds::WeChatReply;

use super::budget::{AfterFailure, after_failure, allowance, budget_left};
use super::photo::{Photo, remembered_question};
use super::{NOTE_ANSWER, NOTE_ANSWERED_BY, NOTE_APOLOGY_SENT, Notes, WeChatReplyHandler};
use crate::handler::{HandlerError, JobNotes};
use crate::providers::{Answer, Usage};

/// The typing indicator may hold back the first part no longer than this.
const TYPING_WAIT: Duration = Duration::from_secs(2);

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

/// The answer an earlier attempt noted, and who gave it.
pub(super) fn noted(notes: &Notes) -> Option<(String, AnsweredBy)> {
    let by = notes
        .get(NOTE_ANSWERED_BY)
        .and_then(|by| serde_json::from_str::<AnsweredBy>(by).ok());
    notes.get(NOTE_ANSWER).cloned().zip(by)
}

impl WeChatReplyHandler {
    /// Asks the chain within what is left of the budget, while WeChat shows
    /// the user "typing..." (best effort, `FERRY_TYPING_INDICATOR`); notes
    /// the answer and remembers the turn. On failure decides between a job
    /// retry and the apology.
    pub(super) async fn answer(
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
        // A photo: its picture, and the question asked about it instead of
        // the (empty) text.
        let (question, image) = match &msg.media_id {
            None => (msg.content.as_str(), None),
            Some(media_id) => {
                let Some(photos) = &self.photos else {
                    let reason =
                        "a photo, and this worker cannot download photos (no WeChat credentials)";
                    return Err(self.apologise(job, book, msg, notes, reason.into()).await);
                };
                match self.photo(photos, job, book, media_id).await? {
                    Photo::Picture(image) => (photos.prompt.as_str(), Some(image)),
                    Photo::Unreadable(text, by) => return Ok((text, by)),
                    Photo::Retry(e) => {
                        let e = format!("the photo was not downloaded: {e}");
                        let left = budget_left(self.total_budget, job.created_at, Utc::now());
                        if job.attempt < job.max_attempts && !left.is_zero() {
                            return Err(HandlerError::retry(e));
                        }
                        return Err(self.apologise(job, book, msg, notes, e).await);
                    }
                }
            }
        };
        let mut prompt = self
            .memory
            .prompt(&msg.openid, self.system_prompt.as_deref(), question)
            .await
            .map_err(|e| HandlerError::retry(e.to_string()))?;
        prompt.image = image;
        // What is left after the photo's download, if any.
        let left = budget_left(self.total_budget, job.created_at, Utc::now());
        let allowance = allowance(self.router.policy().max_attempts_per_provider, job, left);
        // The indicator goes while the provider works; both are awaited, so
        // it never reaches WeChat after the answer.
        let typing = async {
            if self.typing_indicator && !msg.passive {
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
                // failing a reply that is ready. Text only: the picture is
                // never stored.
                let asked = match prompt.image {
                    Some(_) => remembered_question(question),
                    None => msg.content.clone(),
                };
                if let Err(e) = self.memory.remember(&msg.openid, &asked, &a.text).await {
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
        match self.send_notice(job, msg, &self.apology).await {
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

#[cfg(test)]
mod tests {
    use super::*;

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
            finish_reason: None,
            response_id: None,
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
