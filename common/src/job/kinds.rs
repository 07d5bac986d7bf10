//! Job kinds and their payloads: the contract between the producers (api)
//! and the handlers (worker), which never depend on each other.

use serde::{Deserialize, Serialize};

use crate::queue::WECHAT;

/// Answer one WeChat user's message with an AI reply, delivered through the
/// customer-service API.
pub const WECHAT_REPLY: &str = "wechat.reply";

/// The queue a kind is enqueued on.
pub fn queue_of(kind: &str) -> &'static str {
    match kind {
        WECHAT_REPLY => WECHAT,
        _ => crate::queue::BATCH,
    }
}

/// Attempts before a kind's job is dead-lettered.
pub fn max_attempts_of(kind: &str) -> u32 {
    match kind {
        // A user waits: retry a few times, then apologise.
        WECHAT_REPLY => 4,
        _ => 8,
    }
}

/// Payload of [`WECHAT_REPLY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeChatReply {
    /// The user's openid (`FromUserName`).
    pub openid: String,
    /// The official account (`ToUserName`).
    pub account: String,
    /// What the user wrote (or what speech recognition heard).
    pub content: String,
    /// WeChat's message id, for tracing a reply back to its message.
    pub msg_id: Option<i64>,
    /// `CreateTime` of the message, unix seconds.
    pub create_time: i64,
}
