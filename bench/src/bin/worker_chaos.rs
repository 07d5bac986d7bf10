//! Worker kill -9 chaos: what killing workers mid-job costs the users.
//!
//! Starts its own `redis-server` (AOF, `appendfsync always`), a fake WeChat
//! and a fake OpenAI-style provider whose every answer takes
//! `--provider-delay-ms`, and `--workers` real `ferry worker` processes.
//! It enqueues `--messages` `wechat.reply` jobs (one distinct user and one
//! distinct text each), paced over `--enqueue-over-ms` (0: all at once), and
//! meanwhile kills one worker with SIGKILL `--kills` times (round robin,
//! every `--kill-every-ms`), starting a replacement right after each kill so
//! the fleet stays at `--workers`. Just before each kill it reads from the
//! consumer group which jobs the victim holds.
//!
//! When every user has been answered (or `--timeout-s` passed) it prints:
//! users never answered (lost), replies beyond the first per user, provider
//! calls beyond one per message, and the delay from a kill to the reply of
//! each job the killed worker held (p50/p99/max). It exits non-zero if a
//! user was lost.
//!
//! The `ferry` binary must be built first; the one next to this program is
//! used (`target/release/ferry` for a release run), else the tests' debug
//! build, or `--ferry-bin`:
//!
//!     cargo build --release -p ferry-cli -p ferry-bench
//!     target/release/worker_chaos --messages 1500 --kills 8
//!
//! (or `cargo run --release -p ferry-bench --bin worker_chaos -- --messages
//! 1500 --kills 8` once `ferry` is built).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use ferry_common::Keys;
use ferry_common::job::kinds::{self, WeChatReply};
use ferry_common::job::{Idempotency, NewJob};
use ferry_common::keys::CONSUMER_GROUP;
use ferry_common::queue::{JobQueue, WECHAT};
use ferry_tests::fake_provider::{FakeKind, FakeProvider, Reply};
use ferry_tests::redis_server::PREFIX;
use ferry_tests::worker_process::{WorkerProcesses, ferry_worker_from};
use ferry_tests::{FakeWeChat, RedisServer};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamInfoConsumersReply, StreamPendingCountReply, StreamRangeReply};

const APP_ID: &str = "wx_chaos";
const APP_SECRET: &str = "chaos-secret";
const API_KEY: &str = "sk-chaos";
const MODEL: &str = "deepseek-chat";

#[derive(Parser)]
struct Args {
    /// Messages (jobs), each from its own user with its own text.
    #[arg(long, default_value_t = 1500)]
    messages: usize,
    /// Workers killed with SIGKILL, one at a time, round robin.
    #[arg(long, default_value_t = 8)]
    kills: usize,
    /// Worker processes alive at any time.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Slots per worker (FERRY_WORKER_CONCURRENCY).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How long the fake provider takes to answer each call.
    #[arg(long, default_value_t = 300)]
    provider_delay_ms: u64,
    /// Enqueue the messages at a steady pace over this long; 0: all at once.
    #[arg(long, default_value_t = 10_000)]
    enqueue_over_ms: u64,
    /// Time between kills (the first one after the same time). Default: the
    /// expected busy time (the enqueue span, or the fleet's time to answer
    /// everything if that is longer) divided by kills + 1, so every kill
    /// lands while jobs are in flight.
    #[arg(long)]
    kill_every_ms: Option<u64>,
    /// Give up waiting for the answers after this long (from the start).
    #[arg(long, default_value_t = 240)]
    timeout_s: u64,
    /// Extra environment for every worker, `NAME=VALUE` (repeatable), e.g.
    /// `FERRY_VISIBILITY_TIMEOUT=5`.
    #[arg(long = "env")]
    env: Vec<String>,
    /// The `ferry` binary to run (default: the one next to this program,
    /// else the tests' `target/debug/ferry`).
    #[arg(long)]
    ferry_bin: Option<PathBuf>,
}

impl Args {
    fn kill_every(&self) -> Duration {
        if let Some(ms) = self.kill_every_ms {
            return Duration::from_millis(ms);
        }
        let slots = (self.workers * self.concurrency).max(1) as u64;
        let answer_all = self.provider_delay_ms * self.messages as u64 / slots;
        let busy = self.enqueue_over_ms.max(answer_all);
        Duration::from_millis((busy / (self.kills as u64 + 1)).max(100))
    }

    fn extra_env(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.env
            .iter()
            .map(|pair| {
                let (name, value) = pair
                    .split_once('=')
                    .with_context(|| format!("--env takes NAME=VALUE, got {pair:?}"))?;
                Ok((name.to_owned(), value.to_owned()))
            })
            .collect()
    }
}

/// The `ferry` binary: `--ferry-bin`, else the one built next to this
/// program (same profile), else the tests' debug build.
fn ferry_binary(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(path) = &args.ferry_bin {
        anyhow::ensure!(path.exists(), "{} does not exist", path.display());
        return Ok(path.clone());
    }
    let sibling = std::env::current_exe()?.with_file_name("ferry");
    if sibling.exists() {
        return Ok(sibling);
    }
    Ok(ferry_tests::ferry_binary())
}

/// The worker processes, kept at a fixed number: a killed one is replaced
/// in its slot at once.
struct Fleet<'a> {
    binary: PathBuf,
    redis: &'a RedisServer,
    wechat: &'a FakeWeChat,
    env: Vec<(String, String)>,
    processes: WorkerProcesses,
}

impl<'a> Fleet<'a> {
    fn start(
        binary: PathBuf,
        redis: &'a RedisServer,
        wechat: &'a FakeWeChat,
        env: Vec<(String, String)>,
        n: usize,
    ) -> Self {
        let mut fleet = Self {
            binary,
            redis,
            wechat,
            env,
            processes: WorkerProcesses::new(Vec::new()),
        };
        fleet.processes.workers = (0..n).map(|_| fleet.spawn()).collect();
        fleet
    }

    fn spawn(&self) -> Child {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        ferry_worker_from(
            &self.binary,
            self.redis,
            self.wechat,
            APP_ID,
            APP_SECRET,
            &env,
        )
    }

    fn pid(&self, slot: usize) -> u32 {
        self.processes.workers[slot].id()
    }

    /// kill -9 the worker in `slot`, then start its replacement there.
    fn kill_and_replace(&mut self, slot: usize) -> anyhow::Result<()> {
        let victim = &mut self.processes.workers[slot];
        victim.kill()?; // SIGKILL
        victim.wait()?;
        self.processes.workers[slot] = self.spawn();
        Ok(())
    }
}

/// One kill: when, whom, and the users whose jobs the victim held.
struct Kill {
    at: Instant,
    pid: u32,
    held: Vec<String>,
}

fn message(i: usize) -> NewJob {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    NewJob {
        kind: kinds::WECHAT_REPLY.into(),
        queue: kinds::queue_of(kinds::WECHAT_REPLY).into(),
        payload: serde_json::to_value(WeChatReply {
            openid: format!("o_chaos_{i}"),
            account: "gh_chaos".into(),
            content: format!("chaos question {i}"),
            msg_id: None,
            create_time: now.as_secs() as i64,
            media_id: None,
            passive: false,
        })
        .unwrap(),
        max_attempts: kinds::max_attempts_of(kinds::WECHAT_REPLY),
        idempotency: Some(Idempotency {
            key: format!("chaos-{i}"),
            ttl: Duration::from_secs(3600),
        }),
    }
}

/// Enqueues messages `0..n`, all at once (`over` zero, 500 per pipeline)
/// or at a steady pace over `over`.
async fn enqueue(queue: JobQueue, n: usize, over: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let due = if over.is_zero() {
            n
        } else {
            let share = started.elapsed().as_secs_f64() / over.as_secs_f64();
            ((n as f64 * share).ceil() as usize).min(n)
        };
        let until = due.min(done + 500);
        if until > done {
            let jobs: Vec<NewJob> = (done..until).map(message).collect();
            queue.enqueue_many(&jobs).await?;
            done = until;
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}

/// Waits (up to 30 s) until `n` workers are in the fleet's registry.
async fn workers_ready(conn: &mut MultiplexedConnection, keys: &Keys, n: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let live: usize = conn.zcard(keys.workers()).await.unwrap_or(0);
        if live >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The pid in a worker id (`<host>-<pid>-<hex>`, the consumer name).
fn pid_of(consumer: &str) -> Option<u32> {
    consumer.rsplit('-').nth(1)?.parse().ok()
}

/// The users whose jobs the worker process `pid` holds now: its pending
/// entries in the wechat queue's consumer group, their job ids, the jobs'
/// payloads.
async fn held_by(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    pid: u32,
) -> anyhow::Result<Vec<String>> {
    let queue = keys.queue(WECHAT);
    let stream = queue.stream();
    let consumers: StreamInfoConsumersReply = conn.xinfo_consumers(&stream, CONSUMER_GROUP).await?;
    let mut openids = Vec::new();
    for consumer in consumers.consumers {
        if pid_of(&consumer.name) != Some(pid) || consumer.pending == 0 {
            continue;
        }
        let pending: StreamPendingCountReply = conn
            .xpending_consumer_count(&stream, CONSUMER_GROUP, "-", "+", 10_000, &consumer.name)
            .await?;
        for entry in pending.ids {
            let range: StreamRangeReply = conn.xrange(&stream, &entry.id, &entry.id).await?;
            for job in range.ids.iter().filter_map(|e| e.get::<String>("job")) {
                let payload: Option<String> = conn.hget(queue.job(&job), "payload").await?;
                if let Some(reply) =
                    payload.and_then(|p| serde_json::from_str::<WeChatReply>(&p).ok())
                {
                    openids.push(reply.openid);
                }
            }
        }
    }
    Ok(openids)
}

/// Kills `kills` workers, round robin, one every `every` from `started`,
/// noting what each victim held just before.
async fn run_kills(
    fleet: &mut Fleet<'_>,
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    kills: usize,
    every: Duration,
    started: Instant,
) -> anyhow::Result<Vec<Kill>> {
    let mut done = Vec::with_capacity(kills);
    for i in 0..kills {
        tokio::time::sleep_until((started + every * (i as u32 + 1)).into()).await;
        let slot = i % fleet.processes.workers.len();
        let pid = fleet.pid(slot);
        let held = held_by(conn, keys, pid).await?;
        let at = Instant::now();
        fleet.kill_and_replace(slot)?;
        println!(
            "kill {}/{kills} at {:>5.1} s: pid {pid}, holding {} jobs",
            i + 1,
            (at - started).as_secs_f64(),
            held.len()
        );
        done.push(Kill { at, pid, held });
    }
    Ok(done)
}

/// Users answered so far (at least one accepted message).
fn answered(wechat: &FakeWeChat) -> usize {
    let mut users: Vec<String> = wechat.sent().into_iter().map(|m| m.touser).collect();
    users.sort_unstable();
    users.dedup();
    users.len()
}

/// Waits until `n` users were answered or `deadline` passes.
async fn all_answered(wechat: &FakeWeChat, n: usize, deadline: Instant) -> bool {
    loop {
        if answered(wechat) >= n {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no job is left in the wechat queue (every outcome recorded:
/// nothing waiting, held or waiting for a retry), so no late duplicate can
/// still be sent, or until `deadline` passes.
async fn drained(conn: &mut MultiplexedConnection, keys: &Keys, deadline: Instant) -> bool {
    let queue = keys.queue(WECHAT);
    loop {
        let entries: usize = conn.xlen(queue.stream()).await.unwrap_or(usize::MAX);
        let retries: usize = conn.zcard(queue.delayed()).await.unwrap_or(usize::MAX);
        if entries == 0 && retries == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the run cost, from what the fakes recorded.
struct Outcome {
    lost: Vec<String>,
    duplicate_replies: usize,
    provider_calls: usize,
    duplicate_calls: usize,
    /// Held jobs (per kill) whose only replies came before the kill.
    answered_before_kill: usize,
    /// From a kill to the first reply after it, per job the victim held.
    recovery: Vec<Duration>,
}

fn outcome(
    messages: usize,
    kills: &[Kill],
    wechat: &FakeWeChat,
    provider: &FakeProvider,
) -> Outcome {
    let mut replies: HashMap<String, Vec<Instant>> = HashMap::new();
    for (message, at) in wechat.sent_with_times() {
        replies.entry(message.touser).or_default().push(at);
    }
    let lost = (0..messages)
        .map(|i| format!("o_chaos_{i}"))
        .filter(|openid| !replies.contains_key(openid))
        .collect();
    let duplicate_replies = replies.values().map(|r| r.len() - 1).sum();

    let requests = provider.requests();
    let mut calls: HashMap<String, usize> = HashMap::new();
    for request in &requests {
        let asked = request.messages.iter().rev().find(|m| m.role == "user");
        let text = asked.map(|m| m.content.clone()).unwrap_or_default();
        *calls.entry(text).or_default() += 1;
    }
    let duplicate_calls = calls.values().map(|n| n - 1).sum();

    let mut recovery = Vec::new();
    let mut answered_before_kill = 0;
    for kill in kills {
        for openid in &kill.held {
            let Some(times) = replies.get(openid) else {
                continue; // lost: counted above
            };
            match times.iter().filter(|&&t| t >= kill.at).min() {
                Some(&t) => recovery.push(t - kill.at),
                None => answered_before_kill += 1,
            }
        }
    }
    recovery.sort_unstable();
    Outcome {
        lost,
        duplicate_replies,
        provider_calls: requests.len(),
        duplicate_calls,
        answered_before_kill,
        recovery,
    }
}

/// The nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One line of the summary: the label, padded, then the value.
fn line(label: &str, value: impl std::fmt::Display) {
    println!("{:<30}{value}", format!("{label}:"));
}

fn print_outcome(args: &Args, kills: &[Kill], o: &Outcome, answered_in: Duration, wall: Duration) {
    let held: usize = kills.iter().map(|k| k.held.len()).sum();
    let per_kill = o.duplicate_replies as f64 / kills.len().max(1) as f64;
    let pids: Vec<String> = kills.iter().map(|k| k.pid.to_string()).collect();
    line("messages", args.messages);
    line(
        "kills",
        format!("{} (pids {})", kills.len(), pids.join(" ")),
    );
    line("lost", o.lost.len());
    if !o.lost.is_empty() {
        let shown: Vec<&str> = o.lost.iter().take(10).map(String::as_str).collect();
        line("  never answered (first 10)", shown.join(" "));
    }
    line(
        "duplicate replies",
        format!("{} ({per_kill:.2} per kill)", o.duplicate_replies),
    );
    line(
        "duplicate provider calls",
        format!("{} (of {} calls)", o.duplicate_calls, o.provider_calls),
    );
    line(
        "jobs held by killed workers",
        format!(
            "{held} ({} answered before the kill, {} after it)",
            o.answered_before_kill,
            o.recovery.len()
        ),
    );
    line(
        "kill -> reply, held jobs",
        format!(
            "p50 {:.2} s, p99 {:.2} s, max {:.2} s",
            percentile(&o.recovery, 0.50).as_secs_f64(),
            percentile(&o.recovery, 0.99).as_secs_f64(),
            o.recovery.last().copied().unwrap_or_default().as_secs_f64()
        ),
    );
    line(
        "wall time",
        format!(
            "{:.1} s (every user answered after {:.1} s, then the queue drained)",
            wall.as_secs_f64(),
            answered_in.as_secs_f64()
        ),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let binary = ferry_binary(&args)?;
    let redis = RedisServer::start_with_aof();
    let queue = redis.job_queue().await;
    let keys = Keys::new(PREFIX);
    let mut conn = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let provider = FakeProvider::start(FakeKind::OpenAi, API_KEY, MODEL).await;
    let delay = Duration::from_millis(args.provider_delay_ms);
    provider.set_default(Some(Reply::echo().stall(delay)));

    let mut env = vec![
        ("FERRY_PROVIDERS".to_owned(), "deepseek".to_owned()),
        ("DEEPSEEK_API_KEY".to_owned(), API_KEY.to_owned()),
        ("DEEPSEEK_BASE_URL".to_owned(), provider.base_url()),
        (
            "FERRY_WORKER_CONCURRENCY".to_owned(),
            args.concurrency.to_string(),
        ),
    ];
    let extra = args.extra_env()?;
    env.extend(extra.iter().cloned());
    println!("ferry binary: {}", binary.display());
    println!(
        "redis-server {} (AOF appendfsync always), {} workers x {} slots, provider delay {} ms, \
         {} messages over {} ms, {} kills every {} ms",
        redis.url(),
        args.workers,
        args.concurrency,
        args.provider_delay_ms,
        args.messages,
        args.enqueue_over_ms,
        args.kills,
        args.kill_every().as_millis()
    );
    for (name, value) in &extra {
        println!("worker env: {name}={value}");
    }

    let mut fleet = Fleet::start(binary, &redis, &wechat, env, args.workers);
    if !workers_ready(&mut conn, &keys, args.workers).await {
        println!("warning: not every worker registered within 30 s; starting anyway");
    }
    let started = Instant::now();
    let producer = tokio::spawn(enqueue(
        queue,
        args.messages,
        Duration::from_millis(args.enqueue_over_ms),
    ));
    let kills = run_kills(
        &mut fleet,
        &mut conn,
        &keys,
        args.kills,
        args.kill_every(),
        started,
    )
    .await?;
    producer.await??;
    let deadline = started + Duration::from_secs(args.timeout_s);
    if !all_answered(&wechat, args.messages, deadline).await {
        println!("timed out after {} s waiting for answers", args.timeout_s);
    }
    let answered_in = started.elapsed();
    if !drained(&mut conn, &keys, deadline).await {
        println!(
            "timed out after {} s waiting for the queue to drain",
            args.timeout_s
        );
    }
    let wall = started.elapsed();
    drop(fleet);

    let outcome = outcome(args.messages, &kills, &wechat, &provider);
    print_outcome(&args, &kills, &outcome, answered_in, wall);
    Ok(if outcome.lost.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
