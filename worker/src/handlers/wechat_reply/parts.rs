//! Sending an answer through the customer-service API within WeChat's
//! allowance (`ferry_common::fleet::cs_quota`): the messages this user
//! message may still have are taken once (noted), the answer is fitted
//! into them (the last one ending with the 继续 notice when more is left),
//! what is left is kept for 继续 before anything is sent (so the notice is
//! never a lie), and the parts go in order, each noted the moment WeChat
//! accepted it (ARCHITECTURE.md, "The duplicate window").
//!
//! WeChat busy (-1) is a job retry with the queue's backoff; a refusal
//! (45015, 45047, 45009, 48001, ...) dead-letters the job with WeChat's
//! reason and is never retried, except 48001 under `WECHAT_REPLY_MODE=auto`:
//! the fleet switches to passive replies and the answer waits, unseen, for
//! the user's next message.

use ferry_common::config::ReplyMode;
use ferry_common::fleet::cs_quota::AFTER_MESSAGE;
use ferry_common::job::Delivery;
use ferry_common::job::kinds::{WeChatReply, note_part_sent_ms};

use super::{
    NOTE_ALLOWANCE, NOTE_KEPT, NOTE_PARTS_SENT, Notes, WeChatReplyHandler, action_ms, store_error,
};
use crate::handler::{HandlerError, JobNotes};
use crate::reply::SendError;
use crate::reply::split::{MAX_PART_BYTES, fit, split};

/// The errcode of an account without the customer-service API.
const UNAUTHORIZED: i64 = 48001;

/// What went out of an answer.
pub(super) struct Sent {
    pub parts: usize,
    /// Something is kept for 继续 (or, after a switch to passive replies,
    /// for the user's next message).
    pub kept: bool,
}

fn noted_number(notes: &Notes, name: &str) -> Option<usize> {
    notes.get(name).and_then(|n| n.parse().ok())
}

impl WeChatReplyHandler {
    /// Sends `answer` within the user's allowance and keeps what does not
    /// fit.
    pub(super) async fn send_answer(
        &self,
        job: &Delivery,
        book: JobNotes<'_>,
        msg: &WeChatReply,
        answer: &str,
        notes: &Notes,
    ) -> Result<Sent, HandlerError> {
        let rules = &self.rules;
        let allowed = match noted_number(notes, NOTE_ALLOWANCE) {
            Some(allowed) => allowed,
            None => {
                let wanted = u32::try_from(split(answer, MAX_PART_BYTES).len()).unwrap_or(u32::MAX);
                let granted = rules
                    .quota
                    .take(&msg.openid, action_ms(job), AFTER_MESSAGE, wanted)
                    .await
                    .map_err(store_error)?;
                book.write(&[(NOTE_ALLOWANCE, &granted.to_string())])
                    .await?;
                granted as usize
            }
        };
        let fitted = fit(answer, allowed, MAX_PART_BYTES, &rules.continue_text);
        if !notes.contains_key(NOTE_KEPT) {
            // Also clears what an older message left: a new question
            // replaces it.
            let kept = rules
                .kept
                .keep(&msg.openid, action_ms(job), &fitted.kept, false)
                .await
                .map_err(store_error)?;
            if !kept {
                tracing::info!(job = %job.id, "a newer message's answer is kept; this one's rest is not");
            }
            book.write(&[(NOTE_KEPT, &fitted.kept.len().to_string())])
                .await?;
        }
        if fitted.parts.is_empty() && !fitted.kept.is_empty() {
            tracing::warn!(
                job = %job.id,
                "WeChat's allowance for this user's message is used up: the answer is kept for 继续"
            );
        }
        match self.send_parts(book, msg, &fitted.parts, notes).await {
            Ok(()) => Ok(Sent {
                parts: fitted.parts.len(),
                kept: !fitted.kept.is_empty(),
            }),
            Err((sent, SendError::Permanent { errcode, reason }))
                if errcode == UNAUTHORIZED && rules.mode == ReplyMode::Auto =>
            {
                self.switch_to_passive(&reason).await;
                let unsent = unsent(&fitted.parts[sent..], &fitted.kept, &rules.continue_text);
                rules
                    .kept
                    .keep(&msg.openid, action_ms(job), &unsent, true)
                    .await
                    .map_err(store_error)?;
                Ok(Sent {
                    parts: sent,
                    kept: true,
                })
            }
            Err((sent, SendError::Retry(e))) => Err(HandlerError::retry(format!(
                "part {} of {} not sent: {e}",
                sent + 1,
                fitted.parts.len()
            ))),
            Err((sent, e @ SendError::Permanent { .. })) => Err(HandlerError::Permanent(format!(
                "{e} (part {} of {} not sent)",
                sent + 1,
                fitted.parts.len()
            ))),
        }
    }

    /// Sends the `parts` an earlier attempt did not (as noted); on failure,
    /// how many were sent and why the next was not.
    async fn send_parts(
        &self,
        book: JobNotes<'_>,
        msg: &WeChatReply,
        parts: &[String],
        notes: &Notes,
    ) -> Result<(), (usize, SendError)> {
        let already = noted_number(notes, NOTE_PARTS_SENT).unwrap_or(0);
        for (i, part) in parts.iter().enumerate().skip(already) {
            self.sink
                .send_text(&msg.openid, part)
                .await
                .map_err(|e| (i, e))?;
            // Noted the moment WeChat's answer is read, before anything
            // else: the one window in which a crash resends this part. Its
            // time goes in the same write, for the job's timeline.
            let sent_at = chrono::Utc::now().timestamp_millis().to_string();
            book.write(&[
                (NOTE_PARTS_SENT, &(i + 1).to_string()),
                (&note_part_sent_ms(i + 1), &sent_at),
            ])
            .await
            .map_err(|e| (i + 1, SendError::Retry(e.to_string())))?;
        }
        Ok(())
    }

    /// `WECHAT_REPLY_MODE=auto` and WeChat answered 48001: the fleet
    /// answers passively from now on (logged once, by the process that
    /// switched it).
    pub(super) async fn switch_to_passive(&self, reason: &str) {
        match self.rules.passive.switch_fleet_to_passive(reason).await {
            Ok(true) => tracing::warn!(
                "WeChat answered 48001 (no customer-service API for this account): the fleet now answers passively, in the response to each push (WECHAT_REPLY_MODE=auto)"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not record the switch to passive replies"),
        }
    }
}

/// The text of `parts` not sent (without the 继续 notice) and what was
/// kept after them.
fn unsent(parts: &[String], kept: &str, notice: &str) -> String {
    let mut text: String = parts
        .iter()
        .map(|p| p.strip_suffix(notice).unwrap_or(p))
        .collect();
    text.push_str(kept);
    text
}
