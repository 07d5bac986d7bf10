//! How `/wechat` and `/metrics` turn failures into responses: a status and
//! a short plain-text reason that helps an honest caller and gives an
//! attacker nothing (no secrets, no internals). `/v1` renders the same
//! refusals in its JSON shape (`v1/error.rs`).
//!
//! A refusal for a verify/parse reason (bad signature, stale timestamp,
//! malformed or oversized request) carries the [`FailedVerification`]
//! response extension: what `/wechat`'s per-IP limiter counts
//! ([`crate::limiter`]).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid signature")]
    BadSignature,
    /// A signed request whose `timestamp` is outside the accepted window:
    /// an old request replayed (or a server clock far off).
    #[error("request timestamp outside the accepted window")]
    StaleTimestamp,
    #[error("{0}")]
    BadRequest(String),
    #[error("request body too large")]
    TooLarge,
    #[error("too many requests, retry later")]
    RateLimited { retry_after_secs: u64 },
    #[error("temporarily unavailable, retry later")]
    Unavailable,
    /// No bearer token, or one that is not configured: the same answer
    /// either way, so a caller cannot probe which tokens exist.
    #[error("unauthorized")]
    Unauthorized,
    /// A valid token without the scope the route needs.
    #[error("forbidden")]
    Forbidden,
}

/// Marks a response refusing a request that failed verification or could
/// not be read: the per-IP limiter counts these, and only these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedVerification;

impl ApiError {
    /// A refusal for a verify/parse reason: the request was not shown to
    /// come from WeChat, or not in a form WeChat sends.
    pub fn is_failed_verification(&self) -> bool {
        matches!(
            self,
            ApiError::BadSignature
                | ApiError::StaleTimestamp
                | ApiError::BadRequest(_)
                | ApiError::TooLarge
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::BadSignature => StatusCode::UNAUTHORIZED,
            ApiError::StaleTimestamp => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
        };
        let mut response = (status, self.to_string()).into_response();
        if self.is_failed_verification() {
            response.extensions_mut().insert(FailedVerification);
        }
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if let ApiError::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_secs.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_verify_and_parse_refusals_are_marked_for_the_limiter() {
        let marked = |e: ApiError| {
            e.into_response()
                .extensions()
                .get::<FailedVerification>()
                .is_some()
        };
        assert!(marked(ApiError::BadSignature));
        assert!(marked(ApiError::StaleTimestamp));
        assert!(marked(ApiError::BadRequest(
            "missing query parameter nonce".into()
        )));
        assert!(marked(ApiError::TooLarge));
        assert!(!marked(ApiError::Unavailable));
        assert!(!marked(ApiError::RateLimited {
            retry_after_secs: 1
        }));
        assert!(!marked(ApiError::Unauthorized));
        assert!(!marked(ApiError::Forbidden));
    }
}
