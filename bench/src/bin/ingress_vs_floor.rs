//! Ferry's WeChat ingress against its floor (issue 19), in one invocation:
//! the same generator, the same Redis, the same connections, one target
//! after the other.
//!
//! It starts a `redis-server` of its own (free port, its own temporary
//! directory, no persistence unless `--aof`). Then for each mode
//! (plaintext, safe) and each of `--rounds` rounds it loads, one after the
//! other (order alternated round by round: Ferry, floor, then floor, Ferry,
//! ...):
//!
//! - **Ferry**: the api in-process, built as `ferry api` builds it
//!   (`ferry_bench::push_load::FerryApi`, the code `ingress_load` uses: per-IP
//!   limiter on with the generator's address allowlisted, spool directory of
//!   its own, no worker), schema migrated;
//! - **the floor** (`ferry_bench::floor`): a bare axum handler that checks
//!   the same signatures, does one `XADD` on a multiplexed connection and
//!   answers `success` (it does not decrypt, parse or deduplicate).
//!
//! Both serve from a runtime of `--server-threads` workers. Before each run
//! Redis is flushed (`FLUSHALL`: the function libraries stay; Ferry's schema
//! is migrated again when its api starts). Each run gets a fresh set of
//! pre-built pushes from `ferry_bench::push_load::build_pushes` (distinct
//! `MsgId`s, so Ferry's dedup sees only new messages; the same `Host`, the
//! same shape and sizes for both targets), a warm-up first, then the
//! measured pushes over `--connections` keep-alive connections in a closed
//! loop. After each run it checks that the target's stream holds one entry
//! per acknowledged push (warm-up included) and, for Ferry, that nothing
//! was spooled.
//!
//! Per run it prints the rate, latency percentiles, CPU per push
//! (redis-server's utime + stime from `/proc/<pid>/stat`; this process's
//! threads by name: the server's runtime threads, the generator's runtime
//! threads, and the rest of the process), Redis's read events per push
//! (`total_reads_processed`: how many pushes share a socket read), and
//! `INFO commandstats` per push (reset after the warm-up). At the end: the
//! medians per target and mode, the ratios Ferry/floor with the issue's
//! goals (rate at least 0.6 of the floor's, p99 at most 1.5x), and tables to
//! paste into RESULTS.md. It exits non-zero if a check failed.
//!
//!     cargo build --release -p ferry-bench
//!     target/release/ingress_vs_floor
//!     target/release/ingress_vs_floor --rounds 4 --messages 100000 --mode plaintext

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use ferry_bench::floor::{self, Floor};
use ferry_bench::node;
use ferry_bench::push_load::{FerryApi, Mode, TOKEN, build_pushes, cpu_of, drive, threads_cpu};
use ferry_common::embedded_redis::RedisProcess;
use tokio_util::sync::CancellationToken;

/// The floor's stream.
const FLOOR_STREAM: &str = "bench:floor:stream";
/// The `Host` header of every push, whichever target gets it (so both get
/// the same bytes apart from the ids).
const HOST: &str = "wechat-push.bench";
/// The first MsgId: wide enough that every id has the same number of
/// digits, so every push of every run has the same length.
const FIRST_MSG_ID: i64 = 1_000_000_000_000;

#[derive(Parser)]
#[command(about = "Ferry's WeChat ingress against a bare axum + XADD floor, in one run")]
struct Args {
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured pushes per run (one target, one mode, one round).
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Pushes sent before measuring each run (connections and caches warm).
    #[arg(long, default_value_t = 10_000)]
    warmup: usize,
    /// Worker threads of the server's runtime (Ferry's and the floor's alike).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the generator's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Rounds per mode; the order of the targets alternates round by round.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Modes to run: plaintext, safe, or both.
    #[arg(long, default_value = "both")]
    mode: String,
    /// Targets to load: both, ferry or floor (one alone: e.g. for a profile).
    #[arg(long, default_value = "both")]
    targets: String,
    /// Redis with AOF (appendfsync always) instead of no persistence.
    #[arg(long)]
    aof: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Ferry,
    Floor,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Ferry => "Ferry",
            Target::Floor => "floor",
        }
    }

    /// The server runtime's thread name (what the CPU accounting counts).
    fn threads(self) -> &'static str {
        match self {
            Target::Ferry => "api",
            Target::Floor => "floor",
        }
    }
}

fn short(mode: Mode) -> &'static str {
    match mode {
        Mode::Plaintext => "plaintext",
        Mode::Safe => "safe",
    }
}

/// One measured run.
#[derive(Clone)]
struct Measured {
    rate: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    /// CPU µs per acknowledged push.
    redis_us: f64,
    server_us: f64,
    generator_us: f64,
    other_us: f64,
    /// Redis read events (socket reads) per push.
    reads_per_push: f64,
    /// (command, calls per push, µs per call), busiest first.
    commands: Vec<(String, f64, f64)>,
}

/// A target serving on a runtime of its own.
enum Server {
    Ferry(FerryApi),
    Floor(FloorServer),
}

impl Server {
    fn start(target: Target, threads: usize, redis_url: &str) -> anyhow::Result<Self> {
        Ok(match target {
            Target::Ferry => Server::Ferry(FerryApi::start(
                vec![("REDIS_URL", redis_url.to_owned())],
                threads,
                target.threads(),
            )?),
            Target::Floor => Server::Floor(FloorServer::start(threads, redis_url)?),
        })
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Server::Ferry(api) => api.addr,
            Server::Floor(floor) => floor.addr,
        }
    }

    /// Entries in the target's stream(s).
    fn stream_len(&self, conn: &mut redis::Connection) -> anyhow::Result<u64> {
        let streams: Vec<String> = match self {
            Server::Ferry(api) => api
                .keys
                .partitions()
                .of("wechat")
                .iter()
                .map(|p| api.keys.partition(p).stream())
                .collect(),
            Server::Floor(_) => vec![FLOOR_STREAM.to_owned()],
        };
        let mut total = 0;
        for stream in &streams {
            total += redis::cmd("XLEN").arg(stream).query::<u64>(conn)?;
        }
        Ok(total)
    }

    fn stop(self) {
        match self {
            Server::Ferry(api) => api.stop(),
            Server::Floor(floor) => floor.stop(),
        }
    }
}

/// The floor on a runtime of its own.
struct FloorServer {
    addr: SocketAddr,
    runtime: tokio::runtime::Runtime,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl FloorServer {
    fn start(threads: usize, redis_url: &str) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(Target::Floor.threads())
            .enable_all()
            .build()?;
        let shutdown = CancellationToken::new();
        let (addr, served) = runtime.block_on(async {
            // Connected from inside the runtime: the connection's driver
            // task runs on the floor's threads.
            let state = Floor::connect(redis_url, TOKEN, FLOOR_STREAM).await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let served = tokio::spawn(floor::serve(listener, state, shutdown.clone()));
            anyhow::Ok((addr, served))
        })?;
        Ok(Self {
            addr,
            runtime,
            shutdown,
            served,
        })
    }

    fn stop(self) {
        self.shutdown.cancel();
        let served = self.served;
        self.runtime.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(10), served).await;
        });
        self.runtime.shutdown_timeout(Duration::from_secs(5));
    }
}

/// CPU times around a run.
struct Cpu {
    redis: f64,
    server: Duration,
    generator: Duration,
    process: Duration,
}

impl Cpu {
    fn read(redis_pid: u32, server_threads: &str) -> anyhow::Result<Self> {
        Ok(Self {
            redis: node::process_cpu_seconds(redis_pid)?,
            server: threads_cpu(server_threads)?,
            generator: threads_cpu("generator")?,
            process: cpu_of("/proc/self/stat")?.1,
        })
    }
}

fn conn(redis: &RedisProcess) -> anyhow::Result<redis::Connection> {
    Ok(redis::Client::open(redis.url())?.get_connection()?)
}

/// A field of an `INFO` section, as a number.
fn info_field(info: &str, name: &str) -> Option<f64> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

struct Bench<'a> {
    args: &'a Args,
    redis: &'a RedisProcess,
    redis_pid: u32,
    client_rt: tokio::runtime::Runtime,
    next_msg_id: i64,
    failures: Vec<String>,
}

impl Bench<'_> {
    /// One run: flush, start the target, warm up, measure, check, stop.
    fn run(&mut self, target: Target, mode: Mode, label: &str) -> anyhow::Result<Measured> {
        let args = self.args;
        let mut c = conn(self.redis)?;
        // FLUSHALL keeps the function libraries: only data goes.
        redis::cmd("FLUSHALL").query::<()>(&mut c)?;
        let server = Server::start(target, args.server_threads, &self.redis.url())?;
        let addr = server.addr();
        let warmup = build_pushes(
            mode,
            HOST,
            args.warmup,
            args.connections,
            &mut self.next_msg_id,
        );
        self.client_rt.block_on(drive(addr, warmup))?;
        let pushes = build_pushes(
            mode,
            HOST,
            args.messages,
            args.connections,
            &mut self.next_msg_id,
        );
        redis::cmd("CONFIG").arg("RESETSTAT").query::<()>(&mut c)?;
        let before = Cpu::read(self.redis_pid, target.threads())?;
        let run = self.client_rt.block_on(drive(addr, pushes))?;
        let after = Cpu::read(self.redis_pid, target.threads())?;
        let commandstats = node::info(&self.redis.url(), "commandstats")?;
        let stats = node::info(&self.redis.url(), "stats")?;

        // Every acknowledged push is in the target's stream.
        let expected = (args.warmup + run.acknowledged) as u64;
        let stored = server.stream_len(&mut c)?;
        let mut check = format!(
            "stream entries {stored} = {} warm-up + {} measured acknowledged pushes",
            args.warmup, run.acknowledged
        );
        if stored != expected {
            check = format!("MISMATCH: {stored} stream entries for {expected} acknowledged pushes");
            self.failures.push(format!("{label}: {check}"));
        }
        if let Server::Ferry(api) = &server {
            let spooled = api.state.spool.stats().spooled;
            if spooled == 0 {
                check.push_str("; nothing spooled");
            } else {
                check.push_str(&format!("; {spooled} SPOOLED"));
                self.failures.push(format!(
                    "{label}: {spooled} pushes spooled (Redis too slow?)"
                ));
            }
        }
        server.stop();

        let n = run.acknowledged as f64;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n;
        let server_cpu = after.server.saturating_sub(before.server);
        let generator_cpu = after.generator.saturating_sub(before.generator);
        let process_cpu = after.process.saturating_sub(before.process);
        let mut commands: Vec<(String, f64, f64)> = node::command_stats_in(&commandstats)
            .into_iter()
            .filter(|(name, _, _)| !name.starts_with("info") && !name.starts_with("config"))
            .map(|(name, calls, usec)| (name, calls / n, usec / calls.max(1.0)))
            .collect();
        commands.sort_by(|a, b| (b.1 * b.2).total_cmp(&(a.1 * a.2)));
        let m = Measured {
            rate: run.rate(),
            p50: run.percentile(0.50),
            p99: run.percentile(0.99),
            p999: run.percentile(0.999),
            max: run.percentile(1.0),
            redis_us: (after.redis - before.redis) * 1e6 / n,
            server_us: per(server_cpu),
            generator_us: per(generator_cpu),
            other_us: per(process_cpu.saturating_sub(server_cpu + generator_cpu)),
            reads_per_push: info_field(&stats, "total_reads_processed").unwrap_or(f64::NAN) / n,
            commands,
        };
        run.report(label);
        println!(
            "  CPU per push: redis-server {:.1} µs; {} threads ({}) {:.1} µs; generator threads {:.1} µs; rest of this process {:.1} µs",
            m.redis_us,
            target.name(),
            target.threads(),
            m.server_us,
            m.generator_us,
            m.other_us
        );
        println!(
            "  Redis: {:.3} socket reads per push (total_reads_processed); commandstats per push: {}",
            m.reads_per_push,
            commands_line(&m.commands)
        );
        println!("  check: {check}");
        Ok(m)
    }
}

fn commands_line(commands: &[(String, f64, f64)]) -> String {
    commands
        .iter()
        .map(|(name, calls, usec)| format!("{name} {calls:.3} calls x {usec:.2} µs"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The medians of a target's runs in one mode.
struct Medians {
    rate: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    redis_us: f64,
    server_us: f64,
    generator_us: f64,
    other_us: f64,
    reads_per_push: f64,
    /// (command, calls per push, µs per call, µs per push), medians.
    commands: Vec<(String, f64, f64, f64)>,
}

impl Medians {
    fn of(runs: &[Measured]) -> Self {
        let m = |f: fn(&Measured) -> f64| median(runs.iter().map(f).collect());
        let mut names: Vec<String> = runs
            .iter()
            .flat_map(|r| r.commands.iter().map(|c| c.0.clone()))
            .collect();
        names.dedup();
        let mut seen = Vec::new();
        names.retain(|n| {
            let new = !seen.contains(n);
            seen.push(n.clone());
            new
        });
        let commands = names
            .into_iter()
            .map(|name| {
                let of = |f: fn(&(String, f64, f64)) -> f64| {
                    median(
                        runs.iter()
                            .map(|r| r.commands.iter().find(|c| c.0 == name).map_or(0.0, f))
                            .collect(),
                    )
                };
                let calls = of(|c| c.1);
                let usec = of(|c| c.2);
                let per_push = of(|c| c.1 * c.2);
                (name, calls, usec, per_push)
            })
            .collect();
        Self {
            rate: m(|r| r.rate),
            p50: m(|r| r.p50),
            p99: m(|r| r.p99),
            p999: m(|r| r.p999),
            max: m(|r| r.max),
            redis_us: m(|r| r.redis_us),
            server_us: m(|r| r.server_us),
            generator_us: m(|r| r.generator_us),
            other_us: m(|r| r.other_us),
            reads_per_push: m(|r| r.reads_per_push),
            commands,
        }
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let modes = match args.mode.as_str() {
        "plaintext" => vec![Mode::Plaintext],
        "safe" => vec![Mode::Safe],
        "both" => vec![Mode::Plaintext, Mode::Safe],
        other => bail!("--mode: expected plaintext, safe or both, got {other:?}"),
    };
    let targets = match args.targets.as_str() {
        "both" => vec![Target::Ferry, Target::Floor],
        "ferry" => vec![Target::Ferry],
        "floor" => vec![Target::Floor],
        other => bail!("--targets: expected both, ferry or floor, got {other:?}"),
    };
    anyhow::ensure!(args.rounds >= 1, "--rounds: at least 1");

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .thread_name("generator")
        .enable_all()
        .build()?;
    let redis_dir = tempfile::Builder::new()
        .prefix("ferry-bench-redis-")
        .tempdir()?;
    let redis = RedisProcess::start(redis_dir.path(), args.aof).context("redis-server")?;
    let redis_pid = node::pid(&redis.url())?;
    let version = node::info(&redis.url(), "server")?
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:").map(str::to_owned))
        .unwrap_or_default();
    let persistence = if args.aof {
        "AOF appendfsync always"
    } else {
        "no persistence"
    };
    println!(
        "# ingress_vs_floor: {} connections, {} measured pushes per run ({} warm-up), {} round(s) per mode, \
         server runtime {} threads (Ferry and floor alike), generator {} thread(s), {} CPUs; \
         redis-server {version} pid {redis_pid} ({persistence}); load average before: {}",
        args.connections,
        args.messages,
        args.warmup,
        args.rounds,
        args.server_threads,
        args.client_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    println!(
        "# Ferry = its api built by ferry_cli::app as `ferry api` builds it (per-IP limiter on, 127.0.0.1 allowlisted; no worker)"
    );
    println!("# {}", floor::DESCRIPTION);
    println!(
        "# CPU: redis-server = utime+stime of its process (/proc/<pid>/stat); server / generator = this process's threads named \
         api or floor / generator (runtime workers and blocking pool); rest = the process's other threads (the main thread waiting in block_on)"
    );

    let mut bench = Bench {
        args: &args,
        redis: &redis,
        redis_pid,
        client_rt,
        next_msg_id: FIRST_MSG_ID,
        failures: Vec::new(),
    };
    // (mode, target) -> runs; per round, the pair (Ferry, floor) rates and p99s.
    let mut results: Vec<(Mode, Target, Vec<Measured>)> = Vec::new();
    let mut pairs: Vec<(Mode, usize, Measured, Measured)> = Vec::new();
    for &mode in &modes {
        println!();
        println!("## {}", mode.name());
        let mut by_target: Vec<Vec<Measured>> = vec![Vec::new(); 2];
        for round in 0..args.rounds {
            let mut order = targets.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for &target in &order {
                let label = format!(
                    "[{}] round {}/{} {}",
                    short(mode),
                    round + 1,
                    args.rounds,
                    target.name()
                );
                let m = bench.run(target, mode, &label)?;
                by_target[target as usize].push(m);
            }
            if targets.len() == 2 {
                pairs.push((
                    mode,
                    round,
                    by_target[0][round].clone(),
                    by_target[1][round].clone(),
                ));
            }
        }
        for &target in &targets {
            results.push((
                mode,
                target,
                std::mem::take(&mut by_target[target as usize]),
            ));
        }
    }

    println!();
    println!("## Summary (load average after: {})", loadavg());
    println!();
    println!(
        "Medians of {} round(s) per target and mode; {} connections, {} measured pushes per run ({} warm-up); \
         server runtime {} threads, generator {} thread(s); redis-server {version}, {persistence}. \
         CPU in µs per acknowledged push.",
        args.rounds,
        args.connections,
        args.messages,
        args.warmup,
        args.server_threads,
        args.client_threads
    );
    println!();
    println!(
        "| mode | target | acknowledged/s | p50 ms | p99 ms | p99.9 ms | max ms | redis-server CPU | server threads CPU | generator CPU | Redis reads/push |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut medians: Vec<(Mode, Target, Medians)> = Vec::new();
    for (mode, target, runs) in &results {
        let md = Medians::of(runs);
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {:.3} |",
            short(*mode),
            target.name(),
            md.rate,
            md.p50,
            md.p99,
            md.p999,
            md.max,
            md.redis_us,
            md.server_us,
            md.generator_us,
            md.reads_per_push
        );
        medians.push((*mode, *target, md));
    }
    let other: Vec<String> = medians
        .iter()
        .map(|(mode, t, md)| format!("{} {} {:.1}", short(*mode), t.name(), md.other_us))
        .collect();
    println!();
    println!(
        "(rest of the process, µs/push: {}; per-run figures above)",
        other.join(", ")
    );

    if targets.len() == 2 {
        println!();
        println!(
            "| mode | Ferry/floor rate (goal >= 0.6) | Ferry/floor p99 (goal <= 1.5) | per round: rate, p99 | Redis CPU per push Ferry / floor |"
        );
        println!("| --- | --- | --- | --- | --- |");
        for &mode in &modes {
            let get = |t: Target| {
                medians
                    .iter()
                    .find(|(m, tt, _)| *m == mode && *tt == t)
                    .map(|(_, _, md)| md)
                    .expect("both targets ran")
            };
            let (f, b) = (get(Target::Ferry), get(Target::Floor));
            let rate = f.rate / b.rate;
            let p99 = f.p99 / b.p99;
            let rounds: Vec<String> = pairs
                .iter()
                .filter(|(m, ..)| *m == mode)
                .map(|(_, r, fm, bm)| {
                    format!(
                        "{}: {:.2}, {:.2}",
                        r + 1,
                        fm.rate / bm.rate,
                        fm.p99 / bm.p99
                    )
                })
                .collect();
            let verdict = |ok: bool| if ok { "pass" } else { "FAIL" };
            println!(
                "| {} | {rate:.2} ({}) | {p99:.2} ({}) | {} | {:.1} / {:.1} µs |",
                short(mode),
                verdict(rate >= 0.6),
                verdict(p99 <= 1.5),
                rounds.join("; "),
                f.redis_us,
                b.redis_us
            );
        }
    }

    println!();
    println!(
        "Redis `INFO commandstats` per measured push (medians; commands called from functions included, and inside fcall's time):"
    );
    println!();
    println!("| mode | target | command | calls/push | µs/call | µs/push |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (mode, target, md) in &medians {
        for (name, calls, usec, per_push) in &md.commands {
            println!(
                "| {} | {} | {name} | {calls:.3} | {usec:.2} | {per_push:.2} |",
                short(*mode),
                target.name()
            );
        }
    }

    if bench.failures.is_empty() {
        println!();
        println!(
            "checks: every acknowledged push was in its target's stream; Ferry spooled nothing"
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!();
        for failure in &bench.failures {
            println!("CHECK FAILED: {failure}");
        }
        Ok(ExitCode::FAILURE)
    }
}
