//! The one way handlers turn failures into responses: a status and a short
//! plain-text reason that helps an honest caller and gives an attacker
//! nothing (no secrets, no internals).

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
