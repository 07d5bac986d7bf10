//! `GET /v1/batches/{id}/results`: one JSONL line per custom_id, in line
//! order, streamed a page of jobs at a time (never the whole batch in
//! memory): `{"custom_id","job_id","status","response","error"}`.
//! Unfinished jobs appear with their current status; a caller polls the
//! batch's status until it is final, then reads the results once.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ferry_common::batch::{Batches, JobOutcome};
use serde_json::json;

use super::owned_batch;
use crate::auth::Principal;
use crate::state::AppState;
use crate::v1::error::V1Error;
use crate::v1::jobs::status_name;

/// Jobs read per Redis round trip.
const PAGE: usize = 500;

/// A batch's results as JSONL.
#[utoipa::path(
    get, path = "/v1/batches/{id}/results", tag = "batches",
    params(("id" = String, Path)),
    responses(
        (status = 200, content_type = "application/x-ndjson",
         description = "One line per custom_id: {custom_id, job_id, status, response, error}", body = String),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn results(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, V1Error> {
    owned_batch(&state, &who, &id).await?;
    let batches = state.jobs.batches.clone();
    let pages = futures::stream::unfold(Some(0usize), move |next| {
        let batches = batches.clone();
        let id = id.clone();
        async move {
            let start = next?;
            Some(match page(&batches, &id, start).await {
                Ok((bytes, 0)) => (Ok(bytes), None),
                Ok((bytes, count)) => (Ok(bytes), Some(start + count)),
                // The response is already under way: cut it, so the caller
                // sees a failed transfer rather than a short file.
                Err(e) => (Err(std::io::Error::other(e.to_string())), None),
            })
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(pages),
    )
        .into_response())
}

async fn page(
    batches: &Batches,
    id: &str,
    start: usize,
) -> Result<(Bytes, usize), ferry_common::queue::QueueError> {
    let outcomes = batches.outcomes(id, start, PAGE).await?;
    let mut out = Vec::new();
    for o in &outcomes {
        serde_json::to_writer(&mut out, &line(o)).expect("a result line serializes");
        out.push(b'\n');
    }
    Ok((Bytes::from(out), outcomes.len()))
}

fn line(o: &JobOutcome) -> serde_json::Value {
    let status = match o.state.as_str() {
        "retrying" => "queued",
        other => status_name(other),
    };
    let error = match status {
        "failed" | "cancelled" => o
            .error
            .as_ref()
            .map(|message| json!({ "message": message })),
        _ => None,
    };
    json!({
        "custom_id": o.custom_id,
        "job_id": o.job_id,
        "status": status,
        "response": if status == "succeeded" { o.result.clone() } else { None },
        "error": error,
    })
}

#[allow(unused_imports)] // used by the OpenAPI annotations
use crate::v1::error::ErrorBody;
