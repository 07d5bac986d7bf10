//! The dashboard's pages (GET): the overview and its JSON, a queue's
//! partitions, dead letters, retries and held jobs, one job looked up by
//! its id (record, notes, timeline). Every page needs a session; without one it answers
//! 401 with the sign-in form.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse};
use ferry_common::batch::BatchInfo;
use ferry_common::overview::{self, Overview};
use ferry_common::queue::QUEUES;
use ferry_common::queue::lookup::LookupError;
use serde::{Deserialize, Serialize};

use super::AdminError;
use super::html::{self, Local};
use super::session::Session;
use crate::state::AppState;

/// Entries listed on one page (dead letters, retries, held jobs).
const LISTED: usize = 200;
/// Batches on the overview, newest first.
const BATCHES_LISTED: usize = 20;

async fn read_overview(state: &AppState) -> Result<Overview, AdminError> {
    overview::read(&state.queue, &state.admin.providers)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "dashboard: cannot read the overview");
            AdminError::Unavailable
        })
}

/// The newest batches with their progress (submitted through `/v1`).
async fn recent_batches(state: &AppState) -> Result<Vec<BatchInfo>, AdminError> {
    Ok(state.jobs.batches.recent(BATCHES_LISTED).await?)
}

pub async fn overview(
    session: Session,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, AdminError> {
    let o = read_overview(&state).await?;
    let batches = recent_batches(&state).await?;
    let rules = state.alerts.status();
    let local = Local {
        rules: &rules,
        security: state.security.counts(),
        limits: &state.admin.limits,
    };
    Ok(Html(
        html::overview(&o, &batches, &local, &session).into_string(),
    ))
}

/// What the overview page polls: the fleet overview and the batches.
#[derive(Serialize)]
pub struct OverviewJson {
    #[serde(flatten)]
    overview: Overview,
    batches: Vec<BatchInfo>,
}

pub async fn overview_json(
    _session: Session,
    State(state): State<AppState>,
) -> Result<Json<OverviewJson>, AdminError> {
    Ok(Json(OverviewJson {
        overview: read_overview(&state).await?,
        batches: recent_batches(&state).await?,
    }))
}

/// The queue named in a path, if Ferry has it.
pub(super) fn known_queue(queue: &str) -> Result<&'static str, AdminError> {
    QUEUES
        .iter()
        .find(|q| **q == queue)
        .copied()
        .ok_or_else(|| AdminError::NotFound(format!("no queue {queue:?}")))
}

pub async fn dead_letters(
    session: Session,
    State(state): State<AppState>,
    Path(queue): Path<String>,
) -> Result<impl IntoResponse, AdminError> {
    let queue = known_queue(&queue)?;
    let letters = state.queue.dead_letters(queue, LISTED).await?;
    Ok(Html(
        html::dead_letters(queue, &letters, &session).into_string(),
    ))
}

/// `/admin/jobs/{id}`: one job's record, notes and timeline.
pub async fn job(
    session: Session,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AdminError> {
    show_job(&state, &session, &id).await
}

#[derive(Deserialize)]
pub struct JobQuery {
    #[serde(default)]
    id: String,
}

/// `/admin/jobs?id=...`: the overview's lookup form (a pasted id).
pub async fn job_lookup(
    session: Session,
    State(state): State<AppState>,
    Query(q): Query<JobQuery>,
) -> Result<impl IntoResponse, AdminError> {
    show_job(&state, &session, &q.id).await
}

/// A garbled id is a 400 and an unknown one a 404, each saying so; a Redis
/// failure is the usual 503.
async fn show_job(
    state: &AppState,
    session: &Session,
    id: &str,
) -> Result<Html<String>, AdminError> {
    let found = state.queue.lookup(id).await.map_err(|e| match e {
        LookupError::NotAJobId => AdminError::BadRequest(e.to_string()),
        LookupError::NoSuchJob(_) => AdminError::NotFound(e.to_string()),
        LookupError::Queue(e) => e.into(),
    })?;
    Ok(Html(html::job(&found, session).into_string()))
}

pub async fn retries(
    session: Session,
    State(state): State<AppState>,
    Path(queue): Path<String>,
) -> Result<impl IntoResponse, AdminError> {
    let queue = known_queue(&queue)?;
    let waiting = state.queue.retries(queue, LISTED).await?;
    Ok(Html(html::retries(queue, &waiting, &session).into_string()))
}

pub async fn held(
    session: Session,
    State(state): State<AppState>,
    Path(queue): Path<String>,
) -> Result<impl IntoResponse, AdminError> {
    let queue = known_queue(&queue)?;
    let held = state.queue.held(queue, LISTED).await?;
    Ok(Html(html::held(queue, &held, &session).into_string()))
}

/// A queue's partitions one by one (the overview sums them).
pub async fn partitions(
    session: Session,
    State(state): State<AppState>,
    Path(queue): Path<String>,
) -> Result<impl IntoResponse, AdminError> {
    let queue = known_queue(&queue)?;
    let view = overview::partitions(&state.queue, queue)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "dashboard: cannot read the partitions");
            AdminError::Unavailable
        })?
        .ok_or_else(|| AdminError::NotFound(format!("no queue {queue:?}")))?;
    Ok(Html(html::partitions(queue, &view, &session).into_string()))
}
