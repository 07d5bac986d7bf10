//! Queue engine throughput: no-op jobs per second through one worker
//! process, bulk (enqueue N, then drain) and steady (produce and consume at
//! once), beside redis-benchmark's XADD and XREADGROUP rates measured on the
//! same Redis in the same run.
//!
//!     cargo run --release -p ferry-bench --bin queue_throughput -- --jobs 200000

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use ferry_bench::redis_benchmark;
use ferry_common::embedded_redis::RedisProcess;
use ferry_common::job::NewJob;
use ferry_common::queue::{JobQueue, WECHAT};
use ferry_common::{Keys, Secret, connection, schema};
use ferry_worker::handler::Handlers;
use ferry_worker::handlers::{Noop, noop::NOOP};
use ferry_worker::{Worker, WorkerSettings};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Jobs per phase.
    #[arg(long, default_value_t = 200_000)]
    jobs: usize,
    /// Worker concurrency (slots).
    #[arg(long, default_value_t = 1024)]
    concurrency: usize,
    /// Entries per XREADGROUP.
    #[arg(long, default_value_t = 512)]
    fetch_batch: usize,
    /// Jobs per enqueue pipeline.
    #[arg(long, default_value_t = 500)]
    enqueue_batch: usize,
    /// Redis with AOF (appendfsync always) instead of no persistence.
    #[arg(long)]
    aof: bool,
    /// Redis settings applied with CONFIG SET before the run, as
    /// `name=value` (repeatable), e.g. `stream-node-max-entries=16`.
    #[arg(long = "redis-config")]
    redis_config: Vec<String>,
}

fn noop_job() -> NewJob {
    NewJob {
        kind: NOOP.into(),
        queue: WECHAT.into(),
        payload: serde_json::Value::Null,
        max_attempts: 3,
        idempotency: None,
    }
}

async fn enqueue(queue: &JobQueue, n: usize, batch: usize) -> anyhow::Result<()> {
    let jobs: Vec<NewJob> = (0..batch).map(|_| noop_job()).collect();
    let mut left = n;
    while left > 0 {
        let take = left.min(batch);
        queue.enqueue_many(&jobs[..take]).await?;
        left -= take;
    }
    Ok(())
}

/// CPU seconds Redis has used so far (INFO cpu).
async fn redis_cpu(redis: &redis::Client) -> anyhow::Result<f64> {
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
    Ok(info
        .lines()
        .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum())
}

/// `INFO commandstats` as (command, calls, usec), commands called from
/// functions included: where Redis's time per job goes.
async fn command_stats(redis: &redis::Client) -> anyhow::Result<Vec<(String, f64, f64)>> {
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    Ok(info
        .lines()
        .filter_map(|l| {
            let (name, fields) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key))
                    .and_then(|v| v.parse::<f64>().ok())
            };
            Some((name.to_owned(), field("calls=")?, field("usec=")?))
        })
        .collect())
}

/// CPU seconds this process has used so far.
fn own_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(") ")
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Waits until the queue is empty (nothing waiting, nothing pending).
async fn drained(redis: &redis::Client, keys: &Keys) -> anyhow::Result<()> {
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let stream = keys.queue(WECHAT).stream();
    loop {
        let len: u64 = redis::cmd("XLEN")
            .arg(&stream)
            .query_async(&mut conn)
            .await?;
        if len == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn start_worker(queue: &JobQueue, args: &Args) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let mut settings = WorkerSettings::from_config(
        &ferry_common::Config::from_vars(Vec::<(String, String)>::new())
            .unwrap()
            .queue,
    );
    settings.concurrency = args.concurrency;
    settings.fetch_batch = args.fetch_batch;
    settings.fetch_block = Duration::from_millis(100);
    let worker = Worker::new(
        queue.clone(),
        Handlers::new().register(NOOP, Noop),
        settings,
    );
    let token = CancellationToken::new();
    let handle = tokio::spawn(worker.run(token.clone()));
    (token, handle)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let redis_process = RedisProcess::start(dir.path(), args.aof)?;
    let url = Secret::new(redis_process.url());
    let client = redis::Client::open(redis_process.url())?;
    for setting in &args.redis_config {
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--redis-config takes name=value, got {setting:?}"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async::<()>(&mut conn)
            .await?;
        println!("redis CONFIG SET {name} {value}");
    }
    let keys = Keys::new("bench");
    {
        let mut conn = client.get_multiplexed_async_connection().await?;
        schema::migrate(&mut conn, &keys, "bench").await?;
    }
    let queue = JobQueue::new(
        ferry_common::store::Store::new(
            &connection::RedisTarget::Single(url.clone()),
            16,
            keys.clone(),
        )?,
        Duration::from_secs(60),
    );
    println!(
        "redis-server {} ({}), jobs per phase {}, worker concurrency {}, fetch batch {}",
        redis_process.url(),
        if args.aof {
            "AOF appendfsync always"
        } else {
            "no persistence"
        },
        args.jobs,
        args.concurrency,
        args.fetch_batch
    );

    // Redis's own rates on this machine, now.
    let port = redis_process.port();
    let xadd = redis_benchmark::rate(port, 500_000, 50, 16, &["XADD", "rb:s", "*", "job", "x"])?;
    {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("rb:s")
            .arg("g")
            .arg("0")
            .query_async::<()>(&mut conn)
            .await?;
    }
    let xread = redis_benchmark::rate(
        port,
        200_000,
        50,
        16,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            "rb:s",
            ">",
        ],
    )?;
    {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("DEL")
            .arg("rb:s")
            .query_async::<()>(&mut conn)
            .await?;
    }
    println!("redis-benchmark XADD:                 {xadd:>10.0} ops/s (50 clients, pipeline 16)");
    println!("redis-benchmark XREADGROUP COUNT 1:   {xread:>10.0} ops/s (50 clients, pipeline 16)");

    // Bulk: enqueue everything, then drain with one worker.
    let started = Instant::now();
    enqueue(&queue, args.jobs, args.enqueue_batch).await?;
    let enqueue_rate = args.jobs as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (redis_cpu_before, own_cpu_before) = (redis_cpu(&client).await?, own_cpu());
    let stats_before = command_stats(&client).await?;
    let (token, worker) = start_worker(&queue, &args);
    drained(&client, &keys).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let drain_rate = args.jobs as f64 / elapsed;
    let (redis_busy, worker_busy) = (
        (redis_cpu(&client).await? - redis_cpu_before) / elapsed,
        (own_cpu() - own_cpu_before) / elapsed,
    );
    let stats_after = command_stats(&client).await?;
    token.cancel();
    worker.await?;
    println!(
        "ferry enqueue (pipelined {}):        {enqueue_rate:>10.0} jobs/s",
        args.enqueue_batch
    );
    println!(
        "ferry bulk drain, one worker:          {drain_rate:>10.0} jobs/s  ({:.2}x XADD, {:.2}x XREADGROUP)",
        drain_rate / xadd,
        drain_rate / xread
    );
    println!(
        "  during the drain: redis-server {:.0}% of a core, the worker process {:.0}%",
        redis_busy * 100.0,
        worker_busy * 100.0
    );
    println!(
        "  per job: {:.1} µs of redis-server CPU, {:.1} µs of worker CPU",
        redis_busy * elapsed * 1e6 / args.jobs as f64,
        worker_busy * elapsed * 1e6 / args.jobs as f64
    );

    println!(
        "  Redis time per job by command during the drain (calls per job, µs per job; fcall includes the commands the functions call):"
    );
    let mut by_command: Vec<(String, f64, f64)> = stats_after
        .iter()
        .map(|(name, calls, usec)| {
            let (c0, u0) = stats_before
                .iter()
                .find(|(n, _, _)| n == name)
                .map_or((0.0, 0.0), |(_, c, u)| (*c, *u));
            (
                name.clone(),
                (calls - c0) / args.jobs as f64,
                (usec - u0) / args.jobs as f64,
            )
        })
        .filter(|(_, calls, _)| *calls > 0.0)
        .collect();
    by_command.sort_by(|a, b| b.2.total_cmp(&a.2));

    for (name, calls, usec) in by_command.iter().take(10) {
        println!("    {name:<12} {calls:>8.3} calls  {usec:>6.2} µs");
    }

    // Steady: a producer and the worker at once.
    let (token, worker) = start_worker(&queue, &args);
    let produced = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let producer = {
        let (queue, produced) = (queue.clone(), produced.clone());
        let (n, batch) = (args.jobs, args.enqueue_batch);
        tokio::spawn(async move {
            let jobs: Vec<NewJob> = (0..batch).map(|_| noop_job()).collect();
            let mut left = n;
            while left > 0 {
                let take = left.min(batch);
                queue.enqueue_many(&jobs[..take]).await.expect("enqueue");
                produced.fetch_add(take as u64, Ordering::Relaxed);
                left -= take;
            }
        })
    };
    producer.await?;
    drained(&client, &keys).await?;
    let steady_rate = args.jobs as f64 / started.elapsed().as_secs_f64();
    token.cancel();
    worker.await?;
    println!(
        "ferry steady (produce + consume):      {steady_rate:>10.0} jobs/s  ({:.2}x XADD)",
        steady_rate / xadd
    );
    Ok(())
}
