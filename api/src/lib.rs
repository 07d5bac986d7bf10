//! `ferry-api`: the HTTP ingress.
//!
//! It verifies and acknowledges every WeChat push at once and enqueues the
//! work; it never calls an AI provider itself. Routes:
//! - `GET /wechat` URL verification, `POST /wechat` pushed messages ([`wechat`]);
//! - `GET /healthz` ([`health`]);
//! - `GET /dev/replies/{openid}` only under `ferry dev` ([`dev`]).

pub mod dev;
pub mod error;
pub mod health;
pub mod state;
pub mod wechat;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use state::{AppState, WeChatIngress};

/// Every route, with the body limit applied (an oversized body gets 413).
pub fn router(state: AppState) -> Router {
    let mut app = Router::new()
        .route("/wechat", get(wechat::verify_url).post(wechat::receive))
        .route("/healthz", get(health::healthz));
    if state.dev_outbox {
        app = app.route("/dev/replies/{openid}", get(dev::replies));
    }
    app.layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "api listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
