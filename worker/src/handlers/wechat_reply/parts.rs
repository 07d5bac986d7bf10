//! Sending the answer's parts, in order, each noted the moment WeChat
//! accepted it (ARCHITECTURE.md, "The duplicate window").
//!
//! WeChat busy (-1) is a job retry with the queue's backoff; a refusal
//! (45015, 45047, 45009, 48001, ...) dead-letters the job with WeChat's
//! reason and is never retried.

use ferry_common::job::kinds::WeChatReply;

use super::{NOTE_PARTS_SENT, Notes, WeChatReplyHandler};
use crate::handler::{HandlerError, JobNotes};
use crate::reply::SendError;

impl WeChatReplyHandler {
    /// Sends the `parts` an earlier attempt did not (as noted).
    pub(super) async fn send_parts(
        &self,
        book: JobNotes<'_>,
        msg: &WeChatReply,
        parts: &[String],
        notes: &Notes,
    ) -> Result<(), HandlerError> {
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
        Ok(())
    }
}
