//! The api's own alerting end to end: more pushes a minute than
//! `RATE_LIMIT_THRESHOLD` fire `high_request_rate` once: in `/metrics`, in
//! the fleet's alert log in Redis, and so in `ferry status`. (Its own test
//! binary: the metrics recorder is process-wide.)

use std::time::Duration;

use ferry_common::alerts::AlertLog;
use ferry_common::api_tokens::hash_hex;
use ferry_common::wechat;
use ferry_tests::{Parts, RedisServer, TestFerry, eventually};

const SCRAPE_TOKEN: &str = "scrape-token-for-the-alerts-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_pushes_a_minute_than_the_threshold_fire_the_request_rate_alert_once() {
    let redis = RedisServer::start();
    let tokens = format!("prometheus:read:{}", hash_hex(SCRAPE_TOKEN));
    let ferry = TestFerry::start(
        &redis,
        &[("RATE_LIMIT_THRESHOLD", "5"), ("FERRY_API_TOKENS", &tokens)],
        Parts {
            api: true,
            worker: false,
        },
    )
    .await;
    for n in 0..10 {
        let xml = wechat::text_message_xml(
            "gh_account",
            "o_alert_user",
            chrono::Utc::now().timestamp(),
            "hi",
            9000 + n,
        );
        assert_eq!(ferry.post_wechat(&xml).await.0, 200);
    }

    let log = AlertLog::new(ferry.queue.store().clone());
    let mut firing = Vec::new();
    eventually("the alert to fire", Duration::from_secs(10), async || {
        firing = log.firing().await.unwrap();
        !firing.is_empty()
    })
    .await;
    assert_eq!(firing.len(), 1);
    assert_eq!(firing[0].alert, "high_request_rate");
    assert_eq!(firing[0].threshold, 5.0);
    assert!(ferry.api.as_ref().unwrap().alerts.status()[2].firing);

    let scrape = reqwest::Client::new()
        .get(format!("{}/metrics", ferry.api_url))
        .bearer_auth(SCRAPE_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scrape.contains(r#"ferry_alerts_active{alert="high_request_rate"} 1"#),
        "{scrape}"
    );
    // The evaluator ticks every second; after a few more ticks the alert
    // still holds and has not been raised again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(ferry.api.as_ref().unwrap().alerts.status()[2].firing);
    assert_eq!(
        log.recent(10).await.unwrap().len(),
        1,
        "fired once, not every tick"
    );
    ferry.stop().await;
}
