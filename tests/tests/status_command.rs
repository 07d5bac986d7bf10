//! `ferry status`: the overview in the terminal, and an exit code a cron job
//! or a deploy script can check (non-zero while an alert fires or a breaker
//! is open).

use std::process::Command;
use std::time::Duration;

use ferry_common::alerts::{AlertEvent, AlertLog, AlertState, Rule};
use ferry_common::fleet::Breakers;
use ferry_common::queue::WECHAT;
use ferry_tests::RedisServer;
use ferry_tests::staged_jobs::dead_letter;

fn status(redis: &RedisServer) -> (bool, String, String) {
    let out = Command::new(ferry_tests::ferry_binary())
        .arg("status")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("REDIS_URL", redis.url())
        .env("FERRY_PROVIDERS", "deepseek")
        .env("DEEPSEEK_API_KEY", "sk-status-test")
        .env("LOG_LEVEL", "error")
        .output()
        .expect("the ferry binary is built before the tests (scripts/test)");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn event(state: AlertState) -> AlertEvent {
    AlertEvent {
        alert: Rule::HighErrorRate,
        state,
        value: 0.2,
        threshold: 0.05,
        at: chrono::Utc::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_queues_breakers_and_alerts_and_fails_while_something_is_wrong() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    dead_letter(&queue, WECHAT, "made dead for status").await;

    let (ok, out, _) = status(&redis);
    assert!(ok, "all quiet:\n{out}");
    let wechat = out.lines().find(|l| l.starts_with("wechat")).unwrap();
    assert_eq!(
        wechat.split_whitespace().nth(6),
        Some("1"),
        "one dead letter:\n{out}"
    );
    assert!(
        out.contains("deepseek") && out.contains("ok: none firing"),
        "{out}"
    );

    let breakers = Breakers::new(queue.store().clone());
    breakers
        .force_open("deepseek", Duration::from_secs(300), "status test")
        .await
        .unwrap();
    let log = AlertLog::new(queue.store().clone());
    log.append(&event(AlertState::Firing), "api-1:42")
        .await
        .unwrap();
    let (ok, out, err) = status(&redis);
    assert!(!ok);
    assert!(
        out.contains("FIRING high_error_rate") && out.contains("api-1:42"),
        "{out}"
    );
    assert!(out.contains("breaker open"), "{out}");
    assert!(
        err.contains("1 alert(s) firing, 1 breaker(s) open"),
        "{err}"
    );

    breakers.reset("deepseek").await.unwrap();
    log.append(&event(AlertState::Resolved), "api-1:42")
        .await
        .unwrap();
    let (ok, out, _) = status(&redis);
    assert!(ok, "resolved and closed:\n{out}");
}
