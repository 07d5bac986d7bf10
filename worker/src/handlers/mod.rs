//! What each job kind does.

pub mod noop;
pub mod wechat_reply;

pub use noop::Noop;
pub use wechat_reply::WeChatReplyHandler;
