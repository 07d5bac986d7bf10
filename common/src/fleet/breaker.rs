//! Operators' hands on the shared circuit breakers: see them, reset one,
//! force one open (`ferry breaker list|reset|open`, and the admin API).

use std::collections::HashMap;
use std::time::Duration;

use redis::Pipeline;
use serde::Serialize;

use crate::functions::{fcall, run};
use crate::store::{RedisError, Store};

/// One provider's breaker as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BreakerView {
    pub provider: String,
    pub state: String,
    /// Until when it stays open (RFC 3339), if open.
    pub open_until: Option<String>,
    pub reason: Option<String>,
    /// A 429 hint holding the fleet back until then.
    pub slowed_until: Option<String>,
}

#[derive(Clone)]
pub struct Breakers {
    store: Store,
}

fn time(ms: Option<&String>) -> Option<String> {
    let ms: i64 = ms?.parse().ok()?;
    (ms > 0).then(|| crate::job::from_millis(ms).to_rfc3339())
}

impl Breakers {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub async fn list(&self, providers: &[&str]) -> Result<Vec<BreakerView>, RedisError> {
        let mut conn = self.store.conn().await?;
        let mut out = Vec::new();
        for p in providers {
            let fields: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(self.store.keys().provider(p).breaker())
                .query_async(&mut conn)
                .await?;
            out.push(BreakerView {
                provider: p.to_string(),
                state: fields
                    .get("state")
                    .cloned()
                    .unwrap_or_else(|| "closed".into()),
                open_until: time(fields.get("open_until"))
                    .filter(|_| fields.get("state").map(String::as_str) == Some("open")),
                reason: fields.get("reason").filter(|r| !r.is_empty()).cloned(),
                slowed_until: time(fields.get("slow_until")),
            });
        }
        Ok(out)
    }

    /// Calls in flight to `provider` across the fleet (unexpired leases).
    pub async fn calls_in_flight(&self, provider: &str) -> Result<u64, RedisError> {
        let mut conn = self.store.conn().await?;
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let now_ms = secs * 1000 + micros / 1000;
        Ok(redis::cmd("ZCOUNT")
            .arg(self.store.keys().provider(provider).leases())
            .arg(format!("({now_ms}"))
            .arg("+inf")
            .query_async(&mut conn)
            .await?)
    }

    /// Closes the breaker and forgets its window.
    pub async fn reset(&self, provider: &str) -> Result<(), RedisError> {
        self.admin(provider, &["reset", "0", ""]).await
    }

    /// Opens the breaker for `duration` (calls fall over to the next provider).
    pub async fn force_open(
        &self,
        provider: &str,
        duration: Duration,
        reason: &str,
    ) -> Result<(), RedisError> {
        self.admin(
            provider,
            &["open", &duration.as_millis().to_string(), reason],
        )
        .await
    }

    async fn admin(&self, provider: &str, args: &[&str]) -> Result<(), RedisError> {
        let keys = self.store.keys().provider(provider);
        let (breaker, window) = (keys.breaker(), keys.window());
        let mut pipe = Pipeline::new();
        let call = fcall(&mut pipe, "ferry_breaker_admin", &[&breaker, &window]);
        for a in args {
            call.arg(*a);
        }
        let mut conn = self.store.conn().await?;
        let _: (String,) = run(&mut conn, &pipe).await?;
        tracing::warn!(target: "security", provider, action = args[0], "circuit breaker changed by an operator");
        let to = if args[0] == "open" { "open" } else { "closed" };
        super::provider_gate::count_transition(provider, to);
        Ok(())
    }
}
