//! A fleet-wide GCRA rate limit on one subject (a WeChat user's messages per
//! minute, an API key's submissions per minute): one atomic call of
//! `ferry_limit`, time from Redis, so every process shares the same budget.

use std::time::Duration;

use redis::Pipeline;

use super::provider_gate::GateError;
use crate::functions::{fcall, run};
use crate::store::Store;

/// The answer to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the limit; the next unit is allowed after this wait.
    Limited(Duration),
}

#[derive(Clone)]
pub struct RateLimit {
    store: Store,
    per_minute: u32,
    burst: u32,
}

impl RateLimit {
    /// `per_minute` units a minute, `burst` of them back to back.
    pub fn new(store: Store, per_minute: u32, burst: u32) -> Self {
        Self {
            store,
            per_minute: per_minute.max(1),
            burst: burst.max(1),
        }
    }

    /// Takes one unit from the limit kept at `key` (built in `keys.rs`: a
    /// user's [`crate::keys::UserKey::Limit`], [`crate::keys::Keys::api_key_limit`]).
    pub async fn check(&self, key: &str) -> Result<Verdict, GateError> {
        let mut pipe = Pipeline::new();
        fcall(&mut pipe, "ferry_limit", &[key])
            .arg(self.per_minute)
            .arg(self.burst)
            .arg(1);
        let mut conn = self.store.conn().await?;
        let ((allowed, wait),): ((i64, u64),) = run(&mut conn, &pipe).await?;
        Ok(if allowed == 1 {
            Verdict::Allowed
        } else {
            Verdict::Limited(Duration::from_millis(wait))
        })
    }

    /// Whether this is the first notice of a window: sets `key` (held by
    /// `holder`) for `window` unless it is set already (`SET NX PX`). The
    /// per-user limit sends its one notice per window this way.
    pub async fn first_notice(
        &self,
        key: &str,
        holder: &str,
        window: Duration,
    ) -> Result<bool, GateError> {
        let mut conn = self.store.conn().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(window.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }

    /// Clears a notice flag whose notice could not be sent, so the next
    /// message over the limit tries again.
    pub async fn clear_notice(&self, key: &str) -> Result<(), GateError> {
        let mut conn = self.store.conn().await?;
        redis::cmd("DEL")
            .arg(key)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}
