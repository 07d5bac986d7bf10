//! `POST /v1/jobs` and `GET /v1/jobs/{id}`: one chat completion, run by the
//! workers on the `batch` queue like a one-line batch, its answer on the job.
//!
//! An `Idempotency-Key` header (scoped to the API key, remembered for
//! `FERRY_API_IDEMPOTENCY_TTL`) makes a retried POST return the job the
//! first one created: the key is set in the same Redis call as the enqueue.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use ferry_common::batch::Submitted;
use ferry_common::job::{Idempotency, JobId, JobRecord, JobState};
use serde::Serialize;

use crate::auth::Principal;
use crate::state::AppState;
use crate::v1::error::V1Error;
use crate::v1::guard::{may_see, over_quota, take_submission};

/// Largest `POST /v1/jobs` body.
pub const MAX_JOB_BYTES: usize = 1024 * 1024;
/// Longest `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The body of `POST /v1/jobs` (the same fields as a batch line; no
/// `custom_id` needed).
#[derive(Serialize, utoipa::ToSchema)]
pub struct JobRequest {
    /// One provider of the deployment's chain; absent: the chain with fallback.
    pub provider: Option<String>,
    /// A model of that provider (needs `provider`).
    pub model: Option<String>,
    pub messages: Vec<ferry_common::job::kinds::ChatTurn>,
    pub parameters: Option<ferry_common::job::kinds::ChatParameters>,
}

/// A job as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: String,
    /// `queued`, `running`, `retrying`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// On success: `answer`, `provider`, `model`, `usage`, `latency_ms`.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// Why it failed (or the last attempt's error while it is retried).
    pub error: Option<String>,
}

/// The API's word for a job state (`dead` is `failed` to a caller).
pub fn status_name(state: &str) -> &str {
    match state {
        "dead" => "failed",
        other => other,
    }
}

impl From<JobRecord> for JobView {
    fn from(r: JobRecord) -> Self {
        Self {
            id: r.id.to_string(),
            status: status_name(r.state.as_str()).to_owned(),
            attempts: r.attempts,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            result: r.result,
            error: r.last_error.filter(|_| r.state != JobState::Succeeded),
        }
    }
}

/// Enqueue one chat completion.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs",
    request_body = JobRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "A repeat within a day returns the same job")),
    responses(
        (status = 201, description = "Enqueued", body = JobView),
        (status = 200, description = "The job this Idempotency-Key created before", body = JobView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn submit(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    let idempotency = idempotency_key(&headers, &state)?;
    let bytes = axum::body::to_bytes(body, MAX_JOB_BYTES)
        .await
        .map_err(|_| V1Error::too_large(MAX_JOB_BYTES as u64))?;
    let request = state
        .jobs
        .rules
        .check(&bytes, false)
        .map_err(V1Error::bad_request)?;
    take_submission(&state, &who).await?;
    let limit = state.jobs.config.jobs_in_flight;
    let submitted = state
        .jobs
        .batches
        .submit_job(&who.name, &request.payload, idempotency.as_ref(), limit)
        .await?;
    let (id, status) = match submitted {
        Submitted::Created(id) => (id, StatusCode::CREATED),
        Submitted::Existing(id) => (id, StatusCode::OK),
        Submitted::OverQuota(q) => return Err(over_quota(q.in_flight, limit)),
    };
    let record = state
        .queue
        .job(&id)
        .await?
        .ok_or_else(|| V1Error::not_found("job"))?;
    Ok((status, Json(JobView::from(record))).into_response())
}

fn idempotency_key(headers: &HeaderMap, state: &AppState) -> Result<Option<Idempotency>, V1Error> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .filter(|k| k.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| {
            V1Error::bad_request(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            ))
        })?;
    Ok(Some(Idempotency {
        key: key.to_owned(),
        ttl: state.jobs.config.idempotency_ttl,
    }))
}

/// A job's status and, once finished, its answer or error.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job id, `batch:<ULID>`")),
    responses(
        (status = 200, body = JobView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn get_job(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, V1Error> {
    let id: JobId = id.parse().map_err(|_| V1Error::not_found("job"))?;
    // Another key's job is answered like a missing one: ids cannot be probed.
    let owner_key = state.jobs.batches.owner_key_of(&id).await?;
    let mine = owner_key.as_deref()
        == Some(
            state
                .queue
                .keys()
                .queue(id.queue())
                .owner_in_flight(&who.name)
                .as_str(),
        );
    if !mine && !may_see(&who, "") {
        return Err(V1Error::not_found("job"));
    }
    let record = state
        .queue
        .job(&id)
        .await?
        .ok_or_else(|| V1Error::not_found("job"))?;
    Ok(Json(JobView::from(record)))
}

#[allow(unused_imports)] // used by the OpenAPI annotations
use crate::v1::error::ErrorBody;
