//! Fleet coordination with several real `ferry worker` processes against one
//! Redis and fake providers: the global rate limit holds across processes,
//! and a failing provider's breaker opens for the whole fleet, lets exactly
//! one probe through after the cool-down, and closes on success.

use std::time::{Duration, Instant};

use ferry_common::job::kinds::{self, WeChatReply};
use ferry_common::job::{Idempotency, NewJob};
use ferry_common::queue::JobQueue;
use ferry_tests::fake_provider::{FakeKind, FakeProvider, Reply};
use ferry_tests::worker_process::{WorkerProcesses, ferry_worker};
use ferry_tests::{FakeWeChat, RedisServer, eventually};

const APP_ID: &str = "wx_fleet";
const APP_SECRET: &str = "fleet-secret";

fn start_workers(
    n: usize,
    redis: &RedisServer,
    wechat: &FakeWeChat,
    env: &[(&str, String)],
) -> WorkerProcesses {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    WorkerProcesses::new(
        (0..n)
            .map(|_| ferry_worker(redis, wechat, APP_ID, APP_SECRET, &env))
            .collect(),
    )
}

async fn ask(queue: &JobQueue, n: usize, tag: &str) {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob {
            kind: kinds::WECHAT_REPLY.into(),
            queue: kinds::queue_of(kinds::WECHAT_REPLY).into(),
            payload: serde_json::to_value(WeChatReply {
                openid: format!("o_{tag}_{i}"),
                account: "gh_fleet".into(),
                content: format!("{tag} question {i}"),
                msg_id: None,
                create_time: chrono::Utc::now().timestamp(),
                media_id: None,
                passive: false,
            })
            .unwrap(),
            max_attempts: 4,
            idempotency: Some(Idempotency {
                key: format!("{tag}-{i}"),
                ttl: Duration::from_secs(600),
            }),
        })
        .collect();
    queue.enqueue_many(&jobs).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_per_minute_limit_holds_across_three_worker_processes() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let provider = FakeProvider::start(FakeKind::OpenAi, "sk-fleet", "deepseek-chat").await;
    // 600 a minute: one every 100 ms for the whole fleet, no burst.
    let rpm = 600.0;
    let _fleet = start_workers(
        3,
        &redis,
        &wechat,
        &[
            ("FERRY_PROVIDERS", "deepseek".into()),
            ("DEEPSEEK_API_KEY", "sk-fleet".into()),
            ("DEEPSEEK_BASE_URL", provider.base_url()),
            ("DEEPSEEK_RPM", "600".into()),
            ("DEEPSEEK_RPM_BURST", "1".into()),
            ("FERRY_WORKER_CONCURRENCY", "8".into()),
        ],
    );
    ask(&queue, 200, "rate").await;
    eventually(
        "the fleet is busy for a while",
        Duration::from_secs(60),
        async || provider.count() >= 40,
    )
    .await;
    let arrivals: Vec<Instant> = provider.requests().iter().map(|r| r.at).collect();
    let first = arrivals[0];
    let last = *arrivals.last().unwrap();
    let window = (last - first).as_secs_f64();
    // GCRA with a burst of 1 allows one request at the start and one per
    // interval after it; three unlimited workers would be far above that.
    let allowed = 1.0 + window * rpm / 60.0;
    let received = arrivals.len() as f64;
    println!("received {received} in {window:.2} s; the limit allows {allowed:.1}");
    assert!(
        received <= allowed + 1.0,
        "{received} requests in {window:.2} s, the fleet limit allows {allowed:.1}"
    );
    assert!(
        received >= allowed * 0.8,
        "the limiter held back far more than the limit: {received} of {allowed:.1}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_opens_the_breaker_fleet_wide_then_one_probe_closes_it() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let failing = FakeProvider::start(FakeKind::OpenAi, "sk-a", "deepseek-chat").await;
    let backup = FakeProvider::start(FakeKind::OpenAi, "sk-b", "qwen-plus").await;
    failing.set_default(Some(Reply::openai_error(503, "server_error", "overloaded")));
    let min_calls = 4;
    let _fleet = start_workers(
        3,
        &redis,
        &wechat,
        &[
            ("FERRY_PROVIDERS", "deepseek,qwen".into()),
            ("DEEPSEEK_API_KEY", "sk-a".into()),
            ("DEEPSEEK_BASE_URL", failing.base_url()),
            ("QWEN_API_KEY", "sk-b".into()),
            ("QWEN_BASE_URL", backup.base_url()),
            ("DEEPSEEK_BREAKER_MIN_CALLS", min_calls.to_string()),
            ("DEEPSEEK_BREAKER_OPEN_FOR", "2".into()),
            ("FERRY_PROVIDER_ATTEMPTS", "2".into()),
            ("FERRY_WORKER_CONCURRENCY", "2".into()),
        ],
    );
    ask(&queue, 30, "open").await;
    eventually("every user answered", Duration::from_secs(60), async || {
        wechat.sent().len() >= 30
    })
    .await;
    let calls_while_closed = failing.count();
    // It opened after the minimum number of calls; calls already past the
    // gate when it opened (at most one per worker slot) still arrived.
    assert!(calls_while_closed >= min_calls, "{calls_while_closed}");
    assert!(
        calls_while_closed <= min_calls + 3 * 2,
        "the other workers kept calling: {calls_while_closed}"
    );
    assert_eq!(
        backup.count(),
        30,
        "every job fell over to the next provider"
    );

    // More jobs during the cool-down: nobody calls the failing provider.
    ask(&queue, 5, "during").await;
    eventually(
        "answered during the cool-down",
        Duration::from_secs(30),
        async || wechat.sent().len() >= 35,
    )
    .await;
    assert_eq!(
        failing.count(),
        calls_while_closed,
        "a worker called an open provider"
    );

    // After the cool-down, exactly one probe; the provider has recovered.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    failing.set_default(None);
    ask(&queue, 10, "after").await;
    eventually(
        "answered after the cool-down",
        Duration::from_secs(30),
        async || wechat.sent().len() >= 45,
    )
    .await;
    let probes_and_after = failing.count() - calls_while_closed;
    assert!(probes_and_after >= 1, "no probe was sent");
    // The probe succeeded and closed the breaker: later calls go to it again.
    ask(&queue, 10, "closed").await;
    eventually(
        "answered after closing",
        Duration::from_secs(30),
        async || wechat.sent().len() >= 55,
    )
    .await;
    assert!(
        failing.count() - calls_while_closed > probes_and_after,
        "the breaker did not close after a good probe"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_cool_down_exactly_one_probe_goes_out_fleet_wide() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let failing = FakeProvider::start(FakeKind::OpenAi, "sk-a", "deepseek-chat").await;
    let backup = FakeProvider::start(FakeKind::OpenAi, "sk-b", "qwen-plus").await;
    // Every call fails, and slowly, so a probe is out for a while.
    failing.set_default(Some(
        Reply::openai_error(503, "server_error", "overloaded").stall(Duration::from_millis(300)),
    ));
    let _fleet = start_workers(
        3,
        &redis,
        &wechat,
        &[
            ("FERRY_PROVIDERS", "deepseek,qwen".into()),
            ("DEEPSEEK_API_KEY", "sk-a".into()),
            ("DEEPSEEK_BASE_URL", failing.base_url()),
            ("QWEN_API_KEY", "sk-b".into()),
            ("QWEN_BASE_URL", backup.base_url()),
            ("DEEPSEEK_BREAKER_MIN_CALLS", "3".into()),
            ("DEEPSEEK_BREAKER_OPEN_FOR", "1".into()),
            ("FERRY_PROVIDER_ATTEMPTS", "1".into()),
            ("FERRY_WORKER_CONCURRENCY", "4".into()),
        ],
    );
    ask(&queue, 12, "first").await;
    eventually("answered", Duration::from_secs(60), async || {
        wechat.sent().len() >= 12
    })
    .await;
    let opened_at = failing.count();
    // Keep the fleet busy across the cool-down: the probe fails, so the
    // breaker re-opens; each cool-down lets exactly one call through.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ask(&queue, 24, "busy").await;
    eventually("answered", Duration::from_secs(60), async || {
        wechat.sent().len() >= 36
    })
    .await;
    let probes: Vec<Instant> = failing.requests()[opened_at..]
        .iter()
        .map(|r| r.at)
        .collect();
    assert!(!probes.is_empty(), "no probe after the cool-down");
    for pair in probes.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(900),
            "two probes within one cool-down: {:?}",
            pair[1] - pair[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_holds_across_worker_processes() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let provider = FakeProvider::start(FakeKind::OpenAi, "sk-conc", "deepseek-chat").await;
    let stall = Duration::from_millis(300);
    provider.set_default(Some(Reply::echo().stall(stall)));
    let _fleet = start_workers(
        3,
        &redis,
        &wechat,
        &[
            ("FERRY_PROVIDERS", "deepseek".into()),
            ("DEEPSEEK_API_KEY", "sk-conc".into()),
            ("DEEPSEEK_BASE_URL", provider.base_url()),
            ("DEEPSEEK_MAX_CONCURRENCY", "2".into()),
            ("FERRY_WORKER_CONCURRENCY", "4".into()),
        ],
    );
    ask(&queue, 12, "conc").await;
    eventually("every user answered", Duration::from_secs(60), async || {
        wechat.sent().len() >= 12
    })
    .await;
    // A call is admitted only after an earlier one settled, which is after
    // its answer (at least `stall` after it arrived): so at any arrival, at
    // most two calls can have arrived within the last `stall`.
    let arrivals: Vec<Instant> = provider.requests().iter().map(|r| r.at).collect();
    assert_eq!(arrivals.len(), 12);
    for &t in &arrivals {
        let running = arrivals
            .iter()
            .filter(|&&a| a <= t && t < a + stall)
            .count();
        assert!(
            running <= 2,
            "{running} calls in flight at once across the fleet, the limit is 2"
        );
    }
}
