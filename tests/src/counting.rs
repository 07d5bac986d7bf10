//! A job kind for testing the queue engine: it records every execution in
//! Redis (so a test can count jobs that ran twice) and can take its time.

use std::time::Duration;

use ferry_common::job::Delivery;
use ferry_common::store::Store;
use ferry_worker::handler::{Handler, HandlerError, JobNotes};
use futures::future::BoxFuture;

/// The kind name of counting jobs.
pub const COUNT: &str = "test.count";

/// Hash of job id -> executions started (test-only key).
pub const EXECUTIONS_KEY: &str = "test:executions";

/// List of job ids in the order their executions started.
pub const ORDER_KEY: &str = "test:order";

pub struct Counting {
    pub store: Store,
}

impl Handler for Counting {
    fn handle<'a>(
        &'a self,
        job: &'a Delivery,
        _notes: JobNotes<'a>,
    ) -> BoxFuture<'a, Result<serde_json::Value, HandlerError>> {
        Box::pin(async move {
            let mut conn = self
                .store
                .conn()
                .await
                .map_err(|e| HandlerError::retry(e.to_string()))?;
            redis::pipe()
                .cmd("HINCRBY")
                .arg(EXECUTIONS_KEY)
                .arg(job.id.to_string())
                .arg(1)
                .ignore()
                .cmd("RPUSH")
                .arg(ORDER_KEY)
                .arg(job.id.to_string())
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| HandlerError::retry(e.to_string()))?;
            drop(conn);
            if let Some(ms) = job.payload["sleep_ms"].as_u64() {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Ok(serde_json::json!({"ok": true}))
        })
    }
}
