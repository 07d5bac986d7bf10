//! What the fleet gate (rate limit + concurrency lease + circuit breaker)
//! adds to one provider call: round trips and microseconds for admit +
//! settle, beside a bare Redis round trip (PING) measured in the same run.
//!
//!     cargo run --release -p ferry-bench --bin gate_overhead -- --calls 20000

use std::time::{Duration, Instant};

use clap::Parser;
use ferry_common::embedded_redis::RedisProcess;
use ferry_common::fleet::{Admission, CallResult, GateSettings, ProviderGate};
use ferry_common::{Keys, Secret, connection, schema};

#[derive(Parser)]
struct Args {
    /// Sequential calls measured (after a warm-up).
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn report(name: &str, mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    let mean = samples.iter().sum::<Duration>().as_secs_f64() * 1e6 / samples.len() as f64;
    println!(
        "{name:<34} mean {mean:>7.1} µs  p50 {:>7.1} µs  p99 {:>7.1} µs",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99)
    );
    mean
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let redis_process = RedisProcess::start(dir.path(), false)?;
    let url = Secret::new(redis_process.url());
    let keys = Keys::new("bench");
    let client = redis::Client::open(redis_process.url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    schema::migrate(&mut conn, &keys, "bench").await?;
    // Every check on: a rate and token limit no call reaches, a concurrency
    // limit, and the breaker.
    let settings = GateSettings {
        requests_per_minute: 100_000_000,
        burst: 1_000_000,
        tokens_per_minute: 1_000_000_000,
        max_concurrency: 1000,
        ..GateSettings::default()
    };
    let store = ferry_common::store::Store::new(
        &connection::RedisTarget::Single(url.clone()),
        4,
        keys.clone(),
    )?;
    let gate = ProviderGate::new(&store, "bench", settings);

    let mut ping = Vec::with_capacity(args.calls);
    let mut admit = Vec::with_capacity(args.calls);
    let mut settle = Vec::with_capacity(args.calls);
    for round in 0..2 {
        let n = if round == 0 {
            args.calls / 10
        } else {
            args.calls
        };
        ping.clear();
        admit.clear();
        settle.clear();
        for _ in 0..n {
            let mut c = store.conn().await?;
            let t = Instant::now();
            redis::cmd("PING").query_async::<String>(&mut c).await?;
            ping.push(t.elapsed());
            drop(c);

            let t = Instant::now();
            let Admission::Granted(pass) = gate.admit(500).await else {
                anyhow::bail!("the bench limits should never deny");
            };
            admit.push(t.elapsed());
            let t = Instant::now();
            gate.settle(
                pass,
                CallResult::Success,
                Duration::from_millis(1),
                Some(480),
                None,
                "",
            )
            .await;
            settle.push(t.elapsed());
        }
    }
    println!(
        "{} sequential calls, redis-server on loopback, pooled connections",
        args.calls
    );
    let rt = report("bare round trip (PING)", ping);
    let a = report("admit (1 round trip, FCALL)", admit);
    let s = report("settle (1 round trip, FCALL)", settle);
    println!(
        "gate total: 2 round trips, {:.1} µs = {:.1}x a bare round trip",
        a + s,
        (a + s) / rt
    );
    Ok(())
}
