//! 继续 and answers that waited: what was kept for the user instead of
//! sent (`ferry_common::fleet::kept_answers`).
//!
//! A 继续 claims what is kept and notes it as the job's answer, so the
//! job then delivers it like any answer (within the allowance of the
//! 继续 itself, keeping what still does not fit); the AI is not asked and
//! the conversation memory does not change. With nothing kept, 继续 is an
//! ordinary question.
//!
//! In passive mode, an answer that came too late for WeChat's tries is
//! kept unseen: the user's next push, whatever it says, gets it as its
//! reply at once, and its own answer is kept in turn.

use ferry_common::fleet::Claim;
use ferry_common::job::Delivery;
use ferry_common::job::kinds::WeChatReply;

use super::answer::AnsweredBy;
use super::passive::{fit_one_reply, still_tried};
use super::{NOTE_ANSWER, NOTE_ANSWERED_BY, WeChatReplyHandler, store_error};
use crate::handler::{HandlerError, JobNotes};

/// Who answered a 继续: no provider, what was kept.
fn kept_answer() -> AnsweredBy {
    AnsweredBy {
        provider: "kept".into(),
        model: String::new(),
        prompt_tokens: 0,
        completion_tokens: 0,
        total_tokens: 0,
        latency_ms: 0,
    }
}

/// What a 继续 found.
pub(super) enum Continued {
    /// What was kept, now this job's answer (noted).
    Answer(String, AnsweredBy),
    /// Another 继续 of the user is sending it: this one sends nothing.
    Busy,
    /// Nothing kept, or not a 继续: ask the AI.
    Ask,
}

impl WeChatReplyHandler {
    pub(super) async fn continue_kept(
        &self,
        job: &Delivery,
        book: JobNotes<'_>,
        msg: &WeChatReply,
    ) -> Result<Continued, HandlerError> {
        if !self.rules.is_continue(msg) {
            return Ok(Continued::Ask);
        }
        let claim = self
            .rules
            .kept
            .claim(&msg.openid, &job.id.to_string())
            .await
            .map_err(store_error)?;
        match claim {
            Claim::Nothing => Ok(Continued::Ask),
            Claim::Busy => Ok(Continued::Busy),
            Claim::Kept(kept) => {
                let by = kept_answer();
                let by_json = serde_json::to_string(&by).expect("AnsweredBy serializes");
                book.write(&[(NOTE_ANSWER, &kept.text), (NOTE_ANSWERED_BY, &by_json)])
                    .await?;
                Ok(Continued::Answer(kept.text, by))
            }
        }
    }

    /// Passive mode: an answer kept unseen becomes the reply to this push
    /// at once (best effort: on failure it simply waits for the next one).
    pub(super) async fn hand_over_unseen(&self, job: &Delivery, msg: &WeChatReply) {
        let kept = match self.rules.kept.peek(&msg.openid).await {
            Ok(Some(kept)) if kept.unseen => kept,
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(job = %job.id, error = %e, "no kept answer handed over");
                return;
            }
        };
        let (reply, rest) = fit_one_reply(&kept.text, &self.rules.continue_text);
        match self
            .rules
            .passive
            .hand_over(
                &msg.openid,
                &msg.push_key(),
                kept.at_ms,
                &reply,
                &rest,
                still_tried(msg),
            )
            .await
        {
            Ok(true) => {
                tracing::info!(job = %job.id, "the answer kept for the user is this push's reply")
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(job = %job.id, error = %e, "no kept answer handed over"),
        }
    }
}
