//! `wechat.reply` end to end: what the job records, one budget per message.

use super::*;

const APP_ID: &str = "wx_test_app";
const APP_SECRET: &str = "test-app-secret";

/// Redis, WeChat and Ferry (api + worker) with `chain` as its providers.
async fn ferry_with(
    chain: &[(&str, &FakeProvider)],
    extra: &[(&str, &str)],
) -> (RedisServer, FakeWeChat, TestFerry) {
    let redis = RedisServer::start();
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let names: Vec<&str> = chain.iter().map(|(name, _)| *name).collect();
    let mut vars: Vec<(String, String)> = vec![
        ("WECHAT_APP_ID".into(), APP_ID.into()),
        ("WECHAT_APP_SECRET".into(), APP_SECRET.into()),
        ("WECHAT_API_BASE".into(), wechat.base_url()),
        ("FERRY_PROVIDERS".into(), names.join(",")),
    ];
    for (name, fake) in chain {
        let c = fake.provider_config(name);
        let upper = name.to_ascii_uppercase();
        vars.push((format!("{upper}_API_KEY"), KEY.into()));
        vars.push((format!("{upper}_BASE_URL"), c.base_url));
        vars.push((format!("{upper}_MODEL"), c.model));
    }
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let parts = Parts {
        api: true,
        worker: true,
    };
    let ferry = TestFerry::start(&redis, &vars, parts).await;
    (redis, wechat, ferry)
}

async fn say(ferry: &TestFerry, openid: &str, content: &str, msg_id: i64) {
    let xml = wechat::text_message_xml(
        "gh_account",
        openid,
        chrono::Utc::now().timestamp(),
        content,
        msg_id,
    );
    let (status, body) = ferry.post_wechat(&xml).await;
    assert_eq!((status, body.as_str()), (200, "success"));
}

/// The record of the job made from WeChat message `msg_id`, once finished.
async fn finished_job(redis: &RedisServer, ferry: &TestFerry, msg_id: i64) -> JobRecord {
    let mut finished = None;
    let what = format!("the job of message {msg_id} to finish");
    eventually(&what, Duration::from_secs(30), async || {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("{ferry:wechat}:job:*")
            .query(&mut redis.conn())
            .unwrap();
        for key in keys {
            let id: JobId = key.split_once(":job:").unwrap().1.parse().unwrap();
            if let Some(record) = ferry.queue.job(&id).await.unwrap()
                && record.payload["msg_id"] == msg_id
                && record.state.is_finished()
            {
                finished = Some(record);
                return true;
            }
        }
        false
    })
    .await;
    finished.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_result_names_the_provider_model_tokens_and_latency_of_the_answer() {
    let (deepseek, gem) = (openai().await, gemini().await);
    deepseek.push(Reply::error(
        402,
        json!({"error": {"message": "Insufficient Balance", "type": "unknown_error"}}),
    ));
    gem.push(Reply::text("渡轮是一种船。").usage(30, 7));
    let (redis, wechat, ferry) =
        ferry_with(&[("deepseek", &deepseek), ("gemini", &gem)], &[]).await;

    say(&ferry, "o_user_result", "什么是渡轮？", 5001).await;

    let sent = wechat.wait_for_sent(1, Duration::from_secs(10)).await;
    assert_eq!(sent[0].content, "渡轮是一种船。");
    let job = finished_job(&redis, &ferry, 5001).await;
    assert_eq!(job.state, JobState::Succeeded);
    let mut result = job.result.unwrap();
    let latency = result.as_object_mut().unwrap().remove("latency_ms");
    assert!(
        latency.is_some_and(|l| l.is_u64()),
        "latency_ms is a whole number of ms"
    );
    assert_eq!(
        result,
        json!({
            "provider": "gemini",
            "model": "gemini-2.0-flash",
            "prompt_tokens": 30,
            "completion_tokens": 7,
            "total_tokens": 37,
            "parts": 1, "kept": false,
        })
    );
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_budget_runs_out_gets_the_apology_and_no_further_calls() {
    let deepseek = openai().await;
    // Far longer than the budget (the per-attempt timeout is a minute): the
    // call is cut when the budget runs out, and nothing follows it.
    deepseek.push(Reply::text("far too late").stall(Duration::from_secs(20)));
    let (redis, wechat, ferry) = ferry_with(
        &[("deepseek", &deepseek)],
        &[("FERRY_AI_TOTAL_BUDGET", "3")],
    )
    .await;

    say(&ferry, "o_user_budget", "你好", 5002).await;

    let sent = wechat.wait_for_sent(1, Duration::from_secs(15)).await;
    assert_eq!(sent[0].content, DEFAULT_APOLOGY);
    let job = finished_job(&redis, &ferry, 5002).await;
    assert_eq!(job.state, JobState::Dead);
    assert!(
        job.last_error.as_deref().unwrap().contains("budget"),
        "{:?}",
        job.last_error
    );
    assert_eq!(deepseek.count(), 1);
    assert_eq!(wechat.sent().len(), 1);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_hint_longer_than_the_budget_left_gets_the_apology_at_once() {
    let deepseek = openai().await;
    deepseek.push(
        Reply::openai_error(429, "rate_limit_exceeded", "Rate limit reached")
            .header("retry-after-ms", "60000"),
    );
    let (redis, wechat, ferry) = ferry_with(
        &[("deepseek", &deepseek)],
        &[("FERRY_AI_TOTAL_BUDGET", "10")],
    )
    .await;

    say(&ferry, "o_user_hint", "你好", 5003).await;

    let sent = wechat.wait_for_sent(1, Duration::from_secs(15)).await;
    assert_eq!(sent[0].content, DEFAULT_APOLOGY);
    let job = finished_job(&redis, &ferry, 5003).await;
    assert_eq!(job.state, JobState::Dead, "not a retry a minute later");
    assert_eq!(job.attempts, 1);
    assert_eq!(deepseek.count(), 1);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_job_asks_each_provider_once_instead_of_repeating_the_in_call_retries() {
    let deepseek = openai().await;
    for _ in 0..20 {
        deepseek.push(Reply::openai_error(
            503,
            "server_error",
            "Server overloaded",
        ));
    }
    let (redis, wechat, ferry) = ferry_with(
        &[("deepseek", &deepseek)],
        &[("FERRY_PROVIDER_ATTEMPTS", "3")],
    )
    .await;

    say(&ferry, "o_user_retry", "你好", 5004).await;

    let sent = wechat.wait_for_sent(1, Duration::from_secs(30)).await;
    assert_eq!(sent[0].content, DEFAULT_APOLOGY);
    let job = finished_job(&redis, &ferry, 5004).await;
    assert_eq!(
        (job.state, job.attempts, job.max_attempts),
        (JobState::Dead, 4, 4)
    );
    // Three calls on the first attempt, then one on each of the three job
    // retries: 3 + 1 + 1 + 1, not 3 × 4.
    assert_eq!(deepseek.count(), 6);
    ferry.stop().await;
}
