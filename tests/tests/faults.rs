//! Faults as an operator meets them, with real `ferry worker` processes, a
//! real redis-server and fakes of WeChat and a provider:
//!
//! - Redis killed -9 and restarted (AOF, fsync always) while jobs are at
//!   every stage: waiting for the provider, answered while Redis is away,
//!   between parts. Nothing is lost, no provider is asked twice, no part is
//!   sent twice: what a handler did is held until Redis takes its note.
//! - A worker killed -9 while it holds slow jobs: a surviving worker takes
//!   them over because the dead worker's heartbeat lapsed (the visibility
//!   timeout is set far beyond the test), removes the dead consumer from the
//!   group, and never takes a slow job of a live worker.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_common::job::kinds::{self, WeChatReply};
use ferry_common::job::{Idempotency, NewJob};
use ferry_common::queue::JobQueue;
use ferry_tests::fake_provider::{FakeKind, FakeProvider, Reply};
use ferry_tests::worker_process::{WorkerProcesses, ferry_worker};
use ferry_tests::{FakeWeChat, RedisServer, eventually};
use ferry_worker::reply::split::{MAX_PART_BYTES, split};

const APP_ID: &str = "wx_faults";
const APP_SECRET: &str = "faults-secret";
const KEY: &str = "sk-faults";
const MODEL: &str = "deepseek-chat";

fn workers(
    n: usize,
    redis: &RedisServer,
    wechat: &FakeWeChat,
    provider: &FakeProvider,
    extra: &[(&str, &str)],
) -> WorkerProcesses {
    let base = provider.base_url();
    let mut env = vec![
        ("FERRY_PROVIDERS", "deepseek"),
        ("DEEPSEEK_API_KEY", KEY),
        ("DEEPSEEK_BASE_URL", base.as_str()),
        ("FERRY_TYPING_INDICATOR", "false"),
    ];
    env.extend_from_slice(extra);
    WorkerProcesses::new(
        (0..n)
            .map(|_| ferry_worker(redis, wechat, APP_ID, APP_SECRET, &env))
            .collect(),
    )
}

/// One message per user `o_<tag>_<i>`, with a content unique to it.
async fn ask(queue: &JobQueue, tag: &str, n: usize) -> Vec<String> {
    let users: Vec<String> = (0..n).map(|i| format!("o_{tag}_{i}")).collect();
    let jobs: Vec<NewJob> = users
        .iter()
        .map(|user| NewJob {
            kind: kinds::WECHAT_REPLY.into(),
            queue: kinds::queue_of(kinds::WECHAT_REPLY).into(),
            payload: serde_json::to_value(WeChatReply {
                openid: user.clone(),
                account: "gh_faults".into(),
                content: format!("question of {user}"),
                msg_id: None,
                create_time: chrono::Utc::now().timestamp(),
                media_id: None,
                passive: false,
            })
            .unwrap(),
            max_attempts: kinds::max_attempts_of(kinds::WECHAT_REPLY),
            idempotency: Some(Idempotency {
                key: user.clone(),
                ttl: Duration::from_secs(600),
            }),
        })
        .collect();
    queue.enqueue_many(&jobs).await.unwrap();
    users
}

/// Provider requests per message content.
fn calls_per_message(provider: &FakeProvider) -> BTreeMap<String, usize> {
    let mut calls = BTreeMap::new();
    for r in provider.requests() {
        let asked = r
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        *calls.entry(asked).or_default() += 1;
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_kill_9_with_jobs_at_every_stage_loses_nothing_and_repeats_no_call_or_part() {
    const USERS: usize = 30;
    let mut redis = RedisServer::start_with_aof();
    let queue = redis.job_queue().await;
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let provider = FakeProvider::start(FakeKind::OpenAi, KEY, MODEL).await;
    // Three parts per answer, each send taking a while: a job spends about
    // a second between its parts.
    let answer = "这是一个比较长的句子，用来测试分段发送。".repeat(80);
    let parts = split(&answer, MAX_PART_BYTES);
    assert_eq!(parts.len(), 3);
    wechat.set_send_delay(Some(Duration::from_millis(300)));
    // The i-th request is answered after i * 150 ms: answers arrive before,
    // during and after the outage.
    let stall = |i: usize| Duration::from_millis(150 * i as u64);
    for i in 0..USERS {
        provider.push(Reply::text(answer.clone()).stall(stall(i)));
    }
    let _fleet = workers(
        2,
        &redis,
        &wechat,
        &provider,
        &[("FERRY_WORKER_CONCURRENCY", "32")],
    );
    let users = ask(&queue, "outage", USERS).await;

    eventually(
        "some parts are delivered",
        Duration::from_secs(30),
        async || wechat.sent().len() >= 4,
    )
    .await;
    redis.kill();
    let killed = Instant::now();
    let between_parts = users
        .iter()
        .filter(|u| (1..parts.len()).contains(&wechat.sent_to(u).len()))
        .count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart();
    let restarted = Instant::now();

    eventually(
        "every user has the whole answer",
        Duration::from_secs(60),
        async || users.iter().all(|u| wechat.sent_to(u).len() >= parts.len()),
    )
    .await;
    // Anything resent would arrive within this.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let answered_at: Vec<Instant> = provider
        .requests()
        .iter()
        .enumerate()
        .map(|(i, r)| r.at + stall(i))
        .collect();
    let during = answered_at
        .iter()
        .filter(|t| (killed..restarted).contains(*t))
        .count();
    let after = answered_at.iter().filter(|t| **t >= restarted).count();
    println!(
        "at the kill: {between_parts} between parts; answered while Redis was down: {during}; after: {after}"
    );
    assert!(between_parts > 0, "no job was between parts at the kill");
    assert!(during > 0, "no answer arrived while Redis was down");
    assert!(after > 0, "no job was still waiting for the provider");

    for user in &users {
        assert_eq!(
            wechat.sent_to(user),
            parts,
            "{user}: every part once, in order"
        );
    }
    let calls = calls_per_message(&provider);
    assert_eq!(calls.len(), USERS);
    assert!(
        calls.values().all(|n| *n == 1),
        "a provider was asked twice: {calls:?}"
    );
    for state in queue.stats().await.unwrap() {
        assert_eq!(
            (state.depth, state.pending, state.delayed, state.dead),
            (0, 0, 0, 0),
            "{state:?}"
        );
    }
}

/// The consumers of the wechat group and what each holds.
fn consumers(redis: &RedisServer) -> Vec<(String, usize)> {
    let mut conn = redis.conn();
    let reply: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(
            ferry_common::Keys::new(ferry_tests::redis_server::PREFIX)
                .queue("wechat")
                .stream(),
        )
        .arg(ferry_common::keys::CONSUMER_GROUP)
        .query(&mut conn)
        .unwrap();
    reply
        .consumers
        .into_iter()
        .map(|c| (c.name, c.pending))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_jobs_are_taken_over_on_its_lapsed_heartbeat_and_a_slow_live_one_is_kept() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let provider = FakeProvider::start(FakeKind::OpenAi, KEY, MODEL).await;
    // Slower than a heartbeat lasts: a live worker holding these must keep
    // them; the visibility timeout cannot fire within the test.
    provider.set_default(Some(
        Reply::text("slow answer").stall(Duration::from_secs(10)),
    ));
    // The victim holds 3 slow jobs; the survivor holds 3 of its own and
    // has 3 slots free for the victim's.
    let visibility = ("FERRY_VISIBILITY_TIMEOUT", "600");
    let mut fleet = workers(
        1,
        &redis,
        &wechat,
        &provider,
        &[("FERRY_WORKER_CONCURRENCY", "3"), visibility],
    );
    let mut users = ask(&queue, "dead", 3).await;
    eventually(
        "the victim's jobs are at the provider",
        Duration::from_secs(30),
        async || provider.count() == 3,
    )
    .await;
    let survivor = workers(
        1,
        &redis,
        &wechat,
        &provider,
        &[("FERRY_WORKER_CONCURRENCY", "6"), visibility],
    );
    users.extend(ask(&queue, "live", 3).await);
    eventually(
        "every job is at the provider",
        Duration::from_secs(30),
        async || provider.count() == 6,
    )
    .await;

    let victim_pid = fleet.workers[0].id();
    let held = consumers(&redis);
    let (victim, victim_held) = held
        .iter()
        .find(|(name, _)| name.contains(&format!("-{victim_pid}-")))
        .cloned()
        .expect("the victim is a consumer");
    assert_eq!(victim_held, 3, "{held:?}");
    fleet.workers[0].kill().unwrap();
    fleet.workers[0].wait().unwrap();
    let killed = Instant::now();
    let _survivor = survivor;
    // The retaken jobs are answered at once.
    provider.set_default(Some(Reply::text("slow answer")));

    let answered = |wechat: &FakeWeChat| {
        users
            .iter()
            .filter(|u| !wechat.sent_to(u).is_empty())
            .count()
    };
    eventually(
        "the dead worker's jobs are answered",
        Duration::from_secs(60),
        async || answered(&wechat) >= 3,
    )
    .await;
    let recovered_in = killed.elapsed();
    println!("the dead worker's jobs were answered {recovered_in:?} after the kill");
    eventually("every user answered", Duration::from_secs(60), async || {
        answered(&wechat) == users.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    for user in &users {
        assert_eq!(wechat.sent_to(user).len(), 1, "{user} answered once");
    }
    let calls = calls_per_message(&provider);
    let twice = calls.values().filter(|n| **n == 2).count();
    assert_eq!(
        (twice, calls.values().filter(|n| **n == 1).count()),
        (3, 3),
        "the dead worker's 3 jobs were asked again, the live worker's 3 slow ones only once: {calls:?}"
    );
    // Taken over with the visibility timeout at 10 minutes: the lapsed
    // heartbeat did it, and the dead consumer left the group.
    assert!(recovered_in < Duration::from_secs(60));
    eventually(
        "the dead consumer left the group",
        Duration::from_secs(10),
        async || consumers(&redis).iter().all(|(name, _)| *name != victim),
    )
    .await;
}
