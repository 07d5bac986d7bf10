//! `ferry api`: the WeChat ingress.

use anyhow::Context;

use ferry_common::Config;

use crate::{app, reload, signals};

pub async fn run() -> anyhow::Result<()> {
    let (config, _guard) = app::init()?;
    let queue = app::job_queue(&config, 64)?;
    app::require_schema(&queue, &config).await?;
    let state = app::api_state(&config, queue, false)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("FERRY_LISTEN: cannot listen on {}", config.listen))?;
    let shutdown = signals::shutdown_token();
    // SIGHUP swaps the bearer tokens, says what else needs a restart, and
    // does not end the process.
    let reloadable = reload::Reloadable::for_api(&config, std::sync::Arc::clone(&state.auth));
    reload::on_sighup(reloadable, Config::from_env, shutdown.clone())?;
    ferry_api::serve(listener, state, shutdown).await?;
    Ok(())
}
