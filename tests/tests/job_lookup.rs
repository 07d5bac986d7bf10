//! Job lookup (issue 20): one real WeChat reply run through a real worker
//! (its first attempt failed by a provider 500, its answer sent in two
//! parts), then looked up by its id through the engine, `ferry jobs show`
//! (text and `--json`) and the dashboard; an unknown and a garbled id get
//! a clear answer, never a 500.

use std::process::Command;
use std::time::Duration;

use ferry_common::api_tokens::hash_hex;
use ferry_common::job::kinds::{self, WeChatReply};
use ferry_common::job::{JobId, JobState, NewJob};
use ferry_common::queue::JobQueue;
use ferry_common::queue::lookup::{EventKind, LookupError};
use ferry_tests::fake_provider::{FakeKind, FakeProvider, Reply};
use ferry_tests::{FakeWeChat, Parts, RedisServer, TestFerry};
use reqwest::header;
use reqwest::redirect::Policy;

const APP_ID: &str = "wx_lookup_app";
const APP_SECRET: &str = "lookup-app-secret";
const PROVIDER_KEY: &str = "sk-lookup";
const ADMIN_TOKEN: &str = "admin-token-for-the-lookup-test";
const OPENID: &str = "o_lookup_user";
/// 20 characters, 60 bytes: 50 of them make 3,000 bytes, two parts.
const SENTENCE: &str = "这是一个比较长的句子，用来测试分段发送。";
const UNKNOWN: &str = "wechat:01ARZ3NDEKTSV4RRFFQ69G5FAV";
const GARBLED: &str = "wechat:not-a-ulid";

fn message() -> NewJob {
    NewJob {
        kind: kinds::WECHAT_REPLY.into(),
        queue: kinds::queue_of(kinds::WECHAT_REPLY).into(),
        payload: serde_json::to_value(WeChatReply {
            openid: OPENID.into(),
            account: "gh_lookup".into(),
            content: "tell me a story <b>".into(),
            msg_id: Some(42),
            create_time: chrono::Utc::now().timestamp(),
            media_id: None,
            passive: false,
        })
        .unwrap(),
        max_attempts: kinds::max_attempts_of(kinds::WECHAT_REPLY),
        idempotency: None,
    }
}

async fn finished(queue: &JobQueue, id: &JobId) {
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = queue.job(id).await.unwrap().expect("the record");
        if r.state.is_finished() {
            assert_eq!(r.state, JobState::Succeeded, "{r:?}");
            return;
        }
        assert!(tokio::time::Instant::now() < until, "not finished: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ferry_jobs_show(redis: &RedisServer, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(ferry_tests::ferry_binary())
        .args(["jobs", "show"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("REDIS_URL", redis.url())
        .env("LOG_LEVEL", "error")
        .output()
        .expect("the ferry binary is built before the tests (scripts/test)");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn get(base: &str, path: &str, cookie: &str) -> (u16, String) {
    let r = client()
        .get(format!("{base}{path}"))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_reply_shows_its_attempts_each_part_and_outcome_everywhere() {
    let redis = RedisServer::start();
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let provider = FakeProvider::start(FakeKind::OpenAi, PROVIDER_KEY, "deepseek-chat").await;
    provider.push(Reply::openai_error(500, "server_error", "upstream broke"));
    provider.set_default(Some(Reply::text(SENTENCE.repeat(50))));
    let (wechat_base, provider_base) = (wechat.base_url(), provider.base_url());
    let admin_hash = hash_hex(ADMIN_TOKEN);
    let f = TestFerry::start(
        &redis,
        &[
            ("WECHAT_APP_ID", APP_ID),
            ("WECHAT_APP_SECRET", APP_SECRET),
            ("WECHAT_API_BASE", wechat_base.as_str()),
            ("FERRY_PROVIDERS", "deepseek"),
            ("DEEPSEEK_API_KEY", PROVIDER_KEY),
            ("DEEPSEEK_BASE_URL", provider_base.as_str()),
            // One call per attempt: the 500 fails the job's first attempt.
            ("FERRY_PROVIDER_ATTEMPTS", "1"),
            ("FERRY_MEMORY_TURNS", "0"),
            ("FERRY_ADMIN_TOKEN", admin_hash.as_str()),
        ],
        Parts {
            api: true,
            worker: true,
        },
    )
    .await;
    let id = f.queue.enqueue(&message()).await.unwrap().id;
    finished(&f.queue, &id).await;
    assert_eq!(wechat.sent_to(OPENID).len(), 2, "two parts");

    // The engine's lookup: the timeline the record holds, in order.
    let found = f.queue.lookup(&format!("  {id} ")).await.unwrap();
    let events: Vec<(EventKind, Option<u32>)> =
        found.timeline.iter().map(|e| (e.kind, e.attempt)).collect();
    use EventKind::*;
    assert_eq!(
        events,
        [
            (Enqueued, None),
            (Started, Some(1)),
            (RetryScheduled, Some(1)),
            (Started, Some(2)),
            (PartsSent, None),
            (PartsSent, None),
            (Succeeded, Some(2)),
        ],
        "{:#?}",
        found.timeline
    );
    let retry = &found.timeline[2];
    assert!(retry.detail.contains("500"), "{}", retry.detail);
    // Each part at the time WeChat accepted it, after the attempt that
    // sent it started.
    for (n, part) in [(1, &found.timeline[4]), (2, &found.timeline[5])] {
        assert_eq!(
            part.detail,
            format!("part {n} of the answer accepted by WeChat")
        );
        assert!(part.at >= found.timeline[3].at, "{:#?}", found.timeline);
    }
    assert_eq!(found.notes["parts_sent"], "2");
    assert!(
        found.notes["answer"].ends_with("more characters)"),
        "the answer is cut: {}",
        found.notes["answer"]
    );
    let times: Vec<_> = found.timeline.iter().filter_map(|e| e.at).collect();
    assert!(times.is_sorted(), "{times:?}");

    // `ferry jobs show`, as text and as JSON.
    let (ok, text, err) = ferry_jobs_show(&redis, &[&id.to_string()]);
    assert!(ok, "{err}");
    for expected in [
        "state     succeeded",
        "attempts  2 / ",
        "started #1",
        "retry scheduled #1",
        "started #2",
        "part sent",
        "part 2 of the answer accepted by WeChat",
        "succeeded #2",
        "parts_sent: 2",
        OPENID,
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    let (ok, json, err) = ferry_jobs_show(&redis, &[&id.to_string(), "--json"]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["record"]["id"], id.to_string());
    assert_eq!(json["timeline"].as_array().unwrap().len(), 7);
    assert_eq!(json["timeline"][2]["kind"], "retry_scheduled");
    for (arg, says) in [(UNKNOWN, "no such job"), (GARBLED, "not a job id")] {
        let (ok, out, err) = ferry_jobs_show(&redis, &[arg]);
        assert!(!ok && out.is_empty(), "{arg}: {out}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(says), "{arg}: {err}");
    }

    // The dashboard: the lookup form on the overview, the job page.
    let signed_in = client()
        .post(format!("{}/admin/login", f.api_url))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    let cookie = signed_in.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let (status, overview) = get(&f.api_url, "/admin", &cookie).await;
    assert_eq!(status, 200);
    assert!(
        overview.contains(r#"<form id="job-lookup" method="get" action="/admin/jobs">"#),
        "{overview}"
    );
    let query = format!("/admin/jobs?id={}", id.to_string().replace(':', "%3A"));
    for path in [query, format!("/admin/jobs/{id}")] {
        let (status, page) = get(&f.api_url, &path, &cookie).await;
        assert_eq!(status, 200, "{path}: {page}");
        for expected in [
            r#"data-event="retry scheduled""#,
            r#"data-event="part sent""#,
            r#"data-event="succeeded""#,
            "tell me a story &lt;b&gt;",
            "parts_sent",
        ] {
            assert!(page.contains(expected), "{expected:?} in {path}");
        }
    }
    for (id, status, says) in [
        (UNKNOWN, 404, "no such job"),
        (GARBLED, 400, "not a job id"),
    ] {
        let (got, page) = get(&f.api_url, &format!("/admin/jobs?id={id}"), &cookie).await;
        assert_eq!(got, status, "{id}: {page}");
        assert!(page.contains(says), "{id}: {page}");
    }
    assert!(matches!(
        f.queue.lookup(GARBLED).await,
        Err(LookupError::NotAJobId)
    ));
    f.stop().await;
}
