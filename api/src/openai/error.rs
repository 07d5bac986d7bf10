//! The error shape of `/openai/v1`, OpenAI's own:
//! `{"error":{"message","type","param","code"}}`, so the official clients
//! raise the exception they raise against OpenAI (they choose it by the
//! status: 401 `AuthenticationError`, 403 `PermissionDeniedError`, 404
//! `NotFoundError`, 429 `RateLimitError`, ...). Messages help an honest
//! caller and never carry a secret, a stack, or whether a token exists.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_common::batch::files::ListError;
use ferry_common::queue::QueueError;
use serde::Serialize;

use crate::error::ApiError;
use crate::v1::error::V1Error;

#[derive(Debug)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `rate_limit_error`, ...
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<String>,
    pub retry_after_secs: Option<u64>,
}

/// The body, as the OpenAPI document describes it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl OpenAiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after_secs: None,
        }
    }

    /// A 400 about `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).param(param)
    }

    /// A 400 about the request as a whole.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// A 404: unknown, or another key's (the same answer, so ids cannot be
    /// probed).
    pub fn not_found(what: &str, id: &str) -> Self {
        let id: String = id.chars().take(80).collect();
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("No such {what}: '{id}'"),
        )
        .code("not_found")
    }

    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the file is larger than {limit} bytes"),
        )
        .code("file_too_large")
    }

    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "temporarily unavailable, nothing was changed; retry later",
        )
        .code("unavailable")
    }

    pub fn param(mut self, param: &str) -> Self {
        self.param = Some(param.to_owned());
        self
    }

    pub fn code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    fn kind_of(status: StatusCode) -> &'static str {
        match status.as_u16() {
            401 => "invalid_request_error",
            403 => "invalid_request_error",
            429 => "rate_limit_error",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        }
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        V1Error::from(e).into()
    }
}

/// `/v1`'s refusals (the submission limiter, the in-flight quota) in this
/// shape, with their code.
impl From<V1Error> for OpenAiError {
    fn from(e: V1Error) -> Self {
        let code = match e.code {
            "unauthorized" => "invalid_api_key",
            "forbidden" => "insufficient_permissions",
            other => other,
        };
        Self {
            status: e.status,
            kind: Self::kind_of(e.status),
            message: match e.code {
                "unauthorized" => {
                    "unauthorized: a bearer token of this deployment is needed".into()
                }
                "forbidden" => "forbidden: this token lacks the scope the route needs".into(),
                _ => e.message,
            },
            param: None,
            code: Some(code.to_owned()),
            retry_after_secs: e.retry_after_secs,
        }
    }
}

/// Redis trouble: the caller may retry; the details go to the log only.
impl From<QueueError> for OpenAiError {
    fn from(e: QueueError) -> Self {
        tracing::warn!(error = %e, "OpenAI Batch API: Redis call failed");
        Self::unavailable()
    }
}

impl From<ListError> for OpenAiError {
    fn from(e: ListError) -> Self {
        match e {
            ListError::BadCursor => {
                Self::invalid("after", "after must be the id of an item of this list")
            }
            ListError::Queue(e) => e.into(),
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: self.message,
                kind: self.kind.to_owned(),
                param: self.param,
                code: self.code,
            },
        };
        crate::v1::error::with_refusal_headers(
            (self.status, Json(body)).into_response(),
            self.retry_after_secs,
        )
    }
}
