//! `/v1`: the jobs and batches API, in the spirit of OpenAI's Batch API.
//!
//! - `POST /v1/jobs`, `GET /v1/jobs/{id}` ([`jobs`]);
//! - `POST /v1/batches` (JSONL), `GET /v1/batches/{id}`,
//!   `GET /v1/batches/{id}/results`, `POST /v1/batches/{id}/cancel`
//!   ([`batches`]);
//! - `GET /v1/openapi.json`, generated from these handlers ([`openapi`]).
//!
//! Every route but the document needs a bearer token ([`guard`]): `submit`
//! to submit or cancel, `read` to read. A caller sees its own jobs and
//! batches only (admin sees all). Errors have one JSON shape ([`error`]).

pub mod batches;
pub mod error;
pub mod guard;
pub mod jobs;
pub mod openapi;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{any, get, post};
use ferry_common::batch::Batches;
use ferry_common::batch::line::Rules;
use ferry_common::config::JobsApiConfig;
use ferry_common::fleet::RateLimit;

use crate::auth::Scope;
use crate::state::AppState;
use error::V1Error;
use guard::V1Guard;

/// What `/v1` needs besides the api's common state.
pub struct JobsApi {
    pub batches: Batches,
    /// What a request is validated against (the configured providers).
    pub rules: Rules,
    pub config: JobsApiConfig,
    /// Submissions per minute per API key (`None`: no limit).
    pub submissions: Option<RateLimit>,
}

/// The `/v1` routes, each group behind its scope.
pub fn router(state: AppState) -> Router<AppState> {
    let guarded = |scope| {
        middleware::from_fn_with_state(
            V1Guard {
                state: state.clone(),
                scope,
            },
            guard::require,
        )
    };
    let submit = Router::new()
        .route("/v1/jobs", post(jobs::submit))
        .route("/v1/batches", post(batches::submit::submit))
        .route("/v1/batches/{id}/cancel", post(batches::cancel))
        .route_layer(guarded(Scope::Submit));
    let read = Router::new()
        .route("/v1/jobs/{id}", get(jobs::get_job))
        .route("/v1/batches/{id}", get(batches::get_batch))
        .route("/v1/batches/{id}/results", get(batches::results::results))
        .route_layer(guarded(Scope::Read));
    Router::new()
        .merge(submit)
        .merge(read)
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/{*rest}", any(unknown_route))
}

/// Any other path under `/v1`: the API's JSON error shape, not an empty 404.
async fn unknown_route() -> V1Error {
    V1Error::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}
