//! What a late outcome does under at-least-once delivery: the first success
//! reported while the job is unfinished is recorded, whichever delivery it
//! comes from; every later one changes nothing and says so. Driven through
//! the engine's own calls, no worker, so each step of a takeover is placed
//! exactly.

use std::time::Duration;

use ferry_common::job::{Delivery, JobId, JobState, NewJob};
use ferry_common::keys::Partition;
use ferry_common::queue::{JobQueue, Outcome, WECHAT};
use ferry_tests::RedisServer;

fn noop() -> NewJob {
    NewJob {
        kind: "noop".into(),
        queue: WECHAT.into(),
        payload: serde_json::json!({}),
        max_attempts: 5,
        idempotency: None,
    }
}

async fn fetch_one(queue: &JobQueue, consumer: &str) -> Delivery {
    let mut conn = queue.store().conn().await.unwrap();
    let mut got = queue
        .fetch_any(&mut conn, consumer, WECHAT, 10)
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "one job waiting");
    got.pop().unwrap()
}

/// A job taken over: w1 fetched it and stalled past the visibility
/// timeout, and w2 took the same entry over and started attempt 2.
/// -> the job, w1's delivery, w2's.
async fn taken_over(queue: &JobQueue) -> (JobId, Delivery, Delivery) {
    let id = queue.enqueue(&noop()).await.unwrap().id;
    let stalled = fetch_one(queue, "w1").await;
    let taken = queue
        .reclaim("w2", &Partition::first(WECHAT), Duration::ZERO, 10, 10)
        .await
        .unwrap();
    assert_eq!(taken.fetched.len(), 1);
    let second = queue.start(taken.fetched, "w2").await.unwrap().remove(0);
    assert_eq!((second.attempt, &second.entry_id), (2, &stalled.entry_id));
    (id, stalled, second)
}

/// A retry due at once.
fn retry_now() -> Outcome {
    Outcome::Retry {
        error: "provider timed out".into(),
        delay: Duration::ZERO,
    }
}

/// No entry is left on the stream, pending or not.
fn assert_stream_empty(redis: &RedisServer, queue: &JobQueue) {
    let mut conn = redis.conn();
    let key = queue.keys().queue(WECHAT).stream();
    let len: u64 = redis::cmd("XLEN").arg(&key).query(&mut conn).unwrap();
    let (pending, ..): (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(&key)
        .arg(ferry_common::keys::CONSUMER_GROUP)
        .query(&mut conn)
        .unwrap();
    assert_eq!((len, pending), (0, 0));
}

fn succeeded(answer: &str) -> Outcome {
    Outcome::Succeeded {
        result: serde_json::json!({ "answer": answer }),
    }
}

#[tokio::test]
async fn a_late_success_from_a_lost_delivery_finishes_the_job_once() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;

    // w1 takes the job, then stalls: w2 takes the same entry over and its
    // attempt fails with a retry.
    let (id, stalled, second) = taken_over(&queue).await;
    assert_eq!(
        queue.record(&[(&second, &retry_now())]).await.unwrap(),
        [true]
    );
    let record = queue.job(&id).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Retrying);
    assert!(
        record.due_at.is_some(),
        "a waiting retry shows when it is due"
    );

    // The retry is promoted and w3 runs attempt 3 on a new entry.
    assert_eq!(
        queue
            .promote_due(&Partition::first(WECHAT), 10)
            .await
            .unwrap(),
        1
    );
    let third = fetch_one(&queue, "w3").await;
    assert_eq!(third.attempt, 3);
    assert_ne!(third.entry_id, stalled.entry_id);
    let record = queue.job(&id).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Running);
    assert_eq!(record.due_at, None, "a running job has no due time");

    // w1 wakes up and reports its success: the job was unfinished, so this
    // is its one success (the handler ran to the end; at-least-once allows
    // the duplicate run, not a second outcome).
    let late = queue
        .record(&[(&stalled, &succeeded("late"))])
        .await
        .unwrap();
    assert_eq!(late, [true]);

    // Attempt 3's success, sent twice in one batch, changes nothing.
    let done = queue
        .record(&[(&third, &succeeded("live")), (&third, &succeeded("live"))])
        .await
        .unwrap();
    assert_eq!(done, [false, false]);
    let record = queue.job(&id).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(record.result, Some(serde_json::json!({ "answer": "late" })));
    assert_eq!(record.attempts, 3);
    assert_eq!(record.due_at, None, "a finished job has no due time");

    // Every entry was acknowledged and deleted: nothing left to take over.
    assert_stream_empty(&redis, &queue);
}

#[tokio::test]
async fn the_first_of_two_holders_to_succeed_wins_and_the_other_changes_nothing() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;

    // Both w1 and (after a takeover) w2 run the same delivery.
    let (id, first, second) = taken_over(&queue).await;

    // The original holder finishes first: its success counts although the
    // entry had moved to w2, and w2's later one is a duplicate.
    assert_eq!(
        queue
            .record(&[(&first, &succeeded("first"))])
            .await
            .unwrap(),
        [true]
    );
    assert_eq!(
        queue
            .record(&[(&second, &succeeded("second"))])
            .await
            .unwrap(),
        [false]
    );
    let record = queue.job(&id).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(
        record.result,
        Some(serde_json::json!({ "answer": "first" }))
    );
}

#[tokio::test]
async fn a_late_success_while_the_retry_waits_finishes_the_job_and_the_retry_never_runs() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;

    // w1 stalls; w2 takes the entry over and schedules a retry.
    let (id, stalled, second) = taken_over(&queue).await;
    assert_eq!(
        queue.record(&[(&second, &retry_now())]).await.unwrap(),
        [true]
    );

    // w1's success lands while the retry still waits in the delayed set:
    // the job succeeds with it and forgets its due time.
    let late = queue
        .record(&[(&stalled, &succeeded("late"))])
        .await
        .unwrap();
    assert_eq!(late, [true]);
    let record = queue.job(&id).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(record.due_at, None, "a finished job has no due time");

    // The retry comes due and goes back to the stream, but the fetch finds
    // the job finished: it is not started again, and its entry is gone.
    assert_eq!(
        queue
            .promote_due(&Partition::first(WECHAT), 10)
            .await
            .unwrap(),
        1
    );
    let mut conn = queue.store().conn().await.unwrap();
    let again = queue.fetch_any(&mut conn, "w3", WECHAT, 10).await.unwrap();
    assert!(again.is_empty(), "a finished job is never started again");
    let record = queue.job(&id).await.unwrap().unwrap();
    assert_eq!((record.state, record.attempts), (JobState::Succeeded, 2));
    assert_stream_empty(&redis, &queue);
}
