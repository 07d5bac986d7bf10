//! Ingress metrics: every response counted by route template, method and
//! status, with its latency; `/wechat` responses also feed the alert
//! evaluator (the checklist's thresholds are about the API WeChat calls).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ferry_common::alerts::AlertEvaluator;
use ferry_common::history::History;
use ferry_common::metrics as names;

use crate::wechat::hold::HeldFor;

/// The route whose responses the alert rules judge.
pub const ALERTED_ROUTE: &str = "/wechat";

/// What each request is counted into: `/wechat`'s alert evaluator and the
/// fleet history (both in memory; neither calls Redis per request).
#[derive(Clone)]
pub struct Tracked {
    pub alerts: Arc<AlertEvaluator>,
    pub history: Arc<History>,
}

/// Middleware: counts and times each request.
pub async fn track(
    State(Tracked { alerts, history }): State<Tracked>,
    request: Request,
    next: Next,
) -> Response {
    // The template (`/admin/jobs/{id}`), never the concrete path: bounded
    // labels, and no ids or openids in them.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status();
    if route == ALERTED_ROUTE {
        // A push held for its passive answer: the wait is the AI's, and
        // the 503 after WeChat gave up on a try is how WeChat is made to
        // try again. The rules judge Ferry's own part.
        let (judged, server_error) = match response.extensions().get::<HeldFor>() {
            Some(HeldFor(held)) => (elapsed.saturating_sub(*held), false),
            None => (elapsed, status.is_server_error()),
        };
        alerts.observe(judged, server_error);
        history.wechat_request(judged, server_error);
    }
    metrics::counter!(
        names::HTTP_REQUESTS,
        "route" => route.clone(),
        "method" => method.clone(),
        "status" => status.as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!(names::HTTP_DURATION, "route" => route, "method" => method)
        .record(elapsed.as_secs_f64());
    response
}
