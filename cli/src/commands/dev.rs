//! `ferry dev`: Ferry in one process for a newcomer.
//!
//! Uses REDIS_URL when it answers, else starts `redis-server` on a free
//! loopback port in a temporary directory (stopped on exit). Without a
//! provider key it answers with the built-in `echo` provider; without WeChat
//! credentials it prints replies instead of calling WeChat. It says each of
//! these at start-up, and prints the command that plays WeChat against it
//! and a one-time link that signs in to the dashboard (`ferry dev` only:
//! `ferry api` has no such route).

use std::time::Duration;

use anyhow::{Context, bail};
use ferry_common::config::{Config, ProviderConfig, vars};
use ferry_common::embedded_redis::{EmbeddedRedisError, RedisProcess};
use ferry_common::{Secret, connection, schema};
use ferry_worker::WorkerSettings;

use ferry_common::connection::RedisTarget;

use crate::{app, signals};

pub async fn run() -> anyhow::Result<()> {
    let (mut config, _guard) = app::init()?;
    let _redis = ensure_redis(&mut config).await?;

    let store = ferry_common::store::Store::new(&config.redis, 1, app::keys(&config))?;
    let mut conn = store.conn().await?;
    schema::migrate(&mut conn, store.keys(), "ferry-dev").await?;
    println!(
        "schema:    migrated (version {})",
        schema::required_version()
    );

    if config.providers.is_empty() {
        config.providers.push(ProviderConfig::echo());
        println!(
            "provider:  no AI provider key set: using the built-in `echo` provider (set e.g. DEEPSEEK_API_KEY for real answers)"
        );
    } else {
        let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
        println!("providers: {}", names.join(" -> "));
    }
    let token_is_dev = config.wechat.token.is_none();
    if token_is_dev {
        config.wechat.token = Some(app::dev_token());
        println!(
            "wechat:    {} unset: using the dev token {:?}",
            vars::WECHAT_TOKEN,
            app::DEV_WECHAT_TOKEN
        );
    }
    let replies = if config.wechat.can_send() {
        println!(
            "replies:   sent through WeChat's customer-service API at {}",
            config.wechat.api_base
        );
        app::Replies::WeChat
    } else {
        println!(
            "replies:   no WeChat credentials ({}, {}): printing replies here instead",
            vars::WECHAT_APP_ID,
            vars::WECHAT_APP_SECRET
        );
        app::Replies::Console
    };
    let console = matches!(replies, app::Replies::Console);

    let queue = app::job_queue(&config, 32)?;
    let (sign_in, code) = ferry_api::dev::DevSignIn::new(ferry_api::dev::DEV_SIGN_IN_TTL);
    let mut shared = app::shared_state(&config, queue.clone(), console)?;
    shared.dev_sign_in = Some(std::sync::Arc::new(sign_in));
    let state = ferry_api::AppState::new(shared);
    let worker = app::worker(
        &config,
        queue,
        replies,
        WorkerSettings::from_config(&config.queue),
    )?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "{}: cannot listen on {} (in use? set {}=127.0.0.1:5001)",
                vars::FERRY_LISTEN,
                config.listen,
                vars::FERRY_LISTEN
            )
        })?;

    let shutdown = signals::shutdown_token();
    let api = tokio::spawn(ferry_api::serve(listener, state, shutdown.clone()));
    let worker = tokio::spawn(worker.run(shutdown.clone()));
    println!(
        "\nFerry is running on http://{}. Play WeChat from another terminal:\n\n  {}\n",
        config.listen,
        simulate_command(&config, token_is_dev)
    );
    // The dashboard without setup: no admin token to make, no restart.
    println!(
        "dashboard: http://{}/admin/dev-sign-in?code={code}\n           (signs you in once, within {} minutes; restart `ferry dev` for another)\n",
        config.listen,
        ferry_api::dev::DEV_SIGN_IN_TTL.as_secs() / 60
    );
    let (api, _) = tokio::join!(api, worker);
    api??;
    Ok(())
}

/// Keeps the embedded Redis (if any) alive until dropped.
async fn ensure_redis(
    config: &mut Config,
) -> anyhow::Result<Option<(RedisProcess, tempfile::TempDir)>> {
    let url = match &config.redis {
        RedisTarget::Single(url) => url.clone(),
        RedisTarget::Cluster(_) => {
            println!("redis:     using {}", config.redis_redacted());
            return Ok(None);
        }
    };
    if answers(&url).await {
        println!("redis:     using {}", config.redis_redacted());
        return Ok(None);
    }
    let dir = tempfile::Builder::new()
        .prefix("ferry-dev-redis-")
        .tempdir()?;
    let process = match RedisProcess::start(dir.path(), false) {
        Ok(p) => p,
        Err(EmbeddedRedisError::NotInstalled) => bail!(
            "no Redis at {} and redis-server is not installed: run `sudo apt-get install -y redis-server` (or set REDIS_URL)",
            config.redis_redacted()
        ),
        Err(e) => return Err(e.into()),
    };
    println!(
        "redis:     nothing at {}; started redis-server on {} (temporary, stopped on exit)",
        config.redis_redacted(),
        process.url()
    );
    config.redis = RedisTarget::Single(Secret::new(process.url()));
    Ok(Some((process, dir)))
}

async fn answers(url: &Secret) -> bool {
    let Ok(client) = connection::client(url) else {
        return false;
    };
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ping).await,
        Ok(Some(_))
    )
}

/// The copy-paste command: through cargo when `ferry dev` ran through cargo.
fn simulate_command(config: &Config, token_is_dev: bool) -> String {
    let program = if std::env::var_os("CARGO").is_some() {
        "cargo run -q -p ferry-cli --"
    } else {
        "ferry"
    };
    let mut cmd = format!("{program} simulate");
    if config.listen.to_string() != "127.0.0.1:5000" {
        cmd.push_str(&format!(" --url http://{}", config.listen));
    }
    if !token_is_dev {
        cmd.push_str(" --token \"$WECHAT_TOKEN\"");
    }
    cmd.push_str(" \"你好\"");
    cmd
}
