//! Delivering answers to WeChat users.
//!
//! In production through WeChat's customer-service API
//! ([`customer_service`]); in `ferry dev` without WeChat credentials, to the
//! console ([`console`]). Long answers are split by [`split`]; what
//! happens on the way is counted in [`counters`].

pub mod console;
pub mod counters;
pub mod customer_service;
pub mod media;
pub mod split;

pub use console::ConsoleSink;
pub use counters::{ReplyCounters, ReplyCountersSnapshot};
pub use customer_service::{CustomerService, SendError};
pub use media::{MediaError, WeChatMedia};

/// Where replies go.
#[derive(Clone)]
pub enum ReplySink {
    CustomerService(CustomerService),
    Console(ConsoleSink),
}

impl ReplySink {
    /// Sends one text message (already under WeChat's size limit).
    pub async fn send_text(&self, openid: &str, content: &str) -> Result<(), SendError> {
        match self {
            ReplySink::CustomerService(cs) => cs.send_text(openid, content).await,
            ReplySink::Console(console) => console.send_text(openid, content).await,
        }
    }

    /// Shows "typing..." to the user while the provider works. Best effort.
    pub async fn typing(&self, openid: &str) {
        if let ReplySink::CustomerService(cs) = self
            && let Err(e) = cs.typing(openid).await
        {
            tracing::debug!(error = %e, "typing indicator not shown");
        }
    }
}
