//! The web dashboard at `/admin`, in the spirit of Sidekiq's Web UI and
//! asynqmon: queues with live depth and rates, workers, jobs held by
//! workers, retries waiting, dead letters (inspect, replay, delete), breakers (state, reset, force
//! open) with their limits, and recent alerts.
//!
//! Server-rendered HTML ([`html`], maud: every value escaped) with a little
//! inline JavaScript that polls `/admin/api/overview` to keep the numbers
//! live; no build step. Signing in takes a token with the `admin` scope
//! (`FERRY_ADMIN_TOKEN`, or a `FERRY_API_TOKENS` entry) in a form, checked
//! by the api's `Authenticator`, and sets a session cookie ([`session`]); every state change is a POST carrying the
//! session's CSRF token from a same-origin page ([`actions`]). Operators'
//! changes are logged under the `security` target.

pub mod actions;
pub mod charts;
pub mod html;
pub mod pages;
pub mod session;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::state::AppState;
use ferry_common::queue::QueueError;
use ferry_common::store::RedisError;

/// What the dashboard shows besides the queue: the providers whose
/// breakers it shows, and the limits it lists. (Who may sign in is the
/// api's [`crate::auth::Authenticator`]: any token with the `admin` scope.)
#[derive(Clone, Default)]
pub struct AdminSettings {
    /// The chain's gated providers with their fleet limits.
    pub providers: Vec<(String, ferry_common::fleet::GateSettings)>,
    /// Other limiters, as (name, setting) lines (per-IP, per-user).
    pub limits: Vec<(String, String)>,
}

/// Why an admin request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("sign in at /admin first")]
    SignInRequired,
    #[error("that token does not grant admin access")]
    BadToken,
    #[error("refused: the form is stale or came from another site; reload the page")]
    CsrfRefused,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// A sign-in refused with its reason (`ferry dev`'s one-time link).
    #[error("{0}")]
    Refused(String),
    #[error("Redis is unavailable, try again")]
    Unavailable,
}

/// A Redis failure behind a page or an action: its cause is logged here,
/// once, and the operator is answered 503 without it.
impl From<QueueError> for AdminError {
    fn from(e: QueueError) -> Self {
        tracing::warn!(error = %e, "dashboard: Redis failed");
        AdminError::Unavailable
    }
}

impl From<RedisError> for AdminError {
    fn from(e: RedisError) -> Self {
        QueueError::from(e).into()
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match self {
            AdminError::SignInRequired | AdminError::BadToken => StatusCode::UNAUTHORIZED,
            AdminError::CsrfRefused | AdminError::Refused(_) => StatusCode::FORBIDDEN,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        if status == StatusCode::UNAUTHORIZED {
            // Pages answer with the sign-in form (still a 401).
            let notice = matches!(self, AdminError::BadToken).then_some(self.to_string());
            return (status, Html(html::sign_in(notice.as_deref()).into_string())).into_response();
        }
        (
            status,
            Html(html::error_page(status, &self.to_string()).into_string()),
        )
            .into_response()
    }
}

/// The `/admin` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(pages::overview))
        .route("/admin/api/overview", get(pages::overview_json))
        .route("/admin/charts", get(charts::page))
        .route("/admin/charts/fragment", get(charts::fragment))
        .route("/admin/static/charts.js", get(charts::script))
        .route("/admin/dlq/{queue}", get(pages::dead_letters))
        .route("/admin/retries/{queue}", get(pages::retries))
        .route("/admin/held/{queue}", get(pages::held))
        .route("/admin/queues/{queue}/partitions", get(pages::partitions))
        .route("/admin/jobs", get(pages::job_lookup))
        .route("/admin/jobs/{id}", get(pages::job))
        .route("/admin/login", post(actions::sign_in))
        .route("/admin/logout", post(actions::sign_out))
        .route("/admin/dlq/{queue}/replay", post(actions::replay))
        .route("/admin/dlq/{queue}/delete", post(actions::delete))
        .route(
            "/admin/breakers/{provider}/reset",
            post(actions::reset_breaker),
        )
        .route(
            "/admin/breakers/{provider}/open",
            post(actions::open_breaker),
        )
}
