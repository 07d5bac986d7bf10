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

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
use ferry_tests::{FakeWeChat, RedisServer, ferry_binary};
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

/// A text to search for: a secret (or one of its encodings) by name.
struct Needle {
    name: String,
    bytes: Vec<u8>,
}

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
        needles.push(Needle {
            name: name.into(),
            bytes: value.as_bytes().to_vec(),
        });
        for (encoding, encoded) in [
            ("base64", STANDARD.encode(value)),
            ("base64url", URL_SAFE_NO_PAD.encode(value)),
            ("hex", hex::encode(value)),
        ] {
            needles.push(Needle {
                name: format!("{name} ({encoding})"),
                bytes: encoded.into_bytes(),
            });
        }
    }
    for (name, token) in [
        ("submit token", SUBMIT_TOKEN),
        ("read token", READ_TOKEN),
        ("admin token", ADMIN_TOKEN),
    ] {
        needles.push(Needle {
            name: format!("{name} (its SHA-256)"),
            bytes: hash_hex(token).into_bytes(),
        });
    }
    for (name, key) in [
        ("WECHAT_ENCODING_AES_KEY", AES_KEY),
        ("WECHAT_ENCODING_AES_KEY (rotated)", AES_KEY_ROTATED),
    ] {
        let aes = STANDARD.decode(format!("{key}=")).unwrap();
        assert_eq!(aes.len(), 32);
        needles.push(Needle {
            name: format!("{name} (hex of its bytes)"),
            bytes: hex::encode(&aes).into_bytes(),
        });
        needles.push(Needle {
            name: format!("{name} (its bytes)"),
            bytes: aes,
        });
    }
    needles
}

/// The access tokens the fake WeChat issued: never in a log, a metric or a
/// body (Redis is another matter: see the Redis scan at the end of the test).
fn access_token_needle() -> Needle {
    Needle {
        name: "the WeChat access token".into(),
        bytes: ACCESS_TOKEN_PREFIX.as_bytes().to_vec(),
    }
}

/// Something a secret could have leaked into, and what it holds.
struct Exhibit {
    what: String,
    bytes: Vec<u8>,
}

impl Exhibit {
    fn new(what: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            what: what.into(),
            bytes: bytes.into(),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Every (exhibit, needle) found, with some context, one per line.
fn leaks(exhibits: &[Exhibit], needles: &[Needle]) -> Vec<String> {
    let mut found = Vec::new();
    for exhibit in exhibits {
        for needle in needles {
            if let Some(at) = find(&exhibit.bytes, &needle.bytes) {
                let from = at.saturating_sub(120);
                let to = (at + needle.bytes.len() + 120).min(exhibit.bytes.len());
                found.push(format!(
                    "{} in {}: ...{}...",
                    needle.name,
                    exhibit.what,
                    String::from_utf8_lossy(&exhibit.bytes[from..to])
                ));
            }
        }
    }
    found
}

// ------------------------------------------------------------ the processes

/// `ferry` processes, stopped with SIGTERM (so their logs are flushed) or
/// killed when the test drops them.
struct Processes(Vec<(String, Child)>);

impl Processes {
    /// SIGTERM to each, then waits for each to exit (killed after 30 s).
    async fn stop(&mut self) {
        for (_, child) in &self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for (name, child) in &mut self.0 {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                if tokio::time::Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("ferry {name} did not stop on SIGTERM");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `ferry <command>` with `env` only, stdout and stderr to
/// `<dir>/<command>.out` / `.err`.
fn spawn(dir: &Path, command: &str, env: &[(String, String)]) -> Child {
    let out = File::create(dir.join(format!("{command}.out"))).unwrap();
    let err = File::create(dir.join(format!("{command}.err"))).unwrap();
    Command::new(ferry_binary())
        .arg(command)
        .env_clear()
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("the ferry binary is built before the tests (cargo build --workspace --bins)")
}

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", listener.local_addr().unwrap().port())
}

async fn wait_healthy(base: &str, what: &str, child: &mut Child) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "ferry {what} exited at start-up"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "ferry {what} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------ HTTP, recorded

/// Every response body the test received, for the scan.
#[derive(Default)]
struct Bodies(Vec<Exhibit>);

impl Bodies {
    /// Sends `request`, records the body, returns the status and the body.
    async fn send(&mut self, what: &str, request: reqwest::RequestBuilder) -> (u16, String) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let mut headers = String::new();
        for (name, value) in response.headers() {
            // The dashboard's session id travels there by design; it is
            // looked for everywhere else.
            if name != reqwest::header::SET_COOKIE {
                headers.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
            }
        }
        let body = response.text().await.unwrap();
        self.0.push(Exhibit::new(
            format!("the body of {what} ({status})"),
            body.clone(),
        ));
        self.0.push(Exhibit::new(
            format!("the headers of {what} ({status})"),
            headers,
        ));
        (status, body)
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

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

/// The value of a series in a Prometheus scrape (0 when absent).
fn series(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

// ------------------------------------------------------------ Redis, whole

/// Flattens a reply into bytes (strings as they are, numbers as text).
fn flatten(value: &redis::Value, out: &mut Vec<u8>) {
    use redis::Value as V;
    match value {
        V::BulkString(b) => out.extend_from_slice(b),
        V::SimpleString(s) => out.extend_from_slice(s.as_bytes()),
        V::Array(items) | V::Set(items) => items.iter().for_each(|v| flatten(v, out)),
        V::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            flatten(k, out);
            flatten(v, out);
        }),
        V::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        V::Nil | V::Okay => {}
        other => out.extend_from_slice(format!("{other:?}").as_bytes()),
    }
    out.push(b'\n');
}

/// Every key of every database, as (key name, everything the key holds).
fn redis_keyspace(redis: &RedisServer) -> Vec<(String, Vec<u8>)> {
    let mut conn = redis.conn();
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut conn).unwrap();
    let databases: Vec<&str> = info.lines().filter(|l| l.starts_with("db")).collect();
    assert!(
        databases.len() == 1 && databases[0].starts_with("db0:"),
        "Ferry keeps everything in db 0: {info}"
    );
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    let mut dumped = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
        let mut query = |cmd: &mut redis::Cmd| -> redis::Value { cmd.query(&mut conn).unwrap() };
        let mut held = Vec::new();
        match kind.as_str() {
            "string" => {
                let value = query(redis::cmd("GET").arg(&key));
                flatten(&value, &mut held);
            }
            "hash" => flatten(&query(redis::cmd("HGETALL").arg(&key)), &mut held),
            "list" => flatten(
                &query(redis::cmd("LRANGE").arg(&key).arg(0).arg(-1)),
                &mut held,
            ),
            "set" => flatten(&query(redis::cmd("SMEMBERS").arg(&key)), &mut held),
            "zset" => flatten(
                &query(
                    redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES"),
                ),
                &mut held,
            ),
            "stream" => {
                // The entries, then groups, consumers and pending entries.
                flatten(
                    &query(redis::cmd("XRANGE").arg(&key).arg("-").arg("+")),
                    &mut held,
                );
                flatten(
                    &query(redis::cmd("XINFO").arg("STREAM").arg(&key).arg("FULL")),
                    &mut held,
                );
            }
            "none" => continue, // expired between SCAN and TYPE
            other => panic!(
                "key {} is a {other}: teach this scan to read it",
                String::from_utf8_lossy(&key)
            ),
        }
        dumped.push((String::from_utf8_lossy(&key).into_owned(), held));
    }
    dumped
}

// ------------------------------------------------------------ the test

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_reaches_a_log_a_metric_a_response_or_redis() {
    // -------- the world: Redis with a password, fakes, a secrets file
    let redis = RedisServer::start_with_password(REDIS_PASSWORD);
    let anonymous = redis.url().replace(&format!(":{REDIS_PASSWORD}@"), "");
    let refused = redis::Client::open(anonymous)
        .unwrap()
        .get_connection()
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    assert!(refused.is_err(), "Redis asks for its password");
    let deepseek = FakeProvider::start(FakeKind::OpenAi, DEEPSEEK_KEY, DEEPSEEK_MODEL).await;
    let qwen = FakeProvider::start(FakeKind::OpenAi, QWEN_KEY, QWEN_MODEL).await;
    let wechat_fake = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let hook = FakeWebhook::start().await;
    let dir = tempfile::Builder::new()
        .prefix("ferry-leakcheck-")
        .tempdir()
        .unwrap();
    let secrets_file = dir.path().join("secrets.enc");
    let api_tokens = format!(
        "[\"ci:submit+read:{}\", \"viewer:read:{}\"]",
        hash_hex(SUBMIT_TOKEN),
        hash_hex(READ_TOKEN)
    );
    let secrets_text = |qwen: &str, app_secret: &str, aes: &str| {
        format!(
            "QWEN_API_KEY = \"{qwen}\"\nWECHAT_APP_SECRET = \"{app_secret}\"\n\
             WECHAT_ENCODING_AES_KEY = \"{aes}\"\nFERRY_WEBHOOK_SECRET = \"{WEBHOOK_SECRET}\"\n\
             FERRY_API_TOKENS = {api_tokens}\nFERRY_ADMIN_TOKEN = \"{}\"\n",
            hash_hex(ADMIN_TOKEN)
        )
    };
    let write_secrets = |text: &str| {
        secrets_file::encrypt_to_file(
            &secrets_file,
            text,
            &ferry_common::Secret::new(SECRETS_PASSWORD),
            KdfParams::default(),
        )
        .unwrap();
    };
    let plaintext = secrets_text(QWEN_KEY, APP_SECRET, AES_KEY);
    write_secrets(&plaintext);
    let spool_dir = dir.path().join("spool");
    let (api_addr, admin_addr) = (free_addr(), free_addr());
    let (api, admin) = (format!("http://{api_addr}"), format!("http://{admin_addr}"));
    let env = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("REDIS_URL", redis.url()),
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
            ("DEEPSEEK_BASE_URL", deepseek.base_url()),
            ("DEEPSEEK_MODEL", DEEPSEEK_MODEL.into()),
            ("QWEN_BASE_URL", qwen.base_url()),
            ("QWEN_MODEL", QWEN_MODEL.into()),
            ("WECHAT_APP_ID", APP_ID.into()),
            ("WECHAT_TOKEN", WECHAT_TOKEN.into()),
            ("WECHAT_API_BASE", wechat_fake.base_url()),
            ("FERRY_LISTEN", api_addr.clone()),
            ("FERRY_SPOOL_DIR", spool_dir.to_str().unwrap().to_owned()),
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
    };

    let migrate = Command::new(ferry_binary())
        .arg("migrate")
        .env_clear()
        .envs(env(&[]))
        .output()
        .unwrap();
    assert!(migrate.status.success(), "{migrate:?}");
    let mut processes = Processes(vec![
        ("api".into(), spawn(dir.path(), "api", &env(&[]))),
        (
            "worker".into(),
            spawn(
                dir.path(),
                "worker",
                &env(&[("FERRY_WORKER_ADMIN_LISTEN", &admin_addr)]),
            ),
        ),
    ]);
    wait_healthy(&api, "api", &mut processes.0[0].1).await;
    wait_healthy(&admin, "worker", &mut processes.0[1].1).await;

    let mut bodies = Bodies::default();
    let client = http();

    // -------- a safe-mode push, answered through every provider failure
    // DeepSeek's first key is rate limited (its error echoes the key, as
    // providers do); the retry gets the second key, which is revoked (401):
    // on to Qwen, whose first answer is a 500 echoing its key, then an
    // answer. WeChat refuses the first send with 40001 (the cached token is
    // invalid): the fleet's token is dropped, fetched again and the reply
    // delivered.
    deepseek.push(
        Reply::openai_error(
            429,
            "rate_limit_exceeded",
            &format!("Rate limit reached for key {DEEPSEEK_KEY}"),
        )
        .header("retry-after-ms", "200"),
    );
    qwen.push(Reply::openai_error(
        500,
        "server_error",
        &format!("internal error serving {QWEN_KEY}"),
    ));
    wechat_fake.fail_next_sends(&[40001]);
    let (query, body) = safe_push(&text("hello leakcheck", 1001), WECHAT_TOKEN);
    let pushed = bodies
        .send(
            "a safe-mode push",
            client
                .post(format!("{api}/wechat"))
                .query(&query)
                .body(body),
        )
        .await;
    assert_eq!(pushed, (200, "success".into()));
    let delivered = wechat_fake.wait_for_sent(1, WAIT).await;
    assert_eq!(delivered[0].touser, USER);
    assert_eq!(delivered[0].content, "hello leakcheck", "Qwen's echo");

    // Another user's message meets an error that ends the call (400, the
    // key echoed again): the apology goes out and the job is dead-lettered
    // with the reason, which names no key.
    qwen.push(Reply::openai_error(
        400,
        "invalid_request_error",
        &format!("content rejected for key {QWEN_KEY}"),
    ));
    let xml = wechat::text_message_xml(ACCOUNT, OTHER_USER, now(), "fail me", 1006);
    let (query, body) = safe_push(&xml, WECHAT_TOKEN);
    let pushed = bodies
        .send(
            "a safe-mode push that fails for good",
            client
                .post(format!("{api}/wechat"))
                .query(&query)
                .body(body),
        )
        .await;
    assert_eq!(pushed, (200, "success".into()));
    wechat_fake.wait_for_sent(2, WAIT).await;
    assert_eq!(wechat_fake.sent_to(OTHER_USER).len(), 1, "the apology");

    // -------- forged, replayed, oversized pushes
    let forged = bodies
        .send(
            "a push with a forged signature",
            client
                .post(format!("{api}/wechat"))
                .query(&signed_query("a-guessed-token", now()))
                .body(text("forged", 1002)),
        )
        .await;
    assert_eq!(forged.0, 401, "{}", forged.1);
    let (query, body) = safe_push(&text("forged", 1003), "a-guessed-token");
    let forged_safe = bodies
        .send(
            "a safe-mode push with a forged msg_signature",
            client
                .post(format!("{api}/wechat"))
                .query(&query)
                .body(body),
        )
        .await;
    assert_eq!(forged_safe.0, 401, "{}", forged_safe.1);
    let replayed = bodies
        .send(
            "a push replayed an hour later",
            client
                .post(format!("{api}/wechat"))
                .query(&signed_query(WECHAT_TOKEN, now() - 3600))
                .body(text("replayed", 1004)),
        )
        .await;
    assert_eq!(replayed.0, 403, "{}", replayed.1);
    let too_large = bodies
        .send(
            "a push over the body limit",
            client
                .post(format!("{api}/wechat"))
                .query(&signed_query(WECHAT_TOKEN, now()))
                .body(text(&"长".repeat(8000), 1005)),
        )
        .await;
    assert_eq!(too_large.0, 413, "{}", too_large.1);

    // -------- the server URL check (GET /wechat), good and forged; health
    let mut check = signed_query(WECHAT_TOKEN, now());
    check.push(("echostr", "leakcheck-echo".into()));
    let verified = bodies
        .send(
            "the server URL check",
            client.get(format!("{api}/wechat")).query(&check),
        )
        .await;
    assert_eq!(verified, (200, "leakcheck-echo".into()));
    let mut forged_check = signed_query("a-guessed-token", now());
    forged_check.push(("echostr", "leakcheck-echo".into()));
    let forged_check = bodies
        .send(
            "a forged server URL check",
            client.get(format!("{api}/wechat")).query(&forged_check),
        )
        .await;
    assert_eq!(forged_check.0, 401, "{}", forged_check.1);
    for path in ["/healthz", "/readyz", "/v1/openapi.json"] {
        let answer = bodies
            .send(&format!("GET {path}"), client.get(format!("{api}{path}")))
            .await;
        assert_eq!(answer.0, 200, "{path}: {}", answer.1);
    }

    // -------- the jobs API: refused tokens, a bad request, a good job
    let job = json!({"messages": [{"role": "user", "content": "api job"}]});
    let jobs = format!("{api}/v1/jobs");
    let no_token = bodies
        .send(
            "POST /v1/jobs without a token",
            client.post(&jobs).json(&job),
        )
        .await;
    assert_eq!(no_token.0, 401, "{}", no_token.1);
    let bad_token = bodies
        .send(
            "POST /v1/jobs with an unknown token",
            client
                .post(&jobs)
                .bearer_auth("tok-LEAKCHECK-guessed")
                .json(&job),
        )
        .await;
    assert_eq!(bad_token.0, 401, "{}", bad_token.1);
    let wrong_scope = bodies
        .send(
            "POST /v1/jobs with a read-only token",
            client.post(&jobs).bearer_auth(READ_TOKEN).json(&job),
        )
        .await;
    assert_eq!(wrong_scope.0, 403, "{}", wrong_scope.1);
    let malformed = bodies
        .send(
            "POST /v1/jobs with a malformed body",
            client
                .post(&jobs)
                .bearer_auth(SUBMIT_TOKEN)
                .header("content-type", "application/json")
                .body("{\"messages\": 42"),
        )
        .await;
    assert_eq!(malformed.0, 400, "{}", malformed.1);
    // A provider error that ends the call (400) echoes Qwen's key: the
    // job fails, and its error, shown to the caller, names no key.
    qwen.push(Reply::openai_error(
        400,
        "invalid_request_error",
        &format!("request rejected for key {QWEN_KEY}"),
    ));
    let created = bodies
        .send(
            "POST /v1/jobs",
            client.post(&jobs).bearer_auth(SUBMIT_TOKEN).json(&job),
        )
        .await;
    assert_eq!(created.0, 201, "{}", created.1);
    let job_id = serde_json::from_str::<Value>(&created.1).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = bodies
            .send(
                "GET /v1/jobs/{id}",
                client
                    .get(format!("{jobs}/{job_id}"))
                    .bearer_auth(READ_TOKEN),
            )
            .await;
        // The read token is another key: it may not see ci's job (404).
        assert_eq!(status, 404, "{body}");
        let (status, body) = bodies
            .send(
                "GET /v1/jobs/{id}",
                client
                    .get(format!("{jobs}/{job_id}"))
                    .bearer_auth(SUBMIT_TOKEN),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        if serde_json::from_str::<Value>(&body).unwrap()["status"] == "failed" {
            assert!(
                body.contains("[redacted]"),
                "the echoed key is scrubbed: {body}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the API job never failed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // -------- a batch with a signed completion webhook
    let batch_body: String = ["a", "b"]
        .iter()
        .map(|id| {
            json!({"custom_id": id, "messages": [{"role": "user", "content": format!("line {id}")}]})
                .to_string()
                + "\n"
        })
        .collect();
    let batch = bodies
        .send(
            "POST /v1/batches with a webhook",
            client
                .post(format!("{api}/v1/batches"))
                .query(&[("webhook_url", hook.url())])
                .bearer_auth(SUBMIT_TOKEN)
                .header("content-type", "application/x-ndjson")
                .body(batch_body),
        )
        .await;
    assert_eq!(batch.0, 201, "{}", batch.1);
    let batch_id = serde_json::from_str::<Value>(&batch.1).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deliveries = hook.wait_for(1, WAIT).await;
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
    bodies
        .0
        .push(Exhibit::new("the webhook's body", d.body.to_vec()));
    bodies.0.push(Exhibit::new(
        "the webhook's headers",
        format!("{:?} {:?} {:?}", d.timestamp, d.signature, d.delivery_id),
    ));
    let status = bodies
        .send(
            "GET /v1/batches/{id}",
            client
                .get(format!("{api}/v1/batches/{batch_id}"))
                .bearer_auth(SUBMIT_TOKEN),
        )
        .await;
    assert_eq!(status.0, 200, "{}", status.1);
    let results = bodies
        .send(
            "GET /v1/batches/{id}/results",
            client
                .get(format!("{api}/v1/batches/{batch_id}/results"))
                .bearer_auth(SUBMIT_TOKEN),
        )
        .await;
    assert_eq!(results.0, 200, "{}", results.1);
    // -------- the dashboard: a failed sign-in, a good one, its pages
    let refused = bodies
        .send(
            "a dashboard sign-in with a wrong token",
            client
                .post(format!("{api}/admin/login"))
                .form(&[("token", "tok-LEAKCHECK-wrong")]),
        )
        .await;
    assert_eq!(refused.0, 401);
    let signed_in = client
        .post(format!("{api}/admin/login"))
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
    let session_id = cookie.split_once('=').unwrap().1.to_owned();
    for path in ["/admin", "/admin/api/overview", "/admin/dlq/wechat"] {
        let page = bodies
            .send(
                &format!("GET {path}"),
                client
                    .get(format!("{api}{path}"))
                    .header(reqwest::header::COOKIE, &cookie),
            )
            .await;
        assert_eq!(page.0, 200, "{path}: {}", page.1);
    }

    // -------- /metrics: the api's (read token, and refused without), the worker's
    let refused_metrics = bodies
        .send(
            "the api's /metrics without a token",
            client.get(format!("{api}/metrics")),
        )
        .await;
    assert_eq!(refused_metrics.0, 401);
    let api_metrics = bodies
        .send(
            "the api's /metrics",
            client.get(format!("{api}/metrics")).bearer_auth(READ_TOKEN),
        )
        .await;
    assert_eq!(api_metrics.0, 200);
    let worker_metrics = bodies
        .send(
            "the worker's /metrics",
            client.get(format!("{admin}/metrics")),
        )
        .await;
    assert_eq!(worker_metrics.0, 200);
    let (api_metrics, worker_metrics) = (api_metrics.1, worker_metrics.1);

    // -------- the paths really happened
    let deepseek_calls = deepseek.requests();
    assert!(
        deepseek_calls.iter().any(|r| r.key_header.as_deref()
            == Some(&format!("Bearer {DEEPSEEK_REVOKED_KEY}"))
            && r.problem.as_deref().is_some_and(|p| p.starts_with("401"))),
        "the revoked key was refused with 401"
    );
    assert!(qwen.count() >= 2, "Qwen's 500, then its answer");
    for (name, at_least) in [
        (
            r#"ferry_provider_errors_total{provider="deepseek",class="rate_limited"}"#,
            1.0,
        ),
        (
            r#"ferry_provider_errors_total{provider="deepseek",class="auth"}"#,
            1.0,
        ),
        (
            r#"ferry_provider_errors_total{provider="qwen",class="transient"}"#,
            1.0,
        ),
        (r#"ferry_wechat_send_errors_total{errcode="40001"}"#, 1.0),
        ("ferry_wechat_token_invalidations_total", 1.0),
        ("ferry_wechat_sends_total", 1.0),
    ] {
        assert!(
            series(&worker_metrics, name) >= at_least,
            "{name} in the worker's /metrics:\n{worker_metrics}"
        );
    }
    assert!(
        series(
            &api_metrics,
            r#"ferry_security_events_total{kind="bad_signature"}"#
        ) >= 2.0
            && series(
                &api_metrics,
                r#"ferry_security_events_total{kind="replay"}"#
            ) >= 1.0,
        "{api_metrics}"
    );
    let attempts = wechat_fake.send_attempts_to(USER);
    assert_eq!(
        attempts.iter().map(|a| a.errcode).collect::<Vec<_>>(),
        [40001, 0],
        "refused with 40001, delivered after the token was fetched again"
    );
    assert!(wechat_fake.token_fetches() >= 2);

    // The failed reply's dead letter, with its (scrubbed) reason.
    let dead = Keys::new("ferry").queue("wechat").dead();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let len: usize = redis::cmd("XLEN")
            .arg(&dead)
            .query(&mut redis.conn())
            .unwrap();
        if len == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the failed reply was never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dlq_page = bodies
        .send(
            "GET /admin/dlq/wechat with a dead letter",
            client
                .get(format!("{api}/admin/dlq/wechat"))
                .header(reqwest::header::COOKIE, &cookie),
        )
        .await;
    assert_eq!(dlq_page.0, 200);

    // -------- SIGHUP with a rotated secrets file: the reload names what
    // changed, never a value.
    write_secrets(&secrets_text(
        QWEN_KEY_ROTATED,
        APP_SECRET_ROTATED,
        AES_KEY_ROTATED,
    ));
    for (_, child) in &processes.0 {
        let hup = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
    }
    let reloaded = |process: &str| -> Vec<Value> {
        std::fs::read_to_string(dir.path().join(format!("{process}.err")))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("SIGHUP: "))
            })
            .collect()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while reloaded("api").is_empty() || reloaded("worker").len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP was never reported: {:?} {:?}",
            reloaded("api"),
            reloaded("worker")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (api_reload, worker_reload) = (reloaded("api"), reloaded("worker"));
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

    // -------- stop (SIGTERM: logs flushed), then gather everything
    // Redis as the running fleet holds it (locks, leases, the worker
    // registry), and again once everything stopped.
    let live = redis_keyspace(&redis);
    processes.stop().await;
    let stopped = redis_keyspace(&redis);
    let mut exhibits = bodies.0;
    exhibits.push(Exhibit::new("ferry migrate's stdout", migrate.stdout));
    exhibits.push(Exhibit::new("ferry migrate's stderr", migrate.stderr));
    let mut logs = String::new();
    for process in ["api", "worker"] {
        for stream in ["out", "err"] {
            let path = dir.path().join(format!("{process}.{stream}"));
            let text = std::fs::read_to_string(&path).unwrap();
            logs.push_str(&text);
            exhibits.push(Exhibit::new(format!("ferry {process}'s std{stream}"), text));
        }
    }
    for file in files_under(&spool_dir) {
        exhibits.push(Exhibit::new(
            format!("the spool file {}", file.display()),
            std::fs::read(&file).unwrap(),
        ));
    }
    // The scan is only as good as what was logged: debug lines, the
    // security events and the token refresh are all there.
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

    // -------- the scan
    let mut everywhere = needles();
    everywhere.push(Needle {
        name: "the dashboard session id".into(),
        bytes: session_id.clone().into_bytes(),
    });
    // The scan finds what it looks for: each secret in the configuration
    // the processes were given (the api tokens there as their hashes).
    let configuration = Exhibit::new(
        "the configuration",
        format!(
            "{plaintext}{}{:?}",
            secrets_text(QWEN_KEY_ROTATED, APP_SECRET_ROTATED, AES_KEY_ROTATED),
            env(&[])
        ),
    );
    let configured = leaks(&[configuration], &everywhere);
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
    let mut found = leaks(&exhibits, &everywhere);
    found.extend(leaks(&exhibits, &[access_token_needle()]));

    // Redis: every key name and everything every key holds. The fleet's
    // cached WeChat access token is there by design (one token per fleet,
    // shared by every worker: ARCHITECTURE.md, "The WeChat access token";
    // SECURITY.md's "leaked Redis password" row), so its own key alone may
    // hold it; it was checked above to be in no log, metric or body.
    let token_key = Keys::new("ferry").wechat_token();
    assert!(
        stopped
            .iter()
            .any(|(_, held)| find(held, b"[redacted]").is_some()),
        "the provider errors that echoed a key are recorded, scrubbed"
    );
    for (when, keyspace) in [("while running", live), ("after stopping", stopped)] {
        assert!(keyspace.len() > 10, "{} keys {when}", keyspace.len());
        let cached = keyspace
            .iter()
            .find(|(key, _)| *key == token_key)
            .expect("the fleet's access token is cached");
        assert!(find(&cached.1, ACCESS_TOKEN_PREFIX.as_bytes()).is_some());
        let mut redis_exhibits = Vec::new();
        for (key, held) in keyspace {
            redis_exhibits.push(Exhibit::new(
                format!("a Redis key name {when}"),
                key.clone(),
            ));
            redis_exhibits.push(Exhibit::new(format!("Redis key {key} {when}"), held));
        }
        found.extend(leaks(&redis_exhibits, &everywhere));
        let cached_value = format!("Redis key {token_key} {when}");
        let elsewhere: Vec<Exhibit> = redis_exhibits
            .into_iter()
            .filter(|e| e.what != cached_value)
            .collect();
        found.extend(leaks(&elsewhere, &[access_token_needle()]));
    }
    assert!(
        found.is_empty(),
        "{} secret(s) found where none may be:\n{}",
        found.len(),
        found.join("\n")
    );
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                files_under(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}
