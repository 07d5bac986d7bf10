//! The one state every handler shares.

use std::sync::Arc;
use std::time::Duration;

use ferry_common::Secret;
use ferry_common::queue::JobQueue;
use ferry_common::wechat::MessageCrypt;

/// What the WeChat callback needs to check and decode pushes.
pub struct WeChatIngress {
    /// `WECHAT_TOKEN`: the signature key shared with WeChat.
    pub token: Secret,
    /// Present when `WECHAT_ENCODING_AES_KEY` and `WECHAT_APP_ID` are set:
    /// compatible and safe modes.
    pub crypt: Option<MessageCrypt>,
    /// How long a message id is remembered to drop WeChat's retries.
    pub dedup_ttl: Duration,
}

#[derive(Clone)]
pub struct AppState {
    pub queue: JobQueue,
    pub wechat: Arc<WeChatIngress>,
    pub max_body_bytes: usize,
    /// Serve `/dev/replies` (only `ferry dev`, with the console reply sink).
    pub dev_outbox: bool,
}
