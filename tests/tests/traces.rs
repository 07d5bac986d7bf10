//! Traces (issue 20): one WeChat message through a real `ferry api` and a
//! real `ferry worker` process, both exporting OTLP/HTTP to a fake
//! receiver, is one trace from the push to the customer-service send; and
//! with no OTLP endpoint, the job carries no traceparent.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferry_common::wechat;
use ferry_tests::fake_otlp::{FakeOtlp, ReceivedSpan};
use ferry_tests::fake_provider::{FakeKind, FakeProvider, Reply};
use ferry_tests::ferry::{TEST_WECHAT_TOKEN, post_signed};
use ferry_tests::worker_process::{WorkerProcesses, ferry_worker};
use ferry_tests::{FakeWeChat, Parts, RedisServer, TestFerry, eventually, ferry_binary};

const APP_ID: &str = "wx_trace_app";
const APP_SECRET: &str = "trace-app-secret";
const PROVIDER_KEY: &str = "sk-trace-deepseek";
const MODEL: &str = "deepseek-chat";
const OPENID: &str = "o_trace_user_4f9a";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn text(content: &str, msg_id: i64) -> String {
    wechat::text_message_xml(
        "gh_account",
        OPENID,
        chrono::Utc::now().timestamp(),
        content,
        msg_id,
    )
}

/// `ferry api` with traces exported to `otlp`.
fn ferry_api(redis: &RedisServer, port: u16, spool: &std::path::Path, otlp: &FakeOtlp) -> Child {
    Command::new(ferry_binary())
        .arg("api")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("REDIS_URL", redis.url())
        .env("WECHAT_TOKEN", TEST_WECHAT_TOKEN)
        .env("FERRY_LISTEN", format!("127.0.0.1:{port}"))
        .env("FERRY_SPOOL_DIR", spool)
        .env("LOG_LEVEL", "warn")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the ferry binary is built before the tests (cargo build --workspace --bins)")
}

fn stop(mut child: Child) {
    // SIGTERM: the graceful path, which flushes the last spans.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name:?} span: {spans:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_is_one_trace_across_the_api_and_the_worker() {
    let redis = RedisServer::start();
    let otlp = FakeOtlp::start().await;
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let provider = FakeProvider::start(FakeKind::OpenAi, PROVIDER_KEY, MODEL).await;
    provider.push(Reply::text("追踪的回答").usage(7, 9));

    let migrated = Command::new(ferry_binary())
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("REDIS_URL", redis.url())
        .env("LOG_LEVEL", "warn")
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let api = ferry_api(&redis, port, &dir.path().join("spool"), &otlp);
    let provider_base = provider.base_url();
    let worker = ferry_worker(
        &redis,
        &wechat,
        APP_ID,
        APP_SECRET,
        &[
            ("FERRY_PROVIDERS", "deepseek"),
            ("DEEPSEEK_API_KEY", PROVIDER_KEY),
            ("DEEPSEEK_BASE_URL", provider_base.as_str()),
            ("DEEPSEEK_MODEL", MODEL),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint()),
            ("OTEL_SERVICE_NAME", "ferry-worker-under-test"),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    eventually("the api to answer", Duration::from_secs(30), async || {
        client.get(format!("{base}/healthz")).send().await.is_ok()
    })
    .await;

    let response = post_signed(&client, &base, &text("追踪我", 7001), TEST_WECHAT_TOKEN)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sent = wechat.wait_for_sent(1, Duration::from_secs(30)).await;
    assert_eq!(sent[0].content, "追踪的回答");

    // Both processes stop gracefully: their last spans are flushed at exit.
    stop(api);
    let workers = WorkerProcesses::new(vec![worker]);
    for w in workers.workers.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &w.id().to_string()])
            .status();
    }
    eventually(
        "the worker's send span to arrive",
        Duration::from_secs(30),
        async || otlp.spans().iter().any(|s| s.name == "wechat.send"),
    )
    .await;
    drop(workers);

    let spans = otlp.spans();
    let push = one(&spans, "wechat.push");
    let verify = one(&spans, "verify");
    let enqueue = one(&spans, "enqueue");
    let job = one(&spans, "job");
    let fetch = one(&spans, "fetch");
    let attempt = one(&spans, "attempt");
    let call = one(&spans, "provider.call");
    let send = one(&spans, "wechat.send");

    // One trace, from two services.
    let trace = &push.trace_id;
    for s in [verify, enqueue, job, fetch, attempt, call, send] {
        assert_eq!(&s.trace_id, trace, "{} is in the push's trace", s.name);
    }
    assert_eq!(push.service, "ferry-api");
    for s in [verify, enqueue] {
        assert_eq!(s.service, "ferry-api");
    }
    for s in [job, fetch, attempt, call, send] {
        assert_eq!(s.service, "ferry-worker-under-test");
    }

    // Parent links: push -> verify, enqueue, job; job -> fetch, attempt;
    // attempt -> provider call, send.
    assert_eq!(push.parent_span_id, "", "the push starts the trace");
    assert_eq!(verify.parent_span_id, push.span_id);
    assert_eq!(enqueue.parent_span_id, push.span_id);
    assert_eq!(job.parent_span_id, push.span_id);
    assert_eq!(fetch.parent_span_id, job.span_id);
    assert_eq!(attempt.parent_span_id, job.span_id);
    assert_eq!(call.parent_span_id, attempt.span_id);
    assert_eq!(send.parent_span_id, attempt.span_id);

    // Attributes.
    assert_eq!(push.attribute("wechat.msg_type"), Some("text"));
    assert_eq!(push.attribute("ferry.handed"), Some("redis"));
    assert_eq!(job.attribute("ferry.job.kind"), Some("wechat.reply"));
    assert_eq!(job.attribute("ferry.job.outcome"), Some("succeeded"));
    assert_eq!(attempt.attribute("ferry.job.attempt"), Some("1"));
    assert_eq!(fetch.attribute("ferry.fetch.jobs"), Some("1"));
    assert_eq!(call.attribute("gen_ai.system"), Some("deepseek"));
    assert_eq!(call.attribute("gen_ai.request.model"), Some(MODEL));
    assert_eq!(call.attribute("ferry.provider.class"), Some("ok"));
    assert_eq!(call.attribute("gen_ai.usage.input_tokens"), Some("7"));
    assert_eq!(call.attribute("gen_ai.usage.output_tokens"), Some("9"));
    assert_eq!(send.attribute("wechat.errcode"), Some("0"));
    assert_eq!(send.attribute("http.response.status_code"), Some("200"));
    assert_eq!(
        send.attribute("url.path"),
        Some("/cgi-bin/message/custom/send")
    );

    // No secret, token or openid in any attribute of any span.
    // (The fake WeChat's access tokens are `FAKE_TOKEN_<n>`.)
    assert!(wechat.token_fetches() >= 1);
    let needles = [
        OPENID,
        TEST_WECHAT_TOKEN,
        PROVIDER_KEY,
        APP_SECRET,
        "FAKE_TOKEN_",
    ];
    for s in &spans {
        for (key, value) in &s.attributes {
            for needle in &needles {
                assert!(
                    !value.contains(needle),
                    "span {} attribute {key} = {value:?} holds a secret or the openid",
                    s.name
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_otlp_endpoint_the_job_carries_no_traceparent() {
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
    let (status, body) = ferry.post_wechat(&text("no trace", 7002)).await;
    assert_eq!((status, body.as_str()), (200, "success"));
    // Every job record (and stream entry) as stored.
    let mut conn = redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    let mut stored = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
        if kind == "hash" {
            let fields: Vec<(String, String)> =
                redis::cmd("HGETALL").arg(&key).query(&mut conn).unwrap();
            stored.push_str(&format!("{key}: {fields:?}\n"));
        }
    }
    assert!(stored.contains("no trace"), "the job is there: {stored}");
    assert!(
        !stored.contains("traceparent"),
        "no traceparent without an OTLP endpoint: {stored}"
    );
    ferry.stop().await;
}
