//! The one way handlers turn failures into responses: a status and a short
//! plain-text reason that helps an honest caller and gives an attacker
//! nothing (no secrets, no internals).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid signature")]
    BadSignature,
    #[error("{0}")]
    BadRequest(String),
    #[error("temporarily unavailable, retry later")]
    Unavailable,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::BadSignature => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, self.to_string()).into_response()
    }
}
