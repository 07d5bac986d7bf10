//! The ingress floor (`ferry_bench::floor`) as a server of its own, for an
//! outside load generator (wrk, or another machine): a bare axum
//! `POST /wechat` that checks the WeChat signatures, does one `XADD` on a
//! multiplexed connection and answers `success`. It does not decrypt,
//! parse, check the timestamp window or deduplicate.
//!
//!     cargo build --release -p ferry-bench --bin ingress_floor
//!     target/release/ingress_floor --listen 127.0.0.1:8081 --redis-url redis://127.0.0.1:6379 --token <WECHAT_TOKEN>

use clap::Parser;
use ferry_bench::floor::{self, Floor};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "The bare axum + XADD floor Ferry's WeChat ingress is measured against")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The WeChat token the pushes are signed with.
    #[arg(long, default_value = ferry_bench::push_load::TOKEN)]
    token: String,
    /// The stream every push is appended to.
    #[arg(long, default_value = "bench:floor:stream")]
    stream: String,
    /// Worker threads of the runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .thread_name("floor")
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let state = Floor::connect(&args.redis_url, &args.token, &args.stream).await?;
        let listener = tokio::net::TcpListener::bind(&args.listen).await?;
        println!("floor listening on {}", listener.local_addr()?);
        println!("{}", floor::DESCRIPTION);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        });
        floor::serve(listener, state, shutdown).await?;
        anyhow::Ok(())
    })
}
