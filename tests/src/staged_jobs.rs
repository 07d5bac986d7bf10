//! Jobs put in a chosen state on purpose for the dashboard's tests: enqueued,
//! fetched, and given an outcome through the queue engine's own calls.

use std::time::Duration;

use ferry_common::job::{Delivery, JobId, NewJob};
use ferry_common::queue::{JobQueue, Outcome};

/// Enqueues a `noop` job on `queue` and fetches it as `test-consumer` (it is
/// then held, pending, until an outcome is recorded).
pub async fn held(queue: &JobQueue, name: &str) -> Delivery {
    let job = NewJob {
        kind: "noop".into(),
        queue: name.into(),
        payload: serde_json::json!({"note": "staged by a test"}),
        max_attempts: 3,
        idempotency: None,
    };
    let id = queue.enqueue(&job).await.unwrap().id;
    let mut conn = queue.store().conn().await.unwrap();
    queue
        .fetch(&mut conn, "test-consumer", &id.partition(), 1)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.id == id)
        .expect("the job just enqueued")
}

/// A `noop` job of `queue`, dead-lettered with `reason`.
pub async fn dead_letter(queue: &JobQueue, name: &str, reason: &str) -> JobId {
    let delivery = held(queue, name).await;
    let dead = Outcome::Dead {
        reason: reason.into(),
    };
    queue.record(&[(&delivery, &dead)]).await.unwrap();
    delivery.id
}

/// A `noop` job of `queue` waiting an hour for its retry after `error`.
pub async fn retrying(queue: &JobQueue, name: &str, error: &str) -> JobId {
    let delivery = held(queue, name).await;
    let retry = Outcome::Retry {
        error: error.into(),
        delay: Duration::from_secs(3600),
    };
    queue.record(&[(&delivery, &retry)]).await.unwrap();
    delivery.id
}
