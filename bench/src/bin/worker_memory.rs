//! Worker memory (issue 19): the resident set of ONE real `ferry worker`
//! process holding `--jobs` slow `wechat.reply` jobs in flight, and after
//! they finish.
//!
//! It starts a `redis-server` of its own (no persistence), migrates it, a
//! fake WeChat and a fake OpenAI-compatible provider (the test support's),
//! and one `ferry worker` (`--ferry-bin`, default: the `ferry` next to this
//! program, i.e. `target/release/ferry` for a release build) with
//! `FERRY_WORKER_CONCURRENCY=--concurrency`, provider timeout and AI budget
//! well above the provider's stall, no per-user limit, conversation memory
//! at its production default. Then:
//!
//! 1. **idle**: after start-up and `--warmup` quick jobs (answered at once),
//!    and a pause, one sample;
//! 2. **in flight**: the provider's default answer now stalls `--stall-s`;
//!    `--jobs` jobs (one distinct user each) are enqueued at once, and the
//!    worker's RSS is sampled every `--sample-ms` until every one of them
//!    was answered on the fake WeChat: the peak is reported, with how many
//!    provider calls were open at that moment;
//! 3. **after**: once the queue is drained, `--settle-s` later, one sample
//!    (and another 10 s after that, for information).
//!
//! Samples are `VmRSS` (and `VmHWM`, `RssAnon`, `Threads`) from
//! `/proc/<pid>/status`, and the allocator's own figures from the worker's
//! /metrics (`ferry_allocator_allocated_bytes`: live data;
//! `ferry_allocator_resident_bytes`: the allocator's resident pages), which
//! tell what the jobs hold from what the allocator keeps. The goals: at most 50 MB (50,000,000 bytes) in
//! flight; after, within 10% of idle.
//!
//!     cargo build --release -p ferry-cli -p ferry-bench
//!     target/release/worker_memory

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use ferry_common::Keys;
use ferry_common::job::kinds::{self, WeChatReply};
use ferry_common::job::{Idempotency, NewJob};
use ferry_common::queue::{JobQueue, WECHAT};
use ferry_tests::fake_provider::{FakeKind, FakeProvider, Reply};
use ferry_tests::redis_server::PREFIX;
use ferry_tests::worker_process::{WorkerProcesses, ferry_worker_from};
use ferry_tests::{FakeWeChat, RedisServer};
use redis::AsyncCommands;

const APP_ID: &str = "wx_memory";
const APP_SECRET: &str = "memory-secret";
const API_KEY: &str = "sk-memory";
const MODEL: &str = "deepseek-chat";
const MB: f64 = 1_000_000.0;

#[derive(Parser)]
#[command(about = "RSS of one ferry worker holding slow jobs in flight, and after")]
struct Args {
    /// Slow jobs held in flight at once.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// FERRY_WORKER_CONCURRENCY of the worker.
    #[arg(long, default_value_t = 1000)]
    concurrency: usize,
    /// How long the provider stalls each slow answer, seconds.
    #[arg(long, default_value_t = 10)]
    stall_s: u64,
    /// Quick jobs before the idle sample.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Sampling period while jobs are in flight, milliseconds.
    #[arg(long, default_value_t = 200)]
    sample_ms: u64,
    /// Pause before the idle sample and after the drain, seconds.
    #[arg(long, default_value_t = 2)]
    settle_s: u64,
    /// A last sample this long after the "after" one, seconds (reqwest
    /// keeps idle connections 90 s by default).
    #[arg(long, default_value_t = 10)]
    later_s: u64,
    /// FERRY_MEMORY_TURNS of the worker (10: the production default).
    #[arg(long, default_value_t = 10)]
    memory_turns: u32,
    /// Give up waiting for the answers after this long, seconds.
    #[arg(long, default_value_t = 180)]
    timeout_s: u64,
    /// The `ferry` binary (default: the one next to this program).
    #[arg(long)]
    ferry_bin: Option<PathBuf>,
    /// Serve the fake provider over TLS with HTTP/2, as the real providers
    /// serve theirs (the worker trusts its CA through FERRY_EXTRA_CA_FILE):
    /// the calls share a connection instead of one HTTP/1.1 connection each.
    #[arg(long)]
    tls: bool,
    /// With `--tls`: the HTTP/2 streams the provider allows on one
    /// connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, default_value_t = 1000)]
    h2_streams: u32,
    /// jemalloc options for the worker at run time (`_RJEM_MALLOC_CONF`,
    /// e.g. `dirty_decay_ms:1000`), to try a setting before building it in.
    #[arg(long)]
    malloc_conf: Option<String>,
}

/// One reading of `/proc/<pid>/status`, bytes.
#[derive(Clone, Copy, Default)]
struct Sample {
    rss: u64,
    hwm: u64,
    anon: u64,
    threads: u64,
    /// Open file descriptors (sockets to Redis, the provider, WeChat).
    fds: u64,
    /// jemalloc's allocated and resident bytes (0: not read).
    allocated: u64,
    resident: u64,
}

impl Sample {
    fn read(pid: u32) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("the worker (pid {pid}) is gone"))?;
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Ok(Self {
            rss: field("VmRSS") * 1024,
            hwm: field("VmHWM") * 1024,
            anon: field("RssAnon") * 1024,
            threads: field("Threads"),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
            allocated: 0,
            resident: 0,
        })
    }

    /// [`Sample::read`] and the allocator's figures from `metrics_url`.
    async fn take(pid: u32, metrics_url: &str) -> anyhow::Result<Self> {
        let mut s = Self::read(pid)?;
        if let Ok(r) = reqwest::get(metrics_url).await
            && let Ok(text) = r.text().await
        {
            let gauge = |name: &str| -> u64 {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .map_or(0, |v| v as u64)
            };
            s.allocated = gauge(ferry_common::metrics::ALLOCATOR_ALLOCATED);
            s.resident = gauge(ferry_common::metrics::ALLOCATOR_RESIDENT);
        }
        Ok(s)
    }

    fn show(&self) -> String {
        format!(
            "VmRSS {:.1} MB ({:.1} MiB), RssAnon {:.1} MB, VmHWM {:.1} MB, {} threads, {} open fds, \
             allocator: {:.1} MB allocated, {:.1} MB resident",
            self.rss as f64 / MB,
            self.rss as f64 / 1_048_576.0,
            self.anon as f64 / MB,
            self.hwm as f64 / MB,
            self.threads,
            self.fds,
            self.allocated as f64 / MB,
            self.resident as f64 / MB,
        )
    }
}

fn ferry_binary(args: &Args) -> anyhow::Result<PathBuf> {
    let path = match &args.ferry_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("ferry"),
    };
    anyhow::ensure!(
        path.exists(),
        "{} does not exist (cargo build --release -p ferry-cli, or --ferry-bin)",
        path.display()
    );
    Ok(path)
}

fn job(user: &str, text: &str) -> NewJob {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    NewJob {
        kind: kinds::WECHAT_REPLY.into(),
        queue: kinds::queue_of(kinds::WECHAT_REPLY).into(),
        payload: serde_json::to_value(WeChatReply {
            openid: user.to_owned(),
            account: "gh_memory".into(),
            content: text.to_owned(),
            msg_id: None,
            create_time: now.as_secs() as i64,
            media_id: None,
            passive: false,
        })
        .unwrap(),
        max_attempts: kinds::max_attempts_of(kinds::WECHAT_REPLY),
        idempotency: Some(Idempotency {
            key: format!("memory-{user}"),
            ttl: Duration::from_secs(3600),
        }),
    }
}

async fn enqueue(queue: &JobQueue, jobs: Vec<NewJob>) -> anyhow::Result<()> {
    for chunk in jobs.chunks(500) {
        queue.enqueue_many(chunk).await?;
    }
    Ok(())
}

/// Waits until the fake WeChat accepted `n` messages or `deadline` passed.
async fn answered(wechat: &FakeWeChat, n: usize, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if wechat.sent().len() >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let binary = ferry_binary(&args)?;
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    let keys = Keys::new(PREFIX);
    let mut conn = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let provider = if args.tls {
        FakeProvider::start_tls(FakeKind::OpenAi, API_KEY, MODEL, args.h2_streams).await
    } else {
        FakeProvider::start(FakeKind::OpenAi, API_KEY, MODEL).await
    };
    let answer = "这是一个用于测量内存的回答。".repeat(12);
    provider.set_default(Some(Reply::text(answer.clone())));

    let admin = ferry_tests::leaks::free_addr();
    let metrics_url = format!("http://{admin}/metrics");
    let stall = Duration::from_secs(args.stall_s);
    let budget = (stall * 3).max(Duration::from_secs(30));
    let mut env: Vec<(String, String)> = vec![
        ("FERRY_PROVIDERS".into(), "deepseek".into()),
        ("DEEPSEEK_API_KEY".into(), API_KEY.into()),
        ("DEEPSEEK_BASE_URL".into(), provider.base_url()),
        (
            "FERRY_WORKER_CONCURRENCY".into(),
            args.concurrency.to_string(),
        ),
        (
            "FERRY_PROVIDER_TIMEOUT".into(),
            budget.as_secs().to_string(),
        ),
        (
            "FERRY_AI_TOTAL_BUDGET".into(),
            (budget * 2).as_secs().to_string(),
        ),
        ("FERRY_USER_MESSAGES_PER_MINUTE".into(), "0".into()),
        ("FERRY_MEMORY_TURNS".into(), args.memory_turns.to_string()),
        ("FERRY_WORKER_ADMIN_LISTEN".into(), admin.clone()),
    ];
    if let Some(ca) = provider.ca_file() {
        env.push(("FERRY_EXTRA_CA_FILE".into(), ca.display().to_string()));
    }
    if let Some(conf) = &args.malloc_conf {
        env.push(("_RJEM_MALLOC_CONF".into(), conf.clone()));
    }
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    println!("# worker_memory: ferry binary {}", binary.display());
    match provider.ca_file() {
        Some(_) => println!(
            "# provider: TLS, HTTP/2 when offered, at most {} streams per connection",
            args.h2_streams
        ),
        None => println!("# provider: plain HTTP/1.1 (a connection per open call)"),
    }
    println!(
        "# one `ferry worker`: {}; plus LOG_LEVEL=warn, FERRY_FETCH_BLOCK_MS=100 (the test support's); \
         provider stalls {} s per slow answer ({} chars); {} slow jobs, one distinct user each",
        env.iter()
            .filter(|(k, _)| !k.ends_with("_API_KEY") && !k.ends_with("_BASE_URL"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        args.stall_s,
        answer.chars().count(),
        args.jobs
    );
    let workers = WorkerProcesses::new(vec![ferry_worker_from(
        &binary, &redis, &wechat, APP_ID, APP_SECRET, &env_ref,
    )]);
    let pid = workers.workers[0].id();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live: usize = conn.zcard(keys.workers()).await.unwrap_or(0);
        if live >= 1 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker did not register within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Sample::take(pid, &metrics_url).await?;
    println!("started:              {}", started.show());

    // Warm-up: a few quick jobs, so connections, token and caches exist.
    let warm: Vec<NewJob> = (0..args.warmup)
        .map(|i| {
            job(
                &format!("o_memory_warm_{i}"),
                &format!("warm-up question {i}"),
            )
        })
        .collect();
    enqueue(&queue, warm).await?;
    anyhow::ensure!(
        answered(
            &wechat,
            args.warmup,
            Instant::now() + Duration::from_secs(60)
        )
        .await,
        "the warm-up jobs were not answered within 60 s"
    );
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
    let idle = Sample::take(pid, &metrics_url).await?;
    println!("idle (after warm-up): {}", idle.show());

    // In flight: every answer now stalls.
    provider.set_default(Some(Reply::text(answer.clone()).stall(stall)));
    let calls_before = provider.count();
    let slow: Vec<NewJob> = (0..args.jobs)
        .map(|i| job(&format!("o_memory_{i}"), &format!("slow question {i}")))
        .collect();
    let t0 = Instant::now();
    enqueue(&queue, slow).await?;
    let enqueued_in = t0.elapsed();
    let total = args.warmup + args.jobs;
    let deadline = t0 + Duration::from_secs(args.timeout_s);
    let mut peak = Sample::default();
    let mut open_at_peak = 0;
    let mut max_open = 0;
    let mut all_open_at: Option<Duration> = None;
    let mut samples = 0;
    // While every slow call was open: the jobs held, waiting.
    let mut peak_all_open = Sample::default();
    let mut timeline: Vec<(Duration, u64, usize)> = Vec::new();
    let done = loop {
        let s = Sample::take(pid, &metrics_url).await?;
        samples += 1;
        let open = provider.count() - provider.answered();
        max_open = max_open.max(open);
        if open >= args.jobs && all_open_at.is_none() {
            all_open_at = Some(t0.elapsed());
        }
        if s.rss > peak.rss {
            peak = s;
            open_at_peak = open;
        }
        if open >= args.jobs && s.rss > peak_all_open.rss {
            peak_all_open = s;
        }
        timeline.push((t0.elapsed(), s.rss, open));
        if wechat.sent().len() >= total {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(args.sample_ms)).await;
    };
    let answered_in = t0.elapsed();
    let slow_calls = provider.count() - calls_before;
    let every = (1000 / args.sample_ms.max(1)).max(1) as usize;
    let shown: Vec<String> = timeline
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0 || *i + 1 == timeline.len())
        .map(|(_, (t, rss, open))| {
            format!("{:.1}s {:.1}MB/{open}", t.as_secs_f64(), *rss as f64 / MB)
        })
        .collect();
    println!(
        "timeline (time since the enqueue, VmRSS / provider calls open): {}",
        shown.join(", ")
    );
    println!(
        "while all {} calls were open (max): {}",
        args.jobs,
        peak_all_open.show()
    );
    println!(
        "in flight (peak of {samples} samples every {} ms): {}",
        args.sample_ms,
        peak.show()
    );
    if let Some(n) = provider.tls_connections() {
        println!("  TLS connections the provider accepted so far (warm-up included): {n}");
    }
    println!(
        "  provider calls open at the peak sample: {open_at_peak}; most open at once: {max_open}{}; \
         {slow_calls} slow calls; enqueued in {:.2} s; every user answered {:.1} s after the enqueue{}",
        match all_open_at {
            Some(at) => format!(
                " (all {} open {:.2} s after the enqueue)",
                args.jobs,
                at.as_secs_f64()
            ),
            None => String::new(),
        },
        enqueued_in.as_secs_f64(),
        answered_in.as_secs_f64(),
        if done { "" } else { " (TIMED OUT)" }
    );

    // After: the queue drained, then a pause.
    let queue_keys = keys.queue(WECHAT);
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let entries: usize = conn.xlen(queue_keys.stream()).await.unwrap_or(usize::MAX);
        if entries == 0 || Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
    let after = Sample::take(pid, &metrics_url).await?;
    println!(
        "after ({} s after the drain): {}",
        args.settle_s,
        after.show()
    );
    tokio::time::sleep(Duration::from_secs(args.later_s)).await;
    let later = Sample::take(pid, &metrics_url).await?;
    println!(
        "later ({} s after the drain): {}",
        args.settle_s + args.later_s,
        later.show()
    );

    let replies = wechat.sent();
    let mut users: Vec<&str> = replies.iter().map(|m| m.touser.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    println!(
        "replies accepted by the fake WeChat: {} to {} distinct users (expected {total})",
        replies.len(),
        users.len()
    );
    // The worker is killed here (WorkerProcesses' drop).
    drop(workers);

    let in_flight_ok = peak.rss as f64 <= 50.0 * MB;
    let after_ok = after.rss as f64 <= idle.rss as f64 * 1.10;
    let verdict = |ok: bool| if ok { "pass" } else { "FAIL" };
    println!();
    println!(
        "| sample | VmRSS MB | RssAnon MB | VmHWM MB | threads | open fds | allocated MB | allocator resident MB |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, s) in [
        ("started".to_owned(), started),
        (format!("idle (after {} quick jobs)", args.warmup), idle),
        (
            format!("in flight: max while all {} calls were open", args.jobs),
            peak_all_open,
        ),
        (
            format!("in flight: peak of the slow phase ({open_at_peak} calls open at it)"),
            peak,
        ),
        (format!("after, +{} s", args.settle_s), after),
        (format!("after, +{} s", args.settle_s + args.later_s), later),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {} | {} | {:.1} | {:.1} |",
            s.rss as f64 / MB,
            s.anon as f64 / MB,
            s.hwm as f64 / MB,
            s.threads,
            s.fds,
            s.allocated as f64 / MB,
            s.resident as f64 / MB,
        );
    }
    println!();
    println!(
        "goal, in flight <= 50 MB: {:.1} MB: {}",
        peak.rss as f64 / MB,
        verdict(in_flight_ok)
    );
    println!(
        "goal, after within 10% of idle: {:.1} MB vs idle {:.1} MB ({:+.1}%): {}",
        after.rss as f64 / MB,
        idle.rss as f64 / MB,
        (after.rss as f64 / idle.rss as f64 - 1.0) * 100.0,
        verdict(after_ok)
    );
    let complete = done && users.len() >= total && max_open >= args.jobs;
    if !complete {
        println!(
            "INCOMPLETE: {} of {total} users answered, at most {max_open} of {} calls open at once",
            users.len(),
            args.jobs
        );
    }
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
