//! Authentication and per-API-key quotas of `/v1`, answering in `/v1`'s
//! JSON error shape.
//!
//! The bearer check is `auth::Authenticator`'s (the same tokens, scopes and
//! security events as every other API); the principal's name is the API key
//! identity for quotas and ownership. Submissions per minute go through the
//! fleet-wide GCRA limiter (`ferry_limit` on `api_key:<name>`); jobs in
//! flight are checked by the enqueue calls themselves.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferry_common::fleet::Verdict;

use crate::auth::{self, Principal, Scope};
use crate::state::AppState;
use crate::v1::error::V1Error;

/// Middleware state: the app and the scope a route group needs.
#[derive(Clone)]
pub struct V1Guard {
    pub state: AppState,
    pub scope: Scope,
}

/// Admits requests whose bearer token has the guard's scope and puts the
/// [`Principal`] in the request's extensions.
pub async fn require(State(guard): State<V1Guard>, mut request: Request, next: Next) -> Response {
    match auth::authenticate(&guard.state, &request, guard.scope) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => V1Error::from(e).into_response(),
    }
}

/// Takes one submission from the caller's per-minute budget (429 over it).
/// If Redis cannot answer, the submission itself will fail with 503.
pub async fn take_submission(state: &AppState, who: &Principal) -> Result<(), V1Error> {
    let Some(limit) = &state.jobs.submissions else {
        return Ok(());
    };
    let key = state.queue.keys().api_key_limit(&who.name);
    match limit.check(&key).await {
        Ok(Verdict::Allowed) => Ok(()),
        Ok(Verdict::Limited(wait)) => Err(V1Error::rate_limited(
            "too many submissions for this API key; retry later",
            wait.as_secs_f64().ceil() as u64,
        )),
        Err(e) => {
            tracing::warn!(error = %e, "submission limiter unavailable");
            Err(V1Error::unavailable())
        }
    }
}

/// Whether `who` may see `owner`'s jobs and batches (its own, or admin).
pub fn may_see(who: &Principal, owner: &str) -> bool {
    who.name == owner || who.scopes.allows(Scope::Admin)
}

/// The refusal of a submission over the key's jobs-in-flight limit.
pub fn over_quota(in_flight: u64, limit: u32) -> V1Error {
    V1Error::rate_limited(
        format!(
            "this API key has {in_flight} jobs in flight and may have at most {limit}; retry when some have finished"
        ),
        5,
    )
}
