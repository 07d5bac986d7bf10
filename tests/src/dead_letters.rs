//! Dead letters made on purpose for the dashboard's tests: a job enqueued,
//! fetched and dead-lettered through the queue engine's own calls.

use ferry_common::job::{JobId, NewJob};
use ferry_common::queue::{JobQueue, Outcome};

/// Enqueues a `noop` job on `queue` and dead-letters it with `reason`.
pub async fn dead_letter(queue: &JobQueue, name: &str, reason: &str) -> JobId {
    let job = NewJob {
        kind: "noop".into(),
        queue: name.into(),
        payload: serde_json::json!({"note": "made dead by a test"}),
        max_attempts: 1,
        idempotency: None,
    };
    let id = queue.enqueue(&job).await.unwrap().id;
    let mut conn = queue.pool().get().await.unwrap();
    let deliveries = queue
        .fetch(&mut conn, "test-consumer", name, 1)
        .await
        .unwrap();
    let delivery = deliveries
        .into_iter()
        .find(|d| d.id == id)
        .expect("the job just enqueued");
    let dead = Outcome::Dead {
        reason: reason.into(),
    };
    queue.record(&[(&delivery, &dead)]).await.unwrap();
    id
}
