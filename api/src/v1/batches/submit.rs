//! `POST /v1/batches`: a JSONL body in, a batch out, or nothing at all.
//!
//! 1. The whole body is read and every line validated ([`super::intake`]);
//!    a bad line refuses the batch whole (400, each bad line's number and
//!    reason) unless `skip_invalid=true`. Redis has not been touched.
//! 2. `ferry_batch_create` opens the batch (`validating`) and reserves its
//!    jobs against the API key's in-flight limit in one call (429 over it).
//! 3. The valid lines go in chunks, one `ferry_batch_enqueue` call each.
//! 4. `ferry_batch_commit` makes the total final (`in_progress`).
//!
//! If Redis fails during 3 or 4 the caller gets 503 and the batch is aborted
//! (`failed`): the jobs already written are cancelled when a worker meets
//! them, so a half-written batch never runs on.

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_common::batch::{NewBatch, new_batch_id};
use serde::Deserialize;

use super::BatchCreated;
use super::intake::{self, Limits};
use crate::auth::Principal;
use crate::state::AppState;
use crate::v1::error::V1Error;
use crate::v1::guard::{over_quota, take_submission};

/// Jobs written per Redis call.
const CHUNK: usize = 500;
/// Longest webhook URL.
const MAX_WEBHOOK_URL: usize = 2048;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SubmitParams {
    /// Enqueue the valid lines and report the invalid ones instead of
    /// refusing the batch.
    #[serde(default)]
    pub skip_invalid: Option<String>,
    /// POSTed a signed summary when the batch finishes (http or https; a
    /// public address, or one in the deployment's
    /// FERRY_WEBHOOK_ALLOW_NETWORKS; redirects are not followed).
    #[serde(default)]
    pub webhook_url: Option<String>,
}

/// Submit a JSONL batch: one request per line
/// (`{"custom_id", "provider"?, "model"?, "messages", "parameters"?}`).
#[utoipa::path(
    post, path = "/v1/batches", tag = "batches",
    params(SubmitParams),
    request_body(content = String, content_type = "application/x-ndjson", description = "One request per line"),
    responses(
        (status = 201, body = BatchCreated),
        (status = 400, description = "Invalid lines: nothing was enqueued", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn submit(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Query(params): Query<SubmitParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    let config = &state.jobs.config;
    let skip_invalid = match params.skip_invalid.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => return Err(V1Error::bad_request("skip_invalid must be true or false")),
    };
    let webhook_url = params
        .webhook_url
        .map(|u| check_webhook(&state, u))
        .transpose()?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.batch_max_bytes) {
        return Err(V1Error::too_large(config.batch_max_bytes));
    }
    take_submission(&state, &who).await?;
    let limits = Limits {
        max_bytes: config.batch_max_bytes,
        max_lines: config.batch_max_lines,
    };
    let read = intake::read(body, &state.jobs.rules, limits).await?;
    if read.invalid > 0 && !skip_invalid {
        let mut e = V1Error::new(
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            format!(
                "{} of {} lines are invalid; nothing was enqueued (fix them, or submit with skip_invalid=true)",
                read.invalid,
                read.invalid + read.valid
            ),
        );
        e.lines = read.errors;
        return Err(e);
    }
    if read.valid == 0 {
        let mut e = V1Error::new(
            StatusCode::BAD_REQUEST,
            "empty_batch",
            "the batch has no valid lines",
        );
        e.lines = read.errors;
        return Err(e);
    }
    let batch = NewBatch {
        id: new_batch_id(&state.jobs.batches.partition_of_owner(&who.name)),
        owner: who.name.clone(),
        jobs: read.valid,
        skipped: read.invalid,
        in_flight_limit: config.jobs_in_flight,
        webhook_url,
    };
    let batches = &state.jobs.batches;
    if let Err(q) = batches.create(&batch).await? {
        return Err(over_quota(q.in_flight, config.jobs_in_flight));
    }
    let skipped_lines = read.errors.clone();
    if let Err(e) = enqueue(&state, &batch, read).await {
        tracing::warn!(batch = %batch.id, error = %e, "batch submission cut short; aborting it");
        tokio::spawn(abort_until_done(batches.clone(), batch.id.clone()));
        return Err(V1Error::unavailable());
    }
    let info = batches
        .get(&batch.id)
        .await?
        .ok_or_else(V1Error::unavailable)?;
    tracing::info!(batch = %batch.id, owner = %who.name, jobs = batch.jobs, skipped = batch.skipped, "batch submitted");
    Ok((
        StatusCode::CREATED,
        Json(BatchCreated {
            batch: info,
            skipped_lines,
        }),
    )
        .into_response())
}

/// Aborts a batch whose submission was cut short, trying for a while if
/// Redis is still down (past that, reading the batch fails it, see
/// `ferry_common::batch::ABANDONED_AFTER`).
pub(crate) async fn abort_until_done(batches: ferry_common::batch::Batches, id: String) {
    let mut wait = std::time::Duration::from_millis(200);
    for _ in 0..10 {
        match batches
            .abort(&id, "the submission was cut short; resubmit")
            .await
        {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(batch = %id, error = %e, "could not abort the batch yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
    tracing::error!(batch = %id, "could not abort the batch; it fails when next read");
}

async fn enqueue(state: &AppState, batch: &NewBatch, read: intake::Intake) -> Result<(), String> {
    let batches = &state.jobs.batches;
    let mut chunks = read.chunks(CHUNK);
    loop {
        let chunk = chunks.next().await.map_err(|e| format!("spool: {e}"))?;
        if chunk.is_empty() {
            break;
        }
        batches
            .enqueue_chunk(&batch.id, &batch.owner, &chunk)
            .await
            .map_err(|e| e.to_string())?;
    }
    batches.commit(&batch.id).await.map_err(|e| e.to_string())?;
    Ok(())
}

fn check_webhook(state: &AppState, url: String) -> Result<String, V1Error> {
    if state.jobs.config.webhook_secret.is_none() {
        return Err(V1Error::bad_request(
            "webhooks are not enabled on this deployment (FERRY_WEBHOOK_SECRET is not set)",
        ));
    }
    let parsed =
        url::Url::parse(&url).map_err(|_| V1Error::bad_request("webhook_url is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || url.len() > MAX_WEBHOOK_URL {
        return Err(V1Error::bad_request(format!(
            "webhook_url must be an http(s) URL of at most {MAX_WEBHOOK_URL} characters"
        )));
    }
    // A host name is checked by the worker when it resolves it.
    state
        .jobs
        .config
        .webhook_targets()
        .check_literal(&parsed)
        .map_err(|refused| V1Error::bad_request(format!("webhook_url: {refused}")))?;
    Ok(url)
}

#[allow(unused_imports)] // used by the OpenAPI annotations
use crate::v1::error::ErrorBody;
