//! `ferry-api`: the HTTP ingress.
//!
//! It verifies and acknowledges every WeChat push at once and enqueues the
//! work; it never calls an AI provider itself. Routes:
//! - `GET /wechat` URL verification, `POST /wechat` pushed messages
//!   ([`wechat`]), behind the per-IP limiter of failed verifications
//!   ([`limiter`]);
//! - `GET /healthz`, `GET /readyz` ([`health`]) and `GET /metrics`
//!   ([`metrics`], bearer token with the `read` scope), together [`ops`],
//!   which a worker's admin port serves too (there without a token);
//! - `/admin`: the dashboard behind the admin token ([`admin`]);
//! - `GET /dev/replies/{openid}` only under `ferry dev` ([`dev`]).
//!
//! Every matched route is counted and timed ([`metrics::http`]); `/wechat`
//! responses also feed the alert evaluator, which a background task of
//! [`serve`] ticks once a second.
//!
//! Concurrent pushes share Redis round trips ([`batcher`]). When Redis does
//! not take a push within the acknowledgement budget, the push goes to a
//! local spool on disk ([`spool`], via [`handoff`]) and a background task of
//! [`serve`] replays it into Redis later.

pub mod admin;
pub mod auth;
pub mod batcher;
pub mod client_ip;
pub mod dev;
pub mod error;
pub mod handoff;
pub mod health;
pub mod limiter;
pub mod metrics;
pub mod openai;
pub mod ops;
pub mod security;
pub mod spool;
pub mod state;
pub mod v1;
pub mod wechat;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use axum::serve::ListenerExt;
use ferry_common::alerts::{AlertEvaluator, AlertLog, AlertState};
use tokio_util::sync::CancellationToken;

pub use auth::Authenticator;
pub use batcher::{Durability, EnqueueBatcher};
pub use client_ip::{ClientIp, ClientIpResolver};
pub use error::ApiError;
pub use limiter::IpLimiter;
pub use security::{SecurityCounters, SecurityCounts, SecurityEvent};
pub use spool::{Spool, SpoolStats};
pub use state::{AppState, ReplyTexts, SharedState, WeChatIngress};
pub use v1::JobsApi;

/// Every route, with the body limit applied (an oversized body gets 413).
/// Serve it with connection info (as [`serve`] does) for the per-IP limit.
pub fn router(state: AppState) -> Router {
    let wechat = Router::new()
        .route("/wechat", get(wechat::verify_url).post(wechat::receive))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limiter::guard,
        ));
    let mut app = Router::new()
        .merge(wechat)
        .merge(v1::router(state.clone()))
        .merge(openai::router(state.clone()))
        .merge(admin::router());
    if state.dev_outbox {
        app = app.route("/dev/replies/{openid}", get(dev::replies));
    }
    if state.dev_sign_in.is_some() {
        app = app.route("/admin/dev-sign-in", get(dev::sign_in));
    }
    let metrics =
        ops::metrics_router(Arc::clone(&state.ops)).route_layer(middleware::from_fn_with_state(
            auth::Guard::new(state.clone(), auth::Scope::Read),
            auth::guard,
        ));
    app.with_state(state.clone())
        .merge(ops::health_router(Arc::clone(&state.ops)))
        .merge(metrics)
        .route_layer(middleware::from_fn_with_state(
            metrics::http::Tracked {
                alerts: Arc::clone(&state.alerts),
                history: Arc::clone(state.queue.store().history()),
            },
            metrics::http::track,
        ))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
}

/// Serves until `shutdown` is cancelled, then finishes in-flight requests.
/// Runs the api's background tasks meanwhile: the spool drainer (which gets
/// one last pass after the final request) and the limiter's pruning.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "api listening");
    let drainer_stop = CancellationToken::new();
    let drainer = tokio::spawn(spool::drainer::run(
        Arc::clone(&state.spool),
        state.queue.clone(),
        drainer_stop.clone(),
    ));
    tokio::spawn(wechat::hold::listen(
        Arc::clone(&state.passive),
        shutdown.clone(),
    ));
    if let Some(limiter) = &state.limiter {
        tokio::spawn(limiter::prune_until(Arc::clone(limiter), shutdown.clone()));
    }
    tokio::spawn(evaluate_alerts(
        Arc::clone(&state.alerts),
        AlertLog::new(state.queue.store().clone()),
        shutdown.clone(),
    ));
    // The fleet history's counts (/wechat, jobs in, alerts), added to Redis
    // every few seconds; the last flush after the final request.
    let history_stop = CancellationToken::new();
    let history = tokio::spawn(Arc::clone(state.queue.store().history()).flush_every(
        state.queue.store().clone(),
        ferry_common::history::FLUSH_EVERY,
        history_stop.clone().cancelled_owned(),
    ));
    // Small request/response pairs on keep-alive connections: never wait
    // for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    let served = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await;
    drainer_stop.cancel();
    let _ = drainer.await;
    history_stop.cancel();
    let _ = history.await;
    served
}

/// Ticks the alert evaluator once a second until `shutdown`, and appends
/// what fires or resolves to the fleet's alert log in Redis (best effort:
/// the log line and the gauge do not depend on Redis).
async fn evaluate_alerts(alerts: Arc<AlertEvaluator>, log: AlertLog, shutdown: CancellationToken) {
    let process = format!("{}:{}", ferry_common::host::hostname(), std::process::id());
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {
                for event in alerts.evaluate() {
                    if event.state == AlertState::Firing {
                        log.store().history().alert_fired(event.alert.name());
                    }
                    if let Err(e) = log.append(&event, &process).await {
                        tracing::debug!(error = %e, "could not record an alert event in Redis");
                    }
                }
            }
        }
    }
}
