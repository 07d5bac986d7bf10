//! The dashboard in a real browser: `tests/browser/dashboard.mjs` drives
//! Debian's headless Chromium through playwright-core (installed by
//! `scripts/install-deps`) against Ferry's api in this process, while the
//! test fills a queue; then Redis is checked for what the clicks did.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ferry_common::api_tokens::hash_hex;
use ferry_common::fleet::Breakers;
use ferry_common::job::NewJob;
use ferry_common::queue::{BATCH, WECHAT};
use ferry_tests::staged_jobs::dead_letter;
use ferry_tests::{Parts, RedisServer, TestFerry};
use tokio_util::sync::CancellationToken;

const ADMIN_TOKEN: &str = "admin-token-for-the-browser-test";

/// `tests/browser`, once scripts/install-deps has put the browser there.
fn browser_dir() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists()
            && Path::new("/usr/bin/chromium").exists(),
        "run scripts/install-deps first (chromium, playwright-core)"
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_watches_a_queue_fill_replays_a_dead_job_and_resets_a_breaker() {
    let browser_dir = browser_dir();
    let redis = RedisServer::start();
    let hash = hash_hex(ADMIN_TOKEN);
    let ferry = TestFerry::start(
        &redis,
        &[
            ("FERRY_ADMIN_TOKEN", &hash),
            ("FERRY_PROVIDERS", "deepseek"),
            ("DEEPSEEK_API_KEY", "sk-browser-test"),
        ],
        Parts {
            api: true,
            worker: false,
        },
    )
    .await;
    let dead = dead_letter(&ferry.queue, WECHAT, "made dead for the browser").await;
    Breakers::new(ferry.queue.store().clone())
        .force_open("deepseek", Duration::from_secs(600), "opened by the test")
        .await
        .unwrap();

    // No worker runs: every job enqueued adds to batch's depth. Bounded:
    // at most 600 jobs, one every 200 ms.
    let filling = CancellationToken::new();
    let filler = tokio::spawn({
        let (queue, stop) = (ferry.queue.clone(), filling.clone());
        async move {
            for n in 0..600 {
                let job = NewJob {
                    kind: "noop".into(),
                    queue: BATCH.into(),
                    payload: serde_json::json!({ "n": n }),
                    max_attempts: 1,
                    idempotency: None,
                };
                queue.enqueue(&job).await.unwrap();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    });

    let mut node = tokio::process::Command::new("node");
    node.arg(browser_dir.join("dashboard.mjs"))
        .arg(&ferry.api_url)
        .arg(ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = std::env::var_os("FERRY_BROWSER_SHOTS") {
        node.arg(dir);
    }
    let output = tokio::time::timeout(Duration::from_secs(120), node.output())
        .await
        .expect("the browser script finished within 2 minutes")
        .expect("node runs");
    filling.cancel();
    filler.await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "dashboard.mjs failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    assert!(
        ferry
            .queue
            .dead_letters(WECHAT, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let record = ferry
        .queue
        .job(&dead)
        .await
        .unwrap()
        .expect("the replayed job");
    assert_eq!(
        record.state.as_str(),
        "queued",
        "replayed with fresh attempts"
    );
    let breaker = Breakers::new(ferry.queue.store().clone())
        .list(&["deepseek"])
        .await
        .unwrap();
    assert_eq!(breaker[0].state, "closed");
    ferry.stop().await;
}

/// The history charts (issue 20): the test writes a known hour of fleet
/// history (two processes' counts through `History` with a clock of its
/// own, flushed to Redis), and `tests/browser/charts.mjs` checks the
/// charts draw those points; screenshots go to `target/screenshots/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_the_last_hour_and_the_last_day_as_charts() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use ferry_common::history::{Clock, History, JobEnd};

    struct At(AtomicU64);
    impl Clock for At {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    let browser_dir = browser_dir();
    let redis = RedisServer::start();
    let hash = hash_hex(ADMIN_TOKEN);
    let ferry = TestFerry::start(
        &redis,
        &[
            ("FERRY_ADMIN_TOKEN", &hash),
            ("FERRY_PROVIDERS", "deepseek"),
            ("DEEPSEEK_API_KEY", "sk-browser-test"),
            ("RATE_LIMIT_THRESHOLD", "100"),
            ("API_ERROR_RATE_THRESHOLD", "0.05"),
            ("RESPONSE_TIME_THRESHOLD", "5"),
        ],
        Parts {
            api: true,
            worker: false,
        },
    )
    .await;
    let store = ferry.queue.store().clone();
    let now = store.history().now_minute();
    // 40 minutes of traffic, one minute at 150 requests (over the
    // 100/min threshold) with an alert firing; the same minutes written by
    // two "processes".
    const PEAK: u64 = 150;
    let clock = Arc::new(At(AtomicU64::new(0)));
    let (api, worker) = (History::new(clock.clone()), History::new(clock.clone()));
    for back in 0..40u64 {
        let minute = now - back;
        clock.0.store(minute * 60_000, Ordering::SeqCst);
        let requests = if back == 10 { PEAK } else { 20 + back };
        for n in 0..requests {
            api.wechat_request(Duration::from_millis(30 + n), n % 25 == 0);
        }
        api.jobs_in(WECHAT, requests);
        worker.jobs_ended(WECHAT, JobEnd::Completed, requests - 1);
        worker.jobs_ended(WECHAT, JobEnd::Retried, 1);
        worker.provider_call("deepseek", "success", Duration::from_millis(900));
        if back == 10 {
            api.alert_fired("high_request_rate");
        }
        api.flush(&store).await.unwrap();
        worker.flush(&store).await.unwrap();
    }

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(browser_dir.join("charts.mjs"))
            .arg(&ferry.api_url)
            .arg(ADMIN_TOKEN)
            .arg(PEAK.to_string())
            .arg(&shots)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser script finished within 2 minutes")
    .expect("node runs");
    assert!(
        output.status.success(),
        "charts.mjs failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(shots.join("charts-1h.png").exists() && shots.join("charts-24h.png").exists());
    ferry.stop().await;
}
