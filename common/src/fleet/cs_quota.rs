//! WeChat's customer-service allowance per user, counted fleet-wide
//! (WECHAT.md, "Customer-service messages"): 5 messages within 48 hours of
//! a user's message, 3 within a minute of a menu click, a follow or a QR
//! scan. The allowance does not add up: each new action resets it to that
//! action's maximum. Every message counts (each part of an answer, an
//! apology, a notice); the typing indicator does not.
//!
//! Every worker takes from one count per user (`ferry_cs_take`), so two
//! answers in flight for one user share it as WeChat does. A message is
//! taken before it is sent: a crash between the two loses one message of
//! the allowance, never sends one over it.

use std::time::Duration;

use redis::Pipeline;

use crate::functions::{fcall, run};
use crate::keys::UserKey;
use crate::store::{RedisError, Store};

/// What one user action allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub messages: u32,
    pub within: Duration,
}

/// After a message from the user.
pub const AFTER_MESSAGE: Allowance = Allowance {
    messages: 5,
    within: Duration::from_secs(48 * 3600),
};

/// After a menu click, a follow or a QR-code scan.
pub const AFTER_EVENT: Allowance = Allowance {
    messages: 3,
    within: Duration::from_secs(60),
};

#[derive(Clone)]
pub struct CsQuota {
    store: Store,
}

impl CsQuota {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Takes up to `wanted` messages from what the user's newest action
    /// allows, for an action at `action_ms` (unix ms) allowing `allowance`
    /// (the newest action seen so far wins; messages taken since its time
    /// count against it). Returns how many were granted (0 when the
    /// allowance is used up or expired). `wanted` 0 only records the
    /// action (a menu click, a follow, a scan).
    pub async fn take(
        &self,
        openid: &str,
        action_ms: i64,
        allowance: Allowance,
        wanted: u32,
    ) -> Result<u32, RedisError> {
        let keys = self.store.keys();
        let quota = keys.user(UserKey::CsQuota, openid);
        let sends = keys.user(UserKey::CsSends, openid);
        let mut pipe = Pipeline::new();
        fcall(&mut pipe, "ferry_cs_take", &[&quota, &sends])
            .arg(action_ms)
            .arg(allowance.messages)
            .arg(millis(allowance.within))
            .arg(wanted)
            .arg(ulid::Ulid::new().to_string());
        let mut conn = self.store.conn().await?;
        let (granted,): (u32,) = run(&mut conn, &pipe).await?;
        Ok(granted)
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
