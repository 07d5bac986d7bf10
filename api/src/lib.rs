//! `ferry-api`: the HTTP ingress.
//!
//! It verifies and acknowledges every WeChat push at once and enqueues the
//! work; it never calls an AI provider itself. Routes:
//! - `GET /wechat` URL verification, `POST /wechat` pushed messages
//!   ([`wechat`]), behind the per-IP limiter ([`limiter`]);
//! - `GET /healthz` ([`health`]);
//! - `GET /dev/replies/{openid}` only under `ferry dev` ([`dev`]).
//!
//! Concurrent pushes share Redis round trips ([`batcher`]). When Redis does
//! not take a push within the acknowledgement budget, the push goes to a
//! local spool on disk ([`spool`], via [`handoff`]) and a background task of
//! [`serve`] replays it into Redis later.

pub mod auth;
pub mod batcher;
pub mod batches;
pub mod client_ip;
pub mod dev;
pub mod error;
pub mod handoff;
pub mod health;
pub mod jobs_api;
pub mod limiter;
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
use tokio_util::sync::CancellationToken;

pub use auth::Authenticator;
pub use batcher::EnqueueBatcher;
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
        .route("/healthz", get(health::healthz));
    if state.dev_outbox {
        app = app.route("/dev/replies/{openid}", get(dev::replies));
    }
    app.layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state)
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
    if let Some(limiter) = &state.limiter {
        tokio::spawn(limiter::prune_until(Arc::clone(limiter), shutdown.clone()));
    }
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
    served
}
