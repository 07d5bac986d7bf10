//! `ferry api`: the WeChat ingress.

use anyhow::Context;

use crate::{app, signals};

pub async fn run() -> anyhow::Result<()> {
    let (config, _guard) = app::init()?;
    let queue = app::job_queue(&config, 64)?;
    app::require_schema(&queue, &config).await?;
    let state = app::api_state(&config, queue, false)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("FERRY_LISTEN: cannot listen on {}", config.listen))?;
    ferry_api::serve(listener, state, signals::shutdown_token()).await?;
    Ok(())
}
