//! Queue engine throughput: no-op jobs per second through one worker
//! process, bulk (enqueue N, then drain) and steady (produce and consume at
//! once), beside redis-benchmark's XADD and XREADGROUP rates measured on the
//! same Redis in the same run.
//!
//!     cargo run --release -p ferry-bench --bin queue_throughput -- --jobs 200000
//!
//! With `--cluster`, the same phases run twice in one run: on one Redis (as
//! above), then on a loopback Redis Cluster (3 primaries, 3 replicas, the
//! test support's) with the `wechat` queue split in `--partitions`
//! partitions, and the two are printed side by side with Redis's CPU per
//! job on each primary, each primary's share, and a projection of the rate
//! with more shards.
//!
//!     cargo run --release -p ferry-bench --bin queue_throughput -- --cluster --jobs 100000

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use ferry_bench::node;
use ferry_bench::redis_benchmark;
use ferry_common::embedded_redis::RedisProcess;
use ferry_common::job::NewJob;
use ferry_common::keys::Partitions;
use ferry_common::queue::{JobQueue, QUEUES, WECHAT};
use ferry_common::{Keys, Secret, connection, schema};
use ferry_tests::redis_cluster::RedisCluster;
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
    /// Redis with AOF (appendfsync always) instead of no persistence (on
    /// every cluster node too with `--cluster`).
    #[arg(long)]
    aof: bool,
    /// Redis settings applied with CONFIG SET before the run, as
    /// `name=value` (repeatable), e.g. `stream-node-max-entries=16` (on
    /// every cluster node too with `--cluster`).
    #[arg(long = "redis-config")]
    redis_config: Vec<String>,
    /// Also run the phases on a loopback Redis Cluster (3 primaries, 3
    /// replicas) with the wechat queue split in partitions, and compare.
    #[arg(long)]
    cluster: bool,
    /// Partitions of the wechat queue on the cluster.
    #[arg(long, default_value_t = 6)]
    partitions: u16,
    /// With `--cluster`: kill the 3 replicas once the cluster is up, so the
    /// primaries pay no replication (what partitioning alone costs).
    #[arg(long)]
    kill_replicas: bool,
    /// Partitions of the wechat queue on the single Redis (all on the one
    /// server): what splitting the queue costs without a cluster.
    #[arg(long, default_value_t = 1)]
    single_partitions: u16,
    /// Key prefix (FERRY_PREFIX). On a cluster it decides which primary
    /// each partition's hash tag lands on.
    #[arg(long, default_value = "bench")]
    prefix: String,
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

/// `INFO <section>` of one node (a plain Redis or a cluster node).
async fn info(url: &str, section: &str) -> anyhow::Result<String> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    Ok(redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn)
        .await?)
}

/// CPU seconds each node has used so far (INFO cpu), in the order of `urls`.
async fn redis_cpu(urls: &[String]) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(urls.len());
    for url in urls {
        out.push(node::cpu_seconds_in(&info(url, "cpu").await?));
    }
    Ok(out)
}

/// `INFO commandstats` summed over `urls` as (command, calls, usec),
/// commands called from functions included: where Redis's time per job
/// goes.
async fn command_stats(urls: &[String]) -> anyhow::Result<Vec<(String, f64, f64)>> {
    let mut out: Vec<(String, f64, f64)> = Vec::new();
    for url in urls {
        for (name, calls, usec) in node::command_stats_in(&info(url, "commandstats").await?) {
            match out.iter_mut().find(|(n, _, _)| *n == name) {
                Some(row) => {
                    row.1 += calls;
                    row.2 += usec;
                }
                None => out.push((name, calls, usec)),
            }
        }
    }
    Ok(out)
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

/// Waits until the queue is empty (nothing waiting, nothing pending) in
/// every partition of the wechat queue.
async fn drained(queue: &JobQueue) -> anyhow::Result<()> {
    let streams: Vec<String> = queue
        .served_partitions(WECHAT)
        .iter()
        .map(|p| queue.keys().partition(p).stream())
        .collect();
    let mut conn = queue.store().conn().await?;
    loop {
        let mut pipe = redis::pipe();
        for stream in &streams {
            pipe.cmd("XLEN").arg(stream);
        }
        let lens: Vec<u64> = pipe.query_async(&mut conn).await?;
        if lens.iter().all(|&n| n == 0) {
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

/// What one set of phases measured.
struct Measured {
    enqueue_rate: f64,
    drain_rate: f64,
    drain_elapsed: f64,
    /// Redis CPU seconds during the drain, per primary.
    primary_cpu: Vec<f64>,
    /// Redis CPU seconds during the drain, all replicas together.
    replica_cpu: f64,
    /// This process's CPU seconds during the drain (the worker).
    worker_cpu: f64,
    /// (command, calls per job, µs per job) over the primaries, costliest
    /// first.
    by_command: Vec<(String, f64, f64)>,
    steady_rate: f64,
}

impl Measured {
    fn redis_cpu(&self) -> f64 {
        self.primary_cpu.iter().sum()
    }

    /// µs of CPU per job.
    fn per_job(&self, seconds: f64, jobs: usize) -> f64 {
        seconds * 1e6 / jobs as f64
    }
}

/// Bulk enqueue, bulk drain with one in-process worker, then steady.
async fn run_phases(
    queue: &JobQueue,
    primaries: &[String],
    replicas: &[String],
    args: &Args,
) -> anyhow::Result<Measured> {
    // Bulk: enqueue everything, then drain with one worker.
    let started = Instant::now();
    enqueue(queue, args.jobs, args.enqueue_batch).await?;
    let enqueue_rate = args.jobs as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (primary_before, replica_before, own_before) = (
        redis_cpu(primaries).await?,
        redis_cpu(replicas).await?,
        own_cpu(),
    );
    let stats_before = command_stats(primaries).await?;
    let (token, worker) = start_worker(queue, args);
    drained(queue).await?;
    let drain_elapsed = started.elapsed().as_secs_f64();
    let worker_cpu = own_cpu() - own_before;
    let primary_cpu: Vec<f64> = redis_cpu(primaries)
        .await?
        .iter()
        .zip(&primary_before)
        .map(|(after, before)| after - before)
        .collect();
    let replica_cpu =
        redis_cpu(replicas).await?.iter().sum::<f64>() - replica_before.iter().sum::<f64>();
    let stats_after = command_stats(primaries).await?;
    token.cancel();
    worker.await?;

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

    // Steady: a producer and the worker at once.
    let (token, worker) = start_worker(queue, args);
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
    drained(queue).await?;
    let steady_rate = args.jobs as f64 / started.elapsed().as_secs_f64();
    token.cancel();
    worker.await?;

    Ok(Measured {
        enqueue_rate,
        drain_rate: args.jobs as f64 / drain_elapsed,
        drain_elapsed,
        primary_cpu,
        replica_cpu,
        worker_cpu,
        by_command,
        steady_rate,
    })
}

/// The single-Redis report, as this program has always printed it
/// (`bench` is redis-benchmark's XADD and XREADGROUP rates).
fn print_single(m: &Measured, args: &Args, bench: (f64, f64)) {
    let (xadd, xread) = bench;
    let jobs = args.jobs;
    println!(
        "ferry enqueue (pipelined {}):        {:>10.0} jobs/s",
        args.enqueue_batch, m.enqueue_rate
    );
    println!(
        "ferry bulk drain, one worker:          {:>10.0} jobs/s  ({:.2}x XADD, {:.2}x XREADGROUP)",
        m.drain_rate,
        m.drain_rate / xadd,
        m.drain_rate / xread
    );
    println!(
        "  during the drain: redis-server {:.0}% of a core, the worker process {:.0}%",
        m.redis_cpu() / m.drain_elapsed * 100.0,
        m.worker_cpu / m.drain_elapsed * 100.0
    );
    println!(
        "  per job: {:.1} µs of redis-server CPU, {:.1} µs of worker CPU",
        m.per_job(m.redis_cpu(), jobs),
        m.per_job(m.worker_cpu, jobs)
    );
    print_commands(m);
    println!(
        "ferry steady (produce + consume):      {:>10.0} jobs/s  ({:.2}x XADD)",
        m.steady_rate,
        m.steady_rate / xadd
    );
}

fn print_commands(m: &Measured) {
    println!(
        "  Redis time per job by command during the drain (calls per job, µs per job; fcall includes the commands the functions call):"
    );
    for (name, calls, usec) in m.by_command.iter().take(10) {
        println!("    {name:<12} {calls:>8.3} calls  {usec:>6.2} µs");
    }
}

/// Applies `--redis-config` to one node.
fn apply_redis_config(url: &str, settings: &[String]) -> anyhow::Result<()> {
    for setting in settings {
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--redis-config takes name=value, got {setting:?}"))?;
        node::config_set(url, name, value)?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    anyhow::ensure!(
        (1..=ferry_common::keys::MAX_PARTITIONS).contains(&args.partitions),
        "--partitions: 1..={}",
        ferry_common::keys::MAX_PARTITIONS
    );
    if args.cluster {
        // The support's cluster nodes run with 16-entry stream nodes; the
        // single Redis gets the same unless told otherwise, so the two are
        // compared with the same settings.
        let named = |n: &str| {
            args.redis_config
                .iter()
                .any(|s| s.split('=').next() == Some(n))
        };
        if !named("stream-node-max-entries") {
            args.redis_config.push("stream-node-max-entries=16".into());
        }
    }

    let single = {
        let dir = tempfile::tempdir()?;
        let redis_process = RedisProcess::start(dir.path(), args.aof)?;
        let url = Secret::new(redis_process.url());
        let client = redis::Client::open(redis_process.url())?;
        apply_redis_config(&redis_process.url(), &args.redis_config)?;
        for setting in &args.redis_config {
            let (name, value) = setting.split_once('=').unwrap_or_default();
            println!("redis CONFIG SET {name} {value}");
        }
        let keys = Keys::new(&args.prefix).with_partitions(
            Partitions::parse(&format!("{WECHAT}={}", args.single_partitions), QUEUES)
                .map_err(anyhow::Error::msg)?,
        );
        if args.single_partitions > 1 {
            println!(
                "wechat queue in {} partitions on the one Redis",
                args.single_partitions
            );
        }
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
        queue.refresh_partitions().await?;
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
        let xadd =
            redis_benchmark::rate(port, 500_000, 50, 16, &["XADD", "rb:s", "*", "job", "x"])?;
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
        println!(
            "redis-benchmark XADD:                 {xadd:>10.0} ops/s (50 clients, pipeline 16)"
        );
        println!(
            "redis-benchmark XREADGROUP COUNT 1:   {xread:>10.0} ops/s (50 clients, pipeline 16)"
        );

        let m = run_phases(&queue, &[redis_process.url()], &[], &args).await?;
        print_single(&m, &args, (xadd, xread));
        m
        // The single Redis stops here, before the cluster starts.
    };

    if args.cluster {
        run_cluster(&args, &single).await?;
    }
    Ok(())
}

/// The same phases on a loopback cluster, then the comparison and the
/// projection.
async fn run_cluster(args: &Args, single: &Measured) -> anyhow::Result<()> {
    println!();
    println!("## Redis Cluster: 3 primaries + 3 replicas on loopback");
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start).await?;
    println!("{}", node::match_persistence(&cluster, args.aof)?);
    for url in cluster.urls() {
        apply_redis_config(&url, &args.redis_config)?;
    }
    if args.kill_replicas {
        for url in node::replicas(&cluster) {
            cluster.kill(&url);
            println!("  killed replica {url} (--kill-replicas)");
        }
        // Let the primaries flag them failed (cluster-node-timeout 1 s), so
        // the cluster client's view of the slots leaves them out.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let primaries = cluster.primaries();
    let replicas = node::replicas(&cluster);
    for url in primaries.iter().chain(&replicas) {
        let role = if primaries.contains(url) {
            "primary"
        } else {
            "replica"
        };
        println!(
            "  {url} {role}: stream-node-max-entries {}, appendonly {}",
            node::config_get(url, "stream-node-max-entries")?,
            node::config_get(url, "appendonly")?
        );
    }
    let partitions = Partitions::parse(&format!("{WECHAT}={}", args.partitions), QUEUES)
        .map_err(anyhow::Error::msg)?;
    let keys = Keys::new(&args.prefix).with_partitions(partitions);
    let target =
        connection::RedisTarget::Cluster(cluster.urls().into_iter().map(Secret::new).collect());
    let store = ferry_common::store::Store::new(&target, 16, keys.clone())?;
    {
        let mut conn = store.conn().await?;
        schema::migrate(&mut conn, &keys, "bench").await?;
    }
    let queue = JobQueue::new(store, Duration::from_secs(60));
    queue.refresh_partitions().await?;

    let owners = node::partition_owners(&cluster, &keys, WECHAT);
    let registry = cluster.primary_for_key(&keys.workers());
    println!(
        "wechat queue in {} partitions; jobs per phase {}, worker concurrency {}, fetch batch {}",
        args.partitions, args.jobs, args.concurrency, args.fetch_batch
    );

    let m = run_phases(&queue, &primaries, &replicas, args).await?;
    let jobs = args.jobs;
    println!(
        "ferry enqueue (pipelined {}):        {:>10.0} jobs/s",
        args.enqueue_batch, m.enqueue_rate
    );
    println!(
        "ferry bulk drain, one worker:          {:>10.0} jobs/s",
        m.drain_rate
    );
    println!(
        "  during the drain: primaries {:.0}% of a core together, replicas {:.0}%, the worker process {:.0}%",
        m.redis_cpu() / m.drain_elapsed * 100.0,
        m.replica_cpu / m.drain_elapsed * 100.0,
        m.worker_cpu / m.drain_elapsed * 100.0
    );
    println!(
        "  per job: {:.1} µs of redis-server CPU (all primaries), {:.1} µs on the replicas, {:.1} µs of worker CPU",
        m.per_job(m.redis_cpu(), jobs),
        m.per_job(m.replica_cpu, jobs),
        m.per_job(m.worker_cpu, jobs)
    );
    print_commands(&m);
    println!(
        "ferry steady (produce + consume):      {:>10.0} jobs/s",
        m.steady_rate
    );

    // Per primary.
    let total = m.redis_cpu();
    println!();
    println!("Per primary during the drain (Redis CPU from INFO cpu, per job of the whole drain):");
    println!(
        "  {:<24} {:>10} {:>8}  partitions held",
        "primary", "µs / job", "share"
    );
    let mut busiest_share: f64 = 0.0;
    for (url, cpu) in primaries.iter().zip(&m.primary_cpu) {
        let share = if total > 0.0 { cpu / total } else { 0.0 };
        busiest_share = busiest_share.max(share);
        let mut held: Vec<String> = owners
            .iter()
            .filter(|(_, owner)| owner == url)
            .map(|(name, _)| name.clone())
            .collect();
        if *url == registry {
            held.push(format!("+ the {{{}}} registry", args.prefix));
        }
        println!(
            "  {url:<24} {:>10.2} {:>7.1}%  {}",
            m.per_job(*cpu, jobs),
            share * 100.0,
            if held.is_empty() {
                "-".to_owned()
            } else {
                held.join(" ")
            }
        );
    }

    // Side by side.
    println!();
    println!(
        "Side by side (jobs per phase {jobs}; cluster: {} partitions over {} primaries):",
        args.partitions,
        primaries.len()
    );
    println!(
        "  {:<40} {:>12} {:>12}",
        "",
        if args.single_partitions > 1 {
            format!("one Redis/{}", args.single_partitions)
        } else {
            "one Redis".to_owned()
        },
        "cluster"
    );
    let row = |name: &str, a: String, b: String| println!("  {name:<40} {a:>12} {b:>12}");
    row(
        "enqueue, jobs/s",
        format!("{:.0}", single.enqueue_rate),
        format!("{:.0}", m.enqueue_rate),
    );
    row(
        "bulk drain, jobs/s",
        format!("{:.0}", single.drain_rate),
        format!("{:.0}", m.drain_rate),
    );
    row(
        "steady, jobs/s",
        format!("{:.0}", single.steady_rate),
        format!("{:.0}", m.steady_rate),
    );
    row(
        "Redis CPU per job, all primaries (µs)",
        format!("{:.1}", single.per_job(single.redis_cpu(), jobs)),
        format!("{:.1}", m.per_job(total, jobs)),
    );
    row(
        "Redis CPU per job, busiest primary (µs)",
        format!("{:.1}", single.per_job(single.redis_cpu(), jobs)),
        format!("{:.1}", m.per_job(total * busiest_share, jobs)),
    );
    row(
        "replicas' CPU per job (µs)",
        "-".into(),
        format!("{:.1}", m.per_job(m.replica_cpu, jobs)),
    );
    row(
        "worker CPU per job (µs)",
        format!("{:.1}", single.per_job(single.worker_cpu, jobs)),
        format!("{:.1}", m.per_job(m.worker_cpu, jobs)),
    );

    // Projection: each shard on a core of its own, each job costing the
    // Redis CPU measured here, spread as the partitions are.
    let redis_us = m.per_job(total, jobs);
    let worker_us = m.per_job(m.worker_cpu, jobs);
    let per_worker = 1e6 / worker_us;
    let p = usize::from(args.partitions);
    println!();
    println!(
        "Projection: shards each on a core of its own, {redis_us:.1} µs of Redis CPU per job (all primaries, measured), \
         the busiest shard's share of it bounding the rate; one worker process takes {worker_us:.1} µs per job = \
         {per_worker:.0} jobs/s per worker core (more worker processes add to it)."
    );
    println!(
        "  one Redis: {:.1} µs per job = at most {:.0} jobs/s on its one core",
        single.per_job(single.redis_cpu(), jobs),
        1e6 / single.per_job(single.redis_cpu(), jobs)
    );
    println!(
        "  {:>6} {:>10} {:>14} {:>16} {:>16}  binds with one worker process",
        "shards", "partitions", "busiest share", "Redis bound/s", "worker procs"
    );
    let line = |shards: usize, partitions: usize, share: f64, note: &str| {
        let redis_bound = 1e6 / (redis_us * share);
        let workers = (redis_bound / per_worker).ceil();
        let binds = if per_worker < redis_bound {
            format!("worker ({per_worker:.0}/s)")
        } else {
            "Redis (busiest shard)".to_owned()
        };
        println!(
            "  {shards:>6} {partitions:>10} {:>13.1}% {redis_bound:>16.0} {workers:>16.0}  {binds}{note}",
            share * 100.0
        );
    };
    line(
        primaries.len(),
        p,
        busiest_share,
        " [measured spread over these 3 primaries]",
    );
    for shards in [3usize, 6, 12] {
        // The partitions placed as evenly as slots allow: the busiest shard
        // holds ceil(P / S) of them (one, at most P shards busy).
        let share = p.div_ceil(shards) as f64 / p as f64;
        let note = if shards > p {
            format!(" [only {p} of {shards} shards hold a partition]")
        } else {
            String::new()
        };
        line(shards, p, share, &note);
        if shards > p {
            line(
                shards,
                shards,
                1.0 / shards as f64,
                " [partitions raised to the shard count]",
            );
        }
    }
    println!(
        "  (\"worker procs\": worker processes of {worker_us:.1} µs per job, a core each, to reach the Redis bound; \
         cores needed = shards + worker procs + the api's)"
    );
    Ok(())
}
