//! `ferry worker`: consume jobs until SIGTERM, then shut down gracefully.

use std::sync::Arc;

use anyhow::Context;
use ferry_common::Config;
use ferry_common::config::vars;
use ferry_common::queue::QUEUES;
use ferry_worker::WorkerSettings;

use crate::{app, reload, signals};

#[derive(clap::Args)]
pub struct Args {
    /// Jobs run at once (default FERRY_WORKER_CONCURRENCY, else 32).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Queues to serve, in priority order (default: all).
    #[arg(long, value_delimiter = ',')]
    queues: Vec<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (config, _guard) = app::init()?;
    let mut settings = WorkerSettings::from_config(&config.queue);
    if let Some(n) = args.concurrency {
        anyhow::ensure!(n > 0, "--concurrency must be at least 1");
        settings.concurrency = n;
    }
    if !args.queues.is_empty() {
        settings.queues = args
            .queues
            .iter()
            .map(|q| {
                QUEUES
                    .iter()
                    .find(|known| *known == q)
                    .copied()
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--queues: unknown queue {q:?} (known: {})",
                            QUEUES.join(", ")
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
    }
    let queue = app::job_queue(&config, settings.concurrency.clamp(8, 64))?;
    app::require_schema(&queue, &config).await?;
    let (worker, reloadable) =
        app::worker_with_reload(&config, queue.clone(), app::Replies::WeChat, settings)?;
    let shutdown = signals::shutdown_token();
    reload::on_sighup(reloadable, Config::from_env, shutdown.clone())?;
    if let Some(addr) = config.worker_admin_listen {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "{}: cannot listen on {addr}",
                vars::FERRY_WORKER_ADMIN_LISTEN
            )
        })?;
        let ops = Arc::new(app::ops(&config, queue));
        tokio::spawn(ferry_api::ops::serve(listener, ops, shutdown.clone()));
    }
    worker.run(shutdown).await;
    Ok(())
}
