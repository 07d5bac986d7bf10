//! `ferry batch` as a user runs it: the real binary against Ferry's api and
//! worker, with the token from FERRY_API_TOKEN.

use std::process::Output;
use std::time::Duration;

use ferry_common::api_tokens::hash_hex;
use ferry_tests::{Parts, RedisServer, TestFerry, ferry_binary};
use serde_json::{Value, json};

const TOKEN: &str = "t-cli-submit-read";

async fn ferry_batch(api_url: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(ferry_binary());
    cmd.arg("batch")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FERRY_API_URL", api_url);
    if let Some(token) = token {
        cmd.env("FERRY_API_TOKEN", token);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("ferry batch finishes")
        .unwrap()
}

async fn ferry() -> (RedisServer, TestFerry) {
    let redis = RedisServer::start();
    let tokens = format!("cli:submit+read:{}", hash_hex(TOKEN));
    let ferry = TestFerry::start(
        &redis,
        &[
            ("WECHAT_APP_ID", "wx_unused"),
            ("WECHAT_APP_SECRET", "unused-secret"),
            ("FERRY_PROVIDERS", "echo"),
            ("FERRY_API_TOKENS", &tokens),
            ("LOG_LEVEL", "warn"),
        ],
        Parts {
            api: true,
            worker: true,
        },
    )
    .await;
    (redis, ferry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_follows_the_batch_and_results_print_one_line_per_request() {
    let (_redis, ferry) = ferry().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("requests.jsonl");
    let lines: String = (0..200)
        .map(|i| {
            json!({"custom_id": format!("q{i}"), "messages": [{"role": "user", "content": format!("echo {i}")}]})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&file, lines).unwrap();

    let submitted = ferry_batch(
        &ferry.api_url,
        Some(TOKEN),
        &["submit", file.to_str().unwrap(), "--wait"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&submitted.stderr);
    assert!(submitted.status.success(), "{stderr}");
    let id = String::from_utf8(submitted.stdout)
        .unwrap()
        .trim()
        .to_owned();
    assert!(id.starts_with("batch_"), "{id}");
    assert!(
        stderr.contains("completed: 200 succeeded, 0 failed, 0 cancelled"),
        "{stderr}"
    );

    let results = ferry_batch(&ferry.api_url, Some(TOKEN), &["results", &id]).await;
    assert!(results.status.success());
    let lines: Vec<Value> = String::from_utf8(results.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 200);
    assert_eq!(lines[7]["custom_id"], "q7");
    assert_eq!(lines[7]["response"]["answer"], "echo 7");

    let status = ferry_batch(&ferry.api_url, Some(TOKEN), &["status", &id]).await;
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["counts"]["succeeded"], 200);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_file_names_its_bad_lines_and_a_missing_token_is_explained() {
    let (_redis, ferry) = ferry().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.jsonl");
    std::fs::write(
        &file,
        "{\"custom_id\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}\n{oops}\n",
    )
    .unwrap();

    let refused = ferry_batch(
        &ferry.api_url,
        Some(TOKEN),
        &["submit", file.to_str().unwrap()],
    )
    .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("400 (invalid_batch)") && stderr.contains("line 2:"),
        "{stderr}"
    );

    let no_token = ferry_batch(&ferry.api_url, None, &["status", "batch_x"]).await;
    assert!(!no_token.status.success());
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("FERRY_API_TOKEN"));
    ferry.stop().await;
}
