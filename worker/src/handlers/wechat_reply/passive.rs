//! Passive replies (`WECHAT_REPLY_MODE=passive`, or `auto` after a 48001):
//! the api holds WeChat's push while this job answers, and the answer goes
//! into the push's reply slot instead of the customer-service API
//! (`ferry_common::fleet::passive_replies`). One passive reply holds what
//! one message holds: a longer answer is cut there, ending with the 继续
//! notice, and the rest kept. An answer that comes after WeChat's last try
//! (the api answered it with the pending notice) is kept, unseen, for the
//! user's next message.

use std::time::Duration;

use chrono::Utc;

use ferry_common::fleet::Delivered;
use ferry_common::fleet::passive_replies::TRIES_LAST;
use ferry_common::job::Delivery;
use ferry_common::job::kinds::WeChatReply;

use super::{NOTE_PASSIVE, Notes, WeChatReplyHandler, action_ms, store_error};
use crate::handler::{HandlerError, JobNotes};
use crate::reply::split::{MAX_PART_BYTES, fit};

/// What one passive reply says of `text`, and what is left for 继续.
pub(super) fn fit_one_reply(text: &str, notice: &str) -> (String, String) {
    let mut fitted = fit(text, 1, MAX_PART_BYTES, notice);
    (fitted.parts.pop().unwrap_or_default(), fitted.kept)
}

/// Whether WeChat may still be trying the push of `msg`.
pub(super) fn still_tried(msg: &WeChatReply) -> bool {
    let age = Utc::now().timestamp() - msg.create_time;
    u64::try_from(age).map_or(true, |age| Duration::from_secs(age) < TRIES_LAST)
}

impl WeChatReplyHandler {
    /// Hands `text` to the api holding the push of `msg` (once: noted).
    pub(super) async fn reply_passively(
        &self,
        job: &Delivery,
        book: JobNotes<'_>,
        msg: &WeChatReply,
        text: &str,
        notes: &Notes,
    ) -> Result<Delivered, HandlerError> {
        if let Some(noted) = notes.get(NOTE_PASSIVE) {
            return Ok(if noted == "replied" {
                Delivered::Replied
            } else {
                Delivered::Kept
            });
        }
        let delivered = self.deliver_passively(job, msg, text).await?;
        let noted = match delivered {
            Delivered::Replied => "replied",
            Delivered::Kept => "kept",
        };
        book.write(&[(NOTE_PASSIVE, noted)]).await?;
        Ok(delivered)
    }

    /// Puts `text` in the push's reply slot (or keeps it).
    pub(super) async fn deliver_passively(
        &self,
        job: &Delivery,
        msg: &WeChatReply,
        text: &str,
    ) -> Result<Delivered, HandlerError> {
        let (reply, rest) = fit_one_reply(text, &self.rules.continue_text);
        self.rules
            .passive
            .answer(
                &msg.openid,
                &msg.push_key(),
                action_ms(job),
                &reply,
                &rest,
                text,
                still_tried(msg),
            )
            .await
            .map_err(store_error)
    }
}
