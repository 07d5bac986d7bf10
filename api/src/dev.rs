//! `GET /dev/replies/{openid}?wait_ms=N`: the replies the console sink
//! recorded for a user, waiting up to `wait_ms` for the first one. Mounted
//! only by `ferry dev`, for `ferry simulate`.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct Wait {
    wait_ms: Option<u64>,
}

pub async fn replies(
    State(state): State<AppState>,
    Path(openid): Path<String>,
    Query(wait): Query<Wait>,
) -> Result<Json<Value>, ApiError> {
    let key = state.queue.keys().dev_outbox(&openid);
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(wait.wait_ms.unwrap_or(0).min(60_000));
    loop {
        let mut conn = state
            .queue
            .store()
            .conn()
            .await
            .map_err(|_| ApiError::Unavailable)?;
        let replies: Option<Vec<String>> = redis::cmd("LPOP")
            .arg(&key)
            .arg(100)
            .query_async(&mut conn)
            .await
            .map_err(|_| ApiError::Unavailable)?;
        drop(conn);
        let replies = replies.unwrap_or_default();
        if !replies.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(json!({ "replies": replies })));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
