//! The jobs and batches API (`/v1`) end to end: the api validating and
//! enqueueing, workers answering through a fake OpenAI-compatible provider,
//! results, cancel, webhooks, quotas and auth, against a real Redis.

use std::time::Duration;

use ferry_common::api_tokens::hash_hex;
use ferry_common::batch::signature;
use ferry_common::job::NewJob;
use ferry_common::queue::WECHAT;
use ferry_tests::fake_provider::{FakeKind, FakeProvider, Reply};
use ferry_tests::fake_webhook::FakeWebhook;
use ferry_tests::{Parts, RedisServer, TestFerry, eventually};
use serde_json::{Value, json};

const PROVIDER_KEY: &str = "sk-test-deepseek";
const MODEL: &str = "deepseek-chat";
const SUBMIT_TOKEN: &str = "t-submit-and-read";
const READ_TOKEN: &str = "t-read-only";
const OTHER_TOKEN: &str = "t-other-team";
const WEBHOOK_SECRET: &str = "whsec-test-0123456789";

struct World {
    redis: RedisServer,
    provider: FakeProvider,
    ferry: TestFerry,
}

fn tokens() -> String {
    [
        format!("ci:submit+read:{}", hash_hex(SUBMIT_TOKEN)),
        format!("viewer:read:{}", hash_hex(READ_TOKEN)),
        format!("other:submit+read:{}", hash_hex(OTHER_TOKEN)),
    ]
    .join(",")
}

async fn world(extra: &[(&str, &str)], worker: bool) -> World {
    let redis = RedisServer::start();
    let provider = FakeProvider::start(FakeKind::OpenAi, PROVIDER_KEY, MODEL).await;
    let base = provider.base_url();
    let tokens = tokens();
    let mut vars = vec![
        ("WECHAT_APP_ID", "wx_unused"),
        ("WECHAT_APP_SECRET", "unused-secret"),
        ("WECHAT_API_BASE", "http://127.0.0.1:1"),
        ("FERRY_PROVIDERS", "deepseek"),
        ("DEEPSEEK_API_KEY", PROVIDER_KEY),
        ("DEEPSEEK_BASE_URL", &base),
        ("DEEPSEEK_MODEL", MODEL),
        ("FERRY_API_TOKENS", &tokens),
        ("FERRY_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("FERRY_API_SUBMISSIONS_PER_MINUTE", "0"),
        ("LOG_LEVEL", "warn"),
    ];
    vars.extend_from_slice(extra);
    let ferry = TestFerry::start(&redis, &vars, Parts { api: true, worker }).await;
    World {
        redis,
        provider,
        ferry,
    }
}

fn line(custom_id: &str, content: &str) -> String {
    json!({"custom_id": custom_id, "messages": [{"role": "user", "content": content}]}).to_string()
}

fn jsonl(lines: impl IntoIterator<Item = String>) -> String {
    lines.into_iter().map(|l| l + "\n").collect()
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.ferry.api_url)
    }

    async fn post_batch(&self, body: String, query: &str, token: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(self.url(&format!("/v1/batches{query}")))
            .bearer_auth(token)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn batch(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/batches/{id}"), SUBMIT_TOKEN).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn wait_for_status(&self, id: &str, wanted: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let b = self.batch(id).await;
            if b["status"] == wanted {
                return b;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "batch never became {wanted}: {b}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn results(&self, id: &str) -> Vec<Value> {
        let r = reqwest::Client::new()
            .get(self.url(&format!("/v1/batches/{id}/results")))
            .bearer_auth(SUBMIT_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/x-ndjson");
        r.text()
            .await
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Every key of the batch queue but its (empty) stream.
    fn batch_queue_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg("{ferry:batch}:*")
            .query(&mut self.redis.conn())
            .unwrap();
        keys.retain(|k| k != "{ferry:batch}:stream");
        keys
    }

    fn stream_len(&self, queue: &str) -> i64 {
        redis::cmd("XLEN")
            .arg(format!("{{ferry:{queue}}}:stream"))
            .query(&mut self.redis.conn())
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_line_batch_is_answered_with_one_result_per_custom_id() {
    let w = world(&[("FERRY_WORKER_CONCURRENCY", "64")], true).await;
    let body = jsonl((0..10_000).map(|i| line(&format!("req-{i}"), &format!("question {i}"))));

    let (status, created) = w.post_batch(body, "", SUBMIT_TOKEN).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["counts"]["total"], 10_000);
    let id = created["id"].as_str().unwrap().to_owned();

    let done = w
        .wait_for_status(&id, "completed", Duration::from_secs(120))
        .await;
    assert_eq!(
        done["counts"],
        json!({"total": 10_000, "queued": 0, "running": 0, "succeeded": 10_000, "failed": 0, "cancelled": 0})
    );
    assert!(done["finished_at"].is_string() && done["in_progress_at"].is_string());
    let results = w.results(&id).await;
    assert_eq!(results.len(), 10_000);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["custom_id"], format!("req-{i}"), "in line order");
        assert_eq!(r["status"], "succeeded");
        assert_eq!(r["response"]["answer"], format!("question {i}"));
        assert_eq!(r["response"]["provider"], "deepseek");
        assert!(r["response"]["usage"]["total_tokens"].is_number());
    }
    // Each line asked the provider once (at-least-once delivery counted once).
    assert_eq!(w.provider.count(), 10_000);
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_line_refuses_the_whole_batch_and_enqueues_nothing() {
    let w = world(&[], false).await;
    let body = jsonl([
        line("a", "fine"),
        "{\"custom_id\": \"b\", \"messages\": [".to_owned(),
        line("c", "fine"),
        json!({"custom_id": "d", "provider": "nosuch", "messages": [{"role": "user", "content": "x"}]})
            .to_string(),
        line("a", "duplicate id"),
    ]);

    let (status, body) = w.post_batch(body, "", SUBMIT_TOKEN).await;

    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_batch");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 of 5 lines are invalid; nothing was enqueued")
    );
    let lines = body["error"]["lines"].as_array().unwrap();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["line"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 4, 5]
    );
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a valid request object")
    );
    assert_eq!(
        lines[1]["reason"],
        "unknown provider \"nosuch\": this deployment has deepseek"
    );
    assert!(lines[2]["reason"].as_str().unwrap().contains("unique"));
    assert_eq!(w.stream_len("batch"), 0);
    assert!(
        w.batch_queue_keys().is_empty(),
        "{:?}",
        w.batch_queue_keys()
    );
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_invalid_enqueues_the_valid_lines_and_reports_the_others() {
    let w = world(&[], true).await;
    let body = jsonl([
        line("a", "one"),
        "not json".to_owned(),
        line("b", "two"),
        "".to_owned(),
    ]);

    let (status, created) = w.post_batch(body, "?skip_invalid=true", SUBMIT_TOKEN).await;

    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (
            created["counts"]["total"].as_u64(),
            created["skipped"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(created["skipped_lines"][0]["line"], 2);
    let id = created["id"].as_str().unwrap();
    w.wait_for_status(id, "completed", Duration::from_secs(20))
        .await;
    let results = w.results(id).await;
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_queued_jobs_and_lets_running_ones_finish() {
    let w = world(&[("FERRY_WORKER_CONCURRENCY", "4")], true).await;
    w.provider
        .set_default(Some(Reply::echo().stall(Duration::from_millis(50))));
    let body = jsonl((0..400).map(|i| line(&format!("r{i}"), "slow")));
    let (status, created) = w.post_batch(body, "", SUBMIT_TOKEN).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    loop {
        if w.batch(&id).await["counts"]["succeeded"].as_u64().unwrap() >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let r = reqwest::Client::new()
        .post(w.url(&format!("/v1/batches/{id}/cancel")))
        .bearer_auth(SUBMIT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cancelled = w
        .wait_for_status(&id, "cancelled", Duration::from_secs(30))
        .await;

    let counts = &cancelled["counts"];
    let (succeeded, failed, cancelled_jobs) = (
        counts["succeeded"].as_u64().unwrap(),
        counts["failed"].as_u64().unwrap(),
        counts["cancelled"].as_u64().unwrap(),
    );
    assert_eq!(succeeded + failed + cancelled_jobs, 400);
    assert_eq!(
        (counts["queued"].as_u64(), counts["running"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(cancelled_jobs > 300, "most never ran: {counts}");
    // A cancelled job never reached the provider; every started one finished.
    assert_eq!(w.provider.count() as u64, succeeded);
    let results = w.results(&id).await;
    assert_eq!(results.len(), 400);
    let marked = results
        .iter()
        .filter(|r| r["status"] == "cancelled")
        .count() as u64;
    assert_eq!(marked, cancelled_jobs);
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_completion_webhook_is_signed_and_retried_until_delivered() {
    let hook = FakeWebhook::start().await;
    hook.push_status(503);
    let w = world(&[("FERRY_WEBHOOK_ALLOW_NETWORKS", "127.0.0.1")], true).await;
    let body = jsonl([line("a", "one"), line("b", "two")]);
    let query = format!("?webhook_url={}", hook.url());

    let (status, created) = w.post_batch(body, &query, SUBMIT_TOKEN).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["webhook"], true);
    assert!(
        !created.to_string().contains(hook.url()),
        "the URL is not echoed"
    );

    let deliveries = hook.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(deliveries.len(), 2, "one refused delivery, one retry");
    let d = &deliveries[1];
    let ts: i64 = d.timestamp.as_deref().unwrap().parse().unwrap();
    assert!(signature::verify(
        WEBHOOK_SECRET.as_bytes(),
        ts,
        &d.body,
        d.signature.as_deref().unwrap()
    ));
    assert!(!signature::verify(
        b"wrong-secret-wrong",
        ts,
        &d.body,
        d.signature.as_deref().unwrap()
    ));
    assert_eq!(
        deliveries[0].delivery_id, d.delivery_id,
        "one id across retries"
    );
    let payload: Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(payload["type"], "batch.finished");
    assert_eq!(payload["batch"]["id"], created["id"]);
    assert_eq!(payload["batch"]["status"], "completed");
    assert_eq!(payload["batch"]["counts"]["succeeded"], 2);
    w.ferry.stop().await;
}

/// The batch queue's dead letters once one has the `batch.webhook` job.
async fn dead_webhook_reason(w: &World) -> String {
    let queue = w.redis.job_queue().await;
    let mut letters = Vec::new();
    let what = "the webhook job to be dead-lettered";
    eventually(what, Duration::from_secs(30), async || {
        letters = queue.dead_letters("batch", 10).await.unwrap();
        !letters.is_empty()
    })
    .await;
    assert_eq!(letters.len(), 1, "only the webhook job died");
    letters[0].reason.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_to_a_private_address_is_refused_at_submission_and_at_delivery() {
    let hook = FakeWebhook::start().await;
    let w = world(&[], true).await;
    let body = || jsonl([line("a", "one")]);

    // An IP literal outside the allowed networks: refused before anything
    // is written.
    let (status, refused) = w
        .post_batch(
            body(),
            &format!("?webhook_url={}", hook.url()),
            SUBMIT_TOKEN,
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("127.0.0.1"), "{message}");
    assert!(
        message.contains("FERRY_WEBHOOK_ALLOW_NETWORKS"),
        "{message}"
    );
    assert_eq!(w.stream_len("batch"), 0);
    let metadata = "http://169.254.169.254/latest/meta-data/";
    let (status, _) = w
        .post_batch(body(), &format!("?webhook_url={metadata}"), SUBMIT_TOKEN)
        .await;
    assert_eq!(status, 400, "the cloud metadata service");

    // A host name is resolved when the webhook is sent: `localhost` is
    // loopback, so the batch finishes but its webhook is dead-lettered with
    // the reason, without a connection to the receiver and without retries.
    let by_name = hook.url().replace("127.0.0.1", "localhost");
    let (status, created) = w
        .post_batch(body(), &format!("?webhook_url={by_name}"), SUBMIT_TOKEN)
        .await;
    assert_eq!(status, 201, "{created}");
    let reason = dead_webhook_reason(&w).await;
    assert!(reason.contains("private, local or reserved"), "{reason}");
    assert!(!reason.contains(&by_name), "the URL is not in the reason");
    assert!(hook.received().is_empty(), "nothing reached the receiver");
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_redirect_is_not_followed() {
    let hook = FakeWebhook::start().await;
    hook.push_status(302);
    let w = world(&[("FERRY_WEBHOOK_ALLOW_NETWORKS", "127.0.0.1/32")], true).await;
    let query = format!("?webhook_url={}", hook.url());
    let (status, created) = w
        .post_batch(jsonl([line("a", "one")]), &query, SUBMIT_TOKEN)
        .await;
    assert_eq!(status, 201, "{created}");
    let reason = dead_webhook_reason(&w).await;
    assert!(reason.contains("redirects are not followed"), "{reason}");
    assert_eq!(hook.received().len(), 1, "asked once, not retried");
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_over_its_jobs_in_flight_quota_gets_429() {
    let w = world(&[("FERRY_API_JOBS_IN_FLIGHT", "5")], false).await;
    let six = jsonl((0..6).map(|i| line(&format!("r{i}"), "x")));
    let (status, body) = w.post_batch(six, "", SUBMIT_TOKEN).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(w.stream_len("batch"), 0);

    let five = jsonl((0..5).map(|i| line(&format!("r{i}"), "x")));
    assert_eq!(w.post_batch(five.clone(), "", SUBMIT_TOKEN).await.0, 201);
    let one = json!({"messages": [{"role": "user", "content": "x"}]});
    let r = reqwest::Client::new()
        .post(w.url("/v1/jobs"))
        .bearer_auth(SUBMIT_TOKEN)
        .json(&one)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // Another key has its own quota.
    assert_eq!(w.post_batch(five, "", OTHER_TOKEN).await.0, 201);
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_per_minute_are_limited_per_api_key() {
    let w = world(
        &[
            ("FERRY_API_SUBMISSIONS_PER_MINUTE", "2"),
            ("FERRY_API_SUBMISSIONS_BURST", "2"),
        ],
        false,
    )
    .await;
    let body = || jsonl([line("a", "x")]);
    assert_eq!(w.post_batch(body(), "", SUBMIT_TOKEN).await.0, 201);
    assert_eq!(w.post_batch(body(), "", SUBMIT_TOKEN).await.0, 201);
    let (status, refused) = w.post_batch(body(), "", SUBMIT_TOKEN).await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(w.post_batch(body(), "", OTHER_TOKEN).await.0, 201);
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_flood_does_not_hold_back_wechat_jobs() {
    let w = world(&[("FERRY_WORKER_CONCURRENCY", "8")], true).await;
    w.provider
        .set_default(Some(Reply::echo().stall(Duration::from_millis(20))));
    let body = jsonl((0..2_000).map(|i| line(&format!("r{i}"), "flood")));
    let (status, created) = w.post_batch(body, "", SUBMIT_TOKEN).await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap().to_owned();
    while w.batch(&id).await["counts"]["succeeded"].as_u64().unwrap() < 16 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut wechat_jobs = Vec::new();
    for _ in 0..40 {
        let job = NewJob {
            kind: "noop".into(),
            queue: WECHAT.into(),
            payload: Value::Null,
            max_attempts: 3,
            idempotency: None,
        };
        wechat_jobs.push(w.ferry.queue.enqueue(&job).await.unwrap().id);
    }
    loop {
        let mut done = 0;
        for id in &wechat_jobs {
            let job = w.ferry.queue.job(id).await.unwrap().unwrap();
            done += usize::from(job.state.is_finished());
        }
        if done == wechat_jobs.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let counts = w.batch(&id).await["counts"].clone();
    let finished = counts["succeeded"].as_u64().unwrap();
    assert!(
        finished < 1_000,
        "all 40 WeChat jobs finished while the batch had most of its 2,000 jobs left: {counts}"
    );
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_repeat_returns_the_same_job() {
    let w = world(&[], false).await;
    let post = |key: &'static str| {
        reqwest::Client::new()
            .post(w.url("/v1/jobs"))
            .bearer_auth(SUBMIT_TOKEN)
            .header("Idempotency-Key", key)
            .json(&json!({"messages": [{"role": "user", "content": "hi"}], "parameters": {"temperature": 0.2}}))
            .send()
    };
    let first = post("order-42").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = post("order-42").await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    assert_eq!(w.stream_len("batch"), 1);
    let other = post("order-43").await.unwrap();
    assert_eq!(other.status(), 201);

    let id = first["id"].as_str().unwrap();
    let (status, job) = w.get(&format!("/v1/jobs/{id}"), SUBMIT_TOKEN).await;
    assert_eq!((status, job["status"].as_str()), (200, Some("queued")));
    // Another API key's job looks like a missing one.
    assert_eq!(w.get(&format!("/v1/jobs/{id}"), OTHER_TOKEN).await.0, 404);
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_job_is_answered_with_the_result_on_the_job() {
    let w = world(&[], true).await;
    let r = reqwest::Client::new()
        .post(w.url("/v1/jobs"))
        .bearer_auth(SUBMIT_TOKEN)
        .json(&json!({"provider": "deepseek", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ping"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let job = loop {
        let (_, job) = w.get(&format!("/v1/jobs/{id}"), SUBMIT_TOKEN).await;
        if job["status"] == "succeeded" || tokio::time::Instant::now() > deadline {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["answer"], "ping");
    assert_eq!(job["result"]["model"], MODEL);
    // The read-only key is not the owner: it sees nothing.
    let (status, other) = w.get(&format!("/v1/jobs/{id}"), READ_TOKEN).await;
    assert_eq!(
        (status, other["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_scopes_enforced() {
    let w = world(&[], false).await;
    let body = || jsonl([line("a", "x")]);
    let anonymous = reqwest::Client::new()
        .post(w.url("/v1/batches"))
        .body(body())
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let anonymous: Value = anonymous.json().await.unwrap();
    assert_eq!(anonymous["error"]["code"], "unauthorized");

    let (status, bad) = w.post_batch(body(), "", "t-guessed").await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, forbidden) = w.post_batch(body(), "", READ_TOKEN).await;
    assert_eq!(
        (status, forbidden["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert_eq!(w.stream_len("batch"), 0);
    // Reading another key's batch: not found, as if it did not exist.
    let (_, created) = w.post_batch(body(), "", SUBMIT_TOKEN).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        w.get(&format!("/v1/batches/{id}"), OTHER_TOKEN).await.0,
        404
    );
    assert_eq!(w.get(&format!("/v1/batches/{id}"), READ_TOKEN).await.0, 404);
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused_with_413() {
    let w = world(&[("FERRY_BATCH_MAX_BYTES", "1000")], false).await;
    let body = jsonl((0..40).map(|i| line(&format!("r{i}"), "padding padding")));
    assert!(body.len() > 1000);
    let (status, refused) = w.post_batch(body, "", SUBMIT_TOKEN).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (413, Some("too_large"))
    );
    assert!(w.batch_queue_keys().is_empty());
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_on_submit_is_503_and_writes_nothing() {
    let mut w = world(&[], false).await;
    w.redis.kill();
    let (status, body) = w
        .post_batch(jsonl([line("a", "x")]), "", SUBMIT_TOKEN)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_the_routes() {
    let w = world(&[], false).await;
    let doc: Value = reqwest::get(w.url("/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/batches",
        "/v1/batches/{id}",
        "/v1/batches/{id}/results",
        "/v1/batches/{id}/cancel",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["BatchInfo"].is_object());

    // An unknown route under /v1 answers in the same JSON shape.
    let unknown = reqwest::get(w.url("/v1/batchez")).await.unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    w.ferry.stop().await;
}
