//! `/v1/batches`: JSONL batches of chat completions ([`submit`]), their
//! status and counts, their results as JSONL ([`results`]), and cancel.
//!
//! A batch belongs to the API key that submitted it; another key gets 404
//! (admin sees all), so batch ids cannot be probed.

pub mod intake;
pub mod results;
pub mod submit;

use axum::Json;
use axum::extract::{Path, State};
use ferry_common::batch::{BatchInfo, is_batch_id};
use serde::Serialize;

use crate::auth::Principal;
use crate::state::AppState;
use crate::v1::error::{LineError, V1Error};
use crate::v1::guard::may_see;

pub use intake::MAX_REPORTED_LINES;

/// The answer to a submission.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchCreated {
    #[serde(flatten)]
    pub batch: BatchInfo,
    /// With `skip_invalid=true`: the lines left out and why (the first
    /// [`MAX_REPORTED_LINES`]; `skipped` counts them all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_lines: Vec<LineError>,
}

/// The caller's batch, or 404.
pub(crate) async fn owned_batch(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<BatchInfo, V1Error> {
    if !is_batch_id(id) {
        return Err(V1Error::not_found("batch"));
    }
    match state.jobs.batches.get(id).await? {
        Some(info) if may_see(who, &info.owner) => Ok(info),
        _ => Err(V1Error::not_found("batch")),
    }
}

/// A batch's status, counts and times.
#[utoipa::path(
    get, path = "/v1/batches/{id}", tag = "batches",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = BatchInfo),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn get_batch(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<BatchInfo>, V1Error> {
    Ok(Json(owned_batch(&state, &who, &id).await?))
}

/// Stop a batch: its queued jobs will not run; running ones finish. The
/// status is `cancelling` until they have, then `cancelled`.
#[utoipa::path(
    post, path = "/v1/batches/{id}/cancel", tag = "batches",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = BatchInfo),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<BatchInfo>, V1Error> {
    owned_batch(&state, &who, &id).await?;
    state.jobs.batches.cancel(&id).await?;
    tracing::info!(batch = %id, by = %who.name, "batch cancel requested");
    Ok(Json(owned_batch(&state, &who, &id).await?))
}

#[allow(unused_imports)] // used by the OpenAPI annotations
use crate::v1::error::ErrorBody;
