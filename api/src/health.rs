//! Liveness and readiness, for the api and for a worker's admin port.
//!
//! `/healthz` says the process answers HTTP (restart it if not).
//! `/readyz` says it can do its work: Redis answers and holds a schema at
//! least as new as this binary's (send it traffic only then). The reasons
//! are short and fixed: never a URL, a password or a Redis error text.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use ferry_common::schema::{self, SchemaError};

use crate::ops::Ops;

/// Readiness never waits longer than this for Redis.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(ops): State<Arc<Ops>>) -> (StatusCode, &'static str) {
    let check = async {
        let mut conn = ops
            .queue
            .store()
            .conn()
            .await
            .map_err(|_| "redis unreachable")?;
        match schema::require_current(&mut conn, ops.queue.keys()).await {
            Ok(_) => Ok(()),
            Err(SchemaError::Missing) => Err("schema missing: run `ferry migrate`"),
            Err(SchemaError::Outdated { .. }) => Err("schema outdated: run `ferry migrate`"),
            Err(_) => Err("redis unreachable"),
        }
    };
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(())) => (StatusCode::OK, "ready"),
        Ok(Err(reason)) => (StatusCode::SERVICE_UNAVAILABLE, reason),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "redis did not answer in time",
        ),
    }
}
