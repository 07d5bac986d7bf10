//! The reply sink of `ferry dev` without WeChat credentials: prints each
//! reply and keeps it in a short Redis list, where `ferry simulate` (through
//! the dev api) picks it up.

use ferry_common::store::Store;

use super::SendError;

/// How long the dev outbox keeps replies nobody picked up.
const OUTBOX_TTL_SECS: u64 = 600;

#[derive(Clone)]
pub struct ConsoleSink {
    store: Store,
}

impl ConsoleSink {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub async fn send_text(&self, openid: &str, content: &str) -> Result<(), SendError> {
        println!("[reply to {openid}] {content}");
        let mut conn = self
            .store
            .conn()
            .await
            .map_err(|e| SendError::Retry(e.to_string()))?;
        let key = self.store.keys().dev_outbox(openid);
        redis::pipe()
            .cmd("RPUSH")
            .arg(&key)
            .arg(content)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(OUTBOX_TTL_SECS)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| SendError::Retry(e.to_string()))
    }
}
