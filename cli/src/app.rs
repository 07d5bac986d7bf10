//! Building Ferry's parts from configuration: one place that knows how a
//! `Config` becomes a queue, an api state, a worker.

use std::sync::Arc;

use anyhow::{Context, bail};
use ferry_common::alerts::{self, AlertEvaluator};
use ferry_common::batch::Batches;
use ferry_common::config::{Config, DurableAck, ECHO_PROVIDER, vars};
use ferry_common::fleet::{ProviderGate, RateLimit, TokenCache};
use ferry_common::job::kinds;
use ferry_common::overview;
use ferry_common::queue::JobQueue;
use ferry_common::store::Store;
use ferry_common::wechat::MessageCrypt;
use ferry_common::{Keys, Secret, connection, schema, telemetry};
use ferry_worker::handler::Handlers;
use ferry_worker::handlers::wechat_reply::photo::Photos;
use ferry_worker::handlers::wechat_reply::{ReplyRules, UserLimit};
use ferry_worker::handlers::{
    BatchWebhookHandler, ChatCompletionHandler, Noop, WeChatReplyHandler, noop::NOOP,
    webhook_client::WebhookClient,
};
use ferry_worker::memory::{ConversationMemory, MemorySettings};
use ferry_worker::providers::{CallPolicy, HttpSettings, HttpSetupError, Router, build_client};
use ferry_worker::reply::{ConsoleSink, CustomerService, ReplyCounters, ReplySink, WeChatMedia};
use ferry_worker::{Worker, WorkerSettings};

use ferry_api::wechat::credentials::{CredentialStore, WeChatCredentials};

use crate::reload::Reloadable;

/// What the user sees when every provider fails for good (the default of
/// `FERRY_APOLOGY_TEXT`; it lives with the configuration).
pub use ferry_common::config::DEFAULT_APOLOGY;

/// Loads configuration and installs logging (and traces, when an OTLP
/// endpoint is set). Keep the guard alive: its drop flushes both.
pub fn init() -> anyhow::Result<(Config, ferry_common::telemetry::LogGuard)> {
    let config = Config::from_env()?;
    // The subcommand (`api`, `worker`, ...) names the service in traces.
    let role = std::env::args().nth(1).unwrap_or_else(|| "cli".to_owned());
    let guard = telemetry::init(&config.log, &role).map_err(anyhow::Error::msg)?;
    if let Some(report) = &config.secrets_file_report {
        report.log();
    }
    Ok((config, guard))
}

/// The deployment's key names, its queues split as configured.
pub fn keys(config: &Config) -> Keys {
    Keys::new(&config.prefix).with_partitions(config.queue.partitions.clone())
}

/// The queue engine over fresh connections.
pub fn job_queue(config: &Config, pool_size: usize) -> anyhow::Result<JobQueue> {
    Ok(JobQueue::new(
        Store::new(&config.redis, pool_size, keys(config))?,
        config.queue.retention,
    ))
}

/// Batches and API jobs on the queue's store.
pub fn batches(config: &Config, queue: &JobQueue) -> Batches {
    Batches::new(queue.store().clone(), config.queue.retention)
}

/// Refuses to go on unless Redis holds this binary's schema.
pub async fn require_schema(queue: &JobQueue, config: &Config) -> anyhow::Result<()> {
    let unreachable = || format!("Redis at {} is unreachable", config.redis_redacted());
    check_redis_mode(config).await?;
    let mut conn = queue.store().conn().await.with_context(unreachable)?;
    schema::require_current(&mut conn, queue.keys()).await?;
    // Streams and groups of partitions added since the last migration, and
    // the fleet's record of the most partitions ever (what workers drain).
    schema::ensure_groups(&mut conn, queue.keys()).await?;
    queue.refresh_partitions().await?;
    Ok(())
}

/// Stops start-up, with one line naming the variable, when the Redis found
/// is not the kind configured (a cluster node in `REDIS_URL`, a plain Redis
/// in `REDIS_CLUSTER_NODES`).
pub async fn check_redis_mode(config: &Config) -> anyhow::Result<()> {
    match connection::check_mode(&config.redis).await {
        Err(connection::ConnectionError::Mode(line)) => bail!(line),
        other => {
            other.with_context(|| format!("Redis at {} is unreachable", config.redis_redacted()))
        }
    }
}

/// The WeChat token and AES key the api checks pushes with (at start-up and
/// on every SIGHUP).
pub fn wechat_credentials(config: &Config) -> anyhow::Result<WeChatCredentials> {
    let Some(token) = config.wechat.token.clone() else {
        bail!(
            "{}: required by the api (the token set in the official account's server configuration)",
            vars::WECHAT_TOKEN
        );
    };
    let crypt = match (&config.wechat.encoding_aes_key, &config.wechat.app_id) {
        (Some(key), Some(app_id)) => Some(
            MessageCrypt::new(key.expose(), app_id)
                .map_err(|e| anyhow::anyhow!("{}: {e}", vars::WECHAT_ENCODING_AES_KEY))?,
        ),
        (Some(_), None) => bail!(
            "{}: required with {}",
            vars::WECHAT_APP_ID,
            vars::WECHAT_ENCODING_AES_KEY
        ),
        _ => None,
    };
    Ok(WeChatCredentials { token, crypt })
}

/// The api's shared state.
pub fn api_state(
    config: &Config,
    queue: JobQueue,
    dev_outbox: bool,
) -> anyhow::Result<ferry_api::AppState> {
    Ok(ferry_api::AppState::new(shared_state(
        config, queue, dev_outbox,
    )?))
}

/// What [`api_state`] shares, before it is shared: `ferry dev` adds its
/// one-time sign-in here (nothing else ever does).
pub fn shared_state(
    config: &Config,
    queue: JobQueue,
    dev_outbox: bool,
) -> anyhow::Result<ferry_api::SharedState> {
    let credentials = wechat_credentials(config)?;
    let ingress = &config.ingress;
    let spool =
        ferry_api::Spool::open(&ingress.spool_dir, ingress.spool_max_bytes).with_context(|| {
            format!(
                "{}: cannot write the spool directory {}",
                vars::FERRY_SPOOL_DIR,
                ingress.spool_dir.display()
            )
        })?;
    let jobs = Arc::new(jobs_api(config, &queue));
    let queue_for_ops = queue.clone();
    let queue_for_passive = queue.store().clone();
    Ok(ferry_api::SharedState {
        batcher: Arc::new(ferry_api::EnqueueBatcher::with_durability(
            queue.clone(),
            match ingress.durable_ack {
                DurableAck::None => ferry_api::Durability::Primary,
                DurableAck::Replica => ferry_api::Durability::Replica {
                    wait: ingress.ack_budget.min(connection::REPLICA_WAIT),
                },
            },
        )),
        queue,
        wechat: Arc::new(ferry_api::WeChatIngress {
            credentials: CredentialStore::new(credentials),
            dedup_ttl: config.queue.dedup_ttl,
            ack_budget: ingress.ack_budget,
            max_skew: ingress.max_skew,
            // A photo becomes a job only if a provider can see it and the
            // worker can download it (`ferry dev`'s console mode cannot).
            vision: !dev_outbox && config.providers.iter().any(|p| p.vision_model.is_some()),
            texts: ferry_api::ReplyTexts {
                welcome: ingress.welcome.clone(),
                unsupported: ingress.unsupported_reply.clone(),
                voice_unrecognized: ingress.voice_unrecognized_reply.clone(),
            },
        }),
        max_body_bytes: config.max_body_bytes,
        dev_outbox,
        spool: Arc::new(spool),
        clients: Arc::new(ferry_api::ClientIpResolver::new(
            ingress.trusted_proxies.clone(),
        )),
        limiter: ingress
            .ip_rate
            .as_ref()
            .map(|rate| Arc::new(ferry_api::IpLimiter::from_config(rate))),
        security: Default::default(),
        ops: Arc::new(ops(config, queue_for_ops)),
        alerts: Arc::new(AlertEvaluator::new(
            config.alerts,
            Arc::new(alerts::SystemClock),
        )),
        auth: Arc::new(ferry_api::Authenticator::new(config.api_tokens.clone())),
        jobs,
        admin: admin_settings(config),
        passive: Arc::new(ferry_api::wechat::hold::PassiveIngress::new(
            queue_for_passive,
            config.wechat.reply_mode,
            config.wechat.passive_wait,
            config.reply.passive_pending_text.clone(),
            ingress.ack_budget,
        )),
        dev_sign_in: None,
    })
}

/// The jobs and batches API's part of the api state.
pub fn jobs_api(config: &Config, queue: &JobQueue) -> ferry_api::JobsApi {
    let api = &config.jobs_api;
    ferry_api::JobsApi {
        batches: batches(config, queue),
        rules: ferry_common::batch::line::Rules::new(&config.providers),
        config: api.clone(),
        submissions: api.submissions_per_minute.map(|per_minute| {
            RateLimit::new(queue.store().clone(), per_minute, api.submissions_burst)
        }),
    }
}

/// What the dashboard lists besides Redis's state: the gated providers
/// with their limits, and the other limiters' settings.
fn admin_settings(config: &Config) -> ferry_api::admin::AdminSettings {
    let ip = match &config.ingress.ip_rate {
        Some(r) => format!("{}/s per client IP, burst {}", r.per_second, r.burst),
        None => "off".into(),
    };
    let user = match config.reply.user_limit {
        Some(l) => format!("{}/min per WeChat user, burst {}", l.per_minute, l.burst),
        None => "off".into(),
    };
    let a = &config.alerts;
    ferry_api::admin::AdminSettings {
        providers: overview::gated_providers(config),
        limits: vec![
            (format!("/wechat ({})", vars::FERRY_IP_RATE_LIMIT), ip),
            (
                format!("AI answers ({})", vars::FERRY_USER_MESSAGES_PER_MINUTE),
                user,
            ),
            (
                "alert thresholds".into(),
                format!(
                    "error ratio {}, p95 response time {} s, {} requests/min",
                    a.error_rate,
                    a.response_time.as_secs_f64(),
                    a.requests_per_minute
                ),
            ),
        ],
    }
}

/// The operations routes' state (`/metrics`, `/healthz`, `/readyz`): the
/// api's and a worker admin port's.
pub fn ops(config: &Config, queue: JobQueue) -> ferry_api::ops::Ops {
    let providers = overview::gated_providers(config)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    ferry_api::ops::Ops::new(queue, providers)
}

/// Where the worker sends replies.
pub enum Replies {
    /// WeChat's customer-service API (needs WECHAT_APP_ID and _SECRET).
    WeChat,
    /// Print them (and keep them for `ferry simulate`).
    Console,
}

/// A worker with every handler, ready to run.
pub fn worker(
    config: &Config,
    queue: JobQueue,
    replies: Replies,
    settings: WorkerSettings,
) -> anyhow::Result<Worker> {
    Ok(worker_with_reload(config, queue, replies, settings)?.0)
}

/// [`worker`], with what SIGHUP may change in it while it runs (its
/// provider keys; see [`crate::reload`]).
pub fn worker_with_reload(
    config: &Config,
    queue: JobQueue,
    replies: Replies,
    settings: WorkerSettings,
) -> anyhow::Result<(Worker, Reloadable)> {
    worker_counting(config, queue, replies, settings, ReplyCounters::new())
}

/// [`worker_with_reload`], counting what reply delivery does (sends, WeChat
/// errcodes, token fetches, apologies, limit notices) in `counters`, which
/// the caller keeps to read (a `/metrics` endpoint, a test).
pub fn worker_counting(
    config: &Config,
    queue: JobQueue,
    replies: Replies,
    settings: WorkerSettings,
    counters: ReplyCounters,
) -> anyhow::Result<(Worker, Reloadable)> {
    if config.providers.is_empty() {
        bail!(
            "{}: no AI provider is configured; set a key such as DEEPSEEK_API_KEY (or FERRY_PROVIDERS=echo to test)",
            vars::FERRY_PROVIDERS
        );
    }
    let http = build_client(&HttpSettings::default())?;
    let providers_http = provider_client(config)?;
    // Photos are downloaded from WeChat with the same token as the replies,
    // so only with WeChat credentials (not in `ferry dev`'s console mode).
    let (sink, photos) = match replies {
        Replies::Console => (
            ReplySink::Console(ConsoleSink::new(queue.store().clone())),
            None,
        ),
        Replies::WeChat => {
            let (Some(app_id), Some(secret)) = (&config.wechat.app_id, &config.wechat.app_secret)
            else {
                bail!(
                    "{} and {}: required for the worker to send replies through WeChat (`ferry dev` prints them instead)",
                    vars::WECHAT_APP_ID,
                    vars::WECHAT_APP_SECRET
                );
            };
            let tokens = TokenCache::new(
                queue.store().clone(),
                http.clone(),
                config.wechat.api_base.clone(),
                app_id.clone(),
                secret.clone(),
                config.wechat.token_source,
            )
            .counting_fetches_in(counters.token_fetch_counter());
            let photos = Photos {
                media: WeChatMedia::new(
                    http.clone(),
                    config.wechat.api_base.clone(),
                    tokens.clone(),
                ),
                prompt: config.reply.image_prompt.clone(),
                failed_text: config.reply.image_failed_text.clone(),
            };
            let sink = ReplySink::CustomerService(CustomerService::new(
                http.clone(),
                config.wechat.api_base.clone(),
                tokens,
                counters.clone(),
            ));
            (sink, Some(photos))
        }
    };
    // Every real provider's calls pass the fleet's gate; the built-in echo
    // provider needs no limits.
    let router = Router::from_configs(&config.providers, &providers_http, call_policy(config))
        .with_gates(|name| {
            (name != ECHO_PROVIDER)
                .then(|| ProviderGate::new(queue.store(), name, config.gate(name)))
        })
        .with_history(Arc::clone(queue.store().history()));
    // Every key of each provider, used in turn; SIGHUP replaces them.
    let reloadable = Reloadable::for_worker(config, &router);
    let memory = ConversationMemory::new(
        queue.store().clone(),
        MemorySettings {
            turns: config.ai.memory_turns,
            ttl: config.ai.memory_ttl,
            max_prompt_chars: config.ai.max_prompt_chars,
        },
    );
    let batches = batches(config, &queue);
    let chat = ChatCompletionHandler {
        batches: batches.clone(),
        router: router.clone(),
    };
    let webhook = BatchWebhookHandler {
        batches,
        client: WebhookClient::new(config.jobs_api.webhook_targets())?,
        secret: config.jobs_api.webhook_secret.clone(),
    };
    let wechat = WeChatReplyHandler {
        queue: queue.clone(),
        router,
        sink,
        memory,
        system_prompt: config.system_prompt.clone(),
        apology: config.reply.apology.clone(),
        total_budget: config.ai.total_budget,
        typing_indicator: config.reply.typing_indicator,
        user_limit: config.reply.user_limit.map(|l| UserLimit {
            limit: RateLimit::new(queue.store().clone(), l.per_minute, l.burst),
            notice: config.reply.user_limit_text.clone(),
        }),
        counters,
        rules: ReplyRules::new(
            queue.store(),
            config.wechat.reply_mode,
            config.reply.continue_keyword.clone(),
            config.reply.continue_text.clone(),
        ),
        photos,
    };
    let handlers = Handlers::new()
        .register(kinds::WECHAT_REPLY, wechat)
        .register(kinds::CHAT_COMPLETION, chat)
        .register(kinds::BATCH_WEBHOOK, webhook)
        .register(NOOP, Noop);
    let mut settings = settings;
    settings.replica_wait = match config.ingress.durable_ack {
        DurableAck::None => None,
        DurableAck::Replica => Some(connection::REPLICA_WAIT),
    };
    let worker = Worker::new(queue, handlers, settings);
    Ok((worker, reloadable))
}

/// The client every provider call goes through: rustls, verified, with the
/// configured timeouts and extra CA. WeChat's calls use their own client.
pub fn provider_client(config: &Config) -> anyhow::Result<reqwest::Client> {
    let settings = HttpSettings {
        connect_timeout: config.ai.connect_timeout,
        request_timeout: config.ai.request_timeout,
        extra_ca_pem: config.ai.extra_ca_file.clone(),
    };
    build_client(&settings).map_err(|e| match e {
        HttpSetupError::ReadCa { .. } | HttpSetupError::BadCa { .. } => {
            anyhow::anyhow!("{}: {e}", vars::FERRY_EXTRA_CA_FILE)
        }
        HttpSetupError::Build(_) => e.into(),
    })
}

/// How hard the router tries each provider, and for how long in all.
pub fn call_policy(config: &Config) -> CallPolicy {
    CallPolicy {
        max_attempts_per_provider: config.ai.attempts_per_provider,
        total_budget: config.ai.total_budget,
        ..CallPolicy::default()
    }
}

/// The dev token when `WECHAT_TOKEN` is unset (`ferry dev`, `ferry simulate`).
pub const DEV_WECHAT_TOKEN: &str = "ferry-dev";

pub fn dev_token() -> Secret {
    Secret::new(DEV_WECHAT_TOKEN)
}
