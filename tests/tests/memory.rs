//! Conversation memory: each WeChat user's last turns, kept in Redis and
//! sent with their next message, in order, capped in turns, time and prompt
//! size, and remembered once however often a job is retried.

use std::time::Duration;

use ferry_common::{Keys, wechat};
use ferry_tests::fake_provider::{FakeKind, FakeMessage, FakeProvider, Reply};
use ferry_tests::{FakeWeChat, Parts, RedisServer, TestFerry};
use ferry_worker::memory::{ConversationMemory, MemorySettings};
use ferry_worker::providers::{ChatMessage, Role};

const APP_ID: &str = "wx_test_app";
const APP_SECRET: &str = "test-app-secret";
const KEY: &str = "sk-test-deepseek";
const MODEL: &str = "deepseek-chat";
const SYSTEM: &str = "你是一个乐于助人的助手。";

struct World {
    redis: RedisServer,
    wechat: FakeWeChat,
    provider: FakeProvider,
    ferry: TestFerry,
}

/// Redis, WeChat, one OpenAI-compatible provider and Ferry (api + worker)
/// with a system prompt and `extra` variables.
async fn world(extra: &[(&str, &str)]) -> World {
    let redis = RedisServer::start();
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
        ("FERRY_SYSTEM_PROMPT", SYSTEM),
    ];
    vars.extend_from_slice(extra);
    let parts = Parts {
        api: true,
        worker: true,
    };
    let ferry = TestFerry::start(&redis, &vars, parts).await;
    World {
        redis,
        wechat,
        provider,
        ferry,
    }
}

impl World {
    /// `openid` says `content`; returns once Ferry's reply reached WeChat
    /// (the `n`th message WeChat accepted in all).
    async fn exchange(&self, openid: &str, content: &str, msg_id: i64, n: usize) {
        let xml = wechat::text_message_xml(
            "gh_account",
            openid,
            chrono::Utc::now().timestamp(),
            content,
            msg_id,
        );
        let (status, body) = self.ferry.post_wechat(&xml).await;
        assert_eq!((status, body.as_str()), (200, "success"));
        self.wechat.wait_for_sent(n, Duration::from_secs(10)).await;
    }

    /// The user's conversation as stored: JSON entries, oldest first.
    fn stored(&self, openid: &str) -> Vec<serde_json::Value> {
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(Keys::new("ferry").conversation(openid))
            .arg(0)
            .arg(-1)
            .query(&mut self.redis.conn())
            .unwrap();
        raw.iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect()
    }
}

fn user(content: &str) -> FakeMessage {
    FakeMessage::new("user", content)
}

fn assistant(content: &str) -> FakeMessage {
    FakeMessage::new("assistant", content)
}

fn system() -> FakeMessage {
    FakeMessage::new("system", SYSTEM)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_is_sent_after_the_users_earlier_turns_in_order() {
    let w = world(&[]).await;
    w.provider.push(Reply::text("渡轮是一种船。"));
    w.provider.push(Reply::text("大约半小时。"));
    w.provider.push(Reply::text("不客气！"));

    w.exchange("o_alice", "什么是渡轮？", 1, 1).await;
    w.exchange("o_alice", "过海要多久？", 2, 2).await;
    w.exchange("o_alice", "谢谢", 3, 3).await;

    let requests = w.provider.requests();
    assert_eq!(requests[0].messages, [system(), user("什么是渡轮？")]);
    assert_eq!(
        requests[2].messages,
        [
            system(),
            user("什么是渡轮？"),
            assistant("渡轮是一种船。"),
            user("过海要多久？"),
            assistant("大约半小时。"),
            user("谢谢"),
        ]
    );
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_conversation_is_never_sent_with_anothers_message() {
    let w = world(&[]).await;

    w.exchange("o_alice", "我叫爱丽丝", 1, 1).await;
    w.exchange("o_bob", "我是谁？", 2, 2).await;

    let requests = w.provider.requests();
    assert_eq!(requests[1].messages, [system(), user("我是谁？")]);
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_last_turns_are_kept_as_json_messages_that_expire() {
    let w = world(&[("FERRY_MEMORY_TURNS", "2"), ("FERRY_MEMORY_TTL", "600")]).await;

    for (i, question) in ["one", "two", "three"].into_iter().enumerate() {
        w.exchange("o_carol", question, i as i64 + 1, i + 1).await;
    }

    // The fake echoes: each answer is the question.
    let expected: Vec<serde_json::Value> = ["two", "three"]
        .into_iter()
        .flat_map(|q| {
            [
                serde_json::json!({"role": "user", "content": q}),
                serde_json::json!({"role": "assistant", "content": q}),
            ]
        })
        .collect();
    assert_eq!(w.stored("o_carol"), expected);
    let ttl: i64 = redis::cmd("TTL")
        .arg(Keys::new("ferry").conversation("o_carol"))
        .query(&mut w.redis.conn())
        .unwrap();
    assert!((1..=600).contains(&ttl), "TTL {ttl}");
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_retried_after_the_answer_remembers_its_turn_once() {
    let w = world(&[]).await;
    w.provider.push(Reply::text("你好！"));
    // WeChat is busy for the first send: the job is retried and reuses the
    // answer noted on its record.
    w.wechat.fail_next_sends(&[-1]);

    w.exchange("o_dave", "你好", 1, 1).await;

    assert_eq!(w.wechat.sent_to("o_dave"), ["你好！"]);
    assert_eq!(w.provider.count(), 1);
    assert_eq!(
        w.stored("o_dave"),
        [
            serde_json::json!({"role": "user", "content": "你好"}),
            serde_json::json!({"role": "assistant", "content": "你好！"}),
        ]
    );
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_unsubscribes_is_forgotten_and_starts_afresh_on_return() {
    let w = world(&[]).await;
    w.exchange("o_grace", "我叫格蕾丝", 1, 1).await;
    assert_eq!(w.stored("o_grace").len(), 2);

    let unsubscribe = format!(
        "<xml><ToUserName><![CDATA[gh_account]]></ToUserName><FromUserName><![CDATA[o_grace]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[unsubscribe]]></Event></xml>",
        chrono::Utc::now().timestamp()
    );
    let (status, _) = w.ferry.post_wechat(&unsubscribe).await;
    assert_eq!(status, 200);
    assert!(w.stored("o_grace").is_empty());
    w.exchange("o_grace", "我是谁？", 2, 2).await;

    let requests = w.provider.requests();
    assert_eq!(requests[1].messages, [system(), user("我是谁？")]);
    w.ferry.stop().await;
}

// ---------------------------------------------------------------------------
// The memory itself, against a real Redis.

fn memory(redis: &RedisServer, turns: usize, max_prompt_chars: usize) -> ConversationMemory {
    let settings = MemorySettings {
        turns,
        ttl: Duration::from_secs(600),
        max_prompt_chars,
    };
    ConversationMemory::new(redis.store(2), settings)
}

fn contents(messages: &[ChatMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.content.as_str()).collect()
}

#[tokio::test]
async fn the_oldest_turns_are_left_out_when_the_prompt_would_be_too_long() {
    let redis = RedisServer::start();
    // "sys" + "question 4" is 13 characters and each turn 18 ("question i"
    // and "answer i"): 40 leaves room for one turn.
    let memory = memory(&redis, 10, 40);
    for i in 1..=3 {
        let (q, a) = (format!("question {i}"), format!("answer {i}"));
        memory.remember("o_erin", &q, &a).await.unwrap();
    }

    let prompt = memory
        .prompt("o_erin", Some("sys"), "question 4")
        .await
        .unwrap();

    assert_eq!(
        contents(&prompt.messages),
        ["sys", "question 3", "answer 3", "question 4"]
    );
    assert_eq!(prompt.messages[0].role, Role::System);
    // Only what is sent is capped: the stored turns stay.
    assert_eq!(memory.history("o_erin").await.unwrap().len(), 6);
}

#[tokio::test]
async fn with_memory_turned_off_nothing_is_kept_or_sent() {
    let redis = RedisServer::start();
    let memory = memory(&redis, 0, 12_000);

    memory.remember("o_frank", "hi", "hello").await.unwrap();
    let prompt = memory.prompt("o_frank", None, "again").await.unwrap();

    assert_eq!(contents(&prompt.messages), ["again"]);
    let exists: bool = redis::cmd("EXISTS")
        .arg(Keys::new("ferry").conversation("o_frank"))
        .query(&mut redis.conn())
        .unwrap();
    assert!(!exists);
}
