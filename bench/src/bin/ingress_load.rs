//! Load on the WeChat ingress: how many pushes per second Ferry's api
//! acknowledges (and enqueues) on this machine, at what latency, beside
//! Redis's own rate for the same enqueue function.
//!
//! It starts a redis-server of its own, migrates it, and runs the api
//! in-process on a runtime of its own, built by the same code as `ferry api`
//! (`ferry_cli::app`), per-IP limiter on and the generator's address
//! allowlisted, as WeChat's servers would be. The generator holds N
//! keep-alive connections, each sending correctly signed pushes one after
//! another (a closed loop) and timing each from the first byte written to
//! the last byte of the answer. The pushes are built before the clock starts
//! (every one a distinct MsgId, so every one is a new job), once in plaintext
//! mode and once in safe mode (AES-encrypted, `msg_signature`). Then it runs
//! `redis-benchmark` on the same Redis calling `ferry_enqueue` with the same
//! number of connections, and reports the ratio.
//!
//!     cargo build --release -p ferry-bench
//!     target/release/ingress_load --connections 32 --messages 200000
//!
//! With `--durable-ack-compare`, the same load then runs against a loopback
//! Redis Cluster (the test support's: 3 primaries, 3 replicas; the queues in
//! `--partitions` partitions), once with `FERRY_DURABLE_ACK=none` and once
//! with `FERRY_DURABLE_ACK=replica` (the api waits for one replica of each
//! written shard before answering), and a table compares the three:
//! acknowledged pushes/s, ack latency, CPU per push of the api, each
//! primary and the replicas. The cluster nodes get the single Redis's
//! persistence (none, or AOF `appendfsync always` with `--aof`).
//!
//!     target/release/ingress_load --durable-ack-compare --messages 100000 --mode plaintext

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Parser;
use ferry_bench::node;
use ferry_bench::push_load::{ACCOUNT, FerryApi, Mode, build_pushes, content, cpu_of, drive, now};
use ferry_common::Keys;
use ferry_common::embedded_redis::RedisProcess;
use ferry_tests::redis_cluster::RedisCluster;

#[derive(Parser)]
#[command(about = "Load generator for Ferry's WeChat ingress")]
struct Args {
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured pushes per mode.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Pushes per mode sent before measuring (connections and caches warm).
    #[arg(long, default_value_t = 20_000)]
    warmup: usize,
    /// Worker threads of the api's runtime.
    #[arg(long, default_value_t = 2)]
    api_threads: usize,
    /// Worker threads of the generator's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Modes to run: plaintext, safe, or both.
    #[arg(long, default_value = "both")]
    mode: String,
    /// Skip redis-benchmark.
    #[arg(long)]
    no_redis_benchmark: bool,
    /// What FERRY_DURABLE_ACK costs: after the run on one Redis, the same
    /// load on a loopback Redis Cluster (3 primaries, 3 replicas) with
    /// FERRY_DURABLE_ACK=none, then with FERRY_DURABLE_ACK=replica, and a
    /// table of the three.
    #[arg(long)]
    durable_ack_compare: bool,
    /// Partitions of each queue on the cluster (FERRY_QUEUE_PARTITIONS).
    #[arg(long, default_value_t = 6)]
    partitions: u16,
    /// Redis with AOF (appendfsync always) instead of no persistence, on
    /// the single Redis and every cluster node alike.
    #[arg(long)]
    aof: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let modes = match args.mode.as_str() {
        "plaintext" => vec![Mode::Plaintext],
        "safe" => vec![Mode::Safe],
        "both" => vec![Mode::Plaintext, Mode::Safe],
        other => bail!("--mode: expected plaintext, safe or both, got {other:?}"),
    };
    ensure!(
        (1..=ferry_common::keys::MAX_PARTITIONS).contains(&args.partitions),
        "--partitions: 1..={}",
        ferry_common::keys::MAX_PARTITIONS
    );

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .thread_name("generator")
        .enable_all()
        .build()?;
    println!(
        "# ingress_load: {} connections, {} measured pushes per mode ({} warm-up), api runtime {} threads, generator {} thread(s), {} CPUs",
        args.connections,
        args.messages,
        args.warmup,
        args.api_threads,
        args.client_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut next_msg_id = 1_i64;
    let mut summary: Vec<(String, Mode, Summary)> = Vec::new();

    // One Redis: the program's original measurement.
    {
        let redis_dir = tempfile::Builder::new()
            .prefix("ferry-bench-redis-")
            .tempdir()?;
        let redis = RedisProcess::start(redis_dir.path(), args.aof).context("redis-server")?;
        let under = Under::Single(redis);
        if args.durable_ack_compare {
            println!("## one Redis ({})", persistence(args.aof));
        }
        let runs = run_setup(
            &args,
            &modes,
            &under,
            vec![("REDIS_URL", under.single().url())],
            &client_rt,
            &mut next_msg_id,
        )?;
        let rates: Vec<(Mode, f64)> = runs.iter().map(|(m, s)| (*m, s.rate)).collect();
        summary.extend(
            runs.into_iter()
                .map(|(m, s)| ("one Redis".to_owned(), m, s)),
        );
        if !args.no_redis_benchmark {
            single_redis_benchmark(&args, under.single(), &rates)?;
        }
    }

    if args.durable_ack_compare {
        println!();
        println!(
            "## Redis Cluster: 3 primaries + 3 replicas on loopback, queues in {} partitions",
            args.partitions
        );
        let cluster = RedisCluster::start();
        println!("{}", node::match_persistence(&cluster, args.aof)?);
        let under = Under::Cluster(cluster);
        for ack in ["none", "replica"] {
            println!();
            println!("### cluster, FERRY_DURABLE_ACK={ack}");
            let vars = vec![
                ("REDIS_CLUSTER_NODES", under.cluster().nodes_env()),
                (
                    "FERRY_QUEUE_PARTITIONS",
                    format!("wechat={0},batch={0}", args.partitions),
                ),
                ("FERRY_DURABLE_ACK", ack.to_owned()),
            ];
            let runs = run_setup(&args, &modes, &under, vars, &client_rt, &mut next_msg_id)?;
            summary.extend(
                runs.into_iter()
                    .map(|(m, s)| (format!("cluster, FERRY_DURABLE_ACK={ack}"), m, s)),
            );
        }
        println!();
        println!(
            "## Summary ({} connections, {} measured pushes per mode; cluster: 3 primaries, {} partitions; {})",
            args.connections,
            args.messages,
            args.partitions,
            persistence(args.aof)
        );
        println!(
            "| setup | mode | acknowledged/s | p50 ms | p99 ms | p99.9 ms | max ms | api µs/push | redis primaries µs/push | replicas µs/push |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for (setup, mode, s) in &summary {
            println!(
                "| {setup} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {} |",
                mode.name(),
                s.rate,
                s.p50,
                s.p99,
                s.p999,
                s.max,
                s.api_us,
                s.redis_us,
                if setup == "one Redis" {
                    "-".to_owned()
                } else {
                    format!("{:.1}", s.replica_us)
                }
            );
        }
    }
    Ok(())
}

fn persistence(aof: bool) -> &'static str {
    if aof {
        "AOF appendfsync always"
    } else {
        "no persistence"
    }
}

/// The Redis the api runs on.
enum Under {
    Single(RedisProcess),
    Cluster(RedisCluster),
}

impl Under {
    fn single(&self) -> &RedisProcess {
        match self {
            Under::Single(redis) => redis,
            Under::Cluster(_) => panic!("not a single Redis"),
        }
    }

    fn cluster(&self) -> &RedisCluster {
        match self {
            Under::Cluster(cluster) => cluster,
            Under::Single(_) => panic!("not a cluster"),
        }
    }

    fn primaries(&self) -> Vec<String> {
        match self {
            Under::Single(redis) => vec![redis.url()],
            Under::Cluster(cluster) => cluster.primaries(),
        }
    }

    fn replicas(&self) -> Vec<String> {
        match self {
            Under::Single(_) => Vec::new(),
            Under::Cluster(cluster) => node::replicas(cluster),
        }
    }

    /// Every key gone (the function libraries stay), statistics reset.
    fn flush(&self) -> anyhow::Result<()> {
        match self {
            Under::Single(redis) => flush(redis),
            Under::Cluster(cluster) => node::flush_cluster(cluster),
        }
    }

    /// Jobs in every partition of the wechat queue.
    fn stream_len(&self, keys: &Keys) -> anyhow::Result<u64> {
        let streams: Vec<String> = keys
            .partitions()
            .of("wechat")
            .iter()
            .map(|p| keys.partition(p).stream())
            .collect();
        let mut total = 0;
        match self {
            Under::Single(redis) => {
                let mut conn = redis::Client::open(redis.url())?.get_connection()?;
                for stream in &streams {
                    total += redis::cmd("XLEN").arg(stream).query::<u64>(&mut conn)?;
                }
            }
            Under::Cluster(cluster) => {
                let mut conn =
                    redis::cluster::ClusterClient::new(cluster.urls())?.get_connection()?;
                for stream in &streams {
                    total += redis::cmd("XLEN").arg(stream).query::<u64>(&mut conn)?;
                }
            }
        }
        Ok(total)
    }
}

/// What one mode of one setup measured, for the summary.
struct Summary {
    rate: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    api_us: f64,
    redis_us: f64,
    replica_us: f64,
}

/// Builds the api from `vars` (plus the bench's WeChat settings) on a
/// runtime of its own, on `under`, runs every mode against it, and stops it.
fn run_setup(
    args: &Args,
    modes: &[Mode],
    under: &Under,
    vars: Vec<(&'static str, String)>,
    client_rt: &tokio::runtime::Runtime,
    next_msg_id: &mut i64,
) -> anyhow::Result<Vec<(Mode, Summary)>> {
    let api = FerryApi::start(vars, args.api_threads, "api")?;
    let (addr, state, keys) = (api.addr, &api.state, &api.keys);

    let primary_pids: Vec<u32> = under
        .primaries()
        .iter()
        .map(|u| node::pid(u))
        .collect::<Result<_, _>>()?;
    let replica_pids: Vec<u32> = under
        .replicas()
        .iter()
        .map(|u| node::pid(u))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for &mode in modes {
        under.flush()?;
        let warmup = build_pushes(
            mode,
            &addr.to_string(),
            args.warmup,
            args.connections,
            next_msg_id,
        );
        client_rt.block_on(drive(addr, warmup))?;
        let pushes = build_pushes(
            mode,
            &addr.to_string(),
            args.messages,
            args.connections,
            next_msg_id,
        );
        let cpu_before = CpuTimes::read(&primary_pids, &replica_pids)?;
        let run = client_rt.block_on(drive(addr, pushes))?;
        let cpu = CpuTimes::read(&primary_pids, &replica_pids)?.since(&cpu_before);
        let enqueued = under.stream_len(keys)?;
        let expected = (args.warmup + args.messages) as u64;
        ensure!(
            enqueued == expected,
            "{}: {enqueued} jobs enqueued for {expected} acknowledged pushes",
            mode.name()
        );
        ensure!(
            state.spool.stats().spooled == 0,
            "pushes were spooled: Redis too slow?"
        );
        let rate = run.report(mode.name());
        cpu.report(run.acknowledged);
        println!(
            "  inside Redis: {:.1} µs per ferry_enqueue call (INFO commandstats)",
            fcall_usec_per_call(&under.primaries())?
        );
        let per = |d: Duration| d.as_secs_f64() * 1e6 / run.acknowledged as f64;
        out.push((
            mode,
            Summary {
                rate,
                p50: run.percentile(0.50),
                p99: run.percentile(0.99),
                p999: run.percentile(0.999),
                max: run.percentile(1.0),
                api_us: per(cpu.api),
                redis_us: per(cpu.redis.iter().sum()),
                replica_us: per(cpu.replicas),
            },
        ));
    }

    api.stop();
    Ok(out)
}

/// `redis-benchmark` calling `ferry_enqueue` on the single Redis, and the
/// ratios of the api's rates to it.
fn single_redis_benchmark(
    args: &Args,
    redis: &RedisProcess,
    rates: &[(Mode, f64)],
) -> anyhow::Result<()> {
    flush(redis)?;
    let payload = serde_json::json!({
        "openid": "o_bench_user_000000000000000",
        "account": ACCOUNT,
        "content": content(1_000_000),
        "msg_id": 1_000_000_i64,
        "create_time": now(),
    })
    .to_string();
    let q = Keys::new("ferry").queue("wechat");
    let (stream, job, idem) = (
        q.stream(),
        q.job("wechat:__rand_int__"),
        q.idempotency("msg:__rand_int__"),
    );
    let command = [
        "-r",
        "100000000000",
        "FCALL",
        "ferry_enqueue",
        "3",
        &stream,
        &job,
        &idem,
        "wechat:__rand_int__",
        "wechat.reply",
        "wechat",
        &payload,
        "4",
        "300",
    ];
    let unpipelined = redis_benchmark(redis, args.messages, args.connections, 1, &command)?;
    flush(redis)?;
    let pipelined = redis_benchmark(redis, args.messages, args.connections, 16, &command)?;
    for (mode, rate) in rates {
        println!(
            "ratio {}: {:.2} of redis-benchmark -P 1, {:.2} of -P 16",
            mode.name(),
            rate / unpipelined,
            rate / pipelined
        );
    }
    Ok(())
}

/// CPU time (user + system) used by the api's threads, the generator's
/// threads and redis-server (each primary; the replicas together): unlike a
/// rate, it does not depend on what else the machine runs at the time.
struct CpuTimes {
    api: Duration,
    generator: Duration,
    /// One per primary (one Redis: one).
    redis: Vec<Duration>,
    replicas: Duration,
}

impl CpuTimes {
    fn read(primary_pids: &[u32], replica_pids: &[u32]) -> anyhow::Result<Self> {
        let of = |pid: &u32| cpu_of(&format!("/proc/{pid}/stat")).map(|(_, cpu)| cpu);
        let mut times = CpuTimes {
            api: Duration::ZERO,
            generator: Duration::ZERO,
            redis: primary_pids.iter().map(of).collect::<Result<_, _>>()?,
            replicas: replica_pids
                .iter()
                .map(of)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .sum(),
        };
        for task in std::fs::read_dir("/proc/self/task")? {
            let (name, cpu) = cpu_of(&task?.path().join("stat").display().to_string())?;
            match name.as_str() {
                "api" => times.api += cpu,
                "generator" => times.generator += cpu,
                _ => {}
            }
        }
        Ok(times)
    }

    fn since(&self, before: &Self) -> Self {
        CpuTimes {
            api: self.api.saturating_sub(before.api),
            generator: self.generator.saturating_sub(before.generator),
            redis: self
                .redis
                .iter()
                .zip(&before.redis)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            replicas: self.replicas.saturating_sub(before.replicas),
        }
    }

    fn report(&self, messages: usize) {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / messages as f64;
        let redis: Duration = self.redis.iter().sum();
        let total = per(self.api) + per(self.generator) + per(redis) + per(self.replicas);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let redis_text = if self.redis.len() > 1 {
            format!(
                "redis-server {:.1} µs on {} primaries ({}) + {:.1} µs on the replicas",
                per(redis),
                self.redis.len(),
                self.redis
                    .iter()
                    .map(|d| format!("{:.1}", per(*d)))
                    .collect::<Vec<_>>()
                    .join(" / "),
                per(self.replicas)
            )
        } else {
            format!("redis-server {:.1} µs", per(redis))
        };
        println!(
            "  CPU per message: api {:.1} µs, {redis_text}, generator {:.1} µs; total {total:.1} µs = at most {:.0} msgs/s on {cores} idle cores",
            per(self.api),
            per(self.generator),
            cores * 1e6 / total
        );
    }
}

/// Runs `redis-benchmark` on the bench's Redis; prints and returns calls/s.
fn redis_benchmark(
    redis: &RedisProcess,
    requests: usize,
    clients: usize,
    pipeline: usize,
    command: &[&str],
) -> anyhow::Result<f64> {
    let output = std::process::Command::new("redis-benchmark")
        .args(["-p", &redis.port().to_string()])
        .args(["-n", &requests.to_string(), "-c", &clients.to_string()])
        .args(["-P", &pipeline.to_string(), "--csv"])
        .args(command)
        .output()
        .context("redis-benchmark (apt-get install redis-tools)")?;
    ensure!(output.status.success(), "redis-benchmark failed");
    // "test","rps","avg","min","p50","p95","p99","max": the test column
    // repeats the command (commas included), so read from the right.
    let text = String::from_utf8_lossy(&output.stdout);
    let row = text
        .lines()
        .last()
        .context("redis-benchmark printed nothing")?;
    let numbers: Vec<f64> = row
        .rsplit(',')
        .take(7)
        .map(|f| f.trim_matches('"').parse())
        .collect::<Result<_, _>>()
        .with_context(|| format!("unreadable redis-benchmark output: {row}"))?;
    let (rps, p50, p99) = (numbers[6], numbers[3], numbers[1]);
    println!(
        "redis-benchmark FCALL ferry_enqueue (-c {clients} -P {pipeline}): {rps:.0} calls/s; latency p50 {p50:.2} ms, p99 {p99:.2} ms"
    );
    Ok(rps)
}

fn flush(redis: &RedisProcess) -> anyhow::Result<()> {
    // FLUSHALL keeps the function libraries: only data goes.
    let mut conn = redis::Client::open(redis.url())?.get_connection()?;
    redis::cmd("FLUSHALL").query::<()>(&mut conn)?;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query::<()>(&mut conn)?;
    Ok(())
}

/// Redis's own time per `FCALL` since the last flush, over every primary
/// (execution only, no network): what the queue engine's function costs.
fn fcall_usec_per_call(primaries: &[String]) -> anyhow::Result<f64> {
    let (calls, usec) = node::command_totals(primaries, "fcall")?;
    ensure!(calls > 0.0, "no FCALL in INFO commandstats");
    Ok(usec / calls)
}
