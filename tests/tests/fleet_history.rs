//! The fleet history (issue 20) against a real Redis: counts of several
//! processes merged into one minute, read back with the p95 of the merged
//! buckets; a flush while Redis is away retried; real `/wechat` requests
//! counted by Ferry in-process and flushed at shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_common::history::{self, Clock, History, JobEnd};
use ferry_common::wechat;
use ferry_tests::{Backend, Parts, RedisServer, TestFerry};

struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A process's counter whose clock stands at `minute`.
fn process_at(minute: u64) -> History {
    History::new(Arc::new(ManualClock(AtomicU64::new(minute * 60_000 + 1))))
}

const MINUTE: u64 = 29_000_000;

async fn two_processes_add_to_one_minute_and_the_p95_is_the_fleets(backend: &Backend) {
    let store = backend.store(4);
    let (a, b) = (process_at(MINUTE), process_at(MINUTE));
    for _ in 0..90 {
        a.wechat_request(Duration::from_millis(80), false);
    }
    for _ in 0..10 {
        b.wechat_request(Duration::from_secs(7), true);
    }
    a.jobs_in("wechat", 3);
    a.jobs_ended("wechat", JobEnd::Completed, 2);
    b.jobs_ended("wechat", JobEnd::Retried, 1);
    b.jobs_ended("wechat", JobEnd::Dead, 1);
    b.provider_call("deepseek", "success", Duration::from_millis(900));
    b.provider_call("deepseek", "rate_limited", Duration::from_millis(50));
    a.alert_fired("high_error_rate");
    assert_eq!(a.flush(&store).await.unwrap(), 1);
    assert_eq!(b.flush(&store).await.unwrap(), 1);
    assert_eq!(a.flush(&store).await.unwrap(), 0, "nothing left to add");

    let s = history::read::read(&store, MINUTE + 1, 60).await.unwrap();
    assert_eq!(s.first_minute, MINUTE + 1 - 59);
    assert_eq!(s.wechat.requests.len(), 60);
    let i = 58; // MINUTE
    assert_eq!(s.wechat.requests[i], 100);
    assert_eq!(s.wechat.errors[i], 10);
    assert_eq!(s.wechat.error_ratio[i], 0.1);
    // 90 fast, 10 in (5, 10]: the fleet's p95 is halfway into that bucket.
    assert_eq!(s.wechat.p95_secs[i], 7.5);
    assert_eq!(
        s.wechat.requests.iter().sum::<u64>(),
        100,
        "other minutes are zeros"
    );
    let q = &s.queues["wechat"];
    assert_eq!(
        (q.jobs_in[i], q.completed[i], q.failures[i], q.dead[i]),
        (3, 2, 2, 1)
    );
    let p = &s.providers["deepseek"];
    assert_eq!(p.outcomes["success"][i] + p.outcomes["rate_limited"][i], 2);
    assert!(
        p.p95_secs[i] > 0.5 && p.p95_secs[i] <= 1.0,
        "{}",
        p.p95_secs[i]
    );
    assert_eq!(s.alerts["high_error_rate"][i], 1);

    let ttl: i64 = redis::cmd("TTL")
        .arg(store.keys().history_minute(MINUTE))
        .query(&mut *backend.conn())
        .unwrap();
    assert!(ttl > 24 * 3600 && ttl <= 25 * 3600, "ttl {ttl}");

    // A day's window reads 1440 minutes in one pipeline.
    let day = history::read::read(&store, MINUTE + 1, 1440).await.unwrap();
    assert_eq!(day.wechat.requests.len(), 1440);
    assert_eq!(day.wechat.requests[1438], 100);
}

ferry_tests::on_one_redis_and_a_cluster!(two_processes_add_to_one_minute_and_the_p95_is_the_fleets);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_while_redis_is_away_keeps_the_counts_for_the_next() {
    let mut redis = RedisServer::start();
    let store = redis.store(2);
    let h = process_at(MINUTE);
    h.jobs_in("wechat", 2);
    redis.kill();
    assert!(h.flush(&store).await.is_err(), "Redis is away");
    h.jobs_in("wechat", 5);
    redis.restart();
    let mut flushed = Err(None);
    for _ in 0..50 {
        match h.flush(&store).await {
            Ok(n) => {
                flushed = Ok(n);
                break;
            }
            Err(e) => flushed = Err(Some(e.to_string())),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        flushed,
        Ok(1),
        "the kept minute is written once Redis is back"
    );
    let s = history::read::read(&store, MINUTE, 1).await.unwrap();
    assert_eq!(
        s.queues["wechat"].jobs_in,
        vec![7],
        "nothing lost, nothing twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_requests_and_their_jobs_are_counted_by_the_api_and_flushed_at_shutdown() {
    let redis = RedisServer::start();
    let ferry = TestFerry::start(
        &redis,
        &[],
        Parts {
            api: true,
            worker: false,
        },
    )
    .await;
    for n in 0..4 {
        let xml = wechat::text_message_xml(
            "gh_account",
            "o_history_user",
            chrono::Utc::now().timestamp(),
            "hi",
            7000 + n,
        );
        assert_eq!(ferry.post_wechat(&xml).await.0, 200);
    }
    let store = ferry.queue.store().clone();
    let now = store.history().now_minute();
    ferry.stop().await;
    let s = history::read::read(&store, now + 1, 3).await.unwrap();
    assert_eq!(s.wechat.requests.iter().sum::<u64>(), 4);
    assert_eq!(s.wechat.errors.iter().sum::<u64>(), 0);
    assert_eq!(s.queues["wechat"].jobs_in.iter().sum::<u64>(), 4);
}
