//! `/openai/v1`: OpenAI's Batch API, served on Ferry's batches, so tooling
//! built on the official clients runs against Ferry's providers by
//! changing `base_url` (to `https://<api>/openai/v1`) and the model name.
//!
//! - `POST /files` (multipart `file` + `purpose=batch`), `GET /files`,
//!   `GET /files/{id}`, `GET /files/{id}/content`, `DELETE /files/{id}`
//!   ([`files`]);
//! - `POST /batches`, `GET /batches` (newest first, `limit`, `after`),
//!   `GET /batches/{id}`, `POST /batches/{id}/cancel` ([`batches`]), whose
//!   output and error files are made from the results when read
//!   ([`output`]).
//!
//! The same bearer tokens, scopes, ownership and quotas as `/v1`: `read`
//! for every `GET`, `submit` for the rest; a key sees only its own files
//! and batches (admin sees all); uploads and batches count against the
//! key's submissions per minute, a batch's lines against its jobs in
//! flight. Errors are OpenAI's shape ([`error`]). The lines' translation
//! and the model routing are `ferry_common::batch::openai`'s.

pub mod batches;
pub mod error;
pub mod files;
pub mod lines;
pub mod multipart;
pub mod openapi;
pub mod output;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::{Deserialize, Serialize};

use crate::auth::{self, Scope};
use crate::state::AppState;
use error::OpenAiError;

/// Where the API lives: a client's `base_url` is `https://<api>` + this.
pub const PREFIX: &str = "/openai/v1";

/// The `/openai/v1` routes, behind the bearer check.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/openai/v1/files", post(files::upload).get(files::list))
        .route(
            "/openai/v1/files/{file_id}",
            get(files::get_file).delete(files::delete),
        )
        .route("/openai/v1/files/{file_id}/content", get(files::content))
        .route(
            "/openai/v1/batches",
            post(batches::create).get(batches::list),
        )
        .route("/openai/v1/batches/{batch_id}", get(batches::get_batch))
        .route(
            "/openai/v1/batches/{batch_id}/cancel",
            post(batches::cancel),
        )
        .route_layer(middleware::from_fn_with_state(state, require))
        .route("/openai/v1/{*rest}", any(unknown_route))
}

/// Admits requests whose bearer token has `read` (a `GET`) or `submit`
/// (anything else), and puts the principal in the request's extensions.
async fn require(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let scope = if request.method() == Method::GET {
        Scope::Read
    } else {
        Scope::Submit
    };
    match auth::authenticate(&state, &request, scope) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => OpenAiError::from(e).into_response(),
    }
}

/// Any other path under `/openai/v1` (embeddings, responses, ...): OpenAI's
/// error shape, saying what is served.
async fn unknown_route() -> OpenAiError {
    OpenAiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "Ferry serves OpenAI's Batch API only: /files and /batches under /openai/v1",
    )
    .code("unknown_url")
}

/// The query of a list: OpenAI's cursor pagination.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// The id of the last item of the previous page.
    pub after: Option<String>,
    /// Items per page (files: up to 10,000, the default; batches: 1 to
    /// 100, default 20).
    pub limit: Option<String>,
    /// Files only: `desc` (newest first, the default) or `asc`.
    pub order: Option<String>,
    /// Files only: `batch` (the only purpose kept).
    pub purpose: Option<String>,
}

impl ListParams {
    fn limit(&self, default: usize, max: usize) -> Result<usize, OpenAiError> {
        match self.limit.as_deref() {
            None => Ok(default),
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    OpenAiError::invalid("limit", format!("limit must be from 1 to {max}"))
                }),
        }
    }
}

/// OpenAI's list object.
#[derive(Debug, Serialize)]
pub struct Listed<T> {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<T>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

impl<T> Listed<T> {
    fn new(data: Vec<T>, has_more: bool, id: impl Fn(&T) -> String) -> Self {
        Self {
            object: "list",
            first_id: data.first().map(&id),
            last_id: data.last().map(&id),
            data,
            has_more,
        }
    }
}
