//! A rolled-back binary keeps running on a newer schema (ARCHITECTURE.md,
//! "Schema versioning"): the functions it calls must still answer as they
//! did. Schema 10 gave the fetch a flat answer under a new name
//! (`ferry_fetch_flat`); `ferry_fetch` still answers schema 9's list per
//! entry, which is what a binary of schema 9 parses.

use ferry_common::job::NewJob;
use ferry_common::keys::{CONSUMER_GROUP, Partition};
use ferry_common::queue::WECHAT;
use ferry_tests::RedisServer;

#[tokio::test]
async fn ferry_fetch_still_answers_a_list_per_entry() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    let job = NewJob {
        kind: "noop".into(),
        queue: WECHAT.into(),
        payload: serde_json::json!({ "n": 1 }),
        max_attempts: 4,
        idempotency: None,
    };
    let kept = queue.enqueue(&job).await.unwrap().id;
    let purged = queue.enqueue(&job).await.unwrap().id;
    let q = queue.keys().partition(&Partition::first(WECHAT));
    let mut conn = redis.conn();
    let _: () = redis::cmd("DEL")
        .arg(q.job(&purged.to_string()))
        .query(&mut conn)
        .unwrap();

    let rows: Vec<Vec<redis::Value>> = redis::cmd("FCALL")
        .arg("ferry_fetch")
        .arg(1)
        .arg(q.stream())
        .arg(CONSUMER_GROUP)
        .arg("w-old")
        .arg(10)
        .arg(q.job(""))
        .query(&mut conn)
        .unwrap();
    assert_eq!(rows.len(), 2, "one row per entry");
    let text = |v: &redis::Value| redis::from_redis_value::<String>(v.clone()).unwrap();
    let run = &rows[0];
    assert_eq!(run.len(), 8);
    assert_eq!(text(&run[1]), kept.to_string());
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
    // The stale entry was acknowledged and deleted; the started one waits
    // for its outcome.
    let len: u64 = redis::cmd("XLEN").arg(q.stream()).query(&mut conn).unwrap();
    assert_eq!(len, 1);
}
