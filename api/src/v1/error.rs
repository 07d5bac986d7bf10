//! The one error shape of `/v1`: `{"error":{"code":"...","message":"..."}}`
//! (plus `lines` for a refused batch). Codes are stable for programs;
//! messages help an honest caller and never carry a secret, a stack, or
//! whether a token exists.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_common::queue::QueueError;
use serde::Serialize;

use crate::error::ApiError;

/// One refused line of a batch.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LineError {
    /// 1-based line number in the submitted file.
    pub line: u64,
    pub reason: String,
}

#[derive(Debug)]
pub struct V1Error {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Bad lines of a refused batch (at most [`crate::v1::batches::MAX_REPORTED_LINES`]).
    pub lines: Vec<LineError>,
    pub retry_after_secs: Option<u64>,
}

/// The body, as the OpenAPI document describes it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<LineError>,
}

impl V1Error {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            lines: Vec::new(),
            retry_after_secs: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {limit} bytes"),
        )
    }

    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "temporarily unavailable, nothing was enqueued; retry later",
        )
    }
}

impl From<ApiError> for V1Error {
    fn from(e: ApiError) -> Self {
        let message = e.to_string();
        match e {
            ApiError::Unauthorized => Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message),
            ApiError::Forbidden => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
            ApiError::TooLarge => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message),
            ApiError::RateLimited { retry_after_secs } => {
                Self::rate_limited(message, retry_after_secs)
            }
            ApiError::Unavailable => Self::unavailable(),
            _ => Self::bad_request(message),
        }
    }
}

/// Redis trouble: the caller may retry; the details go to the log only.
impl From<QueueError> for V1Error {
    fn from(e: QueueError) -> Self {
        tracing::warn!(error = %e, "jobs API: Redis call failed");
        Self::unavailable()
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                lines: self.lines,
            },
        };
        with_refusal_headers(
            (self.status, Json(body)).into_response(),
            self.retry_after_secs,
        )
    }
}

/// What a refusal says besides its body, for both JSON APIs (`/v1`,
/// `/openai/v1`): a 401 names the scheme, a limit says when to come back.
pub(crate) fn with_refusal_headers(
    mut response: Response,
    retry_after_secs: Option<u64>,
) -> Response {
    if response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    if let Some(secs) = retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, secs.into());
    }
    response
}
