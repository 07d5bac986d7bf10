//! Reply delivery through WeChat's customer-service API, as the user sees
//! it: long answers in ordered parts under the size limit, the fleet's one
//! access token refreshed once when it expires, WeChat's errcodes handled
//! per WECHAT.md (busy retried without resending delivered parts, refusals
//! sent once and dead-lettered with the reason), the apology, the typing
//! indicator, the per-user message limit, and the counters operators read.
//!
//! Against a real Redis, a fake WeChat API that checks `access_token`,
//! counts token fetches and answers any errcode on command, and a fake
//! OpenAI-compatible provider. The in-process worker is built by
//! `ferry_cli::app` exactly as `ferry worker` builds it; the multi-process
//! tests run real `target/debug/ferry worker` processes.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_cli::app;
use ferry_common::Secret;
use ferry_common::config::DEFAULT_USER_LIMIT_TEXT;
use ferry_common::fleet::{TokenCache, TokenSource};
use ferry_common::job::kinds::{self, WeChatReply};
use ferry_common::job::{Idempotency, JobId, JobState, NewJob};
use ferry_common::queue::JobQueue;
use ferry_tests::fake_provider::{FakeKind, FakeProvider, Reply};
use ferry_tests::worker_process::{WorkerProcesses, ferry_worker};
use ferry_tests::{FakeWeChat, Parts, RedisServer, TestFerry};
use ferry_worker::WorkerSettings;
use ferry_worker::reply::ReplyCounters;
use ferry_worker::reply::split::{MAX_PART_BYTES, split};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const APP_ID: &str = "wx_reply_app";
const APP_SECRET: &str = "reply-app-secret";
const PROVIDER_KEY: &str = "sk-reply";
const MODEL: &str = "deepseek-chat";
const WAIT: Duration = Duration::from_secs(30);

/// A sentence of 20 characters (60 bytes of UTF-8).
const SENTENCE: &str = "这是一个比较长的句子，用来测试分段发送。";

/// One in-process worker against its own Redis and fakes.
struct World {
    _redis: RedisServer,
    wechat: FakeWeChat,
    provider: FakeProvider,
    queue: JobQueue,
    counters: ReplyCounters,
    shutdown: CancellationToken,
    worker: JoinHandle<()>,
}

impl World {
    async fn start(vars: &[(&str, &str)]) -> Self {
        let redis = RedisServer::start();
        let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
        let provider = FakeProvider::start(FakeKind::OpenAi, PROVIDER_KEY, MODEL).await;
        let (wechat_base, provider_base) = (wechat.base_url(), provider.base_url());
        let mut all = vec![
            ("WECHAT_APP_ID", APP_ID),
            ("WECHAT_APP_SECRET", APP_SECRET),
            ("WECHAT_API_BASE", wechat_base.as_str()),
            ("FERRY_PROVIDERS", "deepseek"),
            ("DEEPSEEK_API_KEY", PROVIDER_KEY),
            ("DEEPSEEK_BASE_URL", provider_base.as_str()),
            ("FERRY_MEMORY_TURNS", "0"),
        ];
        all.extend_from_slice(vars);
        // Migrated Redis and configuration only: the worker is built here.
        let ferry = TestFerry::start(
            &redis,
            &all,
            Parts {
                api: false,
                worker: false,
            },
        )
        .await;
        let counters = ReplyCounters::new();
        let (worker, _reload) = app::worker_counting(
            &ferry.config,
            ferry.queue.clone(),
            app::Replies::WeChat,
            WorkerSettings::from_config(&ferry.config.queue),
            counters.clone(),
        )
        .unwrap();
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(worker.run(shutdown.clone()));
        let queue = ferry.queue.clone();
        ferry.stop().await;
        Self {
            _redis: redis,
            wechat,
            provider,
            queue,
            counters,
            shutdown,
            worker,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(WAIT, self.worker).await;
    }

    /// Waits until the job is finished (succeeded or dead).
    async fn finished(&self, id: &JobId) -> ferry_common::job::JobRecord {
        finished(&self.queue, id).await
    }
}

fn message(openid: &str, content: &str) -> NewJob {
    NewJob {
        kind: kinds::WECHAT_REPLY.into(),
        queue: kinds::queue_of(kinds::WECHAT_REPLY).into(),
        payload: serde_json::to_value(WeChatReply {
            openid: openid.into(),
            account: "gh_reply".into(),
            content: content.into(),
            msg_id: None,
            create_time: chrono::Utc::now().timestamp(),
            media_id: None,
            passive: false,
        })
        .unwrap(),
        max_attempts: kinds::max_attempts_of(kinds::WECHAT_REPLY),
        idempotency: Some(Idempotency {
            key: format!("{openid}:{content}"),
            ttl: Duration::from_secs(600),
        }),
    }
}

async fn ask(queue: &JobQueue, openid: &str, content: &str) -> JobId {
    queue.enqueue(&message(openid, content)).await.unwrap().id
}

async fn finished(queue: &JobQueue, id: &JobId) -> ferry_common::job::JobRecord {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let record = queue.job(id).await.unwrap().expect("the job record");
        if matches!(record.state, JobState::Succeeded | JobState::Dead) {
            return record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} did not finish: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn dead_letter_reason(queue: &JobQueue, id: &JobId) -> String {
    queue
        .dead_letters(kinds::queue_of(kinds::WECHAT_REPLY), 100)
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.job_id == id.to_string())
        .map(|l| l.reason)
        .unwrap_or_else(|| panic!("no dead letter for {id}"))
}

fn parts_of(answer: &str) -> Vec<String> {
    split(answer, MAX_PART_BYTES)
}

// ---------------------------------------------------------------- parts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3000_character_answer_arrives_as_ordered_parts_each_under_the_limit() {
    let w = World::start(&[]).await;
    let answer = SENTENCE.repeat(150);
    assert_eq!(answer.chars().count(), 3000);
    w.provider.set_default(Some(Reply::text(answer.clone())));

    let job = ask(&w.queue, "o_long", "tell me a long story").await;
    let record = w.finished(&job).await;

    let received = w.wechat.sent_to("o_long");
    assert!(received.len() > 1, "{} part(s)", received.len());
    for part in &received {
        assert!(part.len() < 2048, "a part of {} bytes", part.len());
        assert!(part.ends_with('。'), "cut inside a sentence: {part}");
    }
    assert_eq!(
        received.concat(),
        answer,
        "the parts, in order, are the answer"
    );
    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(record.result.unwrap()["parts"], received.len());
    assert_eq!(w.counters.snapshot().parts_sent, received.len() as u64);
    w.stop().await;
}

// ------------------------------------------------------------- errcodes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_busy_is_retried_with_backoff_and_delivered_parts_are_not_resent() {
    let w = World::start(&[]).await;
    let answer = SENTENCE.repeat(100);
    let parts = parts_of(&answer);
    assert_eq!(parts.len(), 3);
    w.provider.set_default(Some(Reply::text(answer)));
    // The second part is met with "system busy" once.
    w.wechat.fail_sends_after(1, &[-1]);

    let job = ask(&w.queue, "o_busy", "hi").await;
    let record = w.finished(&job).await;

    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(record.attempts, 2, "one job retry");
    assert_eq!(
        w.wechat.sent_to("o_busy"),
        parts,
        "each part once, in order"
    );
    let answers: Vec<(String, i64)> = w
        .wechat
        .send_attempts_to("o_busy")
        .into_iter()
        .map(|a| (a.content, a.errcode))
        .collect();
    assert_eq!(
        answers,
        vec![
            (parts[0].clone(), 0),
            (parts[1].clone(), -1),
            (parts[1].clone(), 0),
            (parts[2].clone(), 0),
        ]
    );
    assert_eq!(w.provider.count(), 1, "the retry reused the noted answer");
    assert_eq!(w.counters.snapshot().errcodes, BTreeMap::from([(-1, 1)]));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_sent_once_never_retried_and_dead_lettered_with_the_reason() {
    let w = World::start(&[]).await;
    w.provider.set_default(Some(Reply::text("一个回答。")));
    let refusals = [
        (45015, "48-hour"),
        (45047, "too many messages"),
        (45009, "daily API quota"),
        (48001, "not authorised"),
    ];
    for (code, reason) in refusals {
        let user = format!("o_refused_{code}");
        w.wechat.fail_next_sends(&[code]);

        let job = ask(&w.queue, &user, "hi").await;
        let record = w.finished(&job).await;

        assert_eq!(record.state, JobState::Dead, "{code}");
        assert_eq!(record.attempts, 1, "{code} was retried");
        let letter = dead_letter_reason(&w.queue, &job).await;
        assert!(
            letter.contains(&code.to_string()) && letter.contains(reason),
            "{letter}"
        );
        let attempts = w.wechat.send_attempts_to(&user);
        assert_eq!(attempts.len(), 1, "{code}: {attempts:?}");
        assert_eq!(attempts[0].errcode, code);
        assert!(w.wechat.sent_to(&user).is_empty());
    }
    // Nothing comes back later either.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.wechat.send_attempts().len(), refusals.len());
    assert_eq!(
        w.counters.snapshot().errcodes,
        BTreeMap::from([(45009, 1), (45015, 1), (45047, 1), (48001, 1)])
    );
    w.stop().await;
}

// ---------------------------------------------------------------- token

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_mid_run_is_fetched_again_once_and_no_reply_is_lost() {
    let w = World::start(&[("FERRY_WORKER_CONCURRENCY", "8")]).await;
    w.wechat.set_send_delay(Some(Duration::from_millis(20)));
    let users: Vec<String> = (0..40).map(|i| format!("o_token_{i}")).collect();
    for user in &users {
        ask(&w.queue, user, "hi").await;
    }
    w.wechat.wait_for_sent(10, WAIT).await;
    assert_eq!(w.wechat.token_fetches(), 1);

    w.wechat.expire_tokens();
    w.wechat.wait_for_sent(users.len(), WAIT).await;

    assert_eq!(w.wechat.token_fetches(), 2, "one refresh for the fleet");
    for user in &users {
        assert_eq!(w.wechat.sent_to(user), vec!["hi".to_string()], "{user}");
    }
    let c = w.counters.snapshot();
    assert_eq!(c.token_fetches, 2);
    assert_eq!(
        c.token_invalidations, 1,
        "one drop; later refusals were stale"
    );
    assert!(c.errcodes[&42001] >= 1, "{c:?}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_token_failure_never_drops_the_fresher_token() {
    let redis = RedisServer::start();
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let store = redis.store(4);
    let cache = |source| {
        TokenCache::new(
            store.clone(),
            reqwest::Client::new(),
            wechat.base_url(),
            APP_ID.into(),
            Secret::new(APP_SECRET),
            source,
        )
    };
    let (worker_a, worker_b) = (cache(TokenSource::Stable), cache(TokenSource::Stable));
    let first = worker_a.get().await.unwrap();
    wechat.expire_tokens();
    // Worker A is refused first: it drops the token and the fleet gets a new one.
    assert!(worker_a.invalidate(&first).await.unwrap());
    let fresh = worker_a.get().await.unwrap();
    assert_ne!(fresh, first);

    // Worker B's refusal of the old token arrives late: nothing is dropped.
    assert!(!worker_b.invalidate(&first).await.unwrap());
    assert_eq!(worker_b.get().await.unwrap(), fresh);
    assert_eq!(wechat.token_fetches(), 2);
    assert_eq!(worker_a.fetches() + worker_b.fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classic_token_endpoint_can_be_chosen() {
    let w = World::start(&[("WECHAT_TOKEN_ENDPOINT", "classic")]).await;

    let job = ask(&w.queue, "o_classic", "hi").await;
    w.finished(&job).await;

    assert_eq!(w.wechat.sent_to("o_classic"), vec!["hi".to_string()]);
    assert_eq!(w.wechat.classic_token_fetches(), 1);
    assert_eq!(w.wechat.token_fetches(), 1);
    w.stop().await;
}

// -------------------------------------------- typing, apology, counters

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_sees_typing_while_the_provider_works() {
    let w = World::start(&[]).await;
    w.provider.set_default(Some(
        Reply::text("好的。").stall(Duration::from_millis(300)),
    ));

    let job = ask(&w.queue, "o_typing", "hi").await;
    w.finished(&job).await;

    assert_eq!(
        w.wechat.typing(),
        vec![("o_typing".to_string(), "Typing".to_string())]
    );
    assert_eq!(w.wechat.sent_to("o_typing"), vec!["好的。".to_string()]);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typing_indicator_can_be_turned_off() {
    let w = World::start(&[("FERRY_TYPING_INDICATOR", "off")]).await;

    let job = ask(&w.queue, "o_quiet", "hi").await;
    w.finished(&job).await;

    assert_eq!(w.wechat.sent_to("o_quiet"), vec!["hi".to_string()]);
    assert!(w.wechat.typing().is_empty());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_ai_fails_for_good_the_user_gets_the_configured_apology_once() {
    let w = World::start(&[("FERRY_APOLOGY_TEXT", "对不起，请稍后再问我。")]).await;
    w.provider
        .set_default(Some(Reply::openai_error(401, "invalid_api_key", "bad key")));

    let job = ask(&w.queue, "o_sorry", "hi").await;
    let record = w.finished(&job).await;

    assert_eq!(record.state, JobState::Dead);
    assert!(
        dead_letter_reason(&w.queue, &job)
            .await
            .contains("no provider could answer"),
    );
    assert_eq!(
        w.wechat.sent_to("o_sorry"),
        vec!["对不起，请稍后再问我。".to_string()]
    );
    assert_eq!(w.counters.snapshot().apologies, 1);
    w.stop().await;
}

// ---------------------------------------------------------- user limit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_the_message_limit_gets_one_notice_and_no_ai_answer() {
    let w = World::start(&[
        ("FERRY_USER_MESSAGES_PER_MINUTE", "2"),
        ("FERRY_USER_BURST", "2"),
    ])
    .await;
    let mut busy = Vec::new();
    for i in 0..5 {
        busy.push(ask(&w.queue, "o_chatty", &format!("question {i}")).await);
    }
    let calm = ask(&w.queue, "o_calm", "just one").await;

    let mut limited = 0;
    let mut noticed = 0;
    for id in &busy {
        let record = w.finished(id).await;
        assert_eq!(record.state, JobState::Succeeded);
        let result = record.result.unwrap();
        if result["rate_limited"] == true {
            limited += 1;
            noticed += usize::from(result["notice_sent"] == true);
        }
    }
    w.finished(&calm).await;

    assert_eq!((limited, noticed), (3, 1));
    let chatty = w.wechat.sent_to("o_chatty");
    assert_eq!(chatty.len(), 3, "two answers and one notice: {chatty:?}");
    assert_eq!(
        chatty
            .iter()
            .filter(|m| m.as_str() == DEFAULT_USER_LIMIT_TEXT)
            .count(),
        1
    );
    assert_eq!(w.wechat.sent_to("o_calm"), vec!["just one".to_string()]);
    assert_eq!(w.provider.count(), 3, "no AI call over the limit");
    let c = w.counters.snapshot();
    assert_eq!((c.rate_limited, c.limit_notices), (3, 1));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_limit_can_be_turned_off() {
    let w = World::start(&[
        ("FERRY_USER_MESSAGES_PER_MINUTE", "0"),
        ("FERRY_USER_BURST", "1"),
    ])
    .await;
    let mut jobs = Vec::new();
    for i in 0..4 {
        jobs.push(ask(&w.queue, "o_free", &format!("q{i}")).await);
    }
    for id in &jobs {
        w.finished(id).await;
    }
    assert_eq!(w.wechat.sent_to("o_free").len(), 4);
    assert_eq!(w.provider.count(), 4);
    w.stop().await;
}

// ------------------------------------------------ real worker processes

fn worker_process(
    redis: &RedisServer,
    wechat: &FakeWeChat,
    provider: &FakeProvider,
    env: &[(&str, &str)],
) -> std::process::Child {
    let base_url = provider.base_url();
    let mut all = vec![
        ("FERRY_PROVIDERS", "deepseek"),
        ("DEEPSEEK_API_KEY", PROVIDER_KEY),
        ("DEEPSEEK_BASE_URL", base_url.as_str()),
    ];
    all.extend_from_slice(env);
    ferry_worker(redis, wechat, APP_ID, APP_SECRET, &all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_refresh_an_expired_token_once_and_lose_no_reply() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let provider = FakeProvider::start(FakeKind::OpenAi, PROVIDER_KEY, MODEL).await;
    wechat.set_send_delay(Some(Duration::from_millis(30)));
    let env = [("FERRY_WORKER_CONCURRENCY", "4")];
    let _fleet = WorkerProcesses::new(
        (0..3)
            .map(|_| worker_process(&redis, &wechat, &provider, &env))
            .collect(),
    );
    let users: Vec<String> = (0..60).map(|i| format!("o_fleet_{i}")).collect();
    let jobs: Vec<NewJob> = users.iter().map(|u| message(u, "hi")).collect();
    queue.enqueue_many(&jobs).await.unwrap();
    wechat.wait_for_sent(15, Duration::from_secs(60)).await;
    assert_eq!(wechat.token_fetches(), 1, "one token for the whole fleet");

    wechat.expire_tokens();
    wechat
        .wait_for_sent(users.len(), Duration::from_secs(60))
        .await;

    assert_eq!(wechat.token_fetches(), 2, "one refresh for the whole fleet");
    for user in &users {
        assert_eq!(wechat.sent_to(user), vec!["hi".to_string()], "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_parts_does_not_resend_delivered_parts() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let provider = FakeProvider::start(FakeKind::OpenAi, PROVIDER_KEY, MODEL).await;
    let answer = SENTENCE.repeat(170);
    let parts = parts_of(&answer);
    assert_eq!(parts.len(), 5);
    provider.set_default(Some(Reply::text(answer)));
    // Each send takes a while, so the kill lands while a part is on its way,
    // after the previous one was accepted and noted.
    wechat.set_send_delay(Some(Duration::from_millis(400)));
    let env = [("FERRY_VISIBILITY_TIMEOUT", "1")];
    let mut first = WorkerProcesses::new(vec![worker_process(&redis, &wechat, &provider, &env)]);

    let job = ask(&queue, "o_killed", "a long answer, please").await;
    // Kill -9 once two parts are delivered and noted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let notes = queue.read_notes(&job).await.unwrap();
        let noted: usize = notes.get("parts_sent").map_or(0, |n| n.parse().unwrap());
        if noted >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{notes:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.workers[0].kill().unwrap();
    first.workers[0].wait().unwrap();
    let before_kill = wechat.sent_to("o_killed");
    assert!(
        (2..parts.len()).contains(&before_kill.len()),
        "killed between parts: {} of {} delivered",
        before_kill.len(),
        parts.len()
    );

    let _second = WorkerProcesses::new(vec![worker_process(&redis, &wechat, &provider, &env)]);
    let record = finished(&queue, &job).await;

    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(record.attempts, 2, "the second worker took the job over");
    assert_eq!(
        wechat.sent_to("o_killed"),
        parts,
        "every part exactly once, in order"
    );
    assert_eq!(provider.count(), 1, "the take-over reused the noted answer");
}
