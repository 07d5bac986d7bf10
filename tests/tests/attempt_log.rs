//! The attempt log (`attempt:<n>` = `<started_ms> <worker>`, read by
//! `ferry jobs show`) keeps the first 32 starts of a job and no more: the
//! bound keeps a record's size bounded, and the attempt count goes on.

use std::time::Duration;

use ferry_common::job::NewJob;
use ferry_common::keys::Partition;
use ferry_common::queue::{Outcome, WECHAT};
use ferry_tests::RedisServer;

#[tokio::test]
async fn the_32nd_start_is_logged_and_the_33rd_only_counted() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    let job = NewJob {
        kind: "noop".into(),
        queue: WECHAT.into(),
        payload: serde_json::json!({}),
        max_attempts: 40,
        idempotency: None,
    };
    let id = queue.enqueue(&job).await.unwrap().id;
    let record = queue
        .keys()
        .partition(&Partition::first(WECHAT))
        .job(&id.to_string());
    let mut conn = redis.conn();
    // As if 31 attempts had run.
    let _: () = redis::cmd("HSET")
        .arg(&record)
        .arg("attempts")
        .arg(31)
        .query(&mut conn)
        .unwrap();

    let mut worker = queue.store().conn().await.unwrap();
    let mut fetch = async |name: &str| {
        let mut got = queue
            .fetch_any(&mut worker, name, WECHAT, 10)
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        got.pop().unwrap()
    };
    let the_32nd = fetch("w32").await;
    assert_eq!(the_32nd.attempt, 32);
    let retry = Outcome::Retry {
        error: "again".into(),
        delay: Duration::ZERO,
    };
    assert_eq!(queue.record(&[(&the_32nd, &retry)]).await.unwrap(), [true]);
    queue
        .promote_due(&Partition::first(WECHAT), 10)
        .await
        .unwrap();
    let the_33rd = fetch("w33").await;
    assert_eq!(the_33rd.attempt, 33);

    let (logged, unlogged, worker_now): (Option<String>, Option<String>, String) =
        redis::cmd("HMGET")
            .arg(&record)
            .arg("attempt:32")
            .arg("attempt:33")
            .arg("worker")
            .query(&mut conn)
            .unwrap();
    assert!(
        logged.is_some_and(|l| l.ends_with(" w32")),
        "the 32nd start is logged"
    );
    assert_eq!(unlogged, None, "the 33rd start is not");
    assert_eq!(worker_now, "w33", "but the record says who runs it");
}
