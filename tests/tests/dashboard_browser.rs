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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_watches_a_queue_fill_replays_a_dead_job_and_resets_a_breaker() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists()
            && Path::new("/usr/bin/chromium").exists(),
        "run scripts/install-deps first (chromium, playwright-core)"
    );
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
