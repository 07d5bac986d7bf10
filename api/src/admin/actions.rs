//! The dashboard's state changes (POST, each with the session's CSRF token
//! from a same-origin page): signing in and out, replaying and deleting dead
//! letters, resetting and forcing open breakers. Each answers with a
//! redirect back to its page, and each change is logged under the
//! `security` target with the operator's name.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use ferry_common::fleet::Breakers;
use serde::Deserialize;

use crate::auth::Scope;

use super::AdminError;
use super::pages::known_queue;
use super::session::{self, Session};
use crate::state::AppState;

/// Longest forced opening (a day): longer is surely a typo.
const MAX_FORCED_OPEN: Duration = Duration::from_secs(24 * 3600);

#[derive(Deserialize)]
pub struct SignIn {
    token: String,
}

pub async fn sign_in(
    State(state): State<AppState>,
    connection: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Result<Response, AdminError> {
    session::same_origin(&headers)?;
    let client = connection.map(|Extension(c)| state.clients.resolve(c.0.ip(), &headers));
    // Refusals are counted and logged as security events by the check.
    let principal = state
        .auth
        .check(
            Some(form.token.trim()),
            Scope::Admin,
            client,
            &state.security,
        )
        .map_err(|_| AdminError::BadToken)?
        .name;
    let (_, id) = session::create(&state.queue, &principal, state.auth.fingerprint()).await?;
    tracing::info!(target: "security", principal = %principal, "dashboard sign-in");
    let cookie = session::set_cookie(&id, session::from_https(&headers));
    let mut response = Redirect::to("/admin").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|_| AdminError::Unavailable)?,
    );
    Ok(response)
}

#[derive(Deserialize)]
pub struct Csrf {
    csrf: String,
}

pub async fn sign_out(
    session: Session,
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<Csrf>,
) -> Result<Response, AdminError> {
    session.check(&headers, &form.csrf)?;
    session::delete(&state.queue, &session).await?;
    let mut response = Redirect::to("/admin").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&session::clear_cookie()).map_err(|_| AdminError::Unavailable)?,
    );
    Ok(response)
}

#[derive(Deserialize)]
pub struct DeadLetterForm {
    csrf: String,
    /// The dead-letter entry id; absent with `all`.
    entry: Option<String>,
    all: Option<String>,
}

pub async fn replay(
    session: Session,
    State(state): State<AppState>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(form): Form<DeadLetterForm>,
) -> Result<Response, AdminError> {
    session.check(&headers, &form.csrf)?;
    let queue = known_queue(&queue)?;
    let letters = chosen(&state, queue, &form).await?;
    let replayed = state.queue.replay(&letters).await?;
    tracing::warn!(target: "security", principal = %session.principal, queue, replayed, "dead letters replayed from the dashboard");
    Ok(see_other(&format!("/admin/dlq/{queue}")))
}

pub async fn delete(
    session: Session,
    State(state): State<AppState>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(form): Form<DeadLetterForm>,
) -> Result<Response, AdminError> {
    session.check(&headers, &form.csrf)?;
    let queue = known_queue(&queue)?;
    if form.all.is_some() {
        return Err(AdminError::BadRequest(
            "delete one dead letter at a time (`ferry dlq purge --all` deletes them all)".into(),
        ));
    }
    let letters = chosen(&state, queue, &form).await?;
    let deleted = state.queue.purge(&letters).await?;
    tracing::warn!(target: "security", principal = %session.principal, queue, deleted, "dead letters deleted from the dashboard");
    Ok(see_other(&format!("/admin/dlq/{queue}")))
}

/// The letters a form names, read back from Redis (the form's word is
/// never taken for which job an entry holds).
async fn chosen(
    state: &AppState,
    queue: &str,
    form: &DeadLetterForm,
) -> Result<Vec<ferry_common::queue::inspect::DeadLetter>, AdminError> {
    if form.all.is_some() {
        return state
            .queue
            .dead_letters(queue, usize::MAX >> 1)
            .await
            .map_err(AdminError::from);
    }
    let entry = form
        .entry
        .as_deref()
        .filter(|e| e.len() <= 41 && e.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
        .ok_or_else(|| AdminError::BadRequest("no dead-letter entry named".into()))?;
    let letter = state
        .queue
        .dead_letter(queue, entry)
        .await?
        .ok_or_else(|| {
            AdminError::NotFound("that dead letter is gone (replayed or deleted?)".into())
        })?;
    Ok(vec![letter])
}

fn known_provider<'a>(state: &'a AppState, provider: &str) -> Result<&'a str, AdminError> {
    state
        .admin
        .providers
        .iter()
        .map(|(name, _)| name.as_str())
        .find(|name| *name == provider)
        .ok_or_else(|| AdminError::NotFound(format!("no provider {provider:?} in the chain")))
}

pub async fn reset_breaker(
    session: Session,
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Csrf>,
) -> Result<Response, AdminError> {
    session.check(&headers, &form.csrf)?;
    let provider = known_provider(&state, &provider)?;
    breakers(&state).reset(provider).await?;
    tracing::warn!(target: "security", principal = %session.principal, provider, "breaker reset from the dashboard");
    Ok(see_other("/admin"))
}

#[derive(Deserialize)]
pub struct OpenForm {
    csrf: String,
    seconds: u64,
}

pub async fn open_breaker(
    session: Session,
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    Form(form): Form<OpenForm>,
) -> Result<Response, AdminError> {
    session.check(&headers, &form.csrf)?;
    let provider = known_provider(&state, &provider)?;
    let duration = Duration::from_secs(form.seconds);
    if duration.is_zero() || duration > MAX_FORCED_OPEN {
        return Err(AdminError::BadRequest("seconds: 1 to 86400".into()));
    }
    breakers(&state)
        .force_open(
            provider,
            duration,
            &format!("forced open by {}", session.principal),
        )
        .await?;
    tracing::warn!(target: "security", principal = %session.principal, provider, seconds = form.seconds, "breaker forced open from the dashboard");
    Ok(see_other("/admin"))
}

fn breakers(state: &AppState) -> Breakers {
    Breakers::new(state.queue.store().clone())
}

/// Post/redirect/get: a reload never repeats the action.
fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}
