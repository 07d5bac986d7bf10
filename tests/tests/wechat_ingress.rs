//! The WeChat ingress as an official account sees it: every mode and message
//! type, the hardening, the spool that keeps acknowledging while Redis is
//! away, and the per-IP limiter. Real api over HTTP, real Redis, no worker
//! (what is enqueued is read from Redis directly).

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_common::Keys;
use ferry_common::wechat::{self, MessageCrypt};
use ferry_tests::ferry::TEST_WECHAT_TOKEN;
use ferry_tests::log_capture::CapturedLogs;
use ferry_tests::{Parts, RedisServer, TestFerry, eventually};

const ACCOUNT: &str = "gh_ingress";
const APP_ID: &str = "wx_ingress_test";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- set-up

fn api_only() -> Parts {
    Parts {
        api: true,
        worker: false,
    }
}

async fn ferry_with(redis: &RedisServer, vars: &[(&str, &str)]) -> TestFerry {
    TestFerry::start(redis, vars, api_only()).await
}

/// Ferry with safe/compatible mode configured.
async fn ferry_with_aes(redis: &RedisServer, vars: &[(&str, &str)]) -> TestFerry {
    let mut all = vec![
        ("WECHAT_APP_ID", APP_ID),
        ("WECHAT_ENCODING_AES_KEY", AES_KEY),
    ];
    all.extend_from_slice(vars);
    ferry_with(redis, &all).await
}

fn crypt() -> MessageCrypt {
    MessageCrypt::new(AES_KEY, APP_ID).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

// ------------------------------------------------------- pushes as WeChat sends them

fn text(openid: &str, content: &str, msg_id: i64) -> String {
    wechat::text_message_xml(ACCOUNT, openid, now(), content, msg_id)
}

fn voice(openid: &str, recognition: Option<&str>, msg_id: i64) -> String {
    let recognition = recognition
        .map(|r| format!("<Recognition><![CDATA[{r}]]></Recognition>"))
        .unwrap_or_default();
    format!(
        "<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[media_1]]></MediaId>\
         <Format><![CDATA[amr]]></Format>{recognition}<MsgId>{msg_id}</MsgId></xml>",
        now()
    )
}

fn of_type(openid: &str, msg_type: &str, msg_id: i64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[{msg_type}]]></MsgType>\
         <PicUrl><![CDATA[http://mmbiz.qpic.cn/x]]></PicUrl><MediaId><![CDATA[m]]></MediaId>\
         <Location_X>23.1</Location_X><MsgId>{msg_id}</MsgId></xml>",
        now()
    )
}

fn event(openid: &str, name: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{name}]]></Event>\
         <EventKey><![CDATA[]]></EventKey></xml>",
        now()
    )
}

/// A request as WeChat would make it: query and body.
struct Push {
    query: Vec<(&'static str, String)>,
    body: String,
}

impl Push {
    /// Plaintext mode, signed now.
    fn plain(xml: &str) -> Self {
        Self::plain_at(xml, now())
    }

    /// Plaintext mode, signed with this `timestamp`.
    fn plain_at(xml: &str, timestamp: i64) -> Self {
        let (ts, nonce) = (timestamp.to_string(), rand::random::<u32>().to_string());
        let signature = wechat::sign(&[TEST_WECHAT_TOKEN, &ts, &nonce]);
        Self {
            query: vec![
                ("signature", signature),
                ("timestamp", ts),
                ("nonce", nonce),
                ("openid", "o_query".into()),
            ],
            body: xml.to_owned(),
        }
    }

    /// Safe mode: only `ToUserName` and `Encrypt` in the body.
    fn safe(xml: &str) -> Self {
        let encrypt = crypt().encrypt(xml).unwrap();
        let body = format!(
            "<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        );
        Self::encrypted(body, &encrypt)
    }

    /// Compatible mode: the plaintext fields and `Encrypt` side by side.
    fn compatible(xml: &str) -> Self {
        let encrypt = crypt().encrypt(xml).unwrap();
        let body = xml.replace(
            "</xml>",
            &format!("<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"),
        );
        Self::encrypted(body, &encrypt)
    }

    fn encrypted(body: String, encrypt: &str) -> Self {
        let mut push = Self::plain(&body);
        let (ts, nonce) = (push.param("timestamp"), push.param("nonce"));
        let msg_signature = wechat::sign(&[TEST_WECHAT_TOKEN, &ts, &nonce, encrypt]);
        push.query.push(("encrypt_type", "aes".into()));
        push.query.push(("msg_signature", msg_signature));
        push
    }

    fn param(&self, name: &str) -> String {
        self.query
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    }

    fn with_param(mut self, name: &'static str, value: &str) -> Self {
        self.query.retain(|(k, _)| *k != name);
        self.query.push((name, value.to_owned()));
        self
    }

    fn without_param(mut self, name: &str) -> Self {
        self.query.retain(|(k, _)| *k != name);
        self
    }
}

struct Answer {
    status: u16,
    body: String,
    retry_after: Option<String>,
}

async fn post(ferry: &TestFerry, push: &Push) -> Answer {
    post_with_headers(ferry, push, &[]).await
}

async fn post_with_headers(ferry: &TestFerry, push: &Push, headers: &[(&str, &str)]) -> Answer {
    send(&http(), ferry, push, headers).await
}

/// Posts `push` on `client` (one test's many requests share its connections).
async fn send(
    client: &reqwest::Client,
    ferry: &TestFerry,
    push: &Push,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = client
        .post(format!("{}/wechat", ferry.api_url))
        .query(&push.query)
        .header("content-type", "text/xml")
        .body(push.body.clone());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    Answer {
        status,
        body: response.text().await.unwrap(),
        retry_after,
    }
}

/// A client per request: a pooled connection must not outlive its test's
/// runtime (or meet a later test's server on a reused port).
fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn assert_success(answer: &Answer) {
    assert_eq!((answer.status, answer.body.as_str()), (200, "success"));
}

/// The text of `<name>` in a reply (CDATA or not).
fn element(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{name}> in {xml}"))
        + open.len();
    let end = start + xml[start..].find(&format!("</{name}>")).unwrap();
    let raw = &xml[start..end];
    raw.strip_prefix("<![CDATA[")
        .and_then(|r| r.strip_suffix("]]>"))
        .unwrap_or(raw)
        .to_owned()
}

/// A passive text reply in plaintext mode: (to, from, content).
fn passive(answer: &Answer) -> (String, String, String) {
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(element(&answer.body, "MsgType"), "text");
    (
        element(&answer.body, "ToUserName"),
        element(&answer.body, "FromUserName"),
        element(&answer.body, "Content"),
    )
}

// ---------------------------------------------------------- what Redis holds

fn keys() -> Keys {
    Keys::new("ferry")
}

/// The content of every enqueued WeChat job, in stream order.
fn enqueued(redis: &RedisServer) -> Vec<String> {
    let q = keys().queue("wechat");
    let mut conn = redis.conn();
    let entries: Vec<(String, BTreeMap<String, String>)> = redis::cmd("XRANGE")
        .arg(q.stream())
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    entries
        .into_iter()
        .map(|(_, fields)| {
            let payload: String = redis::cmd("HGET")
                .arg(q.job(&fields["job"]))
                .arg("payload")
                .query(&mut conn)
                .unwrap();
            let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
            payload["content"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn stream_len(redis: &RedisServer) -> usize {
    redis::cmd("XLEN")
        .arg(keys().queue("wechat").stream())
        .query(&mut redis.conn())
        .unwrap()
}

fn exists(redis: &RedisServer, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query::<i64>(&mut redis.conn())
        .unwrap()
        == 1
}

fn remember_something_about(redis: &RedisServer, openid: &str) {
    let mut conn = redis.conn();
    for key in keys().user_keys(openid) {
        redis::cmd("RPUSH")
            .arg(&key)
            .arg("something")
            .query::<()>(&mut conn)
            .unwrap();
    }
}

fn knows_something_about(redis: &RedisServer, openid: &str) -> bool {
    keys()
        .user_keys(openid)
        .iter()
        .any(|key| exists(redis, key))
}

/// Returns once a PING on `conn` goes unanswered for 100 ms (a script holds
/// Redis). The connection is made before Redis gets busy: making one while
/// a script runs would itself wait for the script.
async fn wait_until_redis_stops_answering(conn: &mut redis::Connection) {
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    eventually("Redis to get busy", WAIT, async || {
        redis::cmd("PING").query::<String>(conn).is_err()
    })
    .await;
}

fn api(ferry: &TestFerry) -> &ferry_api::AppState {
    ferry.api.as_ref().unwrap()
}

// ==================================================================== modes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_safe_mode_text_is_decrypted_and_enqueued() {
    let redis = RedisServer::start();
    let ferry = ferry_with_aes(&redis, &[]).await;

    let answer = post(&ferry, &Push::safe(&text("o_safe", "安全模式你好", 11))).await;

    assert_success(&answer);
    assert_eq!(enqueued(&redis), ["安全模式你好"]);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compatible_mode_text_is_decrypted_and_enqueued() {
    let redis = RedisServer::start();
    let ferry = ferry_with_aes(&redis, &[]).await;

    let answer = post(
        &ferry,
        &Push::compatible(&text("o_compat", "兼容模式你好", 12)),
    )
    .await;

    assert_success(&answer);
    assert_eq!(enqueued(&redis), ["兼容模式你好"]);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compatible_mode_without_an_aes_key_reads_the_plaintext_fields() {
    let redis = RedisServer::start();
    let ferry = ferry_with(&redis, &[]).await;

    let answer = post(&ferry, &Push::compatible(&text("o_compat", "明文字段", 13))).await;
    let safe = post(&ferry, &Push::safe(&text("o_safe", "读不了", 14))).await;

    assert_success(&answer);
    assert_eq!(safe.status, 400);
    assert!(
        safe.body.contains("WECHAT_ENCODING_AES_KEY"),
        "{}",
        safe.body
    );
    assert_eq!(enqueued(&redis), ["明文字段"]);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_safe_mode_passive_reply_is_encrypted_signed_and_decrypts_to_the_welcome() {
    let redis = RedisServer::start();
    let ferry = ferry_with_aes(&redis, &[("FERRY_WECHAT_WELCOME", "欢迎来到 Ferry")]).await;
    let push = Push::safe(&event("o_new", "subscribe"));

    let answer = post(&ferry, &push).await;

    assert_eq!(answer.status, 200, "{}", answer.body);
    let (encrypt, signature) = (
        element(&answer.body, "Encrypt"),
        element(&answer.body, "MsgSignature"),
    );
    let (timestamp, nonce) = (
        element(&answer.body, "TimeStamp"),
        element(&answer.body, "Nonce"),
    );
    assert_eq!(nonce, push.param("nonce"));
    assert!(wechat::verify(
        &signature,
        &[TEST_WECHAT_TOKEN, &timestamp, &nonce, &encrypt]
    ));
    let reply = crypt().decrypt(&encrypt).unwrap();
    assert_eq!(element(&reply, "ToUserName"), "o_new");
    assert_eq!(element(&reply, "FromUserName"), ACCOUNT);
    assert_eq!(element(&reply, "MsgType"), "text");
    assert_eq!(element(&reply, "Content"), "欢迎来到 Ferry");
    assert!(!answer.body.contains("欢迎"), "the reply travels encrypted");
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_msg_signature_is_refused_counted_and_never_decrypted() {
    let redis = RedisServer::start();
    let ferry = ferry_with_aes(&redis, &[]).await;
    let push = Push::safe(&text("o_forger", "伪造", 15))
        .with_param("msg_signature", &wechat::sign(&["guess", "1", "2", "3"]));

    let answer = post(&ferry, &push).await;

    assert_eq!(
        (answer.status, answer.body.as_str()),
        (401, "invalid signature")
    );
    assert_eq!(api(&ferry).security().counts().bad_signature, 1);
    assert_eq!(stream_len(&redis), 0);
    ferry.stop().await;
}

// ============================================================ message types

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_message_with_recognition_is_answered_as_its_text() {
    let redis = RedisServer::start();
    let ferry = ferry_with(&redis, &[]).await;

    let answer = post(
        &ferry,
        &Push::plain(&voice("o_voice", Some("明天会下雨吗"), 21)),
    )
    .await;

    assert_success(&answer);
    assert_eq!(enqueued(&redis), ["明天会下雨吗"]);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_message_without_recognition_gets_the_configured_polite_answer_at_once() {
    let redis = RedisServer::start();
    let ferry = ferry_with(
        &redis,
        &[("FERRY_WECHAT_VOICE_UNRECOGNIZED_REPLY", "请发文字")],
    )
    .await;

    let answer = post(&ferry, &Push::plain(&voice("o_voice", None, 22))).await;

    assert_eq!(
        passive(&answer),
        ("o_voice".into(), ACCOUNT.into(), "请发文字".into())
    );
    assert_eq!(stream_len(&redis), 0);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_and_other_types_get_the_configured_unsupported_answer() {
    let redis = RedisServer::start();
    let ferry = ferry_with(
        &redis,
        &[("FERRY_WECHAT_UNSUPPORTED_REPLY", "只看得懂文字")],
    )
    .await;

    for (n, msg_type) in ["image", "video", "shortvideo", "location", "link"]
        .into_iter()
        .enumerate()
    {
        let answer = post(
            &ferry,
            &Push::plain(&of_type("o_pics", msg_type, 30 + n as i64)),
        )
        .await;
        assert_eq!(passive(&answer).2, "只看得懂文字", "{msg_type}");
    }
    assert_eq!(stream_len(&redis), 0);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_follower_is_welcomed_in_the_response_without_redis() {
    let mut redis = RedisServer::start();
    let ferry = ferry_with(&redis, &[("FERRY_WECHAT_WELCOME", "欢迎！")]).await;
    redis.kill();

    let answer = post(&ferry, &Push::plain(&event("o_new", "subscribe"))).await;

    assert_eq!(
        passive(&answer),
        ("o_new".into(), ACCOUNT.into(), "欢迎！".into())
    );
    assert_eq!(api(&ferry).spool.stats().spooled, 0);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_events_are_acknowledged_and_enqueue_nothing() {
    let redis = RedisServer::start();
    let ferry = ferry_with(&redis, &[]).await;

    for name in ["CLICK", "VIEW", "SCAN", "LOCATION", "TEMPLATESENDJOBFINISH"] {
        assert_success(&post(&ferry, &Push::plain(&event("o_evt", name))).await);
    }
    assert_eq!(stream_len(&redis), 0);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_deletes_what_ferry_keeps_about_that_user_and_no_one_else() {
    let redis = RedisServer::start();
    let ferry = ferry_with(&redis, &[]).await;
    remember_something_about(&redis, "o_leaving");
    remember_something_about(&redis, "o_staying");
    assert!(exists(&redis, &keys().conversation("o_leaving")));

    let answer = post(&ferry, &Push::plain(&event("o_leaving", "unsubscribe"))).await;

    assert_success(&answer);
    assert!(!knows_something_about(&redis, "o_leaving"));
    assert!(!exists(&redis, &keys().conversation("o_leaving")));
    assert!(!exists(&redis, &keys().dev_outbox("o_leaving")));
    assert!(exists(&redis, &keys().conversation("o_staying")));
    assert!(exists(&redis, &keys().dev_outbox("o_staying")));
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_while_redis_is_down_is_spooled_and_carried_out_when_it_returns() {
    let mut redis = RedisServer::start_with_aof();
    let ferry = ferry_with(&redis, &[]).await;
    remember_something_about(&redis, "o_leaving");
    redis.kill();

    let answer = post(&ferry, &Push::plain(&event("o_leaving", "unsubscribe"))).await;
    assert_success(&answer);
    redis.restart();

    eventually(
        "the spooled unsubscribe forgets the user",
        WAIT,
        async || !knows_something_about(&redis, "o_leaving"),
    )
    .await;
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_one_message_arriving_together_make_one_job() {
    let redis = RedisServer::start();
    let ferry = ferry_with(&redis, &[]).await;
    let xml = text("o_impatient", "同时到达的重试", 60);

    let answers = futures::future::join_all((0..20).map(|_| {
        let push = Push::plain(&xml);
        let ferry = &ferry;
        async move { post(ferry, &push).await }
    }))
    .await;

    assert!(
        answers
            .iter()
            .all(|a| (a.status, a.body.as_str()) == (200, "success"))
    );
    assert_eq!(enqueued(&redis), ["同时到达的重试"]);
    ferry.stop().await;
}

// ================================================================ hardening

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_request_replayed_outside_the_timestamp_window_is_refused_and_counted() {
    let redis = RedisServer::start();
    let ferry = ferry_with(&redis, &[("FERRY_WECHAT_MAX_SKEW", "300")]).await;
    let old = Push::plain_at(&text("o_replay", "一小时前的消息", 41), now() - 3600);
    let future = Push::plain_at(&text("o_replay", "来自未来", 42), now() + 3600);

    let old_answer = post(&ferry, &old).await;
    let future_answer = post(&ferry, &future).await;

    assert_eq!(old_answer.status, 403, "{}", old_answer.body);
    assert_eq!(future_answer.status, 403);
    assert!(old_answer.body.contains("timestamp"));
    assert_eq!(api(&ferry).security().counts().replay, 2);
    assert_eq!(api(&ferry).security().counts().bad_signature, 0);
    assert_eq!(stream_len(&redis), 0);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_signature_is_refused_and_counted_as_a_security_event() {
    let redis = RedisServer::start();
    let ferry = ferry_with(&redis, &[]).await;
    let forged = Push::plain(&text("o_forger", "hi", 43)).with_param("signature", &"0".repeat(40));

    let answer = post(&ferry, &forged).await;

    assert_eq!(
        (answer.status, answer.body.as_str()),
        (401, "invalid signature")
    );
    assert_eq!(api(&ferry).security().counts().bad_signature, 1);
    assert_eq!(stream_len(&redis), 0);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_413() {
    let redis = RedisServer::start();
    let ferry = ferry_with(&redis, &[("FERRY_MAX_BODY_BYTES", "4096")]).await;
    let big = text("o_big", &"长".repeat(5000), 44);

    let answer = post(&ferry, &Push::plain(&big)).await;

    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(stream_len(&redis), 0);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_with_a_doctype_or_entities_is_refused_with_400_and_counted() {
    let redis = RedisServer::start();
    let ferry = ferry_with(&redis, &[]).await;
    let xxe = r#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><ToUserName>gh</ToUserName><FromUserName>&xxe;</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>x</Content><MsgId>45</MsgId></xml>"#;

    let plain = post(&ferry, &Push::plain(xxe)).await;

    assert_eq!(plain.status, 400);
    assert!(plain.body.contains("DOCTYPE"), "{}", plain.body);
    assert!(!plain.body.contains("root:"), "nothing was expanded");
    assert_eq!(api(&ferry).security().counts().forbidden_xml, 1);
    assert_eq!(stream_len(&redis), 0);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_doctype_is_refused_too() {
    let redis = RedisServer::start();
    let ferry = ferry_with_aes(&redis, &[]).await;
    let inner = r#"<!DOCTYPE lolz [<!ENTITY lol "lol">]><xml><ToUserName>gh</ToUserName></xml>"#;

    let answer = post(&ferry, &Push::safe(inner)).await;

    assert_eq!(answer.status, 400);
    assert!(answer.body.contains("DOCTYPE"), "{}", answer.body);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_elements_are_ignored() {
    let redis = RedisServer::start();
    let ferry = ferry_with(&redis, &[]).await;
    let xml = text("o_new_fields", "新字段", 46).replace(
        "</xml>",
        "<Bizmsgmenuid>1</Bizmsgmenuid><Nested><Content>not this</Content></Nested></xml>",
    );

    assert_success(&post(&ferry, &Push::plain(&xml)).await);
    assert_eq!(enqueued(&redis), ["新字段"]);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_field_or_parameter_gets_400_naming_it() {
    let redis = RedisServer::start();
    let ferry = ferry_with(&redis, &[]).await;
    let no_content = format!(
        "<xml><ToUserName>gh</ToUserName><FromUserName>u</FromUserName><CreateTime>{}</CreateTime>\
         <MsgType>text</MsgType><MsgId>47</MsgId></xml>",
        now()
    );

    let missing_field = post(&ferry, &Push::plain(&no_content)).await;
    let missing_param = post(
        &ferry,
        &Push::plain(&text("u", "hi", 48)).without_param("timestamp"),
    )
    .await;

    assert_eq!(missing_field.status, 400);
    assert_eq!(missing_field.body, "missing required element <Content>");
    assert_eq!(missing_param.status, 400);
    assert_eq!(missing_param.body, "missing query parameter timestamp");
    assert_eq!(stream_len(&redis), 0);
    ferry.stop().await;
}

// ==================================================================== spool

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_while_redis_is_down_are_acknowledged_and_each_enqueued_exactly_once_when_it_returns()
 {
    let mut redis = RedisServer::start_with_aof();
    let ferry = ferry_with(&redis, &[]).await;
    let before = text("o_outage", "停机前", 100);
    assert_success(&post(&ferry, &Push::plain(&before)).await);
    redis.kill();

    let during: Vec<String> = (1..=20)
        .map(|n| text("o_outage", &format!("停机中 {n}"), 100 + n))
        .collect();
    for xml in &during {
        assert_success(&post(&ferry, &Push::plain(xml)).await);
    }
    // WeChat retries some of them, and the one that got through before.
    for xml in during.iter().take(5).chain([&before]) {
        assert_success(&post(&ferry, &Push::plain(xml)).await);
    }
    assert_eq!(api(&ferry).spool.stats().spooled, 26);
    redis.restart();

    eventually("the spool is drained", WAIT, async || {
        api(&ferry).spool.stats().files == 0
    })
    .await;
    let mut contents = enqueued(&redis);
    contents.sort();
    let mut expected: Vec<String> = std::iter::once("停机前".to_owned())
        .chain((1..=20).map(|n| format!("停机中 {n}")))
        .collect();
    expected.sort();
    assert_eq!(contents, expected, "each message enqueued exactly once");
    // The connection that broke with the kill is made again: a push after
    // the restart goes straight to Redis.
    assert_success(&post(&ferry, &Push::plain(&text("o_outage", "恢复后", 200))).await);
    assert_eq!(api(&ferry).spool.stats().spooled, 26, "not spooled");
    assert!(enqueued(&redis).contains(&"恢复后".to_owned()));
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_does_not_answer_within_the_budget_does_not_hold_up_the_acknowledgement() {
    let redis = RedisServer::start();
    let ferry = ferry_with(&redis, &[("FERRY_ACK_BUDGET_MS", "200")]).await;
    // A script that keeps Redis busy for 4 s: every other client waits.
    let mut busy = redis.conn();
    let mut probe = redis.conn();
    let stall = std::thread::spawn(move || {
        redis::cmd("EVAL")
            .arg("local s = tonumber(redis.call('TIME')[1]) while tonumber(redis.call('TIME')[1]) - s < 4 do end")
            .arg(0)
            .query::<()>(&mut busy)
    });
    wait_until_redis_stops_answering(&mut probe).await;

    let answer = post(&ferry, &Push::plain(&text("o_slow", "慢", 200))).await;

    assert_success(&answer);
    assert_eq!(
        api(&ferry).spool.stats().spooled,
        1,
        "spooled, not waited for"
    );
    stall.join().unwrap().unwrap();
    eventually("the spool is drained", WAIT, async || {
        api(&ferry).spool.stats().files == 0
    })
    .await;
    assert_eq!(enqueued(&redis), ["慢"]);
    // The unanswered call left its connection suspect: the next push goes
    // straight to Redis again (on a new connection), not to the spool.
    let answer = post(&ferry, &Push::plain(&text("o_slow", "快", 201))).await;
    assert_success(&answer);
    assert_eq!(api(&ferry).spool.stats().spooled, 1, "not spooled");
    assert_eq!(enqueued(&redis), ["慢", "快"]);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_with_503_so_that_wechat_retries() {
    let mut redis = RedisServer::start();
    let ferry = ferry_with(&redis, &[("FERRY_SPOOL_MAX_BYTES", "1")]).await;
    redis.kill();

    let answer = post(&ferry, &Push::plain(&text("o_full", "满了", 300))).await;

    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(api(&ferry).spool.stats().spooled, 0);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_left_by_a_stopped_api_is_replayed_by_the_next_one() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().display().to_string();
    let vars = [("FERRY_SPOOL_DIR", spool_dir.as_str())];
    let first = ferry_with(&redis, &vars).await;
    redis.kill();
    for n in 1..=3 {
        let push = Push::plain(&text("o_restart", &format!("留言 {n}"), 400 + n));
        assert_success(&post(&first, &push).await);
    }
    first.stop().await;
    redis.restart();

    let next = ferry_with(&redis, &vars).await;

    eventually("the next api replays the spool", WAIT, async || {
        stream_len(&redis) == 3
    })
    .await;
    eventually("and deletes it", WAIT, async || {
        std::fs::read_dir(dir.path()).unwrap().count() == 0
    })
    .await;
    let mut contents = enqueued(&redis);
    contents.sort();
    assert_eq!(contents, ["留言 1", "留言 2", "留言 3"]);
    next.stop().await;
}

// ================================================================== limiter

/// A welcome-only push (no Redis involved), correctly signed.
fn welcome() -> Push {
    Push::plain(&event("o_flood", "subscribe"))
}

/// The same push signed without the token: what a forger sends.
fn forged() -> Push {
    welcome().with_param("signature", &"0".repeat(40))
}

/// Posts `n` pushes made by `push`, one after the other, and returns the
/// answers.
async fn flood(
    ferry: &TestFerry,
    n: usize,
    push: fn() -> Push,
    headers: &[(&str, &str)],
) -> Vec<Answer> {
    let client = http();
    let mut answers = Vec::new();
    for _ in 0..n {
        answers.push(send(&client, ferry, &push(), headers).await);
    }
    answers
}

fn statuses(answers: &[Answer]) -> Vec<u16> {
    answers.iter().map(|a| a.status).collect()
}

fn limiter(ferry: &TestFerry) -> &ferry_api::IpLimiter {
    api(ferry).limiter.as_deref().expect("the limiter is on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_pushes_from_one_address_are_never_limited_whatever_their_rate() {
    use futures::StreamExt;
    let redis = RedisServer::start();
    // The default limiter (100 failures a second, burst 200).
    let ferry = ferry_with(&redis, &[]).await;
    let pushes: Vec<Push> = (0..2000)
        .map(|n| Push::plain(&text("o_busy", &format!("消息 {n}"), 10_000 + n)))
        .collect();
    let client = http();

    let answers: Vec<Answer> = futures::stream::iter(&pushes)
        .map(|push| send(&client, &ferry, push, &[]))
        .buffer_unordered(64)
        .collect()
        .await;

    let refused: Vec<u16> = statuses(&answers)
        .into_iter()
        .filter(|&s| s != 200)
        .collect();
    assert!(refused.is_empty(), "{} refused: {refused:?}", refused.len());
    assert!(answers.iter().all(|a| a.body == "success"));
    eventually("every push is enqueued", WAIT, async || {
        stream_len(&redis) == 2000
    })
    .await;
    assert_eq!(api(&ferry).security().counts().rate_limited, 0);
    assert_eq!(
        limiter(&ferry).tracked(),
        0,
        "verified pushes are not counted"
    );
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_its_burst_gets_429_and_is_counted() {
    let redis = RedisServer::start();
    let ferry = ferry_with(
        &redis,
        &[("FERRY_IP_RATE_LIMIT", "1"), ("FERRY_IP_RATE_BURST", "3")],
    )
    .await;
    let started = std::time::Instant::now();

    let answers = flood(&ferry, 500, forged, &[]).await;

    let elapsed = started.elapsed();
    let statuses = statuses(&answers);
    assert_eq!(
        statuses[..4],
        [401, 401, 401, 429],
        "a burst of three failures, then 429"
    );
    assert!(statuses.iter().all(|&s| s == 401 || s == 429));
    let refused = statuses.iter().filter(|&&s| s == 401).count();
    let limited: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert!(
        refused <= 3 + elapsed.as_secs() as usize + 1,
        "the bucket refills one failure a second: {refused} verified in {elapsed:?}"
    );
    assert_eq!(limited[0].retry_after.as_deref(), Some("1"));
    let counts = api(&ferry).security().counts();
    assert_eq!(counts.rate_limited, limited.len() as u64);
    assert_eq!(
        counts.bad_signature, 500,
        "every request is verified, those answered 429 too"
    );
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_verification_failure_counts_toward_the_burst() {
    let redis = RedisServer::start();
    let ferry = ferry_with_aes(
        &redis,
        &[("FERRY_IP_RATE_LIMIT", "1"), ("FERRY_IP_RATE_BURST", "4")],
    )
    .await;
    let doctype = r#"<!DOCTYPE xml [<!ENTITY x "x">]><xml><ToUserName>gh</ToUserName></xml>"#;
    let failures = [
        Push::safe(&text("o_f", "hi", 70)).with_param("msg_signature", &"e".repeat(40)),
        Push::plain_at(&text("o_f", "hi", 71), now() - 3600),
        Push::plain(&text("o_f", "hi", 72)).without_param("nonce"),
        Push::plain(doctype),
    ];

    let mut answers = Vec::new();
    for push in &failures {
        answers.push(post(&ferry, push).await);
    }
    let then = post(&ferry, &forged()).await;

    assert_eq!(statuses(&answers), [401, 403, 400, 400]);
    assert_eq!(then.status, 429, "{}", then.body);
    ferry.stop().await;
}

/// Only failures are limited: an address refused for its failures (WeChat's
/// own, if every push failed for a while) still gets every signed push
/// through, at any rate, while its forgeries keep getting 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refused_for_its_failures_still_gets_its_signed_pushes_through() {
    let redis = RedisServer::start();
    let ferry = ferry_with(
        &redis,
        &[("FERRY_IP_RATE_LIMIT", "1"), ("FERRY_IP_RATE_BURST", "2")],
    )
    .await;

    let forgeries = flood(&ferry, 3, forged, &[]).await;
    let signed = flood(&ferry, 20, welcome, &[]).await;
    let forged_again = post(&ferry, &forged()).await;

    assert_eq!(statuses(&forgeries), [401, 401, 429]);
    assert!(
        statuses(&signed).iter().all(|&s| s == 200),
        "signed pushes proceed while the address is refused: {:?}",
        statuses(&signed)
    );
    assert!(
        signed.iter().all(|a| passive(a).0 == "o_flood"),
        "each is answered, with the welcome"
    );
    assert_eq!(
        forged_again.status, 429,
        "signed pushes do not forgive the forgeries"
    );
    assert_eq!(forged_again.retry_after.as_deref(), Some("1"));
    let counts = api(&ferry).security().counts();
    assert_eq!((counts.bad_signature, counts.rate_limited), (4, 2));
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowlisted_client_is_never_limited() {
    let redis = RedisServer::start();
    let ferry = ferry_with(
        &redis,
        &[
            ("FERRY_IP_RATE_LIMIT", "1"),
            ("FERRY_IP_RATE_BURST", "1"),
            ("FERRY_IP_RATE_ALLOW", "101.226.0.0/16, 127.0.0.1"),
        ],
    )
    .await;

    let answers = flood(&ferry, 50, forged, &[]).await;

    assert!(statuses(&answers).iter().all(|&s| s == 401));
    assert_eq!(api(&ferry).security().counts().rate_limited, 0);
    assert_eq!(api(&ferry).security().counts().bad_signature, 50);
    assert_eq!(limiter(&ferry).tracked(), 0, "never even counted");
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_name_the_client_only_from_a_trusted_proxy() {
    let redis = RedisServer::start();
    let limits = [
        ("FERRY_IP_RATE_LIMIT", "1"),
        ("FERRY_IP_RATE_BURST", "1"),
        ("FERRY_IP_RATE_ALLOW", "101.226.0.0/16"),
    ];
    let direct = ferry_with(&redis, &limits).await;
    let mut behind_proxy_vars = limits.to_vec();
    behind_proxy_vars.push(("FERRY_TRUSTED_PROXIES", "127.0.0.1"));
    let behind_proxy = ferry_with(&redis, &behind_proxy_vars).await;
    let wechat_server = [("x-forwarded-for", "101.226.62.77")];
    let stranger = [("x-forwarded-for", "198.51.100.1")];
    let another = [("x-forwarded-for", "198.51.100.2")];

    let spoofed = flood(&direct, 5, forged, &wechat_server).await;
    let via_proxy = flood(&behind_proxy, 20, forged, &wechat_server).await;
    let stranger_via_proxy = flood(&behind_proxy, 5, forged, &stranger).await;
    let another_via_proxy = flood(&behind_proxy, 2, forged, &another).await;

    assert!(
        statuses(&spoofed).contains(&429),
        "a client cannot claim an allowlisted address"
    );
    assert!(statuses(&via_proxy).iter().all(|&s| s == 401));
    assert!(statuses(&stranger_via_proxy).contains(&429));
    assert_eq!(
        statuses(&another_via_proxy),
        [401, 429],
        "the stranger is blocked, not the proxy: another client has its own burst"
    );
    direct.stop().await;
    behind_proxy.stop().await;
}

// ================================================================== logging

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_events_are_logged_as_such_and_never_with_a_secret() {
    let logs = CapturedLogs::global();
    let redis = RedisServer::start();
    let ferry = ferry_with_aes(&redis, &[]).await;
    let forged = Push::plain(&text("o_sec", "hi", 500)).with_param("signature", &"f".repeat(40));
    let replayed = Push::plain_at(&text("o_sec", "hi", 501), now() - 86_400);
    let forged_msg_signature =
        Push::safe(&text("o_sec", "hi", 502)).with_param("msg_signature", &"e".repeat(40));

    for push in [&forged, &replayed, &forged_msg_signature] {
        post(&ferry, push).await;
    }

    let text = logs.text();
    let security: Vec<serde_json::Value> = logs
        .events()
        .into_iter()
        .filter(|e| e["target"] == "security")
        .collect();
    let kinds: Vec<&str> = security
        .iter()
        .filter_map(|e| e["fields"]["event"].as_str())
        .collect();
    assert!(kinds.contains(&"bad_signature"), "{text}");
    assert!(kinds.contains(&"replay"), "{text}");
    assert!(
        security
            .iter()
            .all(|e| e["fields"]["client"] == "127.0.0.1"),
        "{text}"
    );
    for secret in [TEST_WECHAT_TOKEN, AES_KEY] {
        assert!(!text.contains(secret), "a secret reached the log");
    }
    for push in [&forged, &replayed, &forged_msg_signature] {
        assert!(!text.contains(&push.param("signature")));
    }
    ferry.stop().await;
}
