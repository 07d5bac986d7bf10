//! `/metrics`, `/healthz` and `/readyz`: on the api, and on a worker's
//! admin port (`FERRY_WORKER_ADMIN_LISTEN`), against a real Redis and the
//! fakes of WeChat and a provider.

use std::time::Duration;

use ferry_common::api_tokens::hash_hex;
use ferry_common::wechat;
use ferry_tests::fake_provider::{FakeKind, FakeProvider, Reply};
use ferry_tests::worker_process::{WorkerProcesses, ferry_worker};
use ferry_tests::{FakeWeChat, Parts, RedisServer, TestFerry, eventually};

const APP_ID: &str = "wx_metrics_app";
const APP_SECRET: &str = "metrics-app-secret";
const PROVIDER_KEY: &str = "sk-metrics-deepseek";
const MODEL: &str = "deepseek-chat";
const OPENID: &str = "o_metrics_user";

/// Prometheus's token: the api's `/metrics` needs the `read` scope.
const SCRAPE_TOKEN: &str = "scrape-token-for-the-metrics-test";

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(SCRAPE_TOKEN)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The value of the series named exactly `series` (name and labels as
/// rendered), if present.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (name, v) = line.rsplit_once(' ')?;
        (name == series).then(|| v.parse().ok())?
    })
}

/// Scrapes until `check` holds (the counters of a job are recorded just
/// after its reply is sent), or panics after 10 s with the last scrape.
async fn scrape_until(url: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(url).await;
        assert_eq!(status, 200);
        if check(&body) {
            return body;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("metrics never matched; last scrape:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_answered_message_shows_in_the_apis_metrics_without_secrets_or_openids() {
    let redis = RedisServer::start();
    let wechat_fake = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let provider = FakeProvider::start(FakeKind::OpenAi, PROVIDER_KEY, MODEL).await;
    let (wechat_base, provider_base) = (wechat_fake.base_url(), provider.base_url());
    let tokens = format!("prometheus:read:{}", hash_hex(SCRAPE_TOKEN));
    let ferry = TestFerry::start(
        &redis,
        &[
            ("FERRY_API_TOKENS", &tokens),
            ("WECHAT_APP_ID", APP_ID),
            ("WECHAT_APP_SECRET", APP_SECRET),
            ("WECHAT_API_BASE", &wechat_base),
            ("FERRY_PROVIDERS", "deepseek"),
            ("DEEPSEEK_API_KEY", PROVIDER_KEY),
            ("DEEPSEEK_BASE_URL", &provider_base),
            ("DEEPSEEK_MODEL", MODEL),
        ],
        Parts {
            api: true,
            worker: true,
        },
    )
    .await;
    provider.push(Reply::text("你好").usage(5, 8));
    let xml = wechat::text_message_xml(
        "gh_account",
        OPENID,
        chrono::Utc::now().timestamp(),
        "你好",
        4242,
    );
    assert_eq!(ferry.post_wechat(&xml).await.0, 200);
    wechat_fake.wait_for_sent(1, Duration::from_secs(10)).await;

    let url = format!("{}/metrics", ferry.api_url);
    let scrape = scrape_until(&url, |s| {
        value(
            s,
            r#"ferry_jobs_total{queue="wechat",kind="wechat.reply",outcome="succeeded"}"#,
        )
        .is_some_and(|v| v >= 1.0)
    })
    .await;
    let at_least_one = [
        r#"ferry_http_requests_total{route="/wechat",method="POST",status="200"}"#,
        r#"ferry_provider_calls_total{provider="deepseek",outcome="success"}"#,
        r#"ferry_provider_tokens_total{provider="deepseek",type="completion"}"#,
        r#"ferry_provider_latency_seconds_count{provider="deepseek"}"#,
        "ferry_wechat_sends_total",
        "ferry_wechat_token_refreshes_total",
        "ferry_workers_live",
        "ferry_redis_up",
    ];
    assert!(scrape.contains(&format!(
        r#"ferry_build_info{{version="{}",schema="{}"}} 1"#,
        env!("CARGO_PKG_VERSION"),
        ferry_common::schema::required_version()
    )));
    for series in at_least_one {
        assert!(
            value(&scrape, series).is_some_and(|v| v >= 1.0),
            "{series} missing or zero in:\n{scrape}"
        );
    }
    let exactly = [
        (r#"ferry_queue_depth{queue="wechat"}"#, 0.0),
        (r#"ferry_queue_dead{queue="wechat"}"#, 0.0),
        (r#"ferry_breaker_state{provider="deepseek"}"#, 0.0),
        (r#"ferry_alerts_active{alert="high_error_rate"}"#, 0.0),
    ];
    for (series, expected) in exactly {
        assert_eq!(value(&scrape, series), Some(expected), "{series}");
    }
    assert!(
        scrape.contains(
            r#"ferry_http_request_duration_seconds_bucket{route="/wechat",method="POST",le="5"}"#
        ),
        "latency is a histogram with a 5 s bucket (the slow-responses rule)"
    );
    for secret in [
        PROVIDER_KEY,
        APP_SECRET,
        OPENID,
        "test-wechat-token",
        SCRAPE_TOKEN,
    ] {
        assert!(!scrape.contains(secret), "{secret} leaked into /metrics");
    }
    let anonymous = reqwest::get(&url).await.unwrap();
    assert_eq!(
        anonymous.status().as_u16(),
        401,
        "the api's /metrics needs a token"
    );

    // A breaker forced open by an operator: its state is read from Redis on
    // the next scrape, and the move is counted as a transition.
    let breakers = ferry_common::fleet::Breakers::new(ferry.queue.store().clone());
    breakers
        .force_open("deepseek", Duration::from_secs(600), "metrics test")
        .await
        .unwrap();
    let scrape = scrape_until(&url, |s| {
        value(s, r#"ferry_breaker_state{provider="deepseek"}"#) == Some(2.0)
    })
    .await;
    assert_eq!(
        value(
            &scrape,
            r#"ferry_breaker_transitions_total{provider="deepseek",to="open"}"#
        ),
        Some(1.0),
        "{scrape}"
    );
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_what_is_missing_and_healthz_only_that_the_api_answers() {
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
    assert_eq!(
        get(&format!("{}/healthz", ferry.api_url)).await,
        (200, "ok".into())
    );
    assert_eq!(
        get(&format!("{}/readyz", ferry.api_url)).await,
        (200, "ready".into())
    );

    redis::cmd("DEL")
        .arg("{ferry}:schema")
        .query::<()>(&mut redis.conn())
        .unwrap();
    assert_eq!(
        get(&format!("{}/readyz", ferry.api_url)).await,
        (503, "schema missing: run `ferry migrate`".into())
    );
    assert_eq!(get(&format!("{}/healthz", ferry.api_url)).await.0, 200);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_metrics_and_health_on_its_admin_port() {
    let redis = RedisServer::start();
    // Migrate, then run a real `ferry worker`.
    redis.migrate().await;
    let wechat_fake = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let admin = format!("127.0.0.1:{port}");
    let _workers = WorkerProcesses::new(vec![ferry_worker(
        &redis,
        &wechat_fake,
        APP_ID,
        APP_SECRET,
        &[
            ("FERRY_PROVIDERS", "echo"),
            ("FERRY_WORKER_ADMIN_LISTEN", &admin),
        ],
    )]);
    let base = format!("http://{admin}");
    eventually(
        "the admin port to answer",
        Duration::from_secs(15),
        async || {
            let Ok(r) = reqwest::get(format!("{base}/healthz")).await else {
                return false;
            };
            assert_eq!(r.status().as_u16(), 200);
            true
        },
    )
    .await;
    assert_eq!(get(&format!("{base}/readyz")).await, (200, "ready".into()));
    let scrape = scrape_until(&format!("{base}/metrics"), |s| {
        value(s, "ferry_workers_live").is_some_and(|v| v >= 1.0)
    })
    .await;
    assert!(
        scrape.contains(r#"ferry_queue_depth{queue="wechat"} 0"#),
        "{scrape}"
    );
    // The `ferry` binary's allocator (jemalloc) reports what it holds: some
    // live data, in no fewer resident bytes.
    let allocated = value(&scrape, "ferry_allocator_allocated_bytes").expect("allocated");
    let resident = value(&scrape, "ferry_allocator_resident_bytes").expect("resident");
    assert!(allocated > 100_000.0, "{allocated}");
    assert!(resident >= allocated, "{resident} < {allocated}");
}
