//! The encrypted secrets file, end to end: `ferry secrets` writes and checks
//! it, configuration loads it between the environment and ferry.toml, and
//! a worker's provider keys are used in turn and replaced on SIGHUP. A wrong
//! password or a tampered file loads nothing and says so in one line; no
//! value ever shows in an error, a report or `Debug`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use ferry_cli::commands::secrets::{self, Edited};
use ferry_cli::reload::{self, Reloadable};
use ferry_common::config::{Config, ConfigError};
use ferry_common::secrets_file::{self, KdfParams};
use ferry_common::{KeyRing, Secret};
use ferry_tests::eventually;
use ferry_worker::providers::{CallPolicy, ChatMessage, ChatRequest, Router};

const PASSWORD: &str = "correct horse battery staple";
const PLAINTEXT: &str = r#"# Ferry's secrets
DEEPSEEK_API_KEY = ["sk-deepseek-first", "sk-deepseek-second"]
WECHAT_APP_SECRET = "wx-app-secret-value"
WECHAT_TOKEN = "wx-token-value"
FERRY_API_TOKENS = ["ci:submit+read:9d9a7fecac5a9c1683c5eccafa40a69c8436c454bb86168609104b71a04d5d02", "viewer:read:e00b486115cb8bd8f698f4283dae484525fd47a353abf230da58d10f764b8071"]
FERRY_ADMIN_TOKEN = "5dd37cd5e59f3cced4a60b734bbf88ad3b81f8fa995180ad309b0a7993235998"
"#;
/// Every value in [`PLAINTEXT`]: none may ever be printed.
const VALUES: &[&str] = &[
    "sk-deepseek-first",
    "sk-deepseek-second",
    "wx-app-secret-value",
    "wx-token-value",
    // The api tokens are configured as SHA-256 hashes (of "api-token-one",
    // "api-token-two" and "admin-token-value"); not even those are printed.
    "9d9a7fecac5a9c1683c5eccafa40a69c8436c454bb86168609104b71a04d5d02",
    "e00b486115cb8bd8f698f4283dae484525fd47a353abf230da58d10f764b8071",
    "5dd37cd5e59f3cced4a60b734bbf88ad3b81f8fa995180ad309b0a7993235998",
];

fn password() -> Secret {
    Secret::new(PASSWORD)
}

fn assert_no_value(text: &str) {
    for value in VALUES {
        assert!(!text.contains(value), "{value} leaked in: {text}");
    }
}

/// A directory with `secrets.enc` encrypted from [`PLAINTEXT`].
fn encrypted() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("secrets.toml");
    std::fs::write(&plain, PLAINTEXT).unwrap();
    let file = dir.path().join("secrets.enc");
    secrets::encrypt(&plain, &file, &password(), false).unwrap();
    std::fs::remove_file(&plain).unwrap();
    (dir, file)
}

fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

fn load_file(file: &Path, password: &str, more: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut vars = vec![
        ("FERRY_SECRETS_FILE", file.to_str().unwrap()),
        ("SECURE_CONFIG_PASSWORD", password),
    ];
    vars.extend_from_slice(more);
    load(&vars)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn an_encrypted_file_round_trips_and_is_private() {
    let (_dir, file) = encrypted();

    let text = secrets::decrypt(&file, &password()).unwrap();

    assert_eq!(text.as_str(), PLAINTEXT);
    assert_eq!(mode(&file), 0o600);
    let raw = std::fs::read_to_string(&file).unwrap();
    assert!(raw.starts_with("ferry-secrets v1 argon2id m=19456 t=2 p=1 salt="));
    assert_no_value(&raw);
}

#[test]
fn configuration_takes_every_secret_from_the_file() {
    let (_dir, file) = encrypted();

    let config = load_file(&file, PASSWORD, &[]).unwrap();

    let keys: Vec<&str> = config.provider_keys["deepseek"]
        .iter()
        .map(Secret::expose)
        .collect();
    assert_eq!(keys, ["sk-deepseek-first", "sk-deepseek-second"]);
    assert_eq!(config.providers[0].name, "deepseek");
    let wechat = &config.wechat;
    assert_eq!(
        wechat.app_secret.as_ref().unwrap().expose(),
        "wx-app-secret-value"
    );
    assert_eq!(wechat.token.as_ref().unwrap().expose(), "wx-token-value");
    let tokens = &config.api_tokens;
    assert_eq!(tokens.authenticate("api-token-one").unwrap().name, "ci");
    assert_eq!(tokens.authenticate("api-token-two").unwrap().name, "viewer");
    assert_eq!(
        tokens.authenticate("admin-token-value").unwrap().name,
        "admin"
    );
    let report = config.secrets_file_report.as_ref().unwrap();
    assert!(report.overridden_by_env.is_empty() && report.ignored.is_empty());
    assert_eq!(report.from_file.len(), 5);
}

#[test]
fn the_environment_wins_over_the_file_and_the_report_says_so() {
    let (_dir, file) = encrypted();

    let config = load_file(
        &file,
        PASSWORD,
        &[("WECHAT_TOKEN", "from-env"), ("DEEPSEEK_API_KEY", "sk-env")],
    )
    .unwrap();

    assert_eq!(config.wechat.token.as_ref().unwrap().expose(), "from-env");
    assert_eq!(config.provider_keys["deepseek"].len(), 1);
    assert_eq!(config.provider_keys["deepseek"][0].expose(), "sk-env");
    let report = config.secrets_file_report.unwrap();
    assert_eq!(
        report.overridden_by_env,
        ["DEEPSEEK_API_KEY", "WECHAT_TOKEN"]
    );
    assert!(!report.from_file.contains(&"WECHAT_TOKEN".to_owned()));
    assert_no_value(&format!("{report:?}"));
}

#[test]
fn a_wrong_password_loads_nothing_and_says_so_in_one_line() {
    let (_dir, file) = encrypted();

    let err = load_file(&file, "not the password", &[]).unwrap_err();

    assert_eq!(err.var, "FERRY_SECRETS_FILE");
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("password (SECURE_CONFIG_PASSWORD) is wrong or the file was altered"));
    assert_no_value(&line);
}

#[test]
fn a_secrets_file_without_its_password_names_the_variable() {
    let (_dir, file) = encrypted();

    let err = load(&[("FERRY_SECRETS_FILE", file.to_str().unwrap())]).unwrap_err();

    assert_eq!(err.var, "SECURE_CONFIG_PASSWORD");
}

#[test]
fn a_tampered_header_or_ciphertext_loads_nothing() {
    let (dir, file) = encrypted();
    let original = std::fs::read_to_string(&file).unwrap();
    let (header, body) = original.split_once('\n').unwrap();
    let flip = |s: &str, at: usize| {
        let mut bytes = s.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let salt_at = header.find("salt=").unwrap() + 6;
    let nonce_at = header.find("nonce=").unwrap() + 7;
    let tampered = [
        ("salt", format!("{}\n{body}", flip(header, salt_at))),
        ("nonce", format!("{}\n{body}", flip(header, nonce_at))),
        (
            "iterations",
            format!("{}\n{body}", header.replace(" t=2 ", " t=3 ")),
        ),
        ("ciphertext", format!("{header}\n{}", flip(body, 10))),
        (
            "tag",
            format!("{header}\n{}", flip(body, body.trim_end().len() - 4)),
        ),
        (
            "truncated",
            format!("{header}\n{}\n", &body[..body.len() / 2]),
        ),
    ];

    for (what, text) in tampered {
        let path = dir.path().join(format!("tampered-{what}.enc"));
        std::fs::write(&path, &text).unwrap();

        let err = load_file(&path, PASSWORD, &[]).unwrap_err();

        assert_eq!(err.var, "FERRY_SECRETS_FILE", "{what}: {err}");
        assert!(
            err.reason.contains("wrong or the file was altered") || err.reason.contains("damaged"),
            "{what}: {err}"
        );
        assert_no_value(&err.to_string());
    }
}

#[test]
fn rotate_re_encrypts_under_the_new_password_only() {
    let (_dir, file) = encrypted();
    let new = Secret::new("a brand new password");

    secrets::rotate(&file, &password(), &new).unwrap();

    assert_eq!(secrets::decrypt(&file, &new).unwrap().as_str(), PLAINTEXT);
    assert!(secrets::decrypt(&file, &password()).is_err());
    assert_eq!(mode(&file), 0o600);
}

#[test]
fn a_failed_rotate_leaves_the_file_untouched() {
    let (dir, file) = encrypted();
    let before = std::fs::read(&file).unwrap();
    let new = Secret::new("a brand new password");

    let wrong_old = secrets::rotate(&file, &Secret::new("wrong"), &new).unwrap_err();
    let same = secrets::rotate(&file, &password(), &password()).unwrap_err();
    let empty = secrets::rotate(&file, &password(), &Secret::new("")).unwrap_err();

    assert!(format!("{wrong_old:#}").contains("SECURE_CONFIG_PASSWORD"));
    assert!(same.to_string().contains("old one"));
    assert!(empty.to_string().contains("empty"));
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert_eq!(mode(&file), 0o600);
    assert_eq!(files_in(dir.path()), 1, "no temporary file is left behind");
}

#[test]
fn encrypt_refuses_to_replace_a_file_and_invalid_toml() {
    let (dir, file) = encrypted();
    let before = std::fs::read(&file).unwrap();
    let plain = dir.path().join("bad.toml");
    std::fs::write(&plain, "WECHAT_TOKEN = wx-token-value\n").unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, PLAINTEXT).unwrap();

    let exists = secrets::encrypt(&good, &file, &password(), false).unwrap_err();
    let invalid = secrets::encrypt(&plain, &file, &password(), true).unwrap_err();

    assert!(exists.to_string().contains("exists"));
    let invalid = format!("{invalid:#}");
    assert!(invalid.contains("line 1"), "{invalid}");
    assert_no_value(&invalid);
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn edit_re_encrypts_only_a_changed_valid_file() {
    let (dir, file) = encrypted();
    let before = std::fs::read(&file).unwrap();

    let unchanged = secrets::edit(&file, &password(), "true", |_| false).unwrap();
    assert_eq!(unchanged, Edited::Unchanged);
    assert_eq!(std::fs::read(&file).unwrap(), before);

    let broken = secrets::edit(
        &file,
        &password(),
        "sed -i 's/= \"wx-token-value\"/= oops/'",
        |_| false,
    );
    let broken = format!("{:#}", broken.unwrap_err());
    assert!(
        broken.contains("not saved") && broken.contains("line 4"),
        "{broken}"
    );
    assert_no_value(&broken);
    assert_eq!(std::fs::read(&file).unwrap(), before);

    let failed = secrets::edit(&file, &password(), "false", |_| false).unwrap_err();
    assert!(failed.to_string().contains("nothing was saved"));
    assert_eq!(std::fs::read(&file).unwrap(), before);

    let changed = secrets::edit(
        &file,
        &password(),
        "sed -i 's/wx-token-value/wx-new-token/'",
        |_| false,
    );
    assert_eq!(changed.unwrap(), Edited::Changed);
    let text = secrets::decrypt(&file, &password()).unwrap();
    assert!(text.contains("wx-new-token") && !text.contains("wx-token-value"));
    assert_eq!(mode(&file), 0o600);
    assert_eq!(files_in(dir.path()), 1);
}

#[test]
fn check_lists_names_and_counts_and_flags_unknown_names() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("s.toml");
    std::fs::write(
        &plain,
        format!(
            "{PLAINTEXT}DEEPSEK_API_KEYS = \"typo-value\"\nSECURE_CONFIG_PASSWORD = \"pw-inside\"\n"
        ),
    )
    .unwrap();
    let file = dir.path().join("s.enc");
    let encrypted = secrets::encrypt(&plain, &file, &password(), false).unwrap();
    assert_eq!(
        encrypted.unknown,
        ["DEEPSEK_API_KEYS", "SECURE_CONFIG_PASSWORD"]
    );

    let report = secrets::check(&file, &password()).unwrap();

    assert_eq!(report.problems(), 2);
    let shown = report.to_string();
    assert!(shown.contains("DEEPSEEK_API_KEY") && shown.contains("2 values, used in turn"));
    assert!(shown.contains("not a variable Ferry reads"));
    assert!(shown.contains("cannot be set from the secrets file"));
    assert_no_value(&shown);
    assert!(!shown.contains("typo-value") && !shown.contains("pw-inside"));
    // Loading ignores them, and says so by name.
    let config = load_file(&file, PASSWORD, &[]).unwrap();
    let report = config.secrets_file_report.unwrap();
    assert_eq!(
        report.ignored,
        ["DEEPSEK_API_KEYS", "SECURE_CONFIG_PASSWORD"]
    );
}

#[test]
fn values_never_show_in_debug() {
    let (_dir, file) = encrypted();
    let config = load_file(&file, PASSWORD, &[]).unwrap();
    let opened = secrets_file::decrypt_file(&file, &password()).unwrap();
    let parsed = secrets_file::Secrets::parse(&opened.text).unwrap();
    let ring = KeyRing::new(config.provider_keys["deepseek"].clone());

    let shown = format!("{config:?} {opened:?} {parsed:?} {ring:?}");

    assert_no_value(&shown);
    assert!(!shown.contains(PASSWORD));
}

/// A provider that records the key of every call and always answers.
async fn recording_provider() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |headers: HeaderMap| {
            let record = record.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                record.lock().unwrap().push(auth.trim_start_matches("Bearer ").to_owned());
                axum::Json(serde_json::json!({
                    "model": "m",
                    "choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

async fn ask(router: &Router) {
    let req = ChatRequest::new(vec![ChatMessage::user("hi")]);
    router.chat(&req, Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn a_providers_keys_are_used_in_turn_and_replaced_on_sighup() {
    let (base_url, seen) = recording_provider().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets.enc");
    let write = |keys: &str| {
        let text = format!("DEEPSEEK_API_KEY = {keys}\n");
        secrets_file::encrypt_to_file(&file, &text, &password(), KdfParams::default()).unwrap();
    };
    write(r#"["old-1", "old-2"]"#);
    let vars: Vec<(String, String)> = [
        ("FERRY_SECRETS_FILE", file.to_str().unwrap()),
        ("SECURE_CONFIG_PASSWORD", PASSWORD),
        ("DEEPSEEK_BASE_URL", base_url.as_str()),
        ("FERRY_PROVIDER_ATTEMPTS", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let load = move || Config::from_vars(vars.clone());
    let config = load().unwrap();
    let client = reqwest::Client::new();
    let router = Router::from_configs(&config.providers, &client, CallPolicy::default());
    let reloadable = Reloadable::for_worker(&config, &router);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = reload::on_sighup(reloadable, load, shutdown.clone()).unwrap();

    for _ in 0..3 {
        ask(&router).await;
    }
    write(r#"["new-1", "new-2"]"#);
    let pid = std::process::id().to_string();
    let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(status.success());
    eventually(
        "SIGHUP to swap the keys",
        Duration::from_secs(20),
        async || {
            ask(&router).await;
            let last = seen.lock().unwrap().last().cloned().unwrap();
            last.starts_with("new-")
        },
    )
    .await;
    ask(&router).await;

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[..3], ["old-1", "old-2", "old-1"]);
    let after: Vec<&String> = seen.iter().skip_while(|k| k.starts_with("old-")).collect();
    assert!(
        after.len() >= 2 && after.iter().all(|k| k.starts_with("new-")),
        "{seen:?}"
    );
    assert_ne!(
        after[after.len() - 1],
        after[after.len() - 2],
        "the new keys alternate"
    );
    shutdown.cancel();
    task.await.unwrap();
}

/// The binary, as an operator runs it (built before the tests by
/// scripts/test): values reach stdout only through `decrypt`.
#[test]
fn the_ferry_secrets_command_prints_values_only_when_asked_to_decrypt() {
    let (_dir, file) = encrypted();
    let ferry = ferry_tests::ferry_binary();
    let run = |args: &[&str], password: &str| {
        Command::new(&ferry)
            .args(args)
            .arg(&file)
            .env_clear()
            .env("SECURE_CONFIG_PASSWORD", password)
            .output()
            .expect("the ferry binary is built before the tests (scripts/test)")
    };

    let check = run(&["secrets", "check"], PASSWORD);
    let wrong = run(&["secrets", "check"], "wrong");
    let decrypt = run(&["secrets", "decrypt"], PASSWORD);

    assert!(check.status.success());
    let check_out = String::from_utf8_lossy(&check.stdout);
    assert!(check_out.contains("WECHAT_APP_SECRET"), "{check_out}");
    assert_no_value(&check_out);
    assert_no_value(&String::from_utf8_lossy(&check.stderr));
    assert!(!wrong.status.success());
    let wrong_err = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong_err.trim().lines().count(), 1, "{wrong_err}");
    assert!(wrong_err.contains("wrong or the file was altered"));
    assert!(wrong.stdout.is_empty());
    assert!(decrypt.status.success());
    assert_eq!(String::from_utf8_lossy(&decrypt.stdout), PLAINTEXT);
    assert!(String::from_utf8_lossy(&decrypt.stderr).contains("warning"));
}

/// Posts a text push signed with `token` to a `ferry api` at `base`.
async fn push(base: &str, token: &str, msg_id: u64) -> u16 {
    let (ts, nonce) = (chrono::Utc::now().timestamp().to_string(), "n1".to_owned());
    let signature = ferry_common::wechat::sign(&[token, &ts, &nonce]);
    let xml = format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[o_user]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType>\
         <Content><![CDATA[hi]]></Content><MsgId>{msg_id}</MsgId></xml>"
    );
    reqwest::Client::new()
        .post(format!("{base}/wechat"))
        .query(&[
            ("signature", &signature),
            ("timestamp", &ts),
            ("nonce", &nonce),
        ])
        .body(xml)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_api_rotates_its_wechat_token_on_sighup_without_refusing_a_push() {
    let redis = ferry_tests::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets.enc");
    let write = |token: &str| {
        let text = format!("WECHAT_TOKEN = \"{token}\"\n");
        secrets_file::encrypt_to_file(&file, &text, &password(), KdfParams::default()).unwrap();
    };
    write("wx-token-old");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = [
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("REDIS_URL", redis.url()),
        ("FERRY_SECRETS_FILE", file.to_str().unwrap().to_owned()),
        ("SECURE_CONFIG_PASSWORD", PASSWORD.to_owned()),
        ("FERRY_LISTEN", format!("127.0.0.1:{port}")),
        (
            "FERRY_SPOOL_DIR",
            dir.path().join("spool").to_str().unwrap().to_owned(),
        ),
        ("LOG_LEVEL", "warn".to_owned()),
    ];
    let migrated = Command::new(ferry_tests::ferry_binary())
        .arg("migrate")
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    let mut api = Command::new(ferry_tests::ferry_binary())
        .arg("api")
        .env_clear()
        .envs(env.iter().cloned())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    eventually("the api to answer", Duration::from_secs(30), async || {
        push(&base, "wx-token-old", 1).await == 200
    })
    .await;

    // The new token goes into the file; SIGHUP; WeChat may still sign with
    // the old one until the console is saved: both are accepted.
    write("wx-token-new");
    let hup = Command::new("kill")
        .args(["-HUP", &api.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let mut msg_id = 100;
    eventually(
        "SIGHUP to swap the token",
        Duration::from_secs(30),
        async || {
            msg_id += 1;
            push(&base, "wx-token-new", msg_id).await == 200
        },
    )
    .await;
    assert_eq!(push(&base, "wx-token-old", 1000).await, 200);
    assert_eq!(push(&base, "wx-token-guess", 1001).await, 401);
    // Still alive: SIGHUP never ends the api.
    assert!(api.try_wait().unwrap().is_none());
    let _ = api.kill();
    let _ = api.wait();
}
