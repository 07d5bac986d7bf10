//! `/openai/v1/batches`: OpenAI's batch object over a Ferry batch.
//!
//! An OpenAI batch IS a Ferry batch (same id, owner quota, in-flight
//! limit, cancel, retention; `GET /v1/batches/{id}` shows it too), opened
//! with the fields OpenAI's shape needs kept on its hash (input file,
//! endpoint, window, metadata, validation errors). Creating one reads the
//! input file twice from Redis: once to check every line (a bad line fails
//! the batch with OpenAI's `errors` list and nothing runs), once to
//! enqueue. Statuses map from Ferry's ([`status_of`]); the 24 h completion
//! window is applied when the batch is read after it closed: the batch is
//! cancelled (its queued lines never run) and reads as `finalizing` until
//! its running lines are done, then `expired`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use ferry_common::batch::line::Rules;
use ferry_common::batch::openai::{
    BatchError, CHAT_COMPLETIONS, COMPLETION_WINDOW, InputLines, Metadata, OpenAiBatch, WINDOW,
    check_metadata, error_file_id, output_file_id,
};
use ferry_common::batch::{BatchInfo, Batches, NewBatch, is_batch_id, new_batch_id};
use serde::{Deserialize, Serialize};

use super::error::OpenAiError;
use super::lines::StoredLines;
use super::{ListParams, Listed};
use crate::auth::Principal;
use crate::state::AppState;
use crate::v1::guard::{may_see, over_quota, take_submission};

/// Jobs written per Redis call.
const CHUNK: usize = 500;
/// Validation errors listed on a failed batch (all are counted).
const MAX_ERRORS: usize = 100;
/// Largest `POST /batches` body.
const MAX_CREATE_BYTES: usize = 64 * 1024;

/// The body of `POST /openai/v1/batches`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    /// An uploaded file (`purpose=batch`) of this API key.
    pub input_file_id: String,
    /// `/v1/chat/completions`, the one endpoint served.
    pub endpoint: String,
    /// `24h`.
    pub completion_window: String,
    /// Up to 16 pairs, keys up to 64 characters, values up to 512.
    #[serde(default)]
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    pub metadata: Option<Metadata>,
    /// Refused: output files live as long as the batch.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub output_expires_after: Option<serde_json::Value>,
}

/// OpenAI's batch object.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchObject {
    pub id: String,
    /// Always `batch`.
    pub object: &'static str,
    pub endpoint: String,
    pub errors: Option<BatchErrors>,
    pub input_file_id: String,
    pub completion_window: String,
    /// `validating`, `failed`, `in_progress`, `finalizing`, `completed`,
    /// `expired`, `cancelling` or `cancelled`.
    pub status: &'static str,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub created_at: i64,
    pub in_progress_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub finalizing_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub expired_at: Option<i64>,
    pub cancelling_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub request_counts: RequestCounts,
    /// As sent, in its order.
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    pub metadata: Option<Metadata>,
}

/// Why a batch failed validation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchErrors {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<BatchError>,
}

#[derive(Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RequestCounts {
    pub total: u64,
    /// Succeeded.
    pub completed: u64,
    pub failed: u64,
}

/// The OpenAI status of a Ferry batch, and whether it was stopped by its
/// window rather than a cancel.
pub fn status_of(info: &BatchInfo) -> (&'static str, bool) {
    let expired = expired_by_window(info);
    let status = match info.status.as_str() {
        "validating" => "validating",
        "in_progress" => "in_progress",
        "cancelling" if expired => "finalizing",
        "cancelling" => "cancelling",
        "completed" => "completed",
        "cancelled" if expired => "expired",
        "cancelled" => "cancelled",
        _ => "failed",
    };
    (status, expired)
}

/// A cancel requested once the window had closed is the window's (every
/// read after the window applies it before anything else).
fn expired_by_window(info: &BatchInfo) -> bool {
    let closes = info.created_at + chrono::Duration::from_std(WINDOW).expect("24 h fits");
    info.cancel_requested_at.is_some_and(|at| at >= closes)
}

fn secs(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp())
}

/// OpenAI's batch object of an OpenAI batch.
pub fn object(info: &BatchInfo, openai: &OpenAiBatch) -> BatchObject {
    let (status, _) = status_of(info);
    let c = &info.counts;
    let finished = secs(info.finished_at);
    let cancel = secs(info.cancel_requested_at);
    let at = |when: bool, t: Option<i64>| if when { t } else { None };
    let is_final = matches!(status, "completed" | "cancelled" | "expired");
    let errors = if !openai.errors.is_empty() {
        Some(openai.errors.clone())
    } else if status == "failed" {
        // Cut short on Ferry's side (Redis failed as it was enqueued).
        Some(vec![BatchError {
            code: "internal_error".into(),
            line: None,
            message: info
                .error
                .clone()
                .unwrap_or_else(|| "the batch failed".into()),
            param: None,
        }])
    } else {
        None
    };
    BatchObject {
        id: info.id.clone(),
        object: "batch",
        endpoint: openai.endpoint.clone(),
        errors: errors.map(|data| BatchErrors {
            object: "list",
            data,
        }),
        input_file_id: openai.input_file_id.clone(),
        completion_window: openai.completion_window.clone(),
        status,
        output_file_id: (is_final && c.succeeded > 0).then(|| output_file_id(&info.id)),
        error_file_id: (is_final && c.failed + c.cancelled > 0).then(|| error_file_id(&info.id)),
        created_at: info.created_at.timestamp(),
        in_progress_at: at(status != "failed", secs(info.in_progress_at)),
        expires_at: Some(info.created_at.timestamp() + WINDOW.as_secs() as i64),
        finalizing_at: match status {
            "completed" => finished,
            "finalizing" | "expired" => cancel,
            _ => None,
        },
        completed_at: at(status == "completed", finished),
        failed_at: at(status == "failed", finished),
        expired_at: at(matches!(status, "finalizing" | "expired"), cancel),
        cancelling_at: at(matches!(status, "cancelling" | "cancelled"), cancel),
        cancelled_at: at(status == "cancelled", finished),
        request_counts: RequestCounts {
            total: c.total,
            completed: c.succeeded,
            failed: c.failed,
        },
        metadata: openai.metadata.clone(),
    }
}

/// The caller's OpenAI batch (with the window applied), or 404.
pub(super) async fn owned(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<(BatchInfo, OpenAiBatch), OpenAiError> {
    let missing = || OpenAiError::not_found("batch", id);
    if !is_batch_id(id) {
        return Err(missing());
    }
    let info = state.jobs.batches.get(id).await?.ok_or_else(missing)?;
    if !may_see(who, &info.owner) {
        return Err(missing());
    }
    let info = apply_window(&state.jobs.batches, info).await?;
    let openai = info.openai.clone().ok_or_else(missing)?;
    Ok((info, openai))
}

/// A batch still running when its window closed is cancelled now.
async fn apply_window(batches: &Batches, info: BatchInfo) -> Result<BatchInfo, OpenAiError> {
    let closes = info.created_at + chrono::Duration::from_std(WINDOW).expect("24 h fits");
    if info.openai.is_none() || info.status != "in_progress" || Utc::now() < closes {
        return Ok(info);
    }
    tracing::info!(batch = %info.id, "OpenAI batch past its 24h window: cancelling what has not run");
    batches.cancel(&info.id).await?;
    Ok(batches.get(&info.id).await?.unwrap_or(info))
}

/// Create a batch from an uploaded file.
#[utoipa::path(
    post, path = "/openai/v1/batches", tag = "openai",
    request_body = CreateBatch,
    responses(
        (status = 200, description = "The batch (`failed`, with `errors`, when a line is invalid: nothing runs)", body = BatchObject),
        (status = 400, body = OpenAiErrorBody), (status = 401, body = OpenAiErrorBody),
        (status = 403, body = OpenAiErrorBody), (status = 404, body = OpenAiErrorBody),
        (status = 429, body = OpenAiErrorBody), (status = 503, body = OpenAiErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    body: Body,
) -> Result<Json<BatchObject>, OpenAiError> {
    let bytes = axum::body::to_bytes(body, MAX_CREATE_BYTES)
        .await
        .map_err(|_| {
            OpenAiError::bad_request(format!("the body is larger than {MAX_CREATE_BYTES} bytes"))
        })?;
    let request: CreateBatch = serde_json::from_slice(&bytes)
        .map_err(|e| OpenAiError::bad_request(format!("not a valid batch request: {e}")))?;
    if request.endpoint != CHAT_COMPLETIONS {
        return Err(OpenAiError::invalid(
            "endpoint",
            format!("endpoint must be {CHAT_COMPLETIONS}: the one endpoint Ferry serves"),
        ));
    }
    if request.completion_window != COMPLETION_WINDOW {
        return Err(OpenAiError::invalid(
            "completion_window",
            format!("completion_window must be {COMPLETION_WINDOW}"),
        ));
    }
    if request.output_expires_after.is_some() {
        return Err(OpenAiError::invalid(
            "output_expires_after",
            "output_expires_after is not supported: output files are kept as long as the batch (FERRY_JOB_RETENTION)",
        ));
    }
    if let Some(m) = &request.metadata {
        check_metadata(m).map_err(|e| OpenAiError::invalid("metadata", e))?;
    }
    let files = state.jobs.batches.files();
    let file = files
        .get(&request.input_file_id)
        .await?
        .filter(|f| may_see(&who, &f.owner))
        .ok_or_else(|| {
            OpenAiError::not_found("file", &request.input_file_id).param("input_file_id")
        })?;
    if file.purpose != "batch" {
        return Err(OpenAiError::invalid(
            "input_file_id",
            "the input file must have been uploaded with purpose=batch",
        ));
    }
    take_submission(&state, &who).await?;
    let (valid, errors) = validate(&files, &file.id, &state.jobs.rules).await?;
    let mut openai = OpenAiBatch {
        input_file_id: file.id.clone(),
        endpoint: request.endpoint,
        completion_window: request.completion_window,
        metadata: request.metadata,
        errors,
    };
    if valid == 0 && openai.errors.is_empty() {
        openai.errors.push(BatchError {
            code: "empty_file".into(),
            line: None,
            message: "the input file has no requests".into(),
            param: None,
        });
    }
    let config = &state.jobs.config;
    let batches = &state.jobs.batches;
    let failed = !openai.errors.is_empty();
    let batch = NewBatch {
        id: new_batch_id(&batches.partition_of_owner(&who.name)),
        owner: who.name.clone(),
        jobs: if failed { 0 } else { valid },
        skipped: 0,
        in_flight_limit: config.jobs_in_flight,
        webhook_url: None,
    };
    if let Err(q) = batches.create_with(&batch, &openai.fields()).await? {
        return Err(over_quota(q.in_flight, config.jobs_in_flight).into());
    }
    let listed = batches.list_as_openai(&who.name, &batch.id).await;
    let written = match listed {
        Err(e) => Err(e.to_string()),
        Ok(()) if failed => {
            // Nothing runs: the batch is final at once.
            batches
                .abort(
                    &batch.id,
                    "the input file has invalid lines; nothing was run",
                )
                .await
                .map_err(|e| e.to_string())
        }
        Ok(()) => enqueue(batches, &files, &file.id, &state.jobs.rules, &batch, valid).await,
    };
    if let Err(e) = written {
        tracing::warn!(batch = %batch.id, error = %e, "OpenAI batch submission cut short; aborting it");
        tokio::spawn(crate::v1::batches::submit::abort_until_done(
            batches.clone(),
            batch.id.clone(),
        ));
        return Err(OpenAiError::unavailable());
    }
    tracing::info!(batch = %batch.id, owner = %who.name, jobs = batch.jobs, failed, "OpenAI batch submitted");
    let (info, openai) = owned(&state, &who, &batch.id).await?;
    Ok(Json(object(&info, &openai)))
}

/// Checks every line of the file: the valid lines, and the first
/// [`MAX_ERRORS`] errors.
async fn validate(
    files: &ferry_common::batch::files::Files,
    file_id: &str,
    rules: &Rules,
) -> Result<(u64, Vec<BatchError>), OpenAiError> {
    let mut lines = StoredLines::new(files.clone(), file_id);
    let mut checker = InputLines::new(rules);
    let (mut valid, mut errors) = (0u64, Vec::new());
    while let Some((number, raw)) = lines.next().await? {
        match checker.check(&raw) {
            Ok(_) => valid += 1,
            Err(e) if errors.len() < MAX_ERRORS => errors.push(e.at(number)),
            Err(_) => {}
        }
    }
    Ok((valid, errors))
}

/// Writes the jobs of a validated file, then commits the batch.
async fn enqueue(
    batches: &Batches,
    files: &ferry_common::batch::files::Files,
    file_id: &str,
    rules: &Rules,
    batch: &NewBatch,
    valid: u64,
) -> Result<(), String> {
    let mut lines = StoredLines::new(files.clone(), file_id);
    let mut checker = InputLines::new(rules);
    let (mut chunk, mut written) = (Vec::with_capacity(CHUNK), 0u64);
    loop {
        let next = lines.next().await.map_err(|e| e.to_string())?;
        if let Some((number, raw)) = &next {
            let job = checker.check(raw).map_err(|e| {
                format!("line {number} changed since it was checked: {}", e.message)
            })?;
            chunk.push(job);
        }
        if chunk.len() == CHUNK || (next.is_none() && !chunk.is_empty()) {
            batches
                .enqueue_chunk(&batch.id, &batch.owner, &chunk)
                .await
                .map_err(|e| e.to_string())?;
            written += chunk.len() as u64;
            chunk.clear();
        }
        if next.is_none() {
            break;
        }
    }
    if written != valid {
        return Err(format!(
            "the input file changed while it was read ({written} of {valid} lines)"
        ));
    }
    batches.commit(&batch.id).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// A batch.
#[utoipa::path(
    get, path = "/openai/v1/batches/{batch_id}", tag = "openai",
    params(("batch_id" = String, Path)),
    responses(
        (status = 200, body = BatchObject),
        (status = 401, body = OpenAiErrorBody), (status = 403, body = OpenAiErrorBody),
        (status = 404, body = OpenAiErrorBody), (status = 503, body = OpenAiErrorBody),
    )
)]
pub async fn get_batch(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<BatchObject>, OpenAiError> {
    let (info, openai) = owned(&state, &who, &id).await?;
    Ok(Json(object(&info, &openai)))
}

/// Cancel a batch: its queued requests are not run, running ones finish
/// (`cancelling`, then `cancelled`). A finished batch is left as it is.
#[utoipa::path(
    post, path = "/openai/v1/batches/{batch_id}/cancel", tag = "openai",
    params(("batch_id" = String, Path)),
    responses(
        (status = 200, body = BatchObject),
        (status = 401, body = OpenAiErrorBody), (status = 403, body = OpenAiErrorBody),
        (status = 404, body = OpenAiErrorBody), (status = 503, body = OpenAiErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<BatchObject>, OpenAiError> {
    owned(&state, &who, &id).await?;
    state.jobs.batches.cancel(&id).await?;
    tracing::info!(batch = %id, by = %who.name, "OpenAI batch cancel requested");
    let (info, openai) = owned(&state, &who, &id).await?;
    Ok(Json(object(&info, &openai)))
}

/// The caller's batches, newest first.
#[utoipa::path(
    get, path = "/openai/v1/batches", tag = "openai",
    params(ListParams),
    responses(
        (status = 200, body = BatchList),
        (status = 400, body = OpenAiErrorBody), (status = 401, body = OpenAiErrorBody),
        (status = 403, body = OpenAiErrorBody), (status = 503, body = OpenAiErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Query(params): Query<ListParams>,
) -> Result<Json<Listed<BatchObject>>, OpenAiError> {
    if params.order.is_some() || params.purpose.is_some() {
        return Err(OpenAiError::bad_request(
            "batches are listed newest first; order and purpose are for files",
        ));
    }
    let limit = params.limit(20, 100)?;
    let batches = &state.jobs.batches;
    let (found, has_more) = batches
        .openai_batches(&who.name, params.after.as_deref(), limit)
        .await?;
    let mut data = Vec::with_capacity(found.len());
    for info in found {
        let info = apply_window(batches, info).await?;
        if let Some(openai) = &info.openai {
            data.push(object(&info, openai));
        }
    }
    Ok(Json(Listed::new(data, has_more, |b| b.id.clone())))
}

/// `GET /openai/v1/batches`'s answer, for the OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BatchList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<BatchObject>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

#[allow(unused_imports)] // used by the OpenAPI annotations
use super::error::OpenAiErrorBody;

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_common::batch::BatchCounts;
    use ferry_common::job::from_millis;

    const CREATED_MS: i64 = 1_700_000_000_000;
    const DAY_MS: i64 = 24 * 3600 * 1000;

    fn info(status: &str, cancel_ms: Option<i64>) -> BatchInfo {
        BatchInfo {
            id: "batch_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            status: status.into(),
            owner: "ci".into(),
            counts: BatchCounts {
                total: 10,
                queued: 0,
                running: 0,
                succeeded: 7,
                failed: 2,
                cancelled: 1,
            },
            skipped: 0,
            created_at: from_millis(CREATED_MS),
            in_progress_at: Some(from_millis(CREATED_MS + 1000)),
            cancel_requested_at: cancel_ms.map(from_millis),
            finished_at: Some(from_millis(CREATED_MS + 5000)),
            webhook: false,
            error: None,
            openai: Some(OpenAiBatch::default()),
            retention: None,
        }
    }

    #[test]
    fn ferrys_statuses_map_to_openais() {
        let cases = [
            ("validating", None, "validating"),
            ("in_progress", None, "in_progress"),
            ("cancelling", Some(CREATED_MS + 10), "cancelling"),
            ("cancelled", Some(CREATED_MS + 10), "cancelled"),
            ("cancelling", Some(CREATED_MS + DAY_MS), "finalizing"),
            ("cancelled", Some(CREATED_MS + DAY_MS + 5), "expired"),
            ("completed", None, "completed"),
            ("failed", None, "failed"),
        ];
        for (ferry, cancel, openai) in cases {
            assert_eq!(status_of(&info(ferry, cancel)).0, openai, "{ferry}");
        }
    }

    #[test]
    fn timestamps_and_files_follow_the_status() {
        let openai = OpenAiBatch::default();
        let done = object(&info("completed", None), &openai);
        assert_eq!(done.completed_at, Some(1_700_000_005));
        assert_eq!(done.finalizing_at, done.completed_at);
        assert_eq!(done.expires_at, Some(1_700_000_000 + 86_400));
        assert_eq!(done.output_file_id, Some(output_file_id(&done.id)));
        assert_eq!(done.error_file_id, Some(error_file_id(&done.id)));
        assert_eq!(
            done.request_counts,
            RequestCounts {
                total: 10,
                completed: 7,
                failed: 2
            }
        );
        let running = object(&info("in_progress", None), &openai);
        assert_eq!((running.output_file_id, running.completed_at), (None, None));
        let cancelled = object(&info("cancelled", Some(CREATED_MS + 2000)), &openai);
        assert_eq!(cancelled.cancelling_at, Some(1_700_000_002));
        assert_eq!(cancelled.cancelled_at, Some(1_700_000_005));
        let expired = object(&info("cancelled", Some(CREATED_MS + DAY_MS)), &openai);
        assert_eq!(expired.expired_at, Some(1_700_086_400));
        assert_eq!(expired.cancelled_at, None);
        let failed = object(&info("failed", None), &openai);
        assert_eq!(failed.in_progress_at, None);
        assert_eq!(failed.failed_at, Some(1_700_000_005));
        assert_eq!(failed.errors.unwrap().data[0].code, "internal_error");
    }
}
