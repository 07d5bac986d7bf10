//! Dashboard sessions: signing in with an admin token sets a random session
//! cookie (HttpOnly, SameSite=Strict, path `/admin`); the session lives in
//! Redis (so any api process honours it, and signing out ends it
//! everywhere) under the SHA-256 of its id, with its own CSRF token.
//!
//! The admin token itself is never stored, never put in a URL, and never
//! sent back: only the principal's name is kept, with the fingerprint of
//! the configured tokens, so rotating any token (SIGHUP) ends every session.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use ferry_common::queue::JobQueue;
use ferry_common::store::RedisError;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AdminError;
use crate::state::AppState;

/// The cookie's name.
pub const COOKIE: &str = "ferry_admin";

/// How long a session lasts (signing in again starts a new one).
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// A signed-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    /// The api tokens' fingerprint at sign-in: a session outlives no
    /// change of the tokens.
    tokens: String,
    /// The principal's name (`admin`, or a token's name); never the token.
    pub principal: String,
    /// Sent back in every form; a state change without it is refused.
    pub csrf: String,
    id_hash: String,
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// Starts a session; returns it and the cookie value.
pub async fn create(
    queue: &JobQueue,
    principal: &str,
    tokens: [u8; 32],
) -> Result<(Session, String), AdminError> {
    let id = random_hex();
    let session = Session {
        tokens: hex::encode(tokens),
        principal: principal.to_owned(),
        csrf: random_hex(),
        id_hash: hash(&id),
    };
    let mut conn = queue.store().conn().await?;
    let key = queue.keys().admin_session(&session.id_hash);
    redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(&key)
        .arg("principal")
        .arg(&session.principal)
        .arg("csrf")
        .arg(&session.csrf)
        .arg("tokens")
        .arg(&session.tokens)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(SESSION_TTL.as_millis() as u64)
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .map_err(RedisError::from)?;
    Ok((session, id))
}

/// Ends a session.
pub async fn delete(queue: &JobQueue, session: &Session) -> Result<(), AdminError> {
    let mut conn = queue.store().conn().await?;
    redis::cmd("DEL")
        .arg(queue.keys().admin_session(&session.id_hash))
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| RedisError::from(e).into())
}

async fn lookup(queue: &JobQueue, id: &str) -> Result<Option<Session>, AdminError> {
    let id_hash = hash(id);
    let mut conn = queue.store().conn().await?;
    let (principal, csrf, tokens): (Option<String>, Option<String>, Option<String>) =
        redis::cmd("HMGET")
            .arg(queue.keys().admin_session(&id_hash))
            .arg("principal")
            .arg("csrf")
            .arg("tokens")
            .query_async(&mut conn)
            .await
            .map_err(RedisError::from)?;
    Ok(match (principal, csrf, tokens) {
        (Some(principal), Some(csrf), Some(tokens)) => Some(Session {
            tokens,
            principal,
            csrf,
            id_hash,
        }),
        _ => None,
    })
}

/// The `Set-Cookie` value for a new session. `Secure` when the sign-in came
/// from an `https://` page (browsers send `Origin` on a POST), so a plain
/// `http://` deployment on a private network can still sign in.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then_some(value)
        })
}

impl FromRequestParts<AppState> for Session {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AdminError> {
        let id = cookie(&parts.headers).ok_or(AdminError::SignInRequired)?;
        // Ids are 64 hex digits; anything else is not worth a round trip.
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AdminError::SignInRequired);
        }
        lookup(&state.queue, id)
            .await?
            .filter(|s| s.tokens == hex::encode(state.auth.fingerprint()))
            .ok_or(AdminError::SignInRequired)
    }
}

impl Session {
    /// Refuses a state change whose form token is not this session's, or
    /// that a page of another origin sent.
    pub fn check(&self, headers: &HeaderMap, form_csrf: &str) -> Result<(), AdminError> {
        same_origin(headers)?;
        if bool::from(self.csrf.as_bytes().ct_eq(form_csrf.as_bytes())) {
            Ok(())
        } else {
            Err(AdminError::CsrfRefused)
        }
    }
}

/// A POST whose `Origin` names another host than the one it was sent to
/// comes from another site's page: refused. (Browsers send `Origin` on
/// every POST; a client without one, like curl, still needs the CSRF
/// token.) Behind a reverse proxy that rewrites `Host`, the proxy's
/// `X-Forwarded-Host` counts too: a cross-site form cannot set that header,
/// so trusting it gives an attacker nothing.
pub fn same_origin(headers: &HeaderMap) -> Result<(), AdminError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    let Some(origin_host) = origin_host else {
        return Err(AdminError::CsrfRefused);
    };
    let forwarded = headers
        .get_all("x-forwarded-host")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    let mut hosts = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .into_iter()
        .chain(forwarded);
    if hosts.any(|h| h.trim().eq_ignore_ascii_case(origin_host)) {
        Ok(())
    } else {
        Err(AdminError::CsrfRefused)
    }
}

/// Whether the sign-in page was served over HTTPS.
pub fn from_https(headers: &HeaderMap) -> bool {
    headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| o.starts_with("https://"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[(header::COOKIE, "a=1; ferry_admin=abc; b=2")]);
        assert_eq!(cookie(&h), Some("abc"));
        assert_eq!(cookie(&headers(&[(header::COOKIE, "ferry_admin=")])), None);
    }

    #[test]
    fn a_post_from_another_origin_is_refused() {
        let same = headers(&[
            (header::HOST, "ferry.example:5000"),
            (header::ORIGIN, "https://ferry.example:5000"),
        ]);
        assert!(same_origin(&same).is_ok());
        let other = headers(&[
            (header::HOST, "ferry.example:5000"),
            (header::ORIGIN, "https://evil.example"),
        ]);
        assert!(same_origin(&other).is_err());
        assert!(same_origin(&headers(&[(header::HOST, "x")])).is_ok());
        let proxied = headers(&[
            (header::HOST, "127.0.0.1:5000"),
            (
                header::HeaderName::from_static("x-forwarded-host"),
                "ferry.example",
            ),
            (header::ORIGIN, "https://ferry.example"),
        ]);
        assert!(same_origin(&proxied).is_ok());
        let null = headers(&[(header::HOST, "x"), (header::ORIGIN, "null")]);
        assert!(same_origin(&null).is_err());
    }

    #[test]
    fn the_cookie_is_http_only_and_strict_and_secure_over_https() {
        let c = set_cookie("id", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
        assert!(!set_cookie("id", false).contains("Secure"));
    }
}
