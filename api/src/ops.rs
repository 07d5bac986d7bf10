//! The operations routes every Ferry process can serve: `/metrics`,
//! `/healthz`, `/readyz`. The api merges them into its router; a worker
//! serves them on its admin port (`FERRY_WORKER_ADMIN_LISTEN`), which is why
//! they need nothing but a queue handle.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use ferry_common::queue::JobQueue;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::{health, metrics};

/// What the operations routes read.
pub struct Ops {
    pub queue: JobQueue,
    /// The provider chain's names, for the breaker gauges.
    pub providers: Vec<String>,
    pub metrics: PrometheusHandle,
}

impl Ops {
    /// Installs the process's metrics recorder (once) and wraps the rest.
    pub fn new(queue: JobQueue, providers: Vec<String>) -> Self {
        let metrics = metrics::install();
        ::metrics::gauge!(
            ferry_common::metrics::BUILD_INFO,
            "version" => env!("CARGO_PKG_VERSION"),
            "schema" => ferry_common::schema::required_version().to_string()
        )
        .set(1.0);
        Self {
            queue,
            providers,
            metrics,
        }
    }
}

/// `/healthz`, `/readyz`: open everywhere (load balancers and
/// orchestrators call them; they reveal nothing).
pub fn health_router(ops: Arc<Ops>) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(ops)
}

/// `/metrics`. On the api it sits behind a bearer token with the `read`
/// scope (the api faces the internet); a worker's admin port serves it
/// open, on the address the operator chose for it.
pub fn metrics_router(ops: Arc<Ops>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(ops)
}

async fn serve_metrics(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    metrics::fleet::refresh(&ops.queue, &ops.providers).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&ops.metrics),
    )
}

/// Serves the operations routes alone (a worker's admin port) until
/// `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ops: Arc<Ops>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "admin port listening (/metrics, /healthz, /readyz)");
    let app = health_router(Arc::clone(&ops)).merge(metrics_router(ops));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
