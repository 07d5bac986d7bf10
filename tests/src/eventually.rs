//! Waiting in a test for something to happen, without asserting on time:
//! poll `check` until it holds, and fail with `what` only after a generous
//! `timeout` (machines are shared and slow at times).

use std::time::Duration;

/// Polls `check` every 20 ms until it holds; panics naming `what` after
/// `timeout`. Write a plain condition as `async || cond`.
pub async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
