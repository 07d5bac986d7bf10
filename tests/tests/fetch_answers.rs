//! What a fetch answers when some of its entries are stale (their job's
//! record is gone): the worker's flat answer (`ferry_fetch_flat`) and the
//! list per entry that `ferry_fetch` still gives a rolled-back binary
//! (ARCHITECTURE.md, "Schema versioning": a binary of schema 9 keeps
//! running on schema 10 and parses that shape).

use ferry_common::job::{JobId, NewJob};
use ferry_common::keys::{CONSUMER_GROUP, Partition};
use ferry_common::queue::{JobQueue, WECHAT};
use ferry_tests::RedisServer;

/// Enqueues three jobs and deletes the middle one's record (as a purge
/// would): the stream then holds live, stale, live.
async fn live_stale_live(redis: &RedisServer, queue: &JobQueue) -> [JobId; 3] {
    let job = NewJob {
        kind: "noop".into(),
        queue: WECHAT.into(),
        payload: serde_json::json!({ "n": 1 }),
        max_attempts: 4,
        idempotency: None,
    };
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(queue.enqueue(&job).await.unwrap().id);
    }
    let q = queue.keys().partition(&Partition::first(WECHAT));
    let _: () = redis::cmd("DEL")
        .arg(q.job(&ids[1].to_string()))
        .query(&mut redis.conn())
        .unwrap();
    ids.try_into().unwrap()
}

fn stream_len(redis: &RedisServer, queue: &JobQueue) -> u64 {
    let stream = queue.keys().partition(&Partition::first(WECHAT)).stream();
    redis::cmd("XLEN")
        .arg(stream)
        .query(&mut redis.conn())
        .unwrap()
}

#[tokio::test]
async fn the_worker_starts_the_jobs_around_a_stale_entry() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    let [first, _, third] = live_stale_live(&redis, &queue).await;

    let mut conn = queue.store().conn().await.unwrap();
    let started = queue.fetch_any(&mut conn, "w1", WECHAT, 10).await.unwrap();

    let ids: Vec<_> = started.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids, [first, third], "the stale entry's padding is skipped");
    assert!(started.iter().all(|d| d.kind == "noop" && d.attempt == 1));
    assert_eq!(started[1].payload, serde_json::json!({ "n": 1 }));
    // The stale entry was acknowledged and deleted; the started ones wait
    // for their outcomes.
    assert_eq!(stream_len(&redis, &queue), 2);
}

#[tokio::test]
async fn ferry_fetch_still_answers_a_list_per_entry() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    let [first, purged, _] = live_stale_live(&redis, &queue).await;
    let q = queue.keys().partition(&Partition::first(WECHAT));

    let rows: Vec<Vec<redis::Value>> = redis::cmd("FCALL")
        .arg("ferry_fetch")
        .arg(1)
        .arg(q.stream())
        .arg(CONSUMER_GROUP)
        .arg("w-old")
        .arg(10)
        .arg(q.job(""))
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(rows.len(), 3, "one row per entry");
    let text = |v: &redis::Value| redis::from_redis_value::<String>(v.clone()).unwrap();
    let run = &rows[0];
    assert_eq!(run.len(), 8);
    assert_eq!(text(&run[1]), first.to_string());
    assert_eq!(
        (text(&run[2]), text(&run[3]), text(&run[4])),
        ("run".into(), "noop".into(), r#"{"n":1}"#.into())
    );
    assert_eq!((text(&run[5]), text(&run[6])), ("1".into(), "4".into()));
    let missing = &rows[1];
    assert_eq!(
        (text(&missing[1]), text(&missing[2])),
        (purged.to_string(), "missing".into())
    );
    assert_eq!(stream_len(&redis, &queue), 2);
}
