//! `ferry dev`'s own routes, mounted by nothing else.
//!
//! `GET /dev/replies/{openid}?wait_ms=N`: the replies the console sink
//! recorded for a user, waiting up to `wait_ms` for the first one, for
//! `ferry simulate`. `GET /admin/dev-sign-in?code=...`: the one-time
//! dashboard sign-in link `ferry dev` prints ([`DevSignIn`]).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct Wait {
    wait_ms: Option<u64>,
}

pub async fn replies(
    State(state): State<AppState>,
    Path(openid): Path<String>,
    Query(wait): Query<Wait>,
) -> Result<Json<Value>, ApiError> {
    let key = state.queue.keys().dev_outbox(&openid);
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(wait.wait_ms.unwrap_or(0).min(60_000));
    loop {
        let mut conn = state
            .queue
            .store()
            .conn()
            .await
            .map_err(|_| ApiError::Unavailable)?;
        let replies: Option<Vec<String>> = redis::cmd("LPOP")
            .arg(&key)
            .arg(100)
            .query_async(&mut conn)
            .await
            .map_err(|_| ApiError::Unavailable)?;
        drop(conn);
        let replies = replies.unwrap_or_default();
        if !replies.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(json!({ "replies": replies })));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `ferry dev`'s one-time dashboard sign-in: a random code made at
/// start-up, printed as a link, good for one visit within [`DEV_SIGN_IN_TTL`].
///
/// **Decision:** the code lives in this process, not in Redis: `ferry dev`
/// is one process, the code must die with it, and nothing in Redis can
/// then open a session after `ferry dev` is gone. Only its SHA-256 is
/// kept; a presented code is hashed and compared in constant time. The
/// route exists only when [`crate::SharedState::dev_sign_in`] is set, which
/// only `ferry dev` does: `ferry api`'s router answers 404.
pub struct DevSignIn {
    code_hash: [u8; 32],
    expires: std::time::Instant,
    used: std::sync::atomic::AtomicBool,
}

/// How long the printed link works.
pub const DEV_SIGN_IN_TTL: Duration = Duration::from_secs(10 * 60);

/// Why a code was refused (the page says which, and how to get another).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DevSignInRefused {
    #[error("this sign-in link is not valid; use the one `ferry dev` printed")]
    Wrong,
    #[error("this sign-in link was already used; restart `ferry dev` for a new one")]
    Used,
    #[error("this sign-in link has expired; restart `ferry dev` for a new one")]
    Expired,
}

impl DevSignIn {
    /// A fresh code (32 random bytes, base64url) and the state that checks it.
    pub fn new(ttl: Duration) -> (Self, String) {
        use base64::Engine as _;
        let code =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let this = Self {
            code_hash: Sha256::digest(code.as_bytes()).into(),
            expires: std::time::Instant::now() + ttl,
            used: Default::default(),
        };
        (this, code)
    }

    /// Spends the code if `presented` is it, unused and in time. A wrong
    /// code spends nothing.
    pub fn redeem(&self, presented: &str) -> Result<(), DevSignInRefused> {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if !bool::from(presented.ct_eq(&self.code_hash)) {
            return Err(DevSignInRefused::Wrong);
        }
        if std::time::Instant::now() >= self.expires {
            return Err(DevSignInRefused::Expired);
        }
        // Exactly one visit wins, however many arrive at once.
        self.used
            .compare_exchange(
                false,
                true,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
            )
            .map(|_| ())
            .map_err(|_| DevSignInRefused::Used)
    }
}

#[derive(Deserialize)]
pub struct SignInCode {
    #[serde(default)]
    code: String,
}

/// `GET /admin/dev-sign-in?code=...` (`ferry dev` only): the printed link.
/// The code's one visit creates a normal dashboard session (the same cookie
/// and CSRF token as a token sign-in, principal `dev`) and redirects to
/// `/admin`; any other visit is refused with 403.
pub async fn sign_in(
    State(state): State<AppState>,
    Query(form): Query<SignInCode>,
) -> Result<axum::response::Response, crate::admin::AdminError> {
    use axum::response::IntoResponse as _;
    let Some(dev) = &state.dev_sign_in else {
        return Err(crate::admin::AdminError::NotFound("no such page".into()));
    };
    if let Err(refused) = dev.redeem(form.code.trim()) {
        tracing::warn!(target: "security", reason = %refused, "dashboard dev sign-in refused");
        return Err(crate::admin::AdminError::Refused(refused.to_string()));
    }
    let (_, id) =
        crate::admin::session::create(&state.queue, "dev", state.auth.fingerprint()).await?;
    tracing::info!(target: "security", principal = "dev", "dashboard sign-in (ferry dev's one-time link)");
    let mut response = axum::response::Redirect::to("/admin").into_response();
    response.headers_mut().insert(
        axum::http::header::SET_COOKIE,
        axum::http::HeaderValue::from_str(&crate::admin::session::set_cookie(&id, false))
            .map_err(|_| crate::admin::AdminError::Unavailable)?,
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_once_and_a_wrong_one_spends_nothing() {
        let (dev, code) = DevSignIn::new(DEV_SIGN_IN_TTL);
        assert_eq!(code.len(), 43, "32 bytes, base64url without padding");
        assert_eq!(dev.redeem("nope"), Err(DevSignInRefused::Wrong));
        assert_eq!(dev.redeem(&code), Ok(()));
        assert_eq!(dev.redeem(&code), Err(DevSignInRefused::Used));
    }

    #[test]
    fn an_expired_code_is_refused() {
        let (dev, code) = DevSignIn::new(Duration::ZERO);
        assert_eq!(dev.redeem(&code), Err(DevSignInRefused::Expired));
    }
}
