//! Passive replies, for accounts without the customer-service API
//! (WECHAT.md): the answer travels in the response to WeChat's push. WeChat
//! gives each try 5 s and tries three times ([`WeChatPusher`] does exactly
//! that), so an answer ready within about 15 s reaches the user; a later
//! one waits for the user's next message. The fake WeChat answers 48001 to
//! every customer-service call, as such an account's would.

use std::time::Duration;

use ferry_common::wechat::MessageCrypt;
use ferry_tests::fake_provider::{FakeKind, FakeProvider, Reply};
use ferry_tests::ferry::TEST_WECHAT_TOKEN;
use ferry_tests::log_capture::CapturedLogs;
use ferry_tests::wechat_push::{TryEnd, WeChatPusher};
use ferry_tests::{Backend, FakeWeChat, Parts, RedisServer, RedisUnderTest, TestFerry, eventually};

const APP_ID: &str = "wx_passive_app";
const APP_SECRET: &str = "passive-app-secret";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const KEY: &str = "sk-passive";
const MODEL: &str = "deepseek-chat";
const PENDING: &str = "还在想，稍后回复任意内容查看。";

struct World {
    wechat: FakeWeChat,
    provider: FakeProvider,
    ferry: TestFerry,
}

async fn world(redis: &dyn RedisUnderTest, mode: &str) -> World {
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let provider = FakeProvider::start(FakeKind::OpenAi, KEY, MODEL).await;
    let (wechat_base, provider_base) = (wechat.base_url(), provider.base_url());
    let vars = [
        ("WECHAT_APP_ID", APP_ID),
        ("WECHAT_APP_SECRET", APP_SECRET),
        ("WECHAT_ENCODING_AES_KEY", AES_KEY),
        ("WECHAT_API_BASE", wechat_base.as_str()),
        ("WECHAT_REPLY_MODE", mode),
        ("FERRY_PASSIVE_PENDING_TEXT", PENDING),
        ("FERRY_PROVIDERS", "deepseek"),
        ("DEEPSEEK_API_KEY", KEY),
        ("DEEPSEEK_BASE_URL", provider_base.as_str()),
        ("DEEPSEEK_MODEL", MODEL),
        ("FERRY_PROVIDER_TIMEOUT", "60"),
        ("FERRY_AI_TOTAL_BUDGET", "60"),
        ("FERRY_TYPING_INDICATOR", "off"),
    ];
    let ferry = TestFerry::start(
        redis,
        &vars,
        Parts {
            api: true,
            worker: true,
        },
    )
    .await;
    if mode == "passive" {
        wechat.refuse_customer_service(true);
    }
    World {
        wechat,
        provider,
        ferry,
    }
}

fn pusher(w: &World) -> WeChatPusher {
    WeChatPusher::new(&w.ferry.api_url, TEST_WECHAT_TOKEN)
}

fn safe_pusher(w: &World) -> WeChatPusher {
    pusher(w).safe(MessageCrypt::new(AES_KEY, APP_ID).unwrap())
}

fn reply(text: &str) -> TryEnd {
    TryEnd::Reply(text.to_owned())
}

// On a cluster too: the reply slot lives on the user's shard, and the
// announcement reaches the api's subscriber on whichever node it listens.
ferry_tests::on_one_redis_and_a_cluster!(
    an_answer_ready_in_a_second_is_the_response_plain_and_encrypted
);

async fn an_answer_ready_in_a_second_is_the_response_plain_and_encrypted(backend: &Backend) {
    let w = world(backend, "passive").await;
    w.provider
        .push(Reply::text("明文的回答").stall(Duration::from_secs(1)));
    w.provider
        .push(Reply::text("加密的回答").stall(Duration::from_secs(1)));

    let plain = pusher(&w).text("o_plain", "问题一").await;
    assert_eq!(plain.tries, vec![reply("明文的回答")]);
    let safe = safe_pusher(&w).text("o_safe", "问题二").await;
    assert_eq!(safe.tries, vec![reply("加密的回答")]);
    assert!(
        w.wechat.send_attempts().is_empty(),
        "no customer-service call"
    );
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_ready_in_eight_seconds_comes_back_on_wechats_second_try() {
    let redis = RedisServer::start();
    let w = world(&redis, "passive").await;
    w.provider
        .push(Reply::text("八秒后的回答").stall(Duration::from_secs(8)));
    let pushed = safe_pusher(&w).text("o_eight", "慢问题").await;
    assert_eq!(pushed.tries, vec![TryEnd::TimedOut, reply("八秒后的回答")]);
    assert_eq!(w.provider.count(), 1, "the retry made no second job");
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_after_wechats_last_try_comes_with_the_next_message_and_only_then() {
    let redis = RedisServer::start();
    let w = world(&redis, "passive").await;
    w.provider
        .push(Reply::text("二十秒后的回答").stall(Duration::from_secs(20)));
    let user = "o_twenty";
    let first = pusher(&w).text(user, "很慢的问题").await;
    assert_eq!(
        first.tries,
        vec![TryEnd::TimedOut, TryEnd::TimedOut, reply(PENDING)],
        "the third try gets the pending notice"
    );
    // The answer comes; the user writes anything: it is the reply.
    eventually("the slow answer", Duration::from_secs(20), async || {
        w.provider.requests().len() == 1 && w.provider.answered() == 1
    })
    .await;
    w.provider.push(Reply::text("第二个问题的回答"));
    let next = pusher(&w).text(user, "好了吗").await;
    assert_eq!(next.tries, vec![reply("二十秒后的回答")]);
    // Its own answer is kept for the message after: never two replies to
    // one push, nothing lost.
    eventually("the second answer", Duration::from_secs(10), async || {
        w.provider.answered() == 2
    })
    .await;
    let third = pusher(&w).text(user, "继续").await;
    assert_eq!(third.tries, vec![reply("第二个问题的回答")]);
    assert_eq!(w.provider.count(), 2, "继续 asked nothing");
    assert!(w.wechat.send_attempts().is_empty());
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_passive_answer_is_cut_to_one_reply_and_continue_brings_the_rest() {
    let redis = RedisServer::start();
    let w = world(&redis, "passive").await;
    let sentence = "被动回复一次只能装下两千字节左右的内容。";
    let answer = sentence.repeat(200);
    w.provider.push(Reply::text(answer.clone()));
    let user = "o_long_passive";
    let mut received = String::new();
    let first = pusher(&w).text(user, "长问题").await;
    let mut shown = first.shown().expect("a reply").to_owned();
    let notice = "（回复「继续」查看后续）";
    let mut rounds = 1;
    while let Some(part) = shown.strip_suffix(notice) {
        assert!(shown.len() < 2048);
        received.push_str(part);
        shown = pusher(&w)
            .text(user, "继续")
            .await
            .shown()
            .expect("a reply")
            .to_owned();
        rounds += 1;
        assert!(rounds < 20);
    }
    received.push_str(&shown);
    assert_eq!(received, answer);
    assert!(rounds > 1);
    assert_eq!(w.provider.count(), 1);
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_switches_the_fleet_to_passive_replies_after_a_48001() {
    let logs = CapturedLogs::global();
    let redis = RedisServer::start();
    let w = world(&redis, "auto").await;
    w.wechat.refuse_customer_service(true);
    w.provider.push(Reply::text("第一个回答"));
    w.provider.push(Reply::text("第二个回答"));
    let user = "o_auto";

    // Customer-service mode first: acknowledged at once, then 48001.
    let first = pusher(&w).text(user, "问题一").await;
    assert_eq!(first.tries, vec![TryEnd::Acknowledged]);
    eventually("the 48001", Duration::from_secs(10), async || {
        w.wechat.send_attempts().iter().any(|a| a.errcode == 48001)
    })
    .await;
    // The api follows the fleet's switch within seconds; the first answer
    // waited for this message.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = pusher(&w).text(user, "问题二").await;
    assert_eq!(second.tries, vec![reply("第一个回答")]);
    eventually("the second answer", Duration::from_secs(10), async || {
        w.provider.answered() == 2
    })
    .await;
    let third = pusher(&w).text(user, "继续").await;
    assert_eq!(third.tries, vec![reply("第二个回答")]);
    let switches = logs
        .text()
        .lines()
        .filter(|l| l.contains("the fleet now answers passively"))
        .count();
    assert_eq!(switches, 1, "one log line for the switch");
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_away_a_passive_push_is_spooled_and_its_answer_waits_for_the_next_message() {
    let mut redis = RedisServer::start_with_aof();
    let w = world(&redis, "passive").await;
    w.provider.push(Reply::text("Redis 回来后的回答"));
    let user = "o_outage";
    redis.kill();
    // Spooled within the acknowledgement budget; WeChat's tries run out
    // and the last one gets the pending notice without Redis.
    let first = pusher(&w).text(user, "问题").await;
    assert_eq!(
        first.tries,
        vec![TryEnd::TimedOut, TryEnd::TimedOut, reply(PENDING)]
    );
    redis.restart();
    // Replayed once (the three tries' copies share the MsgId), answered,
    // and kept: no try was counted, so nobody holds the push.
    let kept =
        ferry_common::Keys::new("ferry").user(ferry_common::keys::UserKey::Continuation, user);
    eventually("the answer kept", Duration::from_secs(30), async || {
        redis::cmd("EXISTS")
            .arg(&kept)
            .query::<bool>(&mut redis.conn())
            .unwrap_or(false)
    })
    .await;
    let next = pusher(&w).text(user, "在吗").await;
    assert_eq!(next.tries, vec![reply("Redis 回来后的回答")]);
    // The next message is asked in turn (its answer kept for the one after).
    eventually(
        "the next message asked",
        Duration::from_secs(10),
        async || w.provider.count() == 2,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.provider.count(), 2, "asked once per message");
    w.ferry.stop().await;
}
