//! Ferry's configuration: environment first, then an optional `ferry.toml`.
//!
//! Every variable name lives in [`vars`] and nowhere else. Loading either
//! yields a complete, validated [`Config`] or one [`ConfigError`] naming the
//! variable at fault, so nothing ever starts half-configured. Secrets are
//! wrapped in [`Secret`] the moment they are read.
//!
//! `ferry.toml` (path in `FERRY_CONFIG`) accepts the same names as the
//! environment as top-level keys (any case), plus `[providers.<name>]` tables
//! for per-provider settings and further OpenAI-compatible endpoints.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::api_tokens::{ApiTokens, TokenConfigError};
pub use crate::connection::RedisTarget;
use crate::fleet::{BreakerSettings, GateSettings};
pub use crate::keys::Partitions;
use crate::secret::Secret;
use crate::secrets_file::Secrets;

pub mod vars;

mod ip_range;
mod load;
mod providers;
mod sources;
#[cfg(test)]
mod tests;

pub use ip_range::IpRange;
pub use providers::{ECHO_PROVIDER, ProviderConfig, ProviderKind};
use sources::Sources;

/// A configuration value that cannot be used: start-up stops with this line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    /// The variable (or ferry.toml key) at fault.
    pub var: String,
    /// What is wrong and what is expected. Never contains a secret value.
    pub reason: String,
}

impl ConfigError {
    pub fn new(var: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WeChatConfig {
    pub app_id: Option<String>,
    pub app_secret: Option<Secret>,
    pub token: Option<Secret>,
    pub encoding_aes_key: Option<Secret>,
    pub api_base: String,
    /// Where the fleet's access token comes from.
    pub token_source: crate::fleet::TokenSource,
    /// How answers reach users.
    pub reply_mode: ReplyMode,
    /// Passive mode: how long one of WeChat's tries is held for the answer
    /// (WeChat gives up on a try after 5 s).
    pub passive_wait: Duration,
}

impl WeChatConfig {
    /// Whether Ferry can call WeChat's APIs (token and customer service).
    pub fn can_send(&self) -> bool {
        self.app_id.is_some() && self.app_secret.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub file: Option<PathBuf>,
    /// `None`: text on a terminal, JSON otherwise.
    pub format: Option<LogFormat>,
}

/// Alert thresholds kept from the checklist Ferry replaces.
#[derive(Debug, Clone, Copy)]
pub struct AlertThresholds {
    pub error_rate: f64,
    pub response_time: Duration,
    pub requests_per_minute: u32,
}

/// Queue engine and worker runtime settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub concurrency: usize,
    /// An entry idle this long is taken over by another worker.
    pub visibility_timeout: Duration,
    /// How long finished job records are kept.
    pub retention: Duration,
    /// How long a WeChat message id is remembered for dedup.
    pub dedup_ttl: Duration,
    pub fetch_batch: usize,
    pub fetch_block: Duration,
    /// A job delivered more often than this is dead-lettered.
    pub max_deliveries: u32,
    pub shutdown_grace: Duration,
    /// Share of a worker's slots reserved for the batch queue.
    pub batch_min_share: f64,
    /// How many partitions each queue is split into.
    pub partitions: Partitions,
}

/// How the worker calls the AI providers and what it remembers of a
/// conversation.
#[derive(Debug, Clone)]
pub struct AiConfig {
    /// Time to connect to a provider (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time for one attempt on one provider, from sending to the last byte.
    pub request_timeout: Duration,
    /// A PEM file of extra CA certificates to trust (a private gateway), on
    /// top of the built-in web roots. Verification is never turned off.
    pub extra_ca_file: Option<PathBuf>,
    /// Attempts on one provider within one call, the first included.
    pub attempts_per_provider: u32,
    /// Time from a message's arrival to its answer: every job attempt, every
    /// provider call and every wait share it.
    pub total_budget: Duration,
    /// Turns (a message and its answer) remembered per user; 0: none.
    pub memory_turns: usize,
    /// How long a silent user's conversation is remembered.
    pub memory_ttl: Duration,
    /// Largest prompt (system + history + message), in characters; the
    /// oldest turns are left out to fit.
    pub max_prompt_chars: usize,
}

/// What WeChat users see of the worker besides the answers: the typing
/// indicator, the apology, and the per-user message limit.
#[derive(Debug, Clone)]
pub struct ReplyConfig {
    /// Show "typing..." while the provider works (best effort).
    pub typing_indicator: bool,
    /// Sent once when the AI fails for good, instead of silence.
    pub apology: String,
    /// Messages per minute per WeChat user; `None` when turned off.
    pub user_limit: Option<UserLimit>,
    /// The one reply a user over the limit gets per window.
    pub user_limit_text: String,
    /// A message equal to this (trimmed) sends the next kept parts of an
    /// answer that did not fit WeChat's quota, without asking the AI.
    pub continue_keyword: String,
    /// Appended to the last part that fits when more is kept.
    pub continue_text: String,
    /// Passive mode: the reply to WeChat's last try when the answer is not
    /// ready; the answer waits for the user's next message.
    pub passive_pending_text: String,
    /// The question asked of a vision model with a bare photo.
    pub image_prompt: String,
    /// What a user gets when their photo cannot be read (too large, not an
    /// image, expired).
    pub image_failed_text: String,
}

/// How answers reach WeChat users (`WECHAT_REPLY_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplyMode {
    /// Acknowledge at once; answer through the customer-service API.
    #[default]
    CustomerService,
    /// Hold WeChat's request and answer in the response (accounts without
    /// the customer-service API).
    Passive,
    /// Customer service until WeChat answers 48001, then passive for the
    /// account, fleet-wide.
    Auto,
}

/// What `继续` ("continue") is, by default.
pub const DEFAULT_CONTINUE_KEYWORD: &str = "继续";

/// Ends the last part sent when more of the answer is kept.
pub const DEFAULT_CONTINUE_TEXT: &str = "（回复「继续」查看后续）";

/// The last try's reply in passive mode when the answer is not ready.
pub const DEFAULT_PASSIVE_PENDING_TEXT: &str =
    "回答还在生成中，请稍后回复任意内容（如「继续」）查看。";

/// Asked of a vision model with a photo.
pub const DEFAULT_IMAGE_PROMPT: &str = "请描述这张图片，并回答其中可能包含的问题。";

/// A photo that cannot be read.
pub const DEFAULT_IMAGE_FAILED_TEXT: &str = "抱歉，这张图片无法读取，请换一张图片或用文字描述。";

/// A fleet-wide GCRA limit on each WeChat user's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLimit {
    pub per_minute: u32,
    /// Messages a user may send back to back.
    pub burst: u32,
}

/// What the user sees when the AI fails for good.
pub const DEFAULT_APOLOGY: &str = "抱歉，AI 暂时无法回答，请稍后再试。";

/// What a user over the per-user limit sees, once per window.
pub const DEFAULT_USER_LIMIT_TEXT: &str = "您的消息有点多，请稍等一分钟再发，我会继续为您解答。";

/// When the ingress may tell WeChat a push is taken (`FERRY_DURABLE_ACK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurableAck {
    /// Once the primary has it: a failover may lose the last writes.
    None,
    /// Once one replica has it too (`WAIT 1`, within the ack budget; the
    /// push is spooled when the budget runs out).
    Replica,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// One Redis or a cluster (`REDIS_URL`, `REDIS_CLUSTER_NODES`).
    pub redis: RedisTarget,
    pub prefix: String,
    pub listen: SocketAddr,
    /// Where a worker serves `/metrics`, `/healthz`, `/readyz`; `None`: off
    /// (several workers on one host would fight over one default port).
    pub worker_admin_listen: Option<SocketAddr>,
    pub providers: Vec<ProviderConfig>,
    pub system_prompt: Option<String>,
    pub ai: AiConfig,
    pub reply: ReplyConfig,
    pub wechat: WeChatConfig,
    pub secure_config_password: Option<Secret>,
    pub secrets_file: Option<PathBuf>,
    pub log: LogConfig,
    pub alerts: AlertThresholds,
    pub queue: QueueConfig,
    pub max_body_bytes: usize,
    pub ingress: IngressConfig,
    pub jobs_api: JobsApiConfig,
    /// Fleet-wide limits and breaker settings per provider of the chain.
    pub gates: HashMap<String, GateSettings>,
    /// Every key of each provider of the chain, to be used in turn
    /// (`DEEPSEEK_API_KEY=k1,k2`, or an array in the secrets file); the
    /// first is also `ProviderConfig::api_key`.
    pub provider_keys: HashMap<String, Vec<Secret>>,
    /// What the secrets file (`FERRY_SECRETS_FILE`) supplied, by name.
    pub secrets_file_report: Option<SecretsFileReport>,
    /// Bearer tokens of the jobs, batch and admin APIs (hashes only).
    pub api_tokens: ApiTokens,
}

/// Which names the secrets file supplied and which the environment
/// overrode: logged once at start-up and on reload, names only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretsFileReport {
    pub path: PathBuf,
    /// Names whose value comes from the file.
    pub from_file: Vec<String>,
    /// Names in the file that are also set in the environment, which wins.
    pub overridden_by_env: Vec<String>,
    /// Names in the file that Ferry does not read (`ferry secrets check`
    /// fails on them).
    pub ignored: Vec<String>,
}

impl SecretsFileReport {
    /// One info line (and a warning for ignored names). Never a value.
    pub fn log(&self) {
        tracing::info!(
            path = %self.path.display(),
            from_file = %self.from_file.join(","),
            overridden_by_environment = %self.overridden_by_env.join(","),
            "secrets file loaded; the environment wins over it"
        );
        if !self.ignored.is_empty() {
            tracing::warn!(
                path = %self.path.display(),
                names = %self.ignored.join(","),
                "the secrets file sets names Ferry does not read; they are ignored"
            );
        }
    }
}

/// The api's WeChat ingress: how soon it must acknowledge, where it keeps
/// messages Redis could not take in time, and how it defends itself.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Time Redis gets to take a message before it is spooled instead.
    pub ack_budget: Duration,
    /// Whether WeChat is answered only once a replica has the push too.
    pub durable_ack: DurableAck,
    /// Directory of the local spool (one file per api process).
    pub spool_dir: PathBuf,
    /// Bytes one api process may hold spooled before it answers 503.
    pub spool_max_bytes: u64,
    /// Largest accepted distance between a push's `timestamp` and now.
    pub max_skew: Duration,
    /// Per-client-IP limit on `/wechat`; `None` when turned off.
    pub ip_rate: Option<IpRateLimit>,
    /// Proxies whose `X-Forwarded-For` / `X-Real-IP` are believed.
    pub trusted_proxies: Vec<IpRange>,
    /// Passive reply to a new follower (`subscribe`).
    pub welcome: String,
    /// Passive reply to images and other message types the AI cannot read.
    pub unsupported_reply: String,
    /// Passive reply to a voice message without speech recognition.
    pub voice_unrecognized_reply: String,
}

/// The jobs and batches API: sizes, per-API-key quotas, webhooks.
#[derive(Debug, Clone)]
pub struct JobsApiConfig {
    /// Largest batch body in bytes (413 above).
    pub batch_max_bytes: u64,
    /// Most lines in one batch.
    pub batch_max_lines: u64,
    /// Jobs one API key may have queued or running (0: no limit).
    pub jobs_in_flight: u32,
    /// Submissions (jobs or batches) per minute per API key; `None`: no
    /// limit.
    pub submissions_per_minute: Option<u32>,
    /// Submissions one API key may make back to back.
    pub submissions_burst: u32,
    /// How long an `Idempotency-Key` names its job.
    pub idempotency_ttl: Duration,
    /// Signs completion webhooks; without it a batch may not ask for one.
    pub webhook_secret: Option<Secret>,
    /// Networks a webhook may reach besides public addresses
    /// (`crate::batch::webhook_target`).
    pub webhook_allow: Vec<IpRange>,
}

impl JobsApiConfig {
    /// Where completion webhooks may go.
    pub fn webhook_targets(&self) -> crate::batch::webhook_target::WebhookTargets {
        crate::batch::webhook_target::WebhookTargets::new(self.webhook_allow.clone())
    }
}

/// A token bucket per client IP.
#[derive(Debug, Clone)]
pub struct IpRateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once on top of the sustained rate.
    pub burst: u32,
    /// Clients never limited (WeChat's callback IPs belong here).
    pub allow: Vec<IpRange>,
}

/// Replaces the password of a URL (`redis://user:pw@host`) with `***`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "[unparsable url]".into(),
    }
}
