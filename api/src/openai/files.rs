//! `/openai/v1/files`: uploads for batches (multipart `file` +
//! `purpose=batch`), kept in Redis ([`ferry_common::batch::files`]), and
//! the output and error files of batches, made from their results when
//! read ([`super::output`]).
//!
//! An upload is streamed: each piece goes to Redis as it arrives, and is
//! checked like a `/v1` batch body on the way (`FERRY_BATCH_MAX_BYTES`,
//! `FERRY_BATCH_MAX_LINES`, lines of at most 1 MiB). Its lines are checked
//! as requests when a batch is made of it. A file belongs to the API key
//! that uploaded it; another key gets 404.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_common::batch::files::{FileInfo, Upload};
use ferry_common::batch::openai::{FileRef, parse_file_id};
use serde::Serialize;

use super::error::OpenAiError;
use super::lines::{LineProblem, LineScan};
use super::multipart::{Multipart, MultipartError, boundary};
use super::output::{self, Which};
use super::{ListParams, Listed, batches};
use crate::auth::Principal;
use crate::state::AppState;
use crate::v1::batches::intake::MAX_LINE_BYTES;
use crate::v1::guard::{may_see, take_submission};

/// What a multipart body may hold besides the file's content.
const FORM_SLACK: u64 = 64 * 1024;
/// Shortest and longest `expires_after[seconds]` (OpenAI's bounds).
const EXPIRES_AFTER: std::ops::RangeInclusive<u64> = 3600..=2_592_000;
/// Longest file name kept.
const MAX_FILENAME: usize = 255;
/// Chunks read per Redis round trip when a file is downloaded.
const CHUNKS_PER_READ: usize = 4;

/// OpenAI's file object.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FileObject {
    pub id: String,
    /// Always `file`.
    pub object: &'static str,
    pub bytes: u64,
    pub created_at: i64,
    /// When Ferry drops it (uploads: `FERRY_JOB_RETENTION` or the
    /// upload's `expires_after`; output files: with their batch).
    pub expires_at: Option<i64>,
    pub filename: String,
    /// `batch` (uploads) or `batch_output` (a batch's output and error
    /// files).
    pub purpose: String,
    /// Always `processed` (deprecated by OpenAI, still sent).
    pub status: &'static str,
    pub status_details: Option<String>,
}

impl FileObject {
    fn uploaded(f: &FileInfo) -> Self {
        Self {
            id: f.id.clone(),
            object: "file",
            bytes: f.bytes,
            created_at: f.created_at.timestamp(),
            expires_at: Some(f.expires_at.timestamp()),
            filename: f.filename.clone(),
            purpose: f.purpose.clone(),
            status: "processed",
            status_details: None,
        }
    }
}

/// The answer to `DELETE /openai/v1/files/{id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FileDeleted {
    pub id: String,
    /// Always `file`.
    pub object: &'static str,
    pub deleted: bool,
}

/// `GET /openai/v1/files`'s answer, for the OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FileList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<FileObject>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

/// What the form said besides the file.
struct Form {
    filename: Option<String>,
    purpose: Option<String>,
    anchor: Option<String>,
    seconds: Option<String>,
    lines: u64,
}

/// Upload a file for a batch: multipart `file` and `purpose=batch`
/// (optionally `expires_after[anchor]=created_at` and
/// `expires_after[seconds]`).
#[utoipa::path(
    post, path = "/openai/v1/files", tag = "openai",
    request_body(content = String, content_type = "multipart/form-data",
        description = "`file` (JSONL, one request per line) and `purpose=batch`"),
    responses(
        (status = 200, body = FileObject),
        (status = 400, body = OpenAiErrorBody), (status = 401, body = OpenAiErrorBody),
        (status = 403, body = OpenAiErrorBody), (status = 413, body = OpenAiErrorBody),
        (status = 429, body = OpenAiErrorBody), (status = 503, body = OpenAiErrorBody),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<FileObject>, OpenAiError> {
    let config = &state.jobs.config;
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(boundary)
        .ok_or_else(|| {
            OpenAiError::bad_request(
                "the body must be multipart/form-data with a file and purpose=batch",
            )
        })?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.batch_max_bytes + FORM_SLACK) {
        return Err(OpenAiError::too_large(config.batch_max_bytes));
    }
    take_submission(&state, &who).await?;
    let files = state.jobs.batches.files();
    let mut upload = files.begin(&who.name);
    let mut form = Multipart::new(body, &boundary, config.batch_max_bytes + FORM_SLACK);
    let read = read_form(
        &mut form,
        &mut upload,
        config.batch_max_bytes,
        config.batch_max_lines,
    )
    .await
    .and_then(checked);
    let (filename, lines, ttl) = match read {
        Ok(done) => done,
        Err(e) => {
            upload.discard().await;
            return Err(e);
        }
    };
    let info = upload.finish(&filename, "batch", lines, ttl).await?;
    tracing::info!(file = %info.id, owner = %who.name, bytes = info.bytes, lines, "OpenAI batch file uploaded");
    Ok(Json(FileObject::uploaded(&info)))
}

async fn read_form(
    form: &mut Multipart,
    upload: &mut Upload,
    max_bytes: u64,
    max_lines: u64,
) -> Result<Form, OpenAiError> {
    let mut out = Form {
        filename: None,
        purpose: None,
        anchor: None,
        seconds: None,
        lines: 0,
    };
    let mut has_file = false;
    while let Some(part) = form.next_part().await.map_err(form_error)? {
        let small = |name: &str, value: Option<String>| {
            value.ok_or_else(|| OpenAiError::invalid(name, format!("{name} is too long")))
        };
        match part.name.as_str() {
            "file" if !has_file => {
                has_file = true;
                out.filename = Some(part.filename.unwrap_or_default());
                let mut scan = LineScan::new(MAX_LINE_BYTES, max_lines);
                while let Some(piece) = form.chunk().await.map_err(form_error)? {
                    if upload.bytes() + piece.len() as u64 > max_bytes {
                        return Err(OpenAiError::too_large(max_bytes));
                    }
                    scan.feed(&piece).map_err(|p| match p {
                        LineProblem::TooLong(n) => OpenAiError::invalid(
                            "file",
                            format!("line {n} is longer than {MAX_LINE_BYTES} bytes"),
                        ),
                        LineProblem::TooMany(max) => OpenAiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "invalid_request_error",
                            format!("a batch file holds at most {max} requests"),
                        )
                        .param("file"),
                    })?;
                    upload.write(&piece).await?;
                }
                out.lines = scan.lines();
            }
            "purpose" => {
                out.purpose = Some(small(
                    "purpose",
                    form.small_value(64).await.map_err(form_error)?,
                )?)
            }
            "expires_after[anchor]" => {
                out.anchor = Some(small(
                    "expires_after[anchor]",
                    form.small_value(32).await.map_err(form_error)?,
                )?)
            }
            "expires_after[seconds]" => {
                out.seconds = Some(small(
                    "expires_after[seconds]",
                    form.small_value(32).await.map_err(form_error)?,
                )?)
            }
            "file" => return Err(OpenAiError::invalid("file", "send one file per upload")),
            other => {
                let name: String = other.chars().take(40).collect();
                return Err(OpenAiError::invalid(
                    &name,
                    format!(
                        "unknown form field {name:?}: an upload has file and purpose (and expires_after)"
                    ),
                ));
            }
        }
    }
    if !has_file {
        return Err(OpenAiError::invalid("file", "file is required"));
    }
    Ok(out)
}

/// The form's choices, checked: file name, lines, how long to keep it.
fn checked(form: Form) -> Result<(String, u64, Option<Duration>), OpenAiError> {
    match form.purpose.as_deref() {
        Some("batch") => {}
        None => return Err(OpenAiError::invalid("purpose", "purpose is required")),
        Some(_) => {
            return Err(OpenAiError::invalid(
                "purpose",
                "purpose must be batch: Ferry keeps files for the Batch API only",
            ));
        }
    }
    let ttl = match (form.anchor.as_deref(), form.seconds.as_deref()) {
        (None, None) => None,
        (Some("created_at"), Some(secs)) => {
            let secs: u64 = secs
                .trim()
                .parse()
                .ok()
                .filter(|s| EXPIRES_AFTER.contains(s))
                .ok_or_else(|| {
                    OpenAiError::invalid(
                        "expires_after[seconds]",
                        format!(
                            "expires_after[seconds] must be from {} to {}",
                            EXPIRES_AFTER.start(),
                            EXPIRES_AFTER.end()
                        ),
                    )
                })?;
            Some(Duration::from_secs(secs))
        }
        _ => {
            return Err(OpenAiError::invalid(
                "expires_after",
                "expires_after needs anchor=created_at and seconds",
            ));
        }
    };
    Ok((
        filename(form.filename.as_deref().unwrap_or("")),
        form.lines,
        ttl,
    ))
}

/// The name to keep: no directories, no control characters, not too long.
fn filename(given: &str) -> String {
    let base = given.rsplit(['/', '\\']).next().unwrap_or("");
    let name: String = base
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FILENAME)
        .collect();
    if name.trim().is_empty() {
        "upload.jsonl".into()
    } else {
        name
    }
}

fn form_error(e: MultipartError) -> OpenAiError {
    match e {
        MultipartError::TooLarge(_) => OpenAiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "the upload is too large",
        )
        .code("file_too_large"),
        other => OpenAiError::bad_request(other.to_string()),
    }
}

/// A file the caller may see: an upload, or a batch's output or error file.
enum Found {
    Uploaded(FileInfo),
    Generated {
        object: FileObject,
        batch: String,
        which: Which,
        expired: bool,
    },
}

/// `measure`: count a generated file's bytes (made in full to be counted).
async fn find(
    state: &AppState,
    who: &Principal,
    id: &str,
    measure: bool,
) -> Result<Found, OpenAiError> {
    let missing = || OpenAiError::not_found("file", id);
    let (batch, which) = match parse_file_id(id).ok_or_else(missing)? {
        FileRef::Uploaded(_) => {
            let info = state.jobs.batches.files().get(id).await?;
            return match info {
                Some(f) if may_see(who, &f.owner) => Ok(Found::Uploaded(f)),
                _ => Err(missing()),
            };
        }
        FileRef::Output(batch) => (batch, Which::Output),
        FileRef::Errors(batch) => (batch, Which::Errors),
    };
    let (info, openai) = batches::owned(state, who, &batch)
        .await
        .map_err(|e| match e.status {
            StatusCode::NOT_FOUND => missing(),
            _ => e,
        })?;
    let view = batches::object(&info, &openai);
    let offered = match which {
        Which::Output => view.output_file_id.as_deref(),
        Which::Errors => view.error_file_id.as_deref(),
    };
    if offered != Some(id) {
        return Err(missing());
    }
    let (_, expired) = batches::status_of(&info);
    let bytes = match measure {
        true => output::size(&state.jobs.batches, &batch, which, expired).await?,
        false => 0,
    };
    let finished = info.finished_at.unwrap_or(info.created_at);
    let retention = info.retention.unwrap_or(state.jobs.batches.retention());
    let suffix = match which {
        Which::Output => "output",
        Which::Errors => "errors",
    };
    Ok(Found::Generated {
        object: FileObject {
            id: id.to_owned(),
            object: "file",
            bytes,
            created_at: finished.timestamp(),
            expires_at: Some(finished.timestamp() + retention.as_secs() as i64),
            filename: format!("{batch}_{suffix}.jsonl"),
            purpose: "batch_output".into(),
            status: "processed",
            status_details: None,
        },
        batch,
        which,
        expired,
    })
}

/// A file's description.
#[utoipa::path(
    get, path = "/openai/v1/files/{file_id}", tag = "openai",
    params(("file_id" = String, Path)),
    responses(
        (status = 200, body = FileObject),
        (status = 401, body = OpenAiErrorBody), (status = 403, body = OpenAiErrorBody),
        (status = 404, body = OpenAiErrorBody), (status = 503, body = OpenAiErrorBody),
    )
)]
pub async fn get_file(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<FileObject>, OpenAiError> {
    Ok(Json(match find(&state, &who, &id, true).await? {
        Found::Uploaded(f) => FileObject::uploaded(&f),
        Found::Generated { object, .. } => object,
    }))
}

/// A file's content: an upload as it was sent, or a batch's output or
/// error file (JSONL, one line per request, in input order).
#[utoipa::path(
    get, path = "/openai/v1/files/{file_id}/content", tag = "openai",
    params(("file_id" = String, Path)),
    responses(
        (status = 200, content_type = "application/octet-stream", body = String),
        (status = 401, body = OpenAiErrorBody), (status = 403, body = OpenAiErrorBody),
        (status = 404, body = OpenAiErrorBody), (status = 503, body = OpenAiErrorBody),
    )
)]
pub async fn content(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, OpenAiError> {
    let octets = [(header::CONTENT_TYPE, "application/octet-stream")];
    match find(&state, &who, &id, false).await? {
        Found::Uploaded(f) => {
            let files = state.jobs.batches.files();
            let chunks = futures::stream::unfold(Some(0usize), move |next| {
                let (files, id) = (files.clone(), f.id.clone());
                async move {
                    let start = next?;
                    Some(match files.chunks(&id, start, CHUNKS_PER_READ).await {
                        Ok(chunks) if chunks.is_empty() => (Ok(Bytes::new()), None),
                        Ok(chunks) => {
                            let more = chunks.len() == CHUNKS_PER_READ;
                            let next = more.then_some(start + chunks.len());
                            (Ok(Bytes::from(chunks.concat())), next)
                        }
                        Err(e) => (Err(std::io::Error::other(e.to_string())), None),
                    })
                }
            });
            Ok((
                octets,
                [(header::CONTENT_LENGTH, f.bytes.to_string())],
                Body::from_stream(chunks),
            )
                .into_response())
        }
        Found::Generated {
            batch,
            which,
            expired,
            ..
        } => {
            let lines = output::stream(state.jobs.batches.clone(), batch, which, expired);
            Ok((octets, Body::from_stream(lines)).into_response())
        }
    }
}

/// Delete an uploaded file (batches made of it are not affected).
#[utoipa::path(
    delete, path = "/openai/v1/files/{file_id}", tag = "openai",
    params(("file_id" = String, Path)),
    responses(
        (status = 200, body = FileDeleted),
        (status = 400, description = "A batch's output or error file: it goes with its batch", body = OpenAiErrorBody),
        (status = 401, body = OpenAiErrorBody), (status = 403, body = OpenAiErrorBody),
        (status = 404, body = OpenAiErrorBody), (status = 503, body = OpenAiErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<FileDeleted>, OpenAiError> {
    match find(&state, &who, &id, false).await? {
        Found::Uploaded(f) => {
            let deleted = state.jobs.batches.files().delete(&f.id, &f.owner).await?;
            tracing::info!(file = %f.id, by = %who.name, "OpenAI batch file deleted");
            Ok(Json(FileDeleted {
                id: f.id,
                object: "file",
                deleted,
            }))
        }
        Found::Generated { .. } => Err(OpenAiError::bad_request(
            "a batch's output and error files are made from its results: they go when the batch does (FERRY_JOB_RETENTION)",
        )),
    }
}

/// The caller's uploaded files (`purpose=batch`), newest first unless
/// `order=asc`. Output and error files are found from their batch.
#[utoipa::path(
    get, path = "/openai/v1/files", tag = "openai",
    params(ListParams),
    responses(
        (status = 200, body = FileList),
        (status = 400, body = OpenAiErrorBody), (status = 401, body = OpenAiErrorBody),
        (status = 403, body = OpenAiErrorBody), (status = 503, body = OpenAiErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Query(params): Query<ListParams>,
) -> Result<Json<Listed<FileObject>>, OpenAiError> {
    let limit = params.limit(10_000, 10_000)?;
    let newest_first = match params.order.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => return Err(OpenAiError::invalid("order", "order must be asc or desc")),
    };
    if params.purpose.as_deref().is_some_and(|p| p != "batch") {
        return Ok(Json(Listed::new(Vec::new(), false, |f: &FileObject| {
            f.id.clone()
        })));
    }
    let (found, has_more) = state
        .jobs
        .batches
        .files()
        .list(&who.name, params.after.as_deref(), limit, newest_first)
        .await?;
    let data = found.iter().map(FileObject::uploaded).collect();
    Ok(Json(Listed::new(data, has_more, |f| f.id.clone())))
}

#[allow(unused_imports)] // used by the OpenAPI annotations
use super::error::OpenAiErrorBody;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_keeps_no_directory_and_no_control_characters() {
        assert_eq!(filename("../../etc/passwd"), "passwd");
        assert_eq!(filename("C:\\data\\in.jsonl"), "in.jsonl");
        assert_eq!(filename("a\nb.jsonl"), "ab.jsonl");
        assert_eq!(filename(""), "upload.jsonl");
        assert_eq!(filename(&"x".repeat(300)).len(), MAX_FILENAME);
    }
}
