//! One WeChat message all the way through: signed push -> api -> Redis ->
//! worker -> provider -> customer-service message, against a real Redis and
//! fakes of WeChat and an OpenAI-compatible provider.

use std::time::Duration;

use ferry_common::wechat;
use ferry_tests::fake_provider::{FakeKind, FakeProvider, Reply};
use ferry_tests::ferry::TEST_WECHAT_TOKEN;
use ferry_tests::{FakeWeChat, Parts, RedisServer, TestFerry};

const APP_ID: &str = "wx_test_app";
const APP_SECRET: &str = "test-app-secret";
const PROVIDER_KEY: &str = "sk-test-deepseek";
const MODEL: &str = "deepseek-chat";

struct World {
    redis: RedisServer,
    wechat: FakeWeChat,
    provider: FakeProvider,
    ferry: TestFerry,
}

async fn world() -> World {
    world_with(&[]).await
}

async fn world_with(extra: &[(&str, &str)]) -> World {
    let redis = RedisServer::start();
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let provider = FakeProvider::start(FakeKind::OpenAi, PROVIDER_KEY, MODEL).await;
    let (wechat_base, provider_base) = (wechat.base_url(), provider.base_url());
    let mut vars = vec![
        ("WECHAT_APP_ID", APP_ID),
        ("WECHAT_APP_SECRET", APP_SECRET),
        ("WECHAT_API_BASE", wechat_base.as_str()),
        ("FERRY_PROVIDERS", "deepseek"),
        ("DEEPSEEK_API_KEY", PROVIDER_KEY),
        ("DEEPSEEK_BASE_URL", provider_base.as_str()),
        ("DEEPSEEK_MODEL", MODEL),
    ];
    vars.extend_from_slice(extra);
    let ferry = TestFerry::start(
        &redis,
        &vars,
        Parts {
            api: true,
            worker: true,
        },
    )
    .await;
    World {
        redis,
        wechat,
        provider,
        ferry,
    }
}

fn text(openid: &str, content: &str, msg_id: i64) -> String {
    wechat::text_message_xml(
        "gh_account",
        openid,
        chrono::Utc::now().timestamp(),
        content,
        msg_id,
    )
}

fn stream_len(redis: &RedisServer) -> i64 {
    redis::cmd("XLEN")
        .arg("{ferry:wechat}:stream")
        .query(&mut redis.conn())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_text_message_becomes_a_customer_service_message_with_the_providers_answer() {
    let w = world().await;
    w.provider
        .push(Reply::text("你好！我是 AI 助手。").usage(5, 8));

    let (status, body) = w.ferry.post_wechat(&text("o_user_1", "你好", 1001)).await;
    assert_eq!((status, body.as_str()), (200, "success"));

    let sent = w.wechat.wait_for_sent(1, Duration::from_secs(10)).await;
    assert_eq!(sent[0].touser, "o_user_1");
    assert_eq!(sent[0].content, "你好！我是 AI 助手。");
    let requests = w.provider.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].key_header.as_deref(),
        Some("Bearer sk-test-deepseek")
    );
    assert_eq!(requests[0].model.as_deref(), Some(MODEL));
    assert_eq!(requests[0].messages.last().unwrap().content, "你好");
    assert_eq!(
        w.wechat.token_fetches(),
        1,
        "one token for the fleet, cached in Redis"
    );
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_signature_is_refused_and_enqueues_nothing() {
    let w = world().await;
    let (status, body) = w
        .ferry
        .post_wechat_signed(&text("o_user_2", "hi", 2002), "not-the-token")
        .await;
    assert_eq!(status, 401);
    assert_eq!(body, "invalid signature");
    assert_eq!(stream_len(&w.redis), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(w.wechat.sent().is_empty());
    assert_eq!(w.provider.count(), 0);
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_msg_id_posted_three_times_produces_one_reply() {
    let w = world().await;
    let xml = text("o_user_3", "重复的消息", 3003);
    for _ in 0..3 {
        let (status, body) = w.ferry.post_wechat(&xml).await;
        assert_eq!((status, body.as_str()), (200, "success"));
    }
    // A different message from the same user afterwards: its reply arriving
    // proves the worker is past the first one.
    w.ferry.post_wechat(&text("o_user_3", "下一条", 3004)).await;
    let sent = w.wechat.wait_for_sent(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_now = w.wechat.sent();
    assert_eq!(sent_now.len(), 2, "{sent_now:?}");
    assert_eq!(sent.iter().filter(|m| m.content == "重复的消息").count(), 1);
    assert_eq!(w.provider.count(), 2);
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_verification_echoes_echostr_only_for_a_valid_signature() {
    let w = world().await;
    let client = reqwest::Client::new();
    let verify = |token: &'static str| {
        let client = client.clone();
        let url = format!("{}/wechat", w.ferry.api_url);
        async move {
            // The worked example from WeChat's docs, with our token.
            let (ts, nonce) = ("1714036504", "1514711492");
            let signature = wechat::sign(&[token, ts, nonce]);
            let r = client
                .get(url)
                .query(&[
                    ("signature", signature.as_str()),
                    ("timestamp", ts),
                    ("nonce", nonce),
                    ("echostr", "4375120948345356249"),
                ])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(
        verify(TEST_WECHAT_TOKEN).await,
        (200, "4375120948345356249".to_string())
    );
    let (status, body) = verify("AAAAA").await;
    assert_eq!(status, 401);
    assert!(!body.contains("4375120948345356249"));
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_xml_gets_400_with_a_reason_and_enqueues_nothing() {
    let w = world().await;
    let (status, body) = w.ferry.post_wechat("<xml><ToUserName>oops</xml>").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = w
        .ferry
        .post_wechat("<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>x</Content></xml>")
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("MsgId"), "{body}");
    assert_eq!(stream_len(&w.redis), 0);
    w.ferry.stop().await;
}

fn unsubscribe(openid: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_account]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[unsubscribe]]></Event></xml>",
        chrono::Utc::now().timestamp()
    )
}

/// Every key in Redis whose name or value mentions `needle`.
fn keys_mentioning(redis: &RedisServer, needle: &str) -> Vec<String> {
    let mut conn = redis.conn();
    let all: Vec<String> = redis::cmd("SCAN")
        .cursor_arg(0)
        .clone()
        .iter(&mut conn)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    all.into_iter()
        .filter(|key| {
            let dump: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut conn).unwrap();
            key.contains(needle) || dump.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribed_user_over_the_limit_leaves_nothing_but_job_records() {
    let w = world_with(&[
        ("FERRY_USER_MESSAGES_PER_MINUTE", "1"),
        ("FERRY_USER_BURST", "1"),
    ])
    .await;
    // The first message is answered and remembered; the second is over the
    // limit and gets the notice (its flag set).
    w.ferry
        .post_wechat(&text("o_leaving", "第一条", 7001))
        .await;
    w.wechat.wait_for_sent(1, Duration::from_secs(10)).await;
    w.ferry
        .post_wechat(&text("o_leaving", "第二条", 7002))
        .await;
    w.wechat.wait_for_sent(2, Duration::from_secs(10)).await;
    let known = keys_mentioning(&w.redis, "o_leaving");
    for kind in ferry_common::keys::UserKey::ALL {
        use ferry_common::keys::UserKey;
        if kind == UserKey::DevOutbox || kind == UserKey::Continuation {
            // Only `ferry dev` writes the outbox; only an answer that did
            // not fit is kept (wechat_quota.rs forgets one).
            continue;
        }
        let key = ferry_common::Keys::new("ferry").user(kind, "o_leaving");
        assert!(known.contains(&key), "{kind:?} was kept: {known:?}");
    }

    let (status, _) = w.ferry.post_wechat(&unsubscribe("o_leaving")).await;
    assert_eq!(status, 200);

    let left = keys_mentioning(&w.redis, "o_leaving");
    let job_record = |key: &String| key.starts_with("{ferry:wechat}:job:");
    assert!(
        left.iter().all(job_record),
        "only job records may remain after unsubscribing: {left:?}"
    );
    assert_eq!(left.len(), 2, "the two messages' records: {left:?}");
    w.ferry.stop().await;
}
