//! `ferry`: the one executable. Every subcommand is a thin shell around the
//! libraries; errors end the process with one line that says what to do.

use clap::{Parser, Subcommand};
use ferry_cli::commands;

/// jemalloc, with its background purging thread: memory freed after a
/// burst (a worker's 1,000 open provider calls) goes back to the system
/// within its decay time (1 s, built in from `.cargo/config.toml`), where
/// glibc's malloc kept the peak resident (bench/RESULTS.md, "Worker
/// memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's own figures for /metrics (`ferry_allocator_*_bytes`): its
/// statistics are cached until the epoch advances, so each read advances
/// it first.
fn jemalloc_bytes() -> Option<ferry_api::metrics::AllocatorBytes> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some(ferry_api::metrics::AllocatorBytes {
        allocated: stats::allocated::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
    })
}

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "A Redis-backed job queue for AI-backed WeChat services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the WeChat callback and health routes.
    Api,
    /// Consume jobs: call the AI providers, deliver replies.
    Worker(commands::worker::Args),
    /// Everything in one process for a newcomer: Redis (started if needed),
    /// migrations, api and worker; replies printed to the console.
    Dev,
    /// Load the Redis function libraries and create the consumer groups.
    Migrate(commands::migrate::Args),
    /// Play WeChat: sign and post a text message, then show the reply.
    Simulate(commands::simulate::Args),
    /// Per queue: depth, pending, in flight, delayed, dead, oldest age
    /// (`--partitions`: one row per partition too).
    Queues(commands::queues::Args),
    /// The fleet at a glance: queues, workers, breakers, alerts (non-zero
    /// exit when an alert fires or a breaker is open).
    Status(commands::status::Args),
    /// Inspect and act on the dead-letter streams.
    Dlq(commands::dlq::Args),
    /// Look up one job by its id: record, notes, timeline (`show ID`).
    Jobs(commands::jobs::Args),
    /// The AI provider chain and its settings (keys redacted); `check` makes
    /// one tiny call to each provider and reports.
    Providers(commands::providers::Args),
    /// The fleet's shared circuit breakers: list, reset, force open.
    Breaker(commands::breaker::Args),
    /// The encrypted secrets file (FERRY_SECRETS_FILE): encrypt, decrypt,
    /// edit, rotate its password, check it.
    Secrets(commands::secrets::Args),
    /// Batches over the api: submit a JSONL file (--wait: follow it with a
    /// progress bar), status, results, cancel.
    Batch(commands::batch::Args),
    /// Bearer tokens of the jobs, batch and admin APIs: make one, or hash
    /// one (the api is configured with hashes only).
    Tokens(commands::tokens::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    ferry_api::metrics::report_allocator(jemalloc_bytes);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Api => commands::api::run().await,
            Command::Worker(args) => commands::worker::run(args).await,
            Command::Dev => commands::dev::run().await,
            Command::Migrate(args) => commands::migrate::run(args).await,
            Command::Simulate(args) => commands::simulate::run(args).await,
            Command::Queues(args) => commands::queues::run(args).await,
            Command::Status(args) => commands::status::run(args).await,
            Command::Dlq(args) => commands::dlq::run(args).await,
            Command::Jobs(args) => commands::jobs::run(args).await,
            Command::Providers(args) => commands::providers::run(args).await,
            Command::Breaker(args) => commands::breaker::run(args).await,
            Command::Secrets(args) => commands::secrets::run(args).await,
            Command::Tokens(args) => commands::tokens::run(args).await,
            Command::Batch(args) => commands::batch::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
