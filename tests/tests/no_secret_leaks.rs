//! No secret where it should not be (SECURITY.md): real `ferry api` and
//! `ferry worker` processes, configured with known, distinctive secret
//! values (a Redis password; half of the rest from an encrypted secrets
//! file; WeChat safe mode), are driven through delivered replies and every
//! error path: provider 401 (a revoked key), 429, 500 and 400 (the key
//! echoed in the error, as providers do), WeChat 40001 on `custom/send`, a
//! reply failing for good (apology, dead letter), forged and replayed
//! pushes, bad and under-scoped bearer tokens, a failed and a good
//! dashboard sign-in, bodies too large, a batch with a signed webhook, and
//! a SIGHUP with rotated secrets. Then everything a secret could leak into
//! is scanned: both processes' whole log output (debug level, JSON), both
//! `/metrics`, every HTTP body (and header) the test received, the spool
//! directory, and the whole Redis keyspace while running and after (every
//! key name and every value, by type). None may hold a secret.
//!
//! One test, its phases in order (they share the processes), each a
//! function below; the search, the processes and the Redis dump are
//! `ferry_tests::leaks`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ferry_common::Keys;
use ferry_common::api_tokens::hash_hex;
use ferry_common::batch::signature;
use ferry_common::secrets_file::{self, KdfParams};
use ferry_common::wechat::{self, MessageCrypt};
use ferry_tests::fake_provider::{FakeKind, FakeProvider, Reply};
use ferry_tests::fake_webhook::FakeWebhook;
use ferry_tests::leaks::{
    Bodies, Exhibit, Keyspace, Needle, Processes, files_under, find, free_addr, http, leaks,
    redis_keyspace, series, spawn, wait_healthy,
};
use ferry_tests::{FakeWeChat, RedisServer, eventually, ferry_binary};
use serde_json::{Value, json};

// ------------------------------------------------------------ the secrets

const REDIS_PASSWORD: &str = "redis-LEAKCHECK-password";
/// DeepSeek's two keys: the fake accepts only the first, so the second is a
/// revoked key (401).
const DEEPSEEK_KEY: &str = "sk-LEAKCHECK-deepseek-1";
const DEEPSEEK_REVOKED_KEY: &str = "sk-LEAKCHECK-deepseek-2";
const QWEN_KEY: &str = "sk-LEAKCHECK-qwen-1";
const APP_SECRET: &str = "wxsecret-LEAKCHECK-appsecret";
const WECHAT_TOKEN: &str = "wxtoken-LEAKCHECK-token";
/// 43 characters, as WeChat's console makes them (the last one's unused
/// bits are zero, so it decodes strictly).
const AES_KEY: &str = "LEAKCHECKaesKey0123456789abcdefghijklmnopqA";
const WEBHOOK_SECRET: &str = "whsec-LEAKCHECK-webhook";
const SECRETS_PASSWORD: &str = "pw-LEAKCHECK-secrets-file";
/// Bearer tokens as clients hold them; Ferry is configured with hashes.
const SUBMIT_TOKEN: &str = "tok-LEAKCHECK-submit";
const READ_TOKEN: &str = "tok-LEAKCHECK-read";
const ADMIN_TOKEN: &str = "tok-LEAKCHECK-admin";
/// What the secrets file holds after the rotation (SIGHUP): a new Qwen key
/// (the worker takes it at once), a new AppSecret (needs a restart: the
/// worker says so, by name) and a new AES key (the api takes it beside the
/// old one).
const QWEN_KEY_ROTATED: &str = "sk-LEAKCHECK-qwen-2";
const APP_SECRET_ROTATED: &str = "wxsecret-LEAKCHECK-rotated";
const AES_KEY_ROTATED: &str = "LEAKCHECKrotatedAesKey0123456789abcdefghijA";
/// What the fake WeChat's access tokens start with (`FAKE_TOKEN_<n>`).
const ACCESS_TOKEN_PREFIX: &str = "FAKE_TOKEN_";

const APP_ID: &str = "wx_leakcheck_app";
const ACCOUNT: &str = "gh_leakcheck";
const USER: &str = "o_leakcheck_user";
const OTHER_USER: &str = "o_leakcheck_other";
const DEEPSEEK_MODEL: &str = "deepseek-chat";
const QWEN_MODEL: &str = "qwen-plus";
const WAIT: Duration = Duration::from_secs(40);

/// Every secret, with the obvious encodings of each: the value itself, its
/// base64 (standard and URL-safe) and its hex; for the api tokens also their
/// SHA-256 (Ferry's configuration holds it, nothing should print it); for
/// the AES key also the 32 bytes it stands for.
fn needles() -> Vec<Needle> {
    let secrets = [
        ("REDIS_PASSWORD", REDIS_PASSWORD),
        ("DEEPSEEK_API_KEY[0]", DEEPSEEK_KEY),
        ("DEEPSEEK_API_KEY[1]", DEEPSEEK_REVOKED_KEY),
        ("QWEN_API_KEY", QWEN_KEY),
        ("QWEN_API_KEY (rotated)", QWEN_KEY_ROTATED),
        ("WECHAT_APP_SECRET", APP_SECRET),
        ("WECHAT_APP_SECRET (rotated)", APP_SECRET_ROTATED),
        ("WECHAT_TOKEN", WECHAT_TOKEN),
        ("WECHAT_ENCODING_AES_KEY", AES_KEY),
        ("WECHAT_ENCODING_AES_KEY (rotated)", AES_KEY_ROTATED),
        ("FERRY_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("SECURE_CONFIG_PASSWORD", SECRETS_PASSWORD),
        ("submit token", SUBMIT_TOKEN),
        ("read token", READ_TOKEN),
        ("admin token", ADMIN_TOKEN),
    ];
    let mut needles = Vec::new();
    for (name, value) in secrets {
        needles.push(Needle::new(name, value));
        for (encoding, encoded) in [
            ("base64", STANDARD.encode(value)),
            ("base64url", URL_SAFE_NO_PAD.encode(value)),
            ("hex", hex::encode(value)),
        ] {
            needles.push(Needle::new(format!("{name} ({encoding})"), encoded));
        }
    }
    for (name, token) in [
        ("submit token", SUBMIT_TOKEN),
        ("read token", READ_TOKEN),
        ("admin token", ADMIN_TOKEN),
    ] {
        needles.push(Needle::new(
            format!("{name} (its SHA-256)"),
            hash_hex(token),
        ));
    }
    for (name, key) in [
        ("WECHAT_ENCODING_AES_KEY", AES_KEY),
        ("WECHAT_ENCODING_AES_KEY (rotated)", AES_KEY_ROTATED),
    ] {
        let aes = STANDARD.decode(format!("{key}=")).unwrap();
        assert_eq!(aes.len(), 32);
        needles.push(Needle::new(
            format!("{name} (hex of its bytes)"),
            hex::encode(&aes),
        ));
        needles.push(Needle::new(format!("{name} (its bytes)"), aes));
    }
    needles
}

/// The access tokens the fake WeChat issued: never in a log, a metric or a
/// body (Redis is another matter: see [`leaks_in_redis`]).
fn access_token_needle() -> Needle {
    Needle::new("the WeChat access token", ACCESS_TOKEN_PREFIX)
}

// ------------------------------------------------------------ the world

/// What the phases share. Fields drop in order: on a panic the processes
/// are killed first, then the directory and the servers go.
struct World {
    processes: Processes,
    /// Every HTTP answer the test received, for the scan.
    bodies: Bodies,
    /// `ferry migrate`'s stdout and stderr, for the scan.
    migrate: Vec<Exhibit>,
    client: reqwest::Client,
    api_addr: String,
    admin_addr: String,
    /// The api's base URL, and the worker's admin port's.
    api: String,
    admin: String,
    dir: tempfile::TempDir,
    hook: FakeWebhook,
    wechat: FakeWeChat,
    qwen: FakeProvider,
    deepseek: FakeProvider,
    redis: RedisServer,
}

impl World {
    /// Redis with a password (and asking for it), the fakes, and the
    /// secrets file with half of the secrets. No process yet.
    async fn new() -> Self {
        let redis = RedisServer::start_with_password(REDIS_PASSWORD);
        let anonymous = redis.url().replace(&format!(":{REDIS_PASSWORD}@"), "");
        let refused = redis::Client::open(anonymous)
            .unwrap()
            .get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        assert!(refused.is_err(), "Redis asks for its password");
        let deepseek = FakeProvider::start(FakeKind::OpenAi, DEEPSEEK_KEY, DEEPSEEK_MODEL).await;
        let qwen = FakeProvider::start(FakeKind::OpenAi, QWEN_KEY, QWEN_MODEL).await;
        let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
        let hook = FakeWebhook::start().await;
        let dir = tempfile::Builder::new()
            .prefix("ferry-leakcheck-")
            .tempdir()
            .unwrap();
        write_secrets(dir.path(), &secrets_text(QWEN_KEY, APP_SECRET, AES_KEY));
        let (api_addr, admin_addr) = (free_addr(), free_addr());
        Self {
            processes: Processes(Vec::new()),
            bodies: Bodies::default(),
            migrate: Vec::new(),
            client: http(),
            api: format!("http://{api_addr}"),
            admin: format!("http://{admin_addr}"),
            api_addr,
            admin_addr,
            dir,
            hook,
            wechat,
            qwen,
            deepseek,
            redis,
        }
    }

    fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// The whole environment of every `ferry` process, plus `extra`.
    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let secrets_file = self.dir.path().join(SECRETS_FILE);
        let mut env: Vec<(String, String)> = [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("REDIS_URL", self.redis.url()),
            (
                "FERRY_SECRETS_FILE",
                secrets_file.to_str().unwrap().to_owned(),
            ),
            ("SECURE_CONFIG_PASSWORD", SECRETS_PASSWORD.into()),
            ("LOG_LEVEL", "debug".into()),
            ("LOG_FORMAT", "json".into()),
            ("FERRY_PROVIDERS", "deepseek,qwen".into()),
            (
                "DEEPSEEK_API_KEY",
                format!("{DEEPSEEK_KEY},{DEEPSEEK_REVOKED_KEY}"),
            ),
            ("DEEPSEEK_BASE_URL", self.deepseek.base_url()),
            ("DEEPSEEK_MODEL", DEEPSEEK_MODEL.into()),
            ("QWEN_BASE_URL", self.qwen.base_url()),
            ("QWEN_MODEL", QWEN_MODEL.into()),
            ("WECHAT_APP_ID", APP_ID.into()),
            ("WECHAT_TOKEN", WECHAT_TOKEN.into()),
            ("WECHAT_API_BASE", self.wechat.base_url()),
            ("FERRY_LISTEN", self.api_addr.clone()),
            (
                "FERRY_SPOOL_DIR",
                self.spool_dir().to_str().unwrap().to_owned(),
            ),
            ("FERRY_MAX_BODY_BYTES", "16384".into()),
            ("FERRY_API_SUBMISSIONS_PER_MINUTE", "0".into()),
            ("FERRY_WEBHOOK_ALLOW_NETWORKS", "127.0.0.1".into()),
            ("FERRY_FETCH_BLOCK_MS", "100".into()),
            ("FERRY_SHUTDOWN_GRACE", "5".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    /// POSTs a push to `/wechat`; the answer is recorded.
    async fn push(&mut self, what: &str, query: &[(&str, String)], body: String) -> (u16, String) {
        let request = self
            .client
            .post(format!("{}/wechat", self.api))
            .query(query)
            .body(body);
        self.bodies.send(what, request).await
    }
}

const SECRETS_FILE: &str = "secrets.enc";

/// What the secrets file holds (the api and admin tokens as their hashes).
fn secrets_text(qwen: &str, app_secret: &str, aes: &str) -> String {
    let api_tokens = format!(
        "[\"ci:submit+read:{}\", \"viewer:read:{}\"]",
        hash_hex(SUBMIT_TOKEN),
        hash_hex(READ_TOKEN)
    );
    format!(
        "QWEN_API_KEY = \"{qwen}\"\nWECHAT_APP_SECRET = \"{app_secret}\"\n\
         WECHAT_ENCODING_AES_KEY = \"{aes}\"\nFERRY_WEBHOOK_SECRET = \"{WEBHOOK_SECRET}\"\n\
         FERRY_API_TOKENS = {api_tokens}\nFERRY_ADMIN_TOKEN = \"{}\"\n",
        hash_hex(ADMIN_TOKEN)
    )
}

/// The secrets file after the rotation (SIGHUP).
fn rotated_secrets_text() -> String {
    secrets_text(QWEN_KEY_ROTATED, APP_SECRET_ROTATED, AES_KEY_ROTATED)
}

/// Encrypts `text` into `<dir>/secrets.enc`.
fn write_secrets(dir: &Path, text: &str) {
    secrets_file::encrypt_to_file(
        &dir.join(SECRETS_FILE),
        text,
        &ferry_common::Secret::new(SECRETS_PASSWORD),
        KdfParams::default(),
    )
    .unwrap();
}

// ------------------------------------------------------------ pushes

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The query of a plaintext push signed with `token` at `timestamp`.
fn signed_query(token: &str, timestamp: i64) -> Vec<(&'static str, String)> {
    let (ts, nonce) = (timestamp.to_string(), rand::random::<u32>().to_string());
    vec![
        ("signature", wechat::sign(&[token, &ts, &nonce])),
        ("timestamp", ts),
        ("nonce", nonce),
        ("openid", USER.into()),
    ]
}

/// A safe-mode push of `xml`: the body holds only the ciphertext, and
/// `msg_signature` covers it (signed with `token`).
fn safe_push(xml: &str, token: &str) -> (Vec<(&'static str, String)>, String) {
    let encrypt = MessageCrypt::new(AES_KEY, APP_ID)
        .unwrap()
        .encrypt(xml)
        .unwrap();
    let body = format!(
        "<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    );
    let mut query = signed_query(WECHAT_TOKEN, now());
    let (ts, nonce) = (query[1].1.clone(), query[2].1.clone());
    query.push(("encrypt_type", "aes".into()));
    query.push((
        "msg_signature",
        wechat::sign(&[token, &ts, &nonce, &encrypt]),
    ));
    (query, body)
}

fn text(content: &str, msg_id: i64) -> String {
    wechat::text_message_xml(ACCOUNT, USER, now(), content, msg_id)
}

// ------------------------------------------------------------ the test

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_reaches_a_log_a_metric_a_response_or_redis() {
    let mut w = World::new().await;
    start_the_api_and_the_worker(&mut w).await;

    // Every path a secret could take, each answer recorded.
    a_reply_through_every_provider_failure(&mut w).await;
    a_reply_that_fails_for_good(&mut w).await;
    forged_replayed_and_oversized_pushes(&mut w).await;
    the_server_url_check_and_health(&mut w).await;
    the_jobs_api_refuses_bad_tokens_and_bodies(&mut w).await;
    an_api_job_that_fails_shows_no_key(&mut w).await;
    let batch = a_batch_with_a_signed_webhook(&mut w).await;
    the_batch_status_and_results(&mut w, &batch).await;
    let session = the_dashboard_sign_in_and_pages(&mut w).await;
    let metrics = both_metrics(&mut w).await;
    the_paths_really_happened(&w, &metrics);
    the_failed_reply_is_dead_lettered(&mut w, &session).await;
    sighup_with_rotated_secrets(&mut w).await;

    // Then everything a secret could have leaked into.
    let gathered = stop_and_gather(&mut w).await;
    the_logs_are_worth_scanning(&gathered.logs);
    let mut everywhere = needles();
    everywhere.push(Needle::new("the dashboard session id", session.id.clone()));
    the_scan_finds_each_configured_secret(&w, &everywhere);
    let mut found = leaks(&gathered.exhibits, &everywhere);
    found.extend(leaks(&gathered.exhibits, &[access_token_needle()]));
    found.extend(leaks_in_redis(gathered.live, gathered.stopped, &everywhere));
    assert!(
        found.is_empty(),
        "{} secret(s) found where none may be:\n{}",
        found.len(),
        found.join("\n")
    );
}

// ------------------------------------------------------------ the phases

/// `ferry migrate`, then `ferry api` and `ferry worker` (its admin port
/// apart), until both are ready.
async fn start_the_api_and_the_worker(w: &mut World) {
    let migrate = Command::new(ferry_binary())
        .arg("migrate")
        .env_clear()
        .envs(w.env(&[]))
        .output()
        .unwrap();
    assert!(migrate.status.success(), "{migrate:?}");
    w.migrate = vec![
        Exhibit::new("ferry migrate's stdout", migrate.stdout),
        Exhibit::new("ferry migrate's stderr", migrate.stderr),
    ];
    let worker_env = w.env(&[("FERRY_WORKER_ADMIN_LISTEN", &w.admin_addr)]);
    w.processes = Processes(vec![
        ("api".into(), spawn(w.dir.path(), "api", &w.env(&[]))),
        ("worker".into(), spawn(w.dir.path(), "worker", &worker_env)),
    ]);
    wait_healthy(&w.api, "api", &mut w.processes.0[0].1, WAIT).await;
    wait_healthy(&w.admin, "worker", &mut w.processes.0[1].1, WAIT).await;
}

/// A safe-mode push, answered through every provider failure. DeepSeek's
/// first key is rate limited (its error echoes the key, as providers do);
/// the retry gets the second key, which is revoked (401): on to Qwen,
/// whose first answer is a 500 echoing its key, then an answer. WeChat
/// refuses the first send with 40001 (the cached token is invalid): the
/// fleet's token is dropped, fetched again and the reply delivered.
async fn a_reply_through_every_provider_failure(w: &mut World) {
    w.deepseek.push(
        Reply::openai_error(
            429,
            "rate_limit_exceeded",
            &format!("Rate limit reached for key {DEEPSEEK_KEY}"),
        )
        .header("retry-after-ms", "200"),
    );
    w.qwen.push(Reply::openai_error(
        500,
        "server_error",
        &format!("internal error serving {QWEN_KEY}"),
    ));
    w.wechat.fail_next_sends(&[40001]);
    let (query, body) = safe_push(&text("hello leakcheck", 1001), WECHAT_TOKEN);
    let pushed = w.push("a safe-mode push", &query, body).await;
    assert_eq!(pushed, (200, "success".into()));
    let delivered = w.wechat.wait_for_sent(1, WAIT).await;
    assert_eq!(delivered[0].touser, USER);
    assert_eq!(delivered[0].content, "hello leakcheck", "Qwen's echo");
}

/// Another user's message meets an error that ends the call (400, the key
/// echoed again): the apology goes out and the job is dead-lettered with
/// the reason, which names no key (see the Redis scan).
async fn a_reply_that_fails_for_good(w: &mut World) {
    w.qwen.push(Reply::openai_error(
        400,
        "invalid_request_error",
        &format!("content rejected for key {QWEN_KEY}"),
    ));
    let xml = wechat::text_message_xml(ACCOUNT, OTHER_USER, now(), "fail me", 1006);
    let (query, body) = safe_push(&xml, WECHAT_TOKEN);
    let pushed = w
        .push("a safe-mode push that fails for good", &query, body)
        .await;
    assert_eq!(pushed, (200, "success".into()));
    w.wechat.wait_for_sent(2, WAIT).await;
    assert_eq!(w.wechat.sent_to(OTHER_USER).len(), 1, "the apology");
}

async fn forged_replayed_and_oversized_pushes(w: &mut World) {
    let forged = w
        .push(
            "a push with a forged signature",
            &signed_query("a-guessed-token", now()),
            text("forged", 1002),
        )
        .await;
    assert_eq!(forged.0, 401, "{}", forged.1);
    let (query, body) = safe_push(&text("forged", 1003), "a-guessed-token");
    let forged_safe = w
        .push("a safe-mode push with a forged msg_signature", &query, body)
        .await;
    assert_eq!(forged_safe.0, 401, "{}", forged_safe.1);
    let replayed = w
        .push(
            "a push replayed an hour later",
            &signed_query(WECHAT_TOKEN, now() - 3600),
            text("replayed", 1004),
        )
        .await;
    assert_eq!(replayed.0, 403, "{}", replayed.1);
    let too_large = w
        .push(
            "a push over the body limit",
            &signed_query(WECHAT_TOKEN, now()),
            text(&"长".repeat(8000), 1005),
        )
        .await;
    assert_eq!(too_large.0, 413, "{}", too_large.1);
}

/// The server URL check (GET /wechat), good and forged; the health pages
/// and the OpenAPI document.
async fn the_server_url_check_and_health(w: &mut World) {
    let wechat = format!("{}/wechat", w.api);
    let mut check = signed_query(WECHAT_TOKEN, now());
    check.push(("echostr", "leakcheck-echo".into()));
    let verified = w
        .bodies
        .send("the server URL check", w.client.get(&wechat).query(&check))
        .await;
    assert_eq!(verified, (200, "leakcheck-echo".into()));
    let mut forged_check = signed_query("a-guessed-token", now());
    forged_check.push(("echostr", "leakcheck-echo".into()));
    let forged_check = w
        .bodies
        .send(
            "a forged server URL check",
            w.client.get(&wechat).query(&forged_check),
        )
        .await;
    assert_eq!(forged_check.0, 401, "{}", forged_check.1);
    for path in ["/healthz", "/readyz", "/v1/openapi.json"] {
        let request = w.client.get(format!("{}{path}", w.api));
        let answer = w.bodies.send(&format!("GET {path}"), request).await;
        assert_eq!(answer.0, 200, "{path}: {}", answer.1);
    }
}

fn api_job() -> Value {
    json!({"messages": [{"role": "user", "content": "api job"}]})
}

async fn the_jobs_api_refuses_bad_tokens_and_bodies(w: &mut World) {
    let (jobs, job) = (format!("{}/v1/jobs", w.api), api_job());
    let no_token = w
        .bodies
        .send(
            "POST /v1/jobs without a token",
            w.client.post(&jobs).json(&job),
        )
        .await;
    assert_eq!(no_token.0, 401, "{}", no_token.1);
    let bad_token = w
        .bodies
        .send(
            "POST /v1/jobs with an unknown token",
            w.client
                .post(&jobs)
                .bearer_auth("tok-LEAKCHECK-guessed")
                .json(&job),
        )
        .await;
    assert_eq!(bad_token.0, 401, "{}", bad_token.1);
    let wrong_scope = w
        .bodies
        .send(
            "POST /v1/jobs with a read-only token",
            w.client.post(&jobs).bearer_auth(READ_TOKEN).json(&job),
        )
        .await;
    assert_eq!(wrong_scope.0, 403, "{}", wrong_scope.1);
    let malformed = w
        .bodies
        .send(
            "POST /v1/jobs with a malformed body",
            w.client
                .post(&jobs)
                .bearer_auth(SUBMIT_TOKEN)
                .header("content-type", "application/json")
                .body("{\"messages\": 42"),
        )
        .await;
    assert_eq!(malformed.0, 400, "{}", malformed.1);
}

/// A provider error that ends the call (400) echoes Qwen's key: the job
/// fails, and its error, shown to the caller, names no key. The read token
/// is another key: it may not see ci's job (404).
async fn an_api_job_that_fails_shows_no_key(w: &mut World) {
    w.qwen.push(Reply::openai_error(
        400,
        "invalid_request_error",
        &format!("request rejected for key {QWEN_KEY}"),
    ));
    let jobs = format!("{}/v1/jobs", w.api);
    let request = w
        .client
        .post(&jobs)
        .bearer_auth(SUBMIT_TOKEN)
        .json(&api_job());
    let created = w.bodies.send("POST /v1/jobs", request).await;
    assert_eq!(created.0, 201, "{}", created.1);
    let id = serde_json::from_str::<Value>(&created.1).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = format!("{jobs}/{id}");
    eventually("the API job to fail", WAIT, async || {
        let as_reader = w.client.get(&job).bearer_auth(READ_TOKEN);
        let (status, body) = w.bodies.send("GET /v1/jobs/{id}", as_reader).await;
        assert_eq!(status, 404, "{body}");
        let as_owner = w.client.get(&job).bearer_auth(SUBMIT_TOKEN);
        let (status, body) = w.bodies.send("GET /v1/jobs/{id}", as_owner).await;
        assert_eq!(status, 200, "{body}");
        let failed = serde_json::from_str::<Value>(&body).unwrap()["status"] == "failed";
        if failed {
            assert!(
                body.contains("[redacted]"),
                "the echoed key is scrubbed: {body}"
            );
        }
        failed
    })
    .await;
}

/// A two-line batch with a completion webhook, signed with
/// `FERRY_WEBHOOK_SECRET`; the webhook's body and headers join the scan.
/// Returns the batch's id.
async fn a_batch_with_a_signed_webhook(w: &mut World) -> String {
    let lines: String = ["a", "b"]
        .iter()
        .map(|id| {
            json!({"custom_id": id, "messages": [{"role": "user", "content": format!("line {id}")}]})
                .to_string()
                + "\n"
        })
        .collect();
    let request = w
        .client
        .post(format!("{}/v1/batches", w.api))
        .query(&[("webhook_url", w.hook.url())])
        .bearer_auth(SUBMIT_TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(lines);
    let batch = w
        .bodies
        .send("POST /v1/batches with a webhook", request)
        .await;
    assert_eq!(batch.0, 201, "{}", batch.1);
    let deliveries = w.hook.wait_for(1, WAIT).await;
    let d = &deliveries[0];
    assert!(
        signature::verify(
            WEBHOOK_SECRET.as_bytes(),
            d.timestamp.as_deref().unwrap().parse().unwrap(),
            &d.body,
            d.signature.as_deref().unwrap()
        ),
        "the webhook is signed with FERRY_WEBHOOK_SECRET"
    );
    w.bodies
        .0
        .push(Exhibit::new("the webhook's body", d.body.to_vec()));
    w.bodies.0.push(Exhibit::new(
        "the webhook's headers",
        format!("{:?} {:?} {:?}", d.timestamp, d.signature, d.delivery_id),
    ));
    serde_json::from_str::<Value>(&batch.1).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn the_batch_status_and_results(w: &mut World, id: &str) {
    let batch = format!("{}/v1/batches/{id}", w.api);
    let request = w.client.get(&batch).bearer_auth(SUBMIT_TOKEN);
    let status = w.bodies.send("GET /v1/batches/{id}", request).await;
    assert_eq!(status.0, 200, "{}", status.1);
    let request = w
        .client
        .get(format!("{batch}/results"))
        .bearer_auth(SUBMIT_TOKEN);
    let results = w.bodies.send("GET /v1/batches/{id}/results", request).await;
    assert_eq!(results.0, 200, "{}", results.1);
}

/// A signed-in dashboard session: its cookie, and the session id in it.
struct Session {
    cookie: String,
    id: String,
}

/// A failed sign-in, a good one (its answer is not recorded: the session
/// id is looked for everywhere else), then the dashboard's pages.
async fn the_dashboard_sign_in_and_pages(w: &mut World) -> Session {
    let login = format!("{}/admin/login", w.api);
    let request = w
        .client
        .post(&login)
        .form(&[("token", "tok-LEAKCHECK-wrong")]);
    let refused = w
        .bodies
        .send("a dashboard sign-in with a wrong token", request)
        .await;
    assert_eq!(refused.0, 401);
    let signed_in = w
        .client
        .post(&login)
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status().as_u16(), 303);
    let cookie = signed_in.headers()[reqwest::header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let id = cookie.split_once('=').unwrap().1.to_owned();
    for path in ["/admin", "/admin/api/overview", "/admin/dlq/wechat"] {
        let request = w
            .client
            .get(format!("{}{path}", w.api))
            .header(reqwest::header::COOKIE, &cookie);
        let page = w.bodies.send(&format!("GET {path}"), request).await;
        assert_eq!(page.0, 200, "{path}: {}", page.1);
    }
    Session { cookie, id }
}

/// The two scrapes of `/metrics`.
struct Metrics {
    api: String,
    worker: String,
}

/// The api's `/metrics` (refused without a token, then with the read
/// token) and the worker's.
async fn both_metrics(w: &mut World) -> Metrics {
    let metrics = format!("{}/metrics", w.api);
    let request = w.client.get(&metrics);
    let refused = w
        .bodies
        .send("the api's /metrics without a token", request)
        .await;
    assert_eq!(refused.0, 401);
    let request = w.client.get(&metrics).bearer_auth(READ_TOKEN);
    let api = w.bodies.send("the api's /metrics", request).await;
    assert_eq!(api.0, 200);
    let request = w.client.get(format!("{}/metrics", w.admin));
    let worker = w.bodies.send("the worker's /metrics", request).await;
    assert_eq!(worker.0, 200);
    Metrics {
        api: api.1,
        worker: worker.1,
    }
}

/// The error paths really happened: the fakes saw them and the metrics
/// counted them.
fn the_paths_really_happened(w: &World, metrics: &Metrics) {
    let deepseek_calls = w.deepseek.requests();
    assert!(
        deepseek_calls.iter().any(|r| r.key_header.as_deref()
            == Some(&format!("Bearer {DEEPSEEK_REVOKED_KEY}"))
            && r.problem.as_deref().is_some_and(|p| p.starts_with("401"))),
        "the revoked key was refused with 401"
    );
    assert!(w.qwen.count() >= 2, "Qwen's 500, then its answer");
    for name in [
        r#"ferry_provider_errors_total{provider="deepseek",class="rate_limited"}"#,
        r#"ferry_provider_errors_total{provider="deepseek",class="auth"}"#,
        r#"ferry_provider_errors_total{provider="qwen",class="transient"}"#,
        r#"ferry_wechat_send_errors_total{errcode="40001"}"#,
        "ferry_wechat_token_invalidations_total",
        "ferry_wechat_sends_total",
    ] {
        assert!(
            series(&metrics.worker, name) >= 1.0,
            "{name} in the worker's /metrics:\n{}",
            metrics.worker
        );
    }
    let api = &metrics.api;
    assert!(
        series(api, r#"ferry_security_events_total{kind="bad_signature"}"#) >= 2.0
            && series(api, r#"ferry_security_events_total{kind="replay"}"#) >= 1.0,
        "{api}"
    );
    let attempts = w.wechat.send_attempts_to(USER);
    assert_eq!(
        attempts.iter().map(|a| a.errcode).collect::<Vec<_>>(),
        [40001, 0],
        "refused with 40001, delivered after the token was fetched again"
    );
    assert!(w.wechat.token_fetches() >= 2);
}

/// The failed reply's dead letter, with its (scrubbed) reason, and the
/// dashboard's page of it.
async fn the_failed_reply_is_dead_lettered(w: &mut World, session: &Session) {
    let dead = Keys::new("ferry").queue("wechat").dead();
    let redis = &w.redis;
    eventually("the failed reply to be dead-lettered", WAIT, async || {
        let len: usize = redis::cmd("XLEN")
            .arg(&dead)
            .query(&mut redis.conn())
            .unwrap();
        len == 1
    })
    .await;
    let request = w
        .client
        .get(format!("{}/admin/dlq/wechat", w.api))
        .header(reqwest::header::COOKIE, &session.cookie);
    let page = w
        .bodies
        .send("GET /admin/dlq/wechat with a dead letter", request)
        .await;
    assert_eq!(page.0, 200);
}

/// The `SIGHUP: ` lines `process` logged so far.
fn reloaded(dir: &Path, process: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join(format!("{process}.err")))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("SIGHUP: "))
        })
        .collect()
}

/// SIGHUP with a rotated secrets file: the reload names what changed,
/// never a value.
async fn sighup_with_rotated_secrets(w: &mut World) {
    write_secrets(w.dir.path(), &rotated_secrets_text());
    for (_, child) in &w.processes.0 {
        let hup = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
    }
    let dir = w.dir.path();
    eventually("both processes to report the SIGHUP", WAIT, async || {
        !reloaded(dir, "api").is_empty() && reloaded(dir, "worker").len() >= 2
    })
    .await;
    let (api_reload, worker_reload) = (reloaded(dir, "api"), reloaded(dir, "worker"));
    assert!(
        api_reload
            .iter()
            .any(|l| l["wechat_credentials_rotated"] == true),
        "{api_reload:?}"
    );
    assert!(
        worker_reload
            .iter()
            .any(|l| l["provider_keys_replaced"] == "qwen:1"),
        "{worker_reload:?}"
    );
    assert!(
        worker_reload
            .iter()
            .any(|l| l["changed"] == "WECHAT_APP_SECRET"),
        "{worker_reload:?}"
    );
}

/// Everything a secret could have leaked into.
struct Gathered {
    /// The answers, `ferry migrate`'s output, both processes' output, the
    /// spool's files.
    exhibits: Vec<Exhibit>,
    /// Both processes' output, one text.
    logs: String,
    /// Redis as the running fleet held it (locks, leases, the worker
    /// registry), and once everything stopped.
    live: Keyspace,
    stopped: Keyspace,
}

/// Stops the processes (SIGTERM: logs flushed) between two dumps of Redis,
/// then gathers every exhibit.
async fn stop_and_gather(w: &mut World) -> Gathered {
    let live = redis_keyspace(&w.redis);
    w.processes.stop().await;
    let stopped = redis_keyspace(&w.redis);
    let mut exhibits = std::mem::take(&mut w.bodies.0);
    exhibits.append(&mut w.migrate);
    let mut logs = String::new();
    for process in ["api", "worker"] {
        for stream in ["out", "err"] {
            let path = w.dir.path().join(format!("{process}.{stream}"));
            let text = std::fs::read_to_string(&path).unwrap();
            logs.push_str(&text);
            exhibits.push(Exhibit::new(format!("ferry {process}'s std{stream}"), text));
        }
    }
    for file in files_under(&w.spool_dir()) {
        exhibits.push(Exhibit::new(
            format!("the spool file {}", file.display()),
            std::fs::read(&file).unwrap(),
        ));
    }
    Gathered {
        exhibits,
        logs,
        live,
        stopped,
    }
}

/// The scan is only as good as what was logged: debug lines, the security
/// events and the token refresh are all there.
fn the_logs_are_worth_scanning(logs: &str) {
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(lines.len() > 20, "{} JSON log lines", lines.len());
    assert!(lines.iter().any(|l| l["level"] == "DEBUG"), "debug lines");
    assert!(
        lines.iter().any(|l| l["target"] == "security"),
        "security events in the api's log"
    );
    for message in [
        "WeChat refused the access token; trying once more with the fleet's current one",
        "fetched a new WeChat access token for the fleet",
    ] {
        assert!(
            lines.iter().any(|l| l["message"] == message),
            "the worker logged {message:?}"
        );
    }
}

/// The scan finds what it looks for: each secret in the configuration the
/// processes were given (the api tokens there as their hashes).
fn the_scan_finds_each_configured_secret(w: &World, needles: &[Needle]) {
    let configuration = Exhibit::new(
        "the configuration",
        format!(
            "{}{}{:?}",
            secrets_text(QWEN_KEY, APP_SECRET, AES_KEY),
            rotated_secrets_text(),
            w.env(&[])
        ),
    );
    let configured = leaks(&[configuration], needles);
    for name in [
        "REDIS_PASSWORD",
        "DEEPSEEK_API_KEY[0]",
        "DEEPSEEK_API_KEY[1]",
        "QWEN_API_KEY",
        "QWEN_API_KEY (rotated)",
        "WECHAT_APP_SECRET",
        "WECHAT_APP_SECRET (rotated)",
        "WECHAT_TOKEN",
        "WECHAT_ENCODING_AES_KEY",
        "WECHAT_ENCODING_AES_KEY (rotated)",
        "FERRY_WEBHOOK_SECRET",
        "SECURE_CONFIG_PASSWORD",
        "submit token (its SHA-256)",
        "read token (its SHA-256)",
        "admin token (its SHA-256)",
    ] {
        assert!(
            configured
                .iter()
                .any(|f| f.starts_with(&format!("{name} in "))),
            "the scan would find {name}"
        );
    }
}

/// Redis: every key name and everything every key holds, while running and
/// after stopping. The fleet's cached WeChat access token is there by
/// design (one token per fleet, shared by every worker: ARCHITECTURE.md,
/// "The WeChat access token"; SECURITY.md's "leaked Redis password" row),
/// so its own key alone may hold it; it is in no log, metric or body.
fn leaks_in_redis(live: Keyspace, stopped: Keyspace, needles: &[Needle]) -> Vec<String> {
    let token_key = Keys::new("ferry").wechat_token();
    assert!(
        stopped
            .iter()
            .any(|(_, held)| find(held, b"[redacted]").is_some()),
        "the provider errors that echoed a key are recorded, scrubbed"
    );
    let mut found = Vec::new();
    for (when, keyspace) in [("while running", live), ("after stopping", stopped)] {
        assert!(keyspace.len() > 10, "{} keys {when}", keyspace.len());
        let cached = keyspace
            .iter()
            .find(|(key, _)| *key == token_key)
            .expect("the fleet's access token is cached");
        assert!(find(&cached.1, ACCESS_TOKEN_PREFIX.as_bytes()).is_some());
        let mut exhibits = Vec::new();
        for (key, held) in keyspace {
            exhibits.push(Exhibit::new(
                format!("a Redis key name {when}"),
                key.clone(),
            ));
            exhibits.push(Exhibit::new(format!("Redis key {key} {when}"), held));
        }
        found.extend(leaks(&exhibits, needles));
        let cached_value = format!("Redis key {token_key} {when}");
        let elsewhere: Vec<Exhibit> = exhibits
            .into_iter()
            .filter(|e| e.what != cached_value)
            .collect();
        found.extend(leaks(&elsewhere, &[access_token_needle()]));
    }
    found
}
