//! The dashboard's routes over plain HTTP (no browser): sign-in, the
//! session cookie, CSRF refusals, replaying and deleting dead letters,
//! breakers. `dashboard_browser.rs` drives the same pages in Chromium.

use ferry_common::api_tokens::{ApiTokens, hash_hex};
use ferry_common::job::NewJob;
use ferry_common::queue::WECHAT;
use ferry_tests::staged_jobs::{dead_letter, held, retrying};
use ferry_tests::{Parts, RedisServer, TestFerry};
use reqwest::header;
use reqwest::redirect::Policy;

const ADMIN_TOKEN: &str = "admin-token-for-the-dashboard-test";

async fn ferry(redis: &RedisServer) -> TestFerry {
    ferry_with(redis, &[]).await
}

/// The dashboard's Ferry with these variables on top.
async fn ferry_with(redis: &RedisServer, extra: &[(&str, &str)]) -> TestFerry {
    let hash = hash_hex(ADMIN_TOKEN);
    let mut vars = vec![
        ("FERRY_ADMIN_TOKEN", hash.as_str()),
        ("FERRY_PROVIDERS", "deepseek"),
        ("DEEPSEEK_API_KEY", "sk-dashboard-test"),
    ];
    vars.extend_from_slice(extra);
    TestFerry::start(
        redis,
        &vars,
        Parts {
            api: true,
            worker: false,
        },
    )
    .await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// Signs in; returns the `Cookie` header value and the page's CSRF token.
async fn sign_in(base: &str) -> (String, String) {
    let response = client()
        .post(format!("{base}/admin/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    let set_cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let page = get(base, "/admin", Some(&cookie)).await;
    assert_eq!(page.0, 200);
    (cookie, csrf_of(&page.1))
}

fn csrf_of(page: &str) -> String {
    let at = page.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    page[at..at + 64].to_owned()
}

async fn get(base: &str, path: &str, cookie: Option<&str>) -> (u16, String) {
    let mut request = client().get(format!("{base}{path}"));
    if let Some(c) = cookie {
        request = request.header(header::COOKIE, c);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn post(
    base: &str,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
    origin: Option<&str>,
) -> u16 {
    let mut request = client()
        .post(format!("{base}{path}"))
        .header(header::COOKIE, cookie)
        .form(form);
    if let Some(o) = origin {
        request = request.header(header::ORIGIN, o);
    }
    request.send().await.unwrap().status().as_u16()
}

fn hget(redis: &RedisServer, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query(&mut redis.conn())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_every_admin_route_answers_401_with_the_sign_in_form() {
    let redis = RedisServer::start();
    let f = ferry(&redis).await;
    for path in [
        "/admin",
        "/admin/api/overview",
        "/admin/dlq/wechat",
        "/admin/queues/wechat/partitions",
    ] {
        let (status, body) = get(&f.api_url, path, None).await;
        assert_eq!(status, 401, "{path}");
        assert!(body.contains(r#"action="/admin/login""#), "{path}");
    }
    let forged = "ferry_admin=".to_owned() + &"ab".repeat(32);
    assert_eq!(get(&f.api_url, "/admin", Some(&forged)).await.0, 401);
    assert_eq!(
        post(
            &f.api_url,
            "/admin/breakers/deepseek/reset",
            &forged,
            &[("csrf", "x")],
            None
        )
        .await,
        401
    );
    let wrong = client()
        .post(format!("{}/admin/login", f.api_url))
        .form(&[("token", "not-the-admin-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(wrong.headers().get(header::SET_COOKIE).is_none());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_change_without_the_sessions_token_or_from_another_origin_is_refused() {
    let redis = RedisServer::start();
    let f = ferry(&redis).await;
    let (cookie, csrf) = sign_in(&f.api_url).await;
    let open = "/admin/breakers/deepseek/open";
    assert_eq!(
        post(
            &f.api_url,
            open,
            &cookie,
            &[("csrf", "0"), ("seconds", "60")],
            None
        )
        .await,
        403
    );
    let evil = Some("https://evil.example");
    assert_eq!(
        post(
            &f.api_url,
            open,
            &cookie,
            &[("csrf", &csrf), ("seconds", "60")],
            evil
        )
        .await,
        403
    );
    assert_eq!(
        hget(&redis, "{ferry:provider:deepseek}:breaker", "state"),
        None,
        "nothing changed"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_replays_and_deletes_dead_letters_and_moves_a_breaker() {
    let redis = RedisServer::start();
    let f = ferry(&redis).await;
    let replayed = dead_letter(&f.queue, WECHAT, "made dead to be replayed").await;
    let deleted = dead_letter(&f.queue, WECHAT, "made dead to be deleted").await;
    let (cookie, csrf) = sign_in(&f.api_url).await;

    let (status, page) = get(&f.api_url, "/admin/dlq/wechat", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(page.contains("made dead to be replayed") && page.contains(&deleted.to_string()));
    let entry_of = |job: &str| {
        let row = page.find(&format!(r#"data-job="{job}""#)).unwrap();
        let at = page[row..].find(r#"name="entry" value=""#).unwrap() + row + 20;
        page[at..at + page[at..].find('"').unwrap()].to_owned()
    };
    let (replay_entry, delete_entry) = (
        entry_of(&replayed.to_string()),
        entry_of(&deleted.to_string()),
    );

    let origin = Some(f.api_url.as_str());
    assert_eq!(
        post(
            &f.api_url,
            "/admin/dlq/wechat/replay",
            &cookie,
            &[("csrf", &csrf), ("entry", &replay_entry)],
            origin
        )
        .await,
        303
    );
    assert_eq!(
        post(
            &f.api_url,
            "/admin/dlq/wechat/delete",
            &cookie,
            &[("csrf", &csrf), ("entry", &delete_entry)],
            origin
        )
        .await,
        303
    );
    assert!(f.queue.dead_letters(WECHAT, 10).await.unwrap().is_empty());
    let record = f
        .queue
        .job(&replayed)
        .await
        .unwrap()
        .expect("replayed job kept");
    assert_eq!(record.state.as_str(), "queued");
    assert!(
        f.queue.job(&deleted).await.unwrap().is_none(),
        "deleted for good"
    );
    let stream: u64 = redis::cmd("XLEN")
        .arg("{ferry:wechat}:stream")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(stream, 1, "the replayed job is back on its stream");

    let breaker = "{ferry:provider:deepseek}:breaker";
    let form = [("csrf", csrf.as_str()), ("seconds", "120")];
    assert_eq!(
        post(
            &f.api_url,
            "/admin/breakers/deepseek/open",
            &cookie,
            &form,
            origin
        )
        .await,
        303
    );
    assert_eq!(hget(&redis, breaker, "state").as_deref(), Some("open"));
    let (_, overview) = get(&f.api_url, "/admin/api/overview", Some(&cookie)).await;
    let overview: serde_json::Value = serde_json::from_str(&overview).unwrap();
    assert_eq!(overview["providers"][0]["state"], "open");
    assert_eq!(
        post(
            &f.api_url,
            "/admin/breakers/deepseek/reset",
            &cookie,
            &[("csrf", &csrf)],
            origin
        )
        .await,
        303
    );
    let (_, overview) = get(&f.api_url, "/admin/api/overview", Some(&cookie)).await;
    assert!(overview.contains(r#""state":"closed""#), "{overview}");
    assert_ne!(hget(&redis, breaker, "state").as_deref(), Some("open"));

    assert_eq!(
        post(
            &f.api_url,
            "/admin/logout",
            &cookie,
            &[("csrf", &csrf)],
            origin
        )
        .await,
        303
    );
    assert_eq!(
        get(&f.api_url, "/admin", Some(&cookie)).await.0,
        401,
        "signed out everywhere"
    );
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.conn())
        .unwrap();
    for key in keys {
        let dump: String = format!(
            "{:?}",
            redis::cmd("DUMP")
                .arg(&key)
                .query::<redis::Value>(&mut redis.conn())
                .unwrap()
        );
        assert!(
            !dump.contains(ADMIN_TOKEN) && !key.contains(ADMIN_TOKEN),
            "the token reached Redis in {key}"
        );
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retries_and_held_jobs_pages_list_what_waits_and_what_runs() {
    let redis = RedisServer::start();
    let f = ferry(&redis).await;
    let waiting = retrying(&f.queue, WECHAT, "provider busy <b>").await;
    let running = held(&f.queue, WECHAT).await;
    let (cookie, _) = sign_in(&f.api_url).await;

    let (status, page) = get(&f.api_url, "/admin/retries/wechat", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(page.contains(&waiting.to_string()), "{page}");
    assert!(
        page.contains("provider busy &lt;b&gt;"),
        "error text escaped: {page}"
    );
    let (status, page) = get(&f.api_url, "/admin/held/wechat", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&running.id.to_string()) && page.contains("test-consumer"),
        "{page}"
    );
    let (status, page) = get(
        &f.api_url,
        &format!("/admin/jobs/{}", running.id),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        page.contains("staged by a test") && page.contains("running"),
        "{page}"
    );
    assert_eq!(
        get(&f.api_url, "/admin/retries/nope", Some(&cookie))
            .await
            .0,
        404
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_tokens_ends_every_dashboard_session() {
    let redis = RedisServer::start();
    let f = ferry(&redis).await;
    let (cookie, _) = sign_in(&f.api_url).await;
    assert_eq!(get(&f.api_url, "/admin", Some(&cookie)).await.0, 200);
    let rotated = hash_hex("the-new-admin-token");
    let api = f.api.as_ref().unwrap();
    assert!(
        api.auth
            .replace(ApiTokens::parse(&[], Some(&rotated)).unwrap())
    );
    assert_eq!(get(&f.api_url, "/admin", Some(&cookie)).await.0, 401);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_lists_recent_batches_with_their_progress() {
    let redis = RedisServer::start();
    let f = ferry(&redis).await;
    let (cookie, _) = sign_in(&f.api_url).await;
    let body: String = (0..3)
        .map(|i| {
            serde_json::json!({"custom_id": format!("c{i}"), "messages": [{"role": "user", "content": "hi"}]})
                .to_string()
                + "\n"
        })
        .collect();
    // The admin token holds every scope; no worker runs, so the jobs wait.
    let submitted: serde_json::Value = client()
        .post(format!("{}/v1/batches", f.api_url))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["id"].as_str().expect("a batch id").to_owned();

    let (status, page) = get(&f.api_url, "/admin", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(page.contains(&format!(r#"<tr data-b="{id}">"#)), "{page}");
    assert!(page.contains("0% (0/3)"), "{page}");
    let (status, json) = get(&f.api_url, "/admin/api/overview", Some(&cookie)).await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let listed = &json["batches"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["counts"]["total"], 3);
    assert_eq!(listed["counts"]["queued"], 3);
    assert!(
        json["queues"].is_array(),
        "the fleet overview is still there"
    );

    // A batch whose records expired leaves the list when it is next read.
    let key = format!("{{ferry:batch}}:batch:{id}");
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query(&mut redis.conn())
        .unwrap();
    let (_, json) = get(&f.api_url, "/admin/api/overview", Some(&cookie)).await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["batches"], serde_json::json!([]));
    let left: u64 = redis::cmd("ZCARD")
        .arg("{ferry:batch}:batches")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_dashboard_answers_503_and_recovers() {
    let mut redis = RedisServer::start();
    let f = ferry(&redis).await;
    let (cookie, _) = sign_in(&f.api_url).await;
    redis.kill();
    for path in ["/admin", "/admin/dlq/wechat"] {
        let (status, page) = get(&f.api_url, path, Some(&cookie)).await;
        assert_eq!(status, 503, "{path}");
        assert!(page.contains("Redis is unavailable, try again"), "{page}");
        assert!(!page.contains("127.0.0.1"), "no cause in the page: {page}");
    }
    // Back, without persistence: the session went with the data.
    redis.restart();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, _) = get(&f.api_url, "/admin", Some(&cookie)).await;
        if status == 401 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {status}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    f.stop().await;
}

/// The numbers in a partitions page's rows: (partition, depth).
fn partition_depths(page: &str) -> Vec<(String, u64)> {
    let mut rows = Vec::new();
    let mut rest = page;
    while let Some(at) = rest.find(r#"<tr data-partition=""#) {
        rest = &rest[at + 20..];
        let name = rest[..rest.find('"').unwrap()].to_owned();
        let cell = rest.find(r#"data-f="depth">"#).unwrap() + 15;
        rest = &rest[cell..];
        let depth = rest[..rest.find('<').unwrap()].parse().unwrap();
        rows.push((name, depth));
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_sums_a_queues_partitions_and_a_page_lists_them_one_by_one() {
    let redis = RedisServer::start();
    let f = ferry_with(&redis, &[("FERRY_QUEUE_PARTITIONS", "wechat=3")]).await;
    // No worker runs and no idempotency key: 30 jobs wait, spread over the
    // 3 partitions at random.
    for n in 0..30 {
        let job = NewJob {
            kind: "noop".into(),
            queue: WECHAT.into(),
            payload: serde_json::json!({ "n": n }),
            max_attempts: 1,
            idempotency: None,
        };
        f.queue.enqueue(&job).await.unwrap();
    }
    let (cookie, _) = sign_in(&f.api_url).await;

    let (status, json) = get(&f.api_url, "/admin/api/overview", Some(&cookie)).await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let wechat = json["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == WECHAT)
        .expect("wechat in the overview");
    assert_eq!(wechat["partitions"], 3, "{wechat}");
    assert_eq!(wechat["depth"], 30, "{wechat}");
    assert_eq!(wechat["added"], 30, "{wechat}");
    let batch = json["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "batch")
        .expect("batch in the overview");
    assert_eq!(batch["partitions"], 1, "{batch}");

    let (status, page) = get(&f.api_url, "/admin", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(
            r#"<a data-q="wechat" data-f="partitions" href="/admin/queues/wechat/partitions">3</a>"#
        ),
        "{page}"
    );
    assert!(
        page.contains(r#"<td class="num" data-q="wechat" data-f="depth">30</td>"#),
        "{page}"
    );

    let (status, page) = get(&f.api_url, "/admin/queues/wechat/partitions", Some(&cookie)).await;
    assert_eq!(status, 200);
    let rows = partition_depths(&page);
    let names: Vec<&str> = rows.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["wechat", "wechat:1", "wechat:2"], "{page}");
    assert_eq!(rows.iter().map(|(_, d)| d).sum::<u64>(), 30, "{page}");
    assert!(
        rows.iter().filter(|(_, d)| *d > 0).count() >= 2,
        "30 jobs at random over 3 partitions: {rows:?}"
    );

    let (status, page) = get(&f.api_url, "/admin/queues/batch/partitions", Some(&cookie)).await;
    assert_eq!(status, 200);
    let names: Vec<String> = partition_depths(&page)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["batch"], "{page}");
    assert_eq!(
        get(&f.api_url, "/admin/queues/nope/partitions", Some(&cookie))
            .await
            .0,
        404
    );
    f.stop().await;
}
