//! WeChat's customer-service allowance (WECHAT.md): 5 messages per user
//! message, every part, apology and notice counted, a newer message
//! resetting (not adding to) the allowance. The fake WeChat enforces it as
//! WeChat does: a 6th message after one user message gets 45047.
//!
//! An answer that does not fit goes out as far as it fits, the last part
//! ending with the 继续 notice; 继续 brings the rest without asking the AI.

use std::time::Duration;

use ferry_tests::fake_provider::{FakeKind, FakeProvider, Reply};
use ferry_tests::ferry::TEST_WECHAT_TOKEN;
use ferry_tests::wechat_push::{TryEnd, WeChatPusher};
use ferry_tests::{Backend, FakeWeChat, Parts, TestFerry, eventually};

const APP_ID: &str = "wx_quota_app";
const APP_SECRET: &str = "quota-app-secret";
const KEY: &str = "sk-quota";
const MODEL: &str = "deepseek-chat";
const NOTICE: &str = "（回复「继续」查看后续）";

struct World<'a> {
    redis: &'a Backend,
    wechat: FakeWeChat,
    provider: FakeProvider,
    ferry: TestFerry,
    pusher: WeChatPusher,
}

async fn world<'a>(redis: &'a Backend, extra: &[(&str, &str)]) -> World<'a> {
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let provider = FakeProvider::start(FakeKind::OpenAi, KEY, MODEL).await;
    let (wechat_base, provider_base) = (wechat.base_url(), provider.base_url());
    let mut vars = vec![
        ("WECHAT_APP_ID", APP_ID),
        ("WECHAT_APP_SECRET", APP_SECRET),
        ("WECHAT_API_BASE", wechat_base.as_str()),
        ("FERRY_PROVIDERS", "deepseek"),
        ("DEEPSEEK_API_KEY", KEY),
        ("DEEPSEEK_BASE_URL", provider_base.as_str()),
        ("DEEPSEEK_MODEL", MODEL),
        ("FERRY_TYPING_INDICATOR", "off"),
    ];
    vars.extend_from_slice(extra);
    let ferry = TestFerry::start(
        redis,
        &vars,
        Parts {
            api: true,
            worker: true,
        },
    )
    .await;
    let pusher = WeChatPusher::new(&ferry.api_url, TEST_WECHAT_TOKEN).telling(&wechat);
    World {
        redis,
        wechat,
        provider,
        ferry,
        pusher,
    }
}

/// A 16,000-character answer, Chinese and English mixed: about 12 parts.
fn long_answer() -> String {
    let mut text = String::new();
    let mut i = 0;
    while text.chars().count() < 16_000 {
        text.push_str(&format!(
            "第{i}句话讲一件事。This is sentence {i} of the answer. "
        ));
        i += 1;
    }
    text.chars()
        .take(16_000)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Whitespace does not survive a cut (each part is trimmed): compare
/// without it.
fn squeezed(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fn kept_for(redis: &Backend, openid: &str) -> bool {
    let key = redis
        .keys()
        .user(ferry_common::keys::UserKey::Continuation, openid);
    redis::cmd("EXISTS")
        .arg(key)
        .query::<bool>(&mut *redis.conn())
        .unwrap()
}

/// Waits until `n` messages were accepted for `openid` and the worker is
/// done with the message (nothing more arrives), and returns them.
async fn sent_settled(w: &World<'_>, openid: &str, n: usize) -> Vec<String> {
    eventually("messages sent", Duration::from_secs(20), async || {
        w.wechat.sent_to(openid).len() >= n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.wechat.sent_to(openid)
}

// On a cluster too: the allowance, the kept rest and the conversation live
// on the user's shard.
ferry_tests::on_one_redis_and_a_cluster!(
    a_long_answer_goes_out_five_parts_at_a_time_and_continue_brings_the_rest_in_order
);

async fn a_long_answer_goes_out_five_parts_at_a_time_and_continue_brings_the_rest_in_order(
    backend: &Backend,
) {
    let w = world(backend, &[]).await;
    let answer = long_answer();
    w.provider.push(Reply::text(answer.clone()));
    let user = "o_long";

    w.pusher.text(user, "讲一个很长的故事").await;
    let first = sent_settled(&w, user, 5).await;
    assert_eq!(first.len(), 5, "five messages for one user message");
    assert!(first[4].ends_with(NOTICE), "the fifth says more is kept");
    assert!(first[..4].iter().all(|p| !p.contains(NOTICE)));
    assert!(kept_for(w.redis, user));

    w.pusher.text(user, "继续").await;
    let second = sent_settled(&w, user, 10).await;
    assert_eq!(second.len(), 10, "five more for the 继续");
    assert!(second[9].ends_with(NOTICE));

    w.pusher.text(user, " 继续 ").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    eventually("nothing kept", Duration::from_secs(20), async || {
        !kept_for(w.redis, user)
    })
    .await;
    let all = sent_settled(&w, user, 11).await;
    assert!(all.len() <= 15, "{} messages", all.len());
    assert!(
        !all.last().unwrap().ends_with(NOTICE),
        "the last part says nothing more"
    );

    // In order, nothing lost or repeated, every part under WeChat's limit.
    let received: String = all
        .iter()
        .map(|p| p.strip_suffix(NOTICE).unwrap_or(p))
        .collect();
    assert_eq!(squeezed(&received), squeezed(&answer));
    assert!(all.iter().all(|p| p.len() < 2048));
    assert!(
        w.wechat
            .send_attempts_to(user)
            .iter()
            .all(|a| a.errcode == 0),
        "WeChat never refused a message (no 45047)"
    );
    // 继续 asked nothing of the AI and is not remembered as a question.
    assert_eq!(w.provider.count(), 1);
    let conversation = w.redis.keys().conversation(user);
    let turns: Vec<String> = redis::cmd("LRANGE")
        .arg(&conversation)
        .arg(0)
        .arg(-1)
        .query(&mut *w.redis.conn())
        .unwrap();
    assert_eq!(turns.len(), 2, "one question and its answer: {turns:?}");
    assert!(turns.iter().all(|t| !t.contains("继续")));
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_question_replaces_what_was_kept_and_unsubscribing_forgets_it() {
    let redis = Backend::single();
    let w = world(&redis, &[]).await;
    let user = "o_replaced";
    w.provider.push(Reply::text(long_answer()));
    w.provider.push(Reply::text("短的回答。"));

    w.pusher.text(user, "长问题").await;
    sent_settled(&w, user, 5).await;
    assert!(kept_for(w.redis, user));

    w.pusher.text(user, "换个问题").await;
    let sent = sent_settled(&w, user, 6).await;
    assert_eq!(sent[5], "短的回答。");
    eventually("nothing kept", Duration::from_secs(10), async || {
        !kept_for(w.redis, user)
    })
    .await;

    // With nothing kept, 继续 is a question like any other.
    w.pusher.text(user, "继续").await;
    let sent = sent_settled(&w, user, 7).await;
    assert_eq!(sent[6], "继续", "the fake answers with the question");
    assert_eq!(w.provider.count(), 3);

    // Something kept again, then the user leaves: it goes with them.
    w.provider.push(Reply::text(long_answer()));
    w.pusher.text(user, "再来一个长的").await;
    sent_settled(&w, user, 12).await;
    assert!(kept_for(w.redis, user));
    let unsubscribe = format!(
        "<xml><ToUserName><![CDATA[gh_account]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[unsubscribe]]></Event></xml>",
        chrono::Utc::now().timestamp()
    );
    assert_eq!(w.ferry.post_wechat(&unsubscribe).await.0, 200);
    assert!(!kept_for(w.redis, user));
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apology_never_goes_over_the_allowance_the_parts_used() {
    // One job at a time: the long answer is sent before the failing
    // question's apology is tried, and both count against the allowance of
    // the newer message (the allowance does not add up).
    let redis = Backend::single();
    let w = world(&redis, &[("FERRY_WORKER_CONCURRENCY", "1")]).await;
    let user = "o_apology";
    w.provider
        .push(Reply::text(long_answer()).stall(Duration::from_millis(500)));
    w.provider
        .push(Reply::openai_error(400, "invalid_request_error", "bad"));
    w.pusher.text(user, "长问题").await;
    w.pusher.text(user, "会失败的问题").await;

    let sent = sent_settled(&w, user, 5).await;
    eventually(
        "both questions asked",
        Duration::from_secs(10),
        async || w.provider.count() == 2,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_now = w.wechat.sent_to(user);
    assert_eq!(
        sent_now, sent,
        "no apology: nothing was left to send it with"
    );
    assert_eq!(sent.len(), 5);
    assert!(
        w.wechat
            .send_attempts_to(user)
            .iter()
            .all(|a| a.errcode == 0),
        "no 45047: {:?}",
        w.wechat.send_attempts_to(user)
    );
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_notice_counts_against_the_allowance_too() {
    let redis = Backend::single();
    let w = world(
        &redis,
        &[
            ("FERRY_USER_MESSAGES_PER_MINUTE", "1"),
            ("FERRY_USER_BURST", "1"),
        ],
    )
    .await;
    let user = "o_limited";
    w.provider
        .push(Reply::text(long_answer()).stall(Duration::from_millis(800)));
    w.pusher.text(user, "长问题").await;
    // Over the per-user limit: the notice goes while the answer is asked.
    w.pusher.text(user, "又一条").await;
    let sent = sent_settled(&w, user, 5).await;
    assert_eq!(sent.len(), 5, "notice and parts share five: {sent:?}");
    assert!(sent.iter().any(|m| m.contains("请稍等")), "{sent:?}");
    assert!(sent.last().unwrap().ends_with(NOTICE));
    assert!(
        w.wechat
            .send_attempts_to(user)
            .iter()
            .all(|a| a.errcode == 0)
    );
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_menu_click_leaves_three_messages_for_an_answer_still_on_its_way() {
    let redis = Backend::single();
    let w = world(&redis, &[]).await;
    let user = "o_clicker";
    w.provider
        .push(Reply::text(long_answer()).stall(Duration::from_millis(800)));
    w.pusher.text(user, "长问题").await;
    // While the answer is asked: a menu click (WeChat: 3 within a minute).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let clicked = w.pusher.event(user, "CLICK", "MENU_HELP").await;
    assert!(matches!(clicked, TryEnd::Acknowledged), "{clicked:?}");
    let sent = sent_settled(&w, user, 3).await;
    assert_eq!(sent.len(), 3, "three after the click: {sent:?}");
    assert!(sent[2].ends_with(NOTICE));
    assert!(
        w.wechat
            .send_attempts_to(user)
            .iter()
            .all(|a| a.errcode == 0),
        "no 45047"
    );
    w.ferry.stop().await;
}
