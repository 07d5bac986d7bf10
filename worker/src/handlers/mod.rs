//! What each job kind does.

pub mod batch_webhook;
pub mod chat_completion;
pub mod noop;
pub mod webhook_client;
pub mod wechat_reply;

pub use batch_webhook::BatchWebhookHandler;
pub use chat_completion::ChatCompletionHandler;
pub use noop::Noop;
pub use wechat_reply::WeChatReplyHandler;
