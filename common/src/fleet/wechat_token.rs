//! The fleet's one WeChat access token.
//!
//! Every process shares ONE cached token in Redis. Refreshing per process
//! makes instances invalidate each other's tokens (the long-standing
//! complaint in WxJava and silenceper/wechat), so one process at a time
//! refreshes, under a lock, and a token that failed is dropped only if it is
//! still the cached one (compare-and-swap): a worker holding a stale failure
//! never throws away the token another worker just fetched.
//!
//! The cached copy expires [`EXPIRY_MARGIN`] before WeChat's own expiry, so
//! the fleet refreshes ahead of it: the first call after that fetches a new
//! token (one process, under the lock) while the old one is still valid for
//! any send already under way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;

use crate::functions::delete_if_equals;
use crate::secret::Secret;
use crate::store::Store;

/// Which WeChat endpoint issues tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `POST /cgi-bin/stable_token`: the same token while valid (preferred).
    Stable,
    /// `GET /cgi-bin/token`: each fetch replaces the previous token.
    Classic,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token cache: {0}")]
    Redis(#[from] crate::store::RedisError),
    #[error("cannot reach WeChat's token endpoint: {0}")]
    Http(String),
    #[error("WeChat refused the token request: errcode {errcode} ({errmsg})")]
    WeChat { errcode: i64, errmsg: String },
    #[error("timed out waiting for another process to refresh the WeChat token")]
    Timeout,
}

crate::wraps_redis_error!(TokenError);

/// Refresh the cached token this long before WeChat's expiry.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
/// A refresh lock outlives no crashed holder for longer than this.
const LOCK_TTL: Duration = Duration::from_secs(10);
const WAIT_FOR_OTHER: Duration = Duration::from_secs(12);

#[derive(Clone)]
pub struct TokenCache {
    store: Store,
    http: reqwest::Client,
    api_base: String,
    app_id: String,
    app_secret: Secret,
    source: TokenSource,
    /// Tokens this process fetched from WeChat.
    fetches: Arc<AtomicU64>,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: Option<String>,
    expires_in: Option<u64>,
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

impl TokenCache {
    pub fn new(
        store: Store,
        http: reqwest::Client,
        api_base: String,
        app_id: String,
        app_secret: Secret,
        source: TokenSource,
    ) -> Self {
        Self {
            store,
            http,
            api_base,
            app_id,
            app_secret,
            source,
            fetches: Arc::default(),
        }
    }

    /// Counts this process's fetches from WeChat in `counter` (a metric
    /// the caller owns) instead of a counter of its own.
    pub fn counting_fetches_in(mut self, counter: Arc<AtomicU64>) -> Self {
        self.fetches = counter;
        self
    }

    /// Tokens this process fetched from WeChat so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The current token: from the cache, or fetched by exactly one process
    /// while the others wait for it.
    pub async fn get(&self) -> Result<String, TokenError> {
        let mut conn = self.store.conn().await?;
        let key = self.store.keys().wechat_token();
        if let Some(token) = redis::cmd("GET")
            .arg(&key)
            .query_async::<Option<String>>(&mut conn)
            .await?
        {
            return Ok(token);
        }
        let lock_value = ulid::Ulid::new().to_string();
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHER;
        loop {
            let won: Option<String> = redis::cmd("SET")
                .arg(self.store.keys().wechat_token_lock())
                .arg(&lock_value)
                .arg("NX")
                .arg("PX")
                .arg(LOCK_TTL.as_millis() as u64)
                .query_async(&mut conn)
                .await?;
            if won.is_some() {
                let fetched = self.fetch_and_store(&mut conn).await;
                release_lock(
                    &mut conn,
                    &self.store.keys().wechat_token_lock(),
                    &lock_value,
                )
                .await;
                return fetched;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Some(token) = redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<String>>(&mut conn)
                .await?
            {
                return Ok(token);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TokenError::Timeout);
            }
        }
    }

    /// Drops the cached token if it is still `failed` (WeChat answered
    /// 40001/40014/42001 for it). Returns whether it was dropped.
    pub async fn invalidate(&self, failed: &str) -> Result<bool, TokenError> {
        let mut conn = self.store.conn().await?;
        Ok(delete_if_equals(&mut conn, &self.store.keys().wechat_token(), failed).await?)
    }

    async fn fetch_and_store(
        &self,
        conn: &mut crate::connection::Conn,
    ) -> Result<String, TokenError> {
        // Another process may have stored one between our GET and the lock.
        if let Some(token) = redis::cmd("GET")
            .arg(self.store.keys().wechat_token())
            .query_async::<Option<String>>(conn)
            .await?
        {
            return Ok(token);
        }
        let request = match self.source {
            TokenSource::Stable => self
                .http
                .post(format!("{}/cgi-bin/stable_token", self.api_base))
                .json(&serde_json::json!({
                    "grant_type": "client_credential",
                    "appid": self.app_id,
                    "secret": self.app_secret.expose(),
                    "force_refresh": false,
                })),
            TokenSource::Classic => self
                .http
                .get(format!("{}/cgi-bin/token", self.api_base))
                .query(&[
                    ("grant_type", "client_credential"),
                    ("appid", self.app_id.as_str()),
                    ("secret", self.app_secret.expose()),
                ]),
        };
        // reqwest errors can carry the URL, and the classic URL the secret.
        let reply: TokenReply = request
            .send()
            .await
            .map_err(|e| TokenError::Http(e.without_url().to_string()))?
            .json()
            .await
            .map_err(|e| TokenError::Http(e.without_url().to_string()))?;
        let (Some(token), 0) = (reply.access_token, reply.errcode) else {
            return Err(TokenError::WeChat {
                errcode: reply.errcode,
                errmsg: reply.errmsg,
            });
        };
        self.fetches.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::WECHAT_TOKEN_REFRESHES).increment(1);
        let ttl = cache_ttl(Duration::from_secs(reply.expires_in.unwrap_or(7200)));
        redis::cmd("SET")
            .arg(self.store.keys().wechat_token())
            .arg(&token)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async::<()>(conn)
            .await?;
        tracing::info!(source = ?self.source, ttl_secs = ttl.as_secs(), "fetched a new WeChat access token for the fleet");
        Ok(token)
    }
}

/// How long the fleet keeps a token WeChat says is valid for `expires_in`:
/// [`EXPIRY_MARGIN`] less, so it is refreshed before WeChat expires it; a
/// token with less than twice the margin left (stable_token answers with
/// what is left of the current token) is kept for half of what is left, so
/// the cache never outlives WeChat's own expiry.
pub fn cache_ttl(expires_in: Duration) -> Duration {
    let ttl = if expires_in > EXPIRY_MARGIN * 2 {
        expires_in - EXPIRY_MARGIN
    } else {
        expires_in / 2
    };
    ttl.max(Duration::from_secs(1))
}

async fn release_lock(conn: &mut crate::connection::Conn, key: &str, value: &str) {
    let released = delete_if_equals(conn, key, value).await;
    if let Err(e) = released {
        tracing::warn!(error = %e, "could not release the WeChat token lock; it expires by itself");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_token_expires_ahead_of_wechats_expiry() {
        let secs = Duration::from_secs;
        assert_eq!(cache_ttl(secs(7200)), secs(6900));
        assert_eq!(cache_ttl(secs(601)), secs(301));
        // Little left (stable_token near its renewal): half of it.
        assert_eq!(cache_ttl(secs(300)), secs(150));
        assert_eq!(cache_ttl(secs(40)), secs(20));
        assert_eq!(cache_ttl(secs(0)), secs(1));
        for left in [2, 10, 60, 599, 600, 601, 7200] {
            assert!(cache_ttl(secs(left)) < secs(left), "{left} s");
        }
    }
}
