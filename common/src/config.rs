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
use crate::fleet::{BreakerSettings, GateSettings};
use crate::secret::Secret;
use crate::secrets_file::Secrets;

/// Environment variable names: the one place each is spelled.
pub mod vars {
    pub const FERRY_CONFIG: &str = "FERRY_CONFIG";
    pub const REDIS_URL: &str = "REDIS_URL";
    pub const FERRY_PREFIX: &str = "FERRY_PREFIX";
    pub const FERRY_LISTEN: &str = "FERRY_LISTEN";
    /// A worker's admin port (`/metrics`, `/healthz`, `/readyz`); unset: none.
    pub const FERRY_WORKER_ADMIN_LISTEN: &str = "FERRY_WORKER_ADMIN_LISTEN";
    pub const FERRY_PROVIDERS: &str = "FERRY_PROVIDERS";
    pub const OPENAI_API_KEY: &str = "OPENAI_API_KEY";
    pub const WECHAT_APP_ID: &str = "WECHAT_APP_ID";
    pub const WECHAT_APP_SECRET: &str = "WECHAT_APP_SECRET";
    pub const WECHAT_TOKEN: &str = "WECHAT_TOKEN";
    pub const WECHAT_ENCODING_AES_KEY: &str = "WECHAT_ENCODING_AES_KEY";
    pub const WECHAT_API_BASE: &str = "WECHAT_API_BASE";
    pub const SECURE_CONFIG_PASSWORD: &str = "SECURE_CONFIG_PASSWORD";
    pub const FERRY_SECRETS_FILE: &str = "FERRY_SECRETS_FILE";
    pub const LOG_LEVEL: &str = "LOG_LEVEL";
    pub const LOG_FILE: &str = "LOG_FILE";
    pub const LOG_FORMAT: &str = "LOG_FORMAT";
    pub const API_ERROR_RATE_THRESHOLD: &str = "API_ERROR_RATE_THRESHOLD";
    pub const RESPONSE_TIME_THRESHOLD: &str = "RESPONSE_TIME_THRESHOLD";
    pub const RATE_LIMIT_THRESHOLD: &str = "RATE_LIMIT_THRESHOLD";
    pub const FERRY_WORKER_CONCURRENCY: &str = "FERRY_WORKER_CONCURRENCY";
    pub const FERRY_VISIBILITY_TIMEOUT: &str = "FERRY_VISIBILITY_TIMEOUT";
    pub const FERRY_JOB_RETENTION: &str = "FERRY_JOB_RETENTION";
    pub const FERRY_DEDUP_TTL: &str = "FERRY_DEDUP_TTL";
    pub const FERRY_FETCH_BATCH: &str = "FERRY_FETCH_BATCH";
    pub const FERRY_FETCH_BLOCK_MS: &str = "FERRY_FETCH_BLOCK_MS";
    pub const FERRY_MAX_DELIVERIES: &str = "FERRY_MAX_DELIVERIES";
    pub const FERRY_SHUTDOWN_GRACE: &str = "FERRY_SHUTDOWN_GRACE";
    pub const FERRY_BATCH_MIN_SHARE: &str = "FERRY_BATCH_MIN_SHARE";
    pub const FERRY_SYSTEM_PROMPT: &str = "FERRY_SYSTEM_PROMPT";
    pub const FERRY_EXTRA_CA_FILE: &str = "FERRY_EXTRA_CA_FILE";
    pub const FERRY_PROVIDER_CONNECT_TIMEOUT: &str = "FERRY_PROVIDER_CONNECT_TIMEOUT";
    pub const FERRY_PROVIDER_TIMEOUT: &str = "FERRY_PROVIDER_TIMEOUT";
    pub const FERRY_PROVIDER_ATTEMPTS: &str = "FERRY_PROVIDER_ATTEMPTS";
    pub const FERRY_AI_TOTAL_BUDGET: &str = "FERRY_AI_TOTAL_BUDGET";
    pub const FERRY_MEMORY_TURNS: &str = "FERRY_MEMORY_TURNS";
    pub const FERRY_MEMORY_TTL: &str = "FERRY_MEMORY_TTL";
    pub const FERRY_MAX_PROMPT_CHARS: &str = "FERRY_MAX_PROMPT_CHARS";
    /// `stable` (`/cgi-bin/stable_token`) or `classic` (`/cgi-bin/token`).
    pub const WECHAT_TOKEN_ENDPOINT: &str = "WECHAT_TOKEN_ENDPOINT";
    pub const FERRY_TYPING_INDICATOR: &str = "FERRY_TYPING_INDICATOR";
    pub const FERRY_APOLOGY_TEXT: &str = "FERRY_APOLOGY_TEXT";
    pub const FERRY_USER_MESSAGES_PER_MINUTE: &str = "FERRY_USER_MESSAGES_PER_MINUTE";
    pub const FERRY_USER_BURST: &str = "FERRY_USER_BURST";
    pub const FERRY_USER_LIMIT_TEXT: &str = "FERRY_USER_LIMIT_TEXT";
    pub const FERRY_MAX_BODY_BYTES: &str = "FERRY_MAX_BODY_BYTES";
    pub const FERRY_ACK_BUDGET_MS: &str = "FERRY_ACK_BUDGET_MS";
    pub const FERRY_SPOOL_DIR: &str = "FERRY_SPOOL_DIR";
    pub const FERRY_SPOOL_MAX_BYTES: &str = "FERRY_SPOOL_MAX_BYTES";
    pub const FERRY_WECHAT_MAX_SKEW: &str = "FERRY_WECHAT_MAX_SKEW";
    pub const FERRY_IP_RATE_LIMIT: &str = "FERRY_IP_RATE_LIMIT";
    pub const FERRY_IP_RATE_BURST: &str = "FERRY_IP_RATE_BURST";
    pub const FERRY_IP_RATE_ALLOW: &str = "FERRY_IP_RATE_ALLOW";
    pub const FERRY_TRUSTED_PROXIES: &str = "FERRY_TRUSTED_PROXIES";
    pub const FERRY_WECHAT_WELCOME: &str = "FERRY_WECHAT_WELCOME";
    pub const FERRY_WECHAT_UNSUPPORTED_REPLY: &str = "FERRY_WECHAT_UNSUPPORTED_REPLY";
    pub const FERRY_WECHAT_VOICE_UNRECOGNIZED_REPLY: &str = "FERRY_WECHAT_VOICE_UNRECOGNIZED_REPLY";
    /// Bearer tokens of the jobs, batch and admin APIs, as hashes:
    /// `name:scopes:sha256hex`, comma-separated (or an array in a file).
    pub const FERRY_API_TOKENS: &str = "FERRY_API_TOKENS";
    /// SHA-256 (hex) of the admin token: name `admin`, every scope.
    pub const FERRY_ADMIN_TOKEN: &str = "FERRY_ADMIN_TOKEN";
    pub const FERRY_BATCH_MAX_BYTES: &str = "FERRY_BATCH_MAX_BYTES";
    pub const FERRY_BATCH_MAX_LINES: &str = "FERRY_BATCH_MAX_LINES";
    pub const FERRY_API_JOBS_IN_FLIGHT: &str = "FERRY_API_JOBS_IN_FLIGHT";
    pub const FERRY_API_SUBMISSIONS_PER_MINUTE: &str = "FERRY_API_SUBMISSIONS_PER_MINUTE";
    pub const FERRY_API_SUBMISSIONS_BURST: &str = "FERRY_API_SUBMISSIONS_BURST";
    pub const FERRY_API_IDEMPOTENCY_TTL: &str = "FERRY_API_IDEMPOTENCY_TTL";
    /// Key that signs batch completion webhooks (HMAC-SHA256).
    pub const FERRY_WEBHOOK_SECRET: &str = "FERRY_WEBHOOK_SECRET";
    /// Private networks completion webhooks may reach (public addresses
    /// always may).
    pub const FERRY_WEBHOOK_ALLOW_NETWORKS: &str = "FERRY_WEBHOOK_ALLOW_NETWORKS";
    /// `ferry batch`: the api's URL and the bearer token to call it with.
    pub const FERRY_API_URL: &str = "FERRY_API_URL";
    pub const FERRY_API_TOKEN: &str = "FERRY_API_TOKEN";
    /// `ferry secrets rotate`: the new password (else it is asked for).
    pub const FERRY_NEW_SECURE_CONFIG_PASSWORD: &str = "FERRY_NEW_SECURE_CONFIG_PASSWORD";

    /// Every name above (a test keeps it complete), plus the per-provider
    /// `<NAME>_...` variables, which are recognized by [`is_known`].
    pub const ALL: &[&str] = &[
        FERRY_CONFIG,
        REDIS_URL,
        FERRY_PREFIX,
        FERRY_LISTEN,
        FERRY_WORKER_ADMIN_LISTEN,
        FERRY_PROVIDERS,
        OPENAI_API_KEY,
        WECHAT_APP_ID,
        WECHAT_APP_SECRET,
        WECHAT_TOKEN,
        WECHAT_ENCODING_AES_KEY,
        WECHAT_API_BASE,
        SECURE_CONFIG_PASSWORD,
        FERRY_SECRETS_FILE,
        LOG_LEVEL,
        LOG_FILE,
        LOG_FORMAT,
        API_ERROR_RATE_THRESHOLD,
        RESPONSE_TIME_THRESHOLD,
        RATE_LIMIT_THRESHOLD,
        FERRY_WORKER_CONCURRENCY,
        FERRY_VISIBILITY_TIMEOUT,
        FERRY_JOB_RETENTION,
        FERRY_DEDUP_TTL,
        FERRY_FETCH_BATCH,
        FERRY_FETCH_BLOCK_MS,
        FERRY_MAX_DELIVERIES,
        FERRY_SHUTDOWN_GRACE,
        FERRY_BATCH_MIN_SHARE,
        FERRY_SYSTEM_PROMPT,
        FERRY_EXTRA_CA_FILE,
        FERRY_PROVIDER_CONNECT_TIMEOUT,
        FERRY_PROVIDER_TIMEOUT,
        FERRY_PROVIDER_ATTEMPTS,
        FERRY_AI_TOTAL_BUDGET,
        FERRY_MEMORY_TURNS,
        FERRY_MEMORY_TTL,
        FERRY_MAX_PROMPT_CHARS,
        WECHAT_TOKEN_ENDPOINT,
        FERRY_TYPING_INDICATOR,
        FERRY_APOLOGY_TEXT,
        FERRY_USER_MESSAGES_PER_MINUTE,
        FERRY_USER_BURST,
        FERRY_USER_LIMIT_TEXT,
        FERRY_MAX_BODY_BYTES,
        FERRY_ACK_BUDGET_MS,
        FERRY_SPOOL_DIR,
        FERRY_SPOOL_MAX_BYTES,
        FERRY_WECHAT_MAX_SKEW,
        FERRY_IP_RATE_LIMIT,
        FERRY_IP_RATE_BURST,
        FERRY_IP_RATE_ALLOW,
        FERRY_TRUSTED_PROXIES,
        FERRY_WECHAT_WELCOME,
        FERRY_WECHAT_UNSUPPORTED_REPLY,
        FERRY_WECHAT_VOICE_UNRECOGNIZED_REPLY,
        FERRY_API_TOKENS,
        FERRY_ADMIN_TOKEN,
        FERRY_BATCH_MAX_BYTES,
        FERRY_BATCH_MAX_LINES,
        FERRY_API_JOBS_IN_FLIGHT,
        FERRY_API_SUBMISSIONS_PER_MINUTE,
        FERRY_API_SUBMISSIONS_BURST,
        FERRY_API_IDEMPOTENCY_TTL,
        FERRY_WEBHOOK_SECRET,
        FERRY_WEBHOOK_ALLOW_NETWORKS,
        FERRY_API_URL,
        FERRY_API_TOKEN,
        FERRY_NEW_SECURE_CONFIG_PASSWORD,
    ];

    /// Names the secrets file may not set: they say where and how to read it.
    pub const NOT_IN_SECRETS_FILE: &[&str] = &[
        FERRY_CONFIG,
        FERRY_SECRETS_FILE,
        SECURE_CONFIG_PASSWORD,
        FERRY_NEW_SECURE_CONFIG_PASSWORD,
    ];

    /// Per-provider variables: `<NAME>_<suffix>`.
    const PROVIDER_SUFFIXES: &[&str] = &[
        "_API_KEY",
        "_BASE_URL",
        "_MODEL",
        "_TEMPERATURE",
        "_MAX_TOKENS",
        "_RPM",
        "_RPM_BURST",
        "_TPM",
        "_MAX_CONCURRENCY",
        "_BREAKER_WINDOW",
        "_BREAKER_MIN_CALLS",
        "_BREAKER_FAILURE_RATE",
        "_BREAKER_OPEN_FOR",
        "_BREAKER_OPEN_FOR_QUOTA",
        "_SLOW_CALL",
    ];

    /// Whether `name` is a variable Ferry reads: one of [`ALL`], or a
    /// provider's `<NAME>_API_KEY`, `<NAME>_MODEL`, ... (any provider name,
    /// since ferry.toml may declare new ones).
    pub fn is_known(name: &str) -> bool {
        ALL.contains(&name)
            || PROVIDER_SUFFIXES.iter().any(|suffix| {
                name.strip_suffix(suffix).is_some_and(|provider| {
                    !provider.is_empty()
                        && provider
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                })
            })
    }
}

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

/// The wire format a provider speaks (PROVIDERS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// `POST {base}/chat/completions`, Bearer auth.
    OpenAi,
    /// `POST {base}/models/{model}:generateContent`, `x-goog-api-key`.
    Gemini,
    /// Built in: answers with the prompt itself. For `ferry dev` and tests.
    Echo,
}

/// One AI provider of the fallback chain.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub model: String,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
}

impl ProviderConfig {
    /// The built-in echo provider (answers with the prompt).
    pub fn echo() -> Self {
        Self {
            name: ECHO_PROVIDER.into(),
            kind: ProviderKind::Echo,
            base_url: String::new(),
            api_key: None,
            model: "echo".into(),
            temperature: None,
            max_tokens: None,
        }
    }
}

/// A provider Ferry knows without any configuration file.
struct KnownProvider {
    name: &'static str,
    kind: ProviderKind,
    base_url: &'static str,
    /// `None`: the model must be configured (Doubao's endpoint ids).
    model: Option<&'static str>,
}

/// The known providers, in the default fallback order.
const KNOWN_PROVIDERS: &[KnownProvider] = &[
    KnownProvider {
        name: "deepseek",
        kind: ProviderKind::OpenAi,
        base_url: "https://api.deepseek.com",
        model: Some("deepseek-chat"),
    },
    KnownProvider {
        name: "qwen",
        kind: ProviderKind::OpenAi,
        base_url: "https://dashscope.aliyuncs.com/compatible-mode/v1",
        model: Some("qwen-plus"),
    },
    KnownProvider {
        name: "chatgpt",
        kind: ProviderKind::OpenAi,
        base_url: "https://api.openai.com/v1",
        model: Some("gpt-4o-mini"),
    },
    KnownProvider {
        name: "gemini",
        kind: ProviderKind::Gemini,
        base_url: "https://generativelanguage.googleapis.com/v1beta",
        model: Some("gemini-2.0-flash"),
    },
    KnownProvider {
        name: "zhipu",
        kind: ProviderKind::OpenAi,
        base_url: "https://open.bigmodel.cn/api/paas/v4",
        model: Some("glm-4-flash"),
    },
    KnownProvider {
        name: "doubao",
        kind: ProviderKind::OpenAi,
        base_url: "https://ark.cn-beijing.volces.com/api/v3",
        model: None,
    },
];

/// The name of the built-in echo provider.
pub const ECHO_PROVIDER: &str = "echo";

#[derive(Debug, Clone)]
pub struct WeChatConfig {
    pub app_id: Option<String>,
    pub app_secret: Option<Secret>,
    pub token: Option<Secret>,
    pub encoding_aes_key: Option<Secret>,
    pub api_base: String,
    /// Where the fleet's access token comes from.
    pub token_source: crate::fleet::TokenSource,
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
}

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

#[derive(Debug, Clone)]
pub struct Config {
    pub redis_url: Secret,
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

/// An IP address or CIDR block: `203.0.113.7`, `10.0.0.0/8`, `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    addr: std::net::IpAddr,
    prefix_len: u8,
}

impl IpRange {
    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix_len));
                let mask = mask.unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix_len));
                let mask = mask.unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr = addr
            .parse::<std::net::IpAddr>()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?
            .to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => max,
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Self { addr, prefix_len })
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Where values come from: the environment, then the secrets file, then
/// ferry.toml.
struct Sources {
    env: HashMap<String, String>,
    secrets: Option<(PathBuf, Secrets)>,
    file: BTreeMap<String, toml::Value>,
    file_providers: BTreeMap<String, toml::Table>,
}

impl Sources {
    fn new(env: HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut sources = Sources {
            env,
            secrets: None,
            file: BTreeMap::new(),
            file_providers: BTreeMap::new(),
        };
        if let Some(path) = sources
            .env
            .get(vars::FERRY_CONFIG)
            .filter(|p| !p.is_empty())
        {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(vars::FERRY_CONFIG, format!("cannot read {path}: {e}"))
            })?;
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                ConfigError::new(
                    vars::FERRY_CONFIG,
                    format!("{path} is not valid TOML: {}", e.message()),
                )
            })?;
            for (key, value) in table {
                if key == "providers" {
                    let toml::Value::Table(providers) = value else {
                        return Err(ConfigError::new(
                            "providers",
                            "must be a table of [providers.<name>]",
                        ));
                    };
                    for (name, settings) in providers {
                        let toml::Value::Table(settings) = settings else {
                            return Err(ConfigError::new(
                                format!("providers.{name}"),
                                "must be a table",
                            ));
                        };
                        sources
                            .file_providers
                            .insert(name.to_ascii_lowercase(), settings);
                    }
                } else {
                    sources.file.insert(key.to_ascii_uppercase(), value);
                }
            }
        }
        sources.secrets = sources.secrets_file()?;
        Ok(sources)
    }

    /// Decrypts `FERRY_SECRETS_FILE` with `SECURE_CONFIG_PASSWORD`, all or
    /// nothing.
    fn secrets_file(&self) -> Result<Option<(PathBuf, Secrets)>, ConfigError> {
        let Some(path) = self.get(vars::FERRY_SECRETS_FILE).map(PathBuf::from) else {
            return Ok(None);
        };
        let Some(password) = self.secret(vars::SECURE_CONFIG_PASSWORD) else {
            return Err(ConfigError::new(
                vars::SECURE_CONFIG_PASSWORD,
                format!(
                    "required to decrypt {} ({})",
                    path.display(),
                    vars::FERRY_SECRETS_FILE
                ),
            ));
        };
        let secrets = crate::secrets_file::load(&path, &password).map_err(|e| {
            ConfigError::new(vars::FERRY_SECRETS_FILE, format!("{}: {e}", path.display()))
        })?;
        Ok(Some((path, secrets)))
    }

    /// What the secrets file supplied, overrode and left unread.
    fn secrets_file_report(&self) -> Option<SecretsFileReport> {
        let (path, secrets) = self.secrets.as_ref()?;
        let mut report = SecretsFileReport {
            path: path.clone(),
            ..SecretsFileReport::default()
        };
        for name in secrets.names() {
            let list = if !vars::is_known(name) || vars::NOT_IN_SECRETS_FILE.contains(&name) {
                &mut report.ignored
            } else if self.env.get(name).is_some_and(|v| !v.trim().is_empty()) {
                &mut report.overridden_by_env
            } else {
                &mut report.from_file
            };
            list.push(name.to_owned());
        }
        Some(report)
    }

    /// The raw value of a variable: the environment, then the secrets file,
    /// then ferry.toml. Empty means unset; a list (an array in a file) is
    /// comma-separated.
    fn get(&self, var: &str) -> Option<String> {
        if let Some(v) = self.env.get(var).filter(|v| !v.trim().is_empty()) {
            return Some(v.trim().to_owned());
        }
        if let Some((_, secrets)) = &self.secrets
            && !vars::NOT_IN_SECRETS_FILE.contains(&var)
            && let Some(v) = secrets.joined(var)
        {
            return Some(v);
        }
        match self.file.get(var)? {
            toml::Value::String(s) if s.trim().is_empty() => None,
            toml::Value::String(s) => Some(s.trim().to_owned()),
            toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => {
                let items: Vec<&str> = items.iter().filter_map(|v| v.as_str()).collect();
                Some(items.join(",")).filter(|s| !s.is_empty())
            }
            other => Some(other.to_string()),
        }
    }

    /// A comma-separated list (an array in a file), without empty items.
    fn list(&self, var: &str) -> Vec<String> {
        self.get(var)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn secret(&self, var: &str) -> Option<Secret> {
        self.get(var).map(Secret::from)
    }

    fn parse<T: FromStr>(&self, var: &str, default: T, expected: &str) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|_| ConfigError::new(var, format!("expected {expected}, got {raw:?}"))),
        }
    }

    fn seconds(&self, var: &str, default_secs: f64) -> Result<Duration, ConfigError> {
        let secs: f64 = self.parse(var, default_secs, "a number of seconds")?;
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(ConfigError::new(
                var,
                "expected a non-negative number of seconds",
            ));
        }
        Ok(Duration::from_secs_f64(secs))
    }
}

impl Config {
    /// Loads from the process environment (and `FERRY_CONFIG`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Loads from the given variables, as if they were the environment.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let env = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let s = Sources::new(env)?;

        let redis_url = s
            .get(vars::REDIS_URL)
            .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        if !(redis_url.starts_with("redis://")
            || redis_url.starts_with("rediss://")
            || redis_url.starts_with("unix://"))
        {
            return Err(ConfigError::new(
                vars::REDIS_URL,
                "expected a redis:// or rediss:// URL",
            ));
        }
        let prefix = s.get(vars::FERRY_PREFIX).unwrap_or_else(|| "ferry".into());
        if !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(ConfigError::new(
                vars::FERRY_PREFIX,
                "use letters, digits, '_', '-' or '.' only",
            ));
        }
        let listen = s.parse(
            vars::FERRY_LISTEN,
            SocketAddr::from(([127, 0, 0, 1], 5000)),
            "an address such as 0.0.0.0:5000",
        )?;
        let worker_admin_listen = match s.get(vars::FERRY_WORKER_ADMIN_LISTEN) {
            None => None,
            Some(raw) => Some(raw.parse().map_err(|_| {
                ConfigError::new(
                    vars::FERRY_WORKER_ADMIN_LISTEN,
                    format!("expected an address such as 0.0.0.0:9090, got {raw:?}"),
                )
            })?),
        };

        let wechat = WeChatConfig {
            app_id: s.get(vars::WECHAT_APP_ID),
            app_secret: s.secret(vars::WECHAT_APP_SECRET),
            token: s.secret(vars::WECHAT_TOKEN),
            encoding_aes_key: s.secret(vars::WECHAT_ENCODING_AES_KEY),
            api_base: url_var(&s, vars::WECHAT_API_BASE, "https://api.weixin.qq.com")?,
            token_source: token_source(&s)?,
        };
        if let Some(key) = &wechat.encoding_aes_key
            && key.expose().len() != 43
        {
            return Err(ConfigError::new(
                vars::WECHAT_ENCODING_AES_KEY,
                "expected the 43-character EncodingAESKey",
            ));
        }

        let log = LogConfig {
            level: s.get(vars::LOG_LEVEL).unwrap_or_else(|| "INFO".into()),
            file: s.get(vars::LOG_FILE).map(PathBuf::from),
            format: match s
                .get(vars::LOG_FORMAT)
                .map(|f| f.to_ascii_lowercase())
                .as_deref()
            {
                None => None,
                Some("json") => Some(LogFormat::Json),
                Some("text") => Some(LogFormat::Text),
                Some(other) => {
                    return Err(ConfigError::new(
                        vars::LOG_FORMAT,
                        format!("expected json or text, got {other:?}"),
                    ));
                }
            },
        };
        crate::telemetry::parse_level(&log.level)
            .map_err(|reason| ConfigError::new(vars::LOG_LEVEL, reason))?;

        let error_rate: f64 = s.parse(
            vars::API_ERROR_RATE_THRESHOLD,
            0.05,
            "a ratio between 0 and 1",
        )?;
        if !(0.0..=1.0).contains(&error_rate) {
            return Err(ConfigError::new(
                vars::API_ERROR_RATE_THRESHOLD,
                "expected a ratio between 0 and 1",
            ));
        }
        let alerts = AlertThresholds {
            error_rate,
            response_time: s.seconds(vars::RESPONSE_TIME_THRESHOLD, 5.0)?,
            requests_per_minute: s.parse(
                vars::RATE_LIMIT_THRESHOLD,
                100,
                "a whole number of requests per minute",
            )?,
        };

        let queue = QueueConfig {
            concurrency: positive(&s, vars::FERRY_WORKER_CONCURRENCY, 32)?,
            visibility_timeout: s.seconds(vars::FERRY_VISIBILITY_TIMEOUT, 60.0)?,
            retention: s.seconds(vars::FERRY_JOB_RETENTION, 7.0 * 24.0 * 3600.0)?,
            dedup_ttl: s.seconds(vars::FERRY_DEDUP_TTL, 300.0)?,
            fetch_batch: positive(&s, vars::FERRY_FETCH_BATCH, 128)?,
            fetch_block: Duration::from_millis(s.parse(
                vars::FERRY_FETCH_BLOCK_MS,
                1000,
                "milliseconds",
            )?),
            max_deliveries: positive(&s, vars::FERRY_MAX_DELIVERIES, 10)?,
            shutdown_grace: s.seconds(vars::FERRY_SHUTDOWN_GRACE, 25.0)?,
            batch_min_share: s.parse(
                vars::FERRY_BATCH_MIN_SHARE,
                0.1,
                "a ratio between 0 and 1",
            )?,
        };
        if !(0.0..1.0).contains(&queue.batch_min_share) {
            return Err(ConfigError::new(
                vars::FERRY_BATCH_MIN_SHARE,
                "expected a ratio in [0, 1)",
            ));
        }
        if queue.visibility_timeout < Duration::from_secs(1) {
            return Err(ConfigError::new(
                vars::FERRY_VISIBILITY_TIMEOUT,
                "must be at least 1 second",
            ));
        }

        let ai = ai_config(&s)?;
        let providers = providers(&s)?;
        let gates = providers
            .iter()
            .map(|p| {
                let mut gate = gate_settings(&s, &p.name)?;
                // A lease (and a probe) outlives the longest attempt, so only
                // a crashed holder's lease ever expires under a live call.
                gate.lease_ttl = ai.connect_timeout + ai.request_timeout + Duration::from_secs(5);
                Ok((p.name.clone(), gate))
            })
            .collect::<Result<_, ConfigError>>()?;
        let provider_keys = providers
            .iter()
            .filter(|p| p.kind != ProviderKind::Echo)
            .map(|p| (p.name.clone(), api_keys(&s, &p.name)))
            .collect();

        Ok(Config {
            redis_url: Secret::from(redis_url),
            prefix,
            listen,
            worker_admin_listen,
            providers,
            gates,
            system_prompt: s.get(vars::FERRY_SYSTEM_PROMPT),
            ai,
            reply: reply_config(&s)?,
            wechat,
            secure_config_password: s.secret(vars::SECURE_CONFIG_PASSWORD),
            secrets_file: s.get(vars::FERRY_SECRETS_FILE).map(PathBuf::from),
            log,
            alerts,
            queue,
            max_body_bytes: positive(&s, vars::FERRY_MAX_BODY_BYTES, 64 * 1024)?,
            ingress: ingress_config(&s)?,
            jobs_api: jobs_api_config(&s)?,
            provider_keys,
            secrets_file_report: s.secrets_file_report(),
            api_tokens: api_tokens(&s)?,
        })
    }

    /// The gate settings of a provider (defaults for one not in the chain).
    pub fn gate(&self, provider: &str) -> GateSettings {
        self.gates.get(provider).cloned().unwrap_or_default()
    }

    /// The Redis URL with any password replaced, for logs and messages.
    pub fn redis_url_redacted(&self) -> String {
        redact_url(self.redis_url.expose())
    }
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

/// The slowest acknowledgement budget accepted: the spool's own write limit
/// (1 s) on top must still leave room under WeChat's 5 s.
const MAX_ACK_BUDGET_MS: u64 = 3000;

fn ingress_config(s: &Sources) -> Result<IngressConfig, ConfigError> {
    let ack_budget_ms = s.parse(vars::FERRY_ACK_BUDGET_MS, 1500u64, "milliseconds")?;
    if !(1..=MAX_ACK_BUDGET_MS).contains(&ack_budget_ms) {
        return Err(ConfigError::new(
            vars::FERRY_ACK_BUDGET_MS,
            format!("expected 1..={MAX_ACK_BUDGET_MS} ms (WeChat waits 5 s in all)"),
        ));
    }
    let ip_rate = match s
        .get(vars::FERRY_IP_RATE_LIMIT)
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        Some("off" | "0") => None,
        _ => Some(IpRateLimit {
            per_second: positive(s, vars::FERRY_IP_RATE_LIMIT, 100)?,
            burst: positive(s, vars::FERRY_IP_RATE_BURST, 200)?,
            allow: ip_ranges(s, vars::FERRY_IP_RATE_ALLOW)?,
        }),
    };
    let max_skew = s.seconds(vars::FERRY_WECHAT_MAX_SKEW, 300.0)?;
    if max_skew < Duration::from_secs(1) {
        return Err(ConfigError::new(
            vars::FERRY_WECHAT_MAX_SKEW,
            "must be at least 1 second",
        ));
    }
    let text = |var: &str, default: &str| s.get(var).unwrap_or_else(|| default.to_owned());
    Ok(IngressConfig {
        ack_budget: Duration::from_millis(ack_budget_ms),
        spool_dir: PathBuf::from(
            s.get(vars::FERRY_SPOOL_DIR)
                .unwrap_or_else(|| "ferry-spool".into()),
        ),
        spool_max_bytes: positive(s, vars::FERRY_SPOOL_MAX_BYTES, 64 * 1024 * 1024)?,
        max_skew,
        ip_rate,
        trusted_proxies: ip_ranges(s, vars::FERRY_TRUSTED_PROXIES)?,
        welcome: text(
            vars::FERRY_WECHAT_WELCOME,
            "感谢关注！直接发送文字或语音，AI 助手会尽快回复您。",
        ),
        unsupported_reply: text(
            vars::FERRY_WECHAT_UNSUPPORTED_REPLY,
            "抱歉，目前只能回复文字和语音消息，请发送文字试试。",
        ),
        voice_unrecognized_reply: text(
            vars::FERRY_WECHAT_VOICE_UNRECOGNIZED_REPLY,
            "抱歉，没有听清您的语音，请发送文字试试。",
        ),
    })
}

/// A list of IPs and CIDR blocks separated by commas or spaces.
fn ip_ranges(s: &Sources, var: &str) -> Result<Vec<IpRange>, ConfigError> {
    s.get(var)
        .unwrap_or_default()
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(|item| item.parse().map_err(|reason| ConfigError::new(var, reason)))
        .collect()
}

fn api_tokens(s: &Sources) -> Result<ApiTokens, ConfigError> {
    let admin = s.get(vars::FERRY_ADMIN_TOKEN);
    ApiTokens::parse(&s.list(vars::FERRY_API_TOKENS), admin.as_deref()).map_err(|e| {
        let var = match e {
            TokenConfigError::Api { .. } => vars::FERRY_API_TOKENS,
            TokenConfigError::Admin { .. } => vars::FERRY_ADMIN_TOKEN,
        };
        ConfigError::new(var, e.to_string())
    })
}

fn positive<T>(s: &Sources, var: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Default,
{
    let value = s.parse(var, default, "a positive whole number")?;
    if value <= T::default() {
        return Err(ConfigError::new(var, "expected a positive whole number"));
    }
    Ok(value)
}

fn ai_config(s: &Sources) -> Result<AiConfig, ConfigError> {
    let at_least = |var: &str, value: Duration, min: Duration| {
        if value < min {
            let reason = format!("must be at least {} s", min.as_secs_f64());
            return Err(ConfigError::new(var, reason));
        }
        Ok(value)
    };
    let ms = Duration::from_millis;
    Ok(AiConfig {
        connect_timeout: at_least(
            vars::FERRY_PROVIDER_CONNECT_TIMEOUT,
            s.seconds(vars::FERRY_PROVIDER_CONNECT_TIMEOUT, 5.0)?,
            ms(1),
        )?,
        request_timeout: at_least(
            vars::FERRY_PROVIDER_TIMEOUT,
            s.seconds(vars::FERRY_PROVIDER_TIMEOUT, 60.0)?,
            ms(1),
        )?,
        extra_ca_file: s.get(vars::FERRY_EXTRA_CA_FILE).map(PathBuf::from),
        attempts_per_provider: positive(s, vars::FERRY_PROVIDER_ATTEMPTS, 3)?,
        total_budget: at_least(
            vars::FERRY_AI_TOTAL_BUDGET,
            s.seconds(vars::FERRY_AI_TOTAL_BUDGET, 120.0)?,
            ms(1),
        )?,
        memory_turns: s.parse(vars::FERRY_MEMORY_TURNS, 10, "a whole number of turns")?,
        memory_ttl: at_least(
            vars::FERRY_MEMORY_TTL,
            s.seconds(vars::FERRY_MEMORY_TTL, 86_400.0)?,
            Duration::from_secs(1),
        )?,
        max_prompt_chars: positive(s, vars::FERRY_MAX_PROMPT_CHARS, 12_000)?,
    })
}

fn token_source(s: &Sources) -> Result<crate::fleet::TokenSource, ConfigError> {
    use crate::fleet::TokenSource;
    match s
        .get(vars::WECHAT_TOKEN_ENDPOINT)
        .map(|v| v.to_ascii_lowercase())
    {
        None => Ok(TokenSource::Stable),
        Some(v) if v == "stable" => Ok(TokenSource::Stable),
        Some(v) if v == "classic" => Ok(TokenSource::Classic),
        Some(other) => Err(ConfigError::new(
            vars::WECHAT_TOKEN_ENDPOINT,
            format!("expected stable or classic, got {other:?}"),
        )),
    }
}

fn jobs_api_config(s: &Sources) -> Result<JobsApiConfig, ConfigError> {
    let per_minute: u32 = s.parse(
        vars::FERRY_API_SUBMISSIONS_PER_MINUTE,
        60,
        "a whole number of submissions per minute (0: no limit)",
    )?;
    let webhook_secret = s.secret(vars::FERRY_WEBHOOK_SECRET);
    if let Some(secret) = &webhook_secret
        && secret.expose().len() < 16
    {
        return Err(ConfigError::new(
            vars::FERRY_WEBHOOK_SECRET,
            "expected at least 16 characters",
        ));
    }
    Ok(JobsApiConfig {
        batch_max_bytes: positive(s, vars::FERRY_BATCH_MAX_BYTES, 100 * 1024 * 1024)?,
        batch_max_lines: positive(s, vars::FERRY_BATCH_MAX_LINES, 50_000)?,
        jobs_in_flight: s.parse(
            vars::FERRY_API_JOBS_IN_FLIGHT,
            100_000,
            "a whole number of jobs (0: no limit)",
        )?,
        submissions_per_minute: (per_minute > 0).then_some(per_minute),
        submissions_burst: positive(s, vars::FERRY_API_SUBMISSIONS_BURST, 10)?,
        idempotency_ttl: s.seconds(vars::FERRY_API_IDEMPOTENCY_TTL, 86_400.0)?,
        webhook_secret,
        webhook_allow: ip_ranges(s, vars::FERRY_WEBHOOK_ALLOW_NETWORKS)?,
    })
}

fn reply_config(s: &Sources) -> Result<ReplyConfig, ConfigError> {
    let typing_indicator = match s
        .get(vars::FERRY_TYPING_INDICATOR)
        .map(|v| v.to_ascii_lowercase())
    {
        None => true,
        Some(v) if matches!(v.as_str(), "on" | "true" | "yes" | "1") => true,
        Some(v) if matches!(v.as_str(), "off" | "false" | "no" | "0") => false,
        Some(other) => {
            return Err(ConfigError::new(
                vars::FERRY_TYPING_INDICATOR,
                format!("expected on or off, got {other:?}"),
            ));
        }
    };
    let per_minute: u32 = s.parse(
        vars::FERRY_USER_MESSAGES_PER_MINUTE,
        20,
        "a whole number of messages per minute (0: no limit)",
    )?;
    let user_limit = (per_minute > 0)
        .then(|| {
            Ok(UserLimit {
                per_minute,
                burst: positive(s, vars::FERRY_USER_BURST, 5)?,
            })
        })
        .transpose()?;
    let text = |var: &str, default: &str| s.get(var).unwrap_or_else(|| default.to_owned());
    Ok(ReplyConfig {
        typing_indicator,
        apology: text(vars::FERRY_APOLOGY_TEXT, DEFAULT_APOLOGY),
        user_limit,
        user_limit_text: text(vars::FERRY_USER_LIMIT_TEXT, DEFAULT_USER_LIMIT_TEXT),
    })
}

fn url_var(s: &Sources, var: &str, default: &str) -> Result<String, ConfigError> {
    http_url(var, &s.get(var).unwrap_or_else(|| default.to_owned()))
}

/// Checks an http(s) URL and drops its trailing slash.
fn http_url(var: &str, raw: &str) -> Result<String, ConfigError> {
    let parsed =
        url::Url::parse(raw).map_err(|e| ConfigError::new(var, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::new(var, "expected an http:// or https:// URL"));
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

fn optional<T: FromStr>(s: &Sources, var: &str, expected: &str) -> Result<Option<T>, ConfigError> {
    s.get(var)
        .map(|raw| {
            raw.parse()
                .map_err(|_| ConfigError::new(var, format!("expected {expected}, got {raw:?}")))
        })
        .transpose()
}

/// The provider's `<NAME>_...` variable.
fn provider_var(name: &str, suffix: &str) -> String {
    format!("{}_{suffix}", name.to_ascii_uppercase())
}

fn providers(s: &Sources) -> Result<Vec<ProviderConfig>, ConfigError> {
    let explicit = s.get(vars::FERRY_PROVIDERS);
    let names: Vec<String> = match &explicit {
        Some(list) => list
            .split(',')
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect(),
        None => KNOWN_PROVIDERS
            .iter()
            .map(|p| p.name.to_owned())
            .chain(
                s.file_providers
                    .keys()
                    .filter(|name| !KNOWN_PROVIDERS.iter().any(|k| k.name == name.as_str()))
                    .cloned(),
            )
            .filter(|name| api_key(s, name).is_some())
            .collect(),
    };
    let mut chain = Vec::with_capacity(names.len());
    for name in names {
        if chain.iter().any(|p: &ProviderConfig| p.name == name) {
            return Err(ConfigError::new(
                vars::FERRY_PROVIDERS,
                format!("provider {name:?} is listed twice"),
            ));
        }
        chain.push(provider(s, &name)?);
    }
    Ok(chain)
}

/// A provider's keys, in the order given: `<NAME>_API_KEY` (ChatGPT also
/// `OPENAI_API_KEY`), comma-separated in the environment.
fn api_keys(s: &Sources, name: &str) -> Vec<Secret> {
    let keys = s.list(&provider_var(name, "API_KEY"));
    let keys = if keys.is_empty() && name == "chatgpt" {
        s.list(vars::OPENAI_API_KEY)
    } else {
        keys
    };
    keys.into_iter().map(Secret::from).collect()
}

fn api_key(s: &Sources, name: &str) -> Option<Secret> {
    api_keys(s, name).into_iter().next()
}

fn provider(s: &Sources, name: &str) -> Result<ProviderConfig, ConfigError> {
    if name == ECHO_PROVIDER {
        return Ok(ProviderConfig::echo());
    }
    let known = KNOWN_PROVIDERS.iter().find(|p| p.name == name);
    let file = s.file_providers.get(name);
    if known.is_none() && file.is_none() {
        let names: Vec<&str> = KNOWN_PROVIDERS.iter().map(|p| p.name).collect();
        return Err(ConfigError::new(
            vars::FERRY_PROVIDERS,
            format!(
                "unknown provider {name:?}: use one of {}, echo, or declare [providers.{name}] in ferry.toml",
                names.join(", ")
            ),
        ));
    }
    let file_str = |key: &str| -> Option<String> {
        file.and_then(|t| t.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let table_key = |key: &str| format!("providers.{name}.{key}");

    let kind = match file_str("kind").as_deref() {
        None => known.map_or(ProviderKind::OpenAi, |k| k.kind),
        Some("openai") => ProviderKind::OpenAi,
        Some("gemini") => ProviderKind::Gemini,
        Some(other) => {
            return Err(ConfigError::new(
                table_key("kind"),
                format!("expected openai or gemini, got {other:?}"),
            ));
        }
    };
    let base_var = provider_var(name, "BASE_URL");
    let base_url = match s.get(&base_var).or_else(|| file_str("base_url")) {
        Some(url) => http_url(&base_var, &url)?,
        None => match known {
            Some(k) => k.base_url.to_owned(),
            None => {
                return Err(ConfigError::new(
                    base_var,
                    format!("provider {name:?} needs a base URL"),
                ));
            }
        },
    };
    let model_var = provider_var(name, "MODEL");
    let model = match s
        .get(&model_var)
        .or_else(|| file_str("model"))
        .or_else(|| known.and_then(|k| k.model).map(str::to_owned))
    {
        Some(m) => m,
        None => {
            return Err(ConfigError::new(
                model_var,
                format!("provider {name:?} needs a model (an endpoint id or model id)"),
            ));
        }
    };
    let api_key = api_key(s, name);
    if api_key.is_none() {
        return Err(ConfigError::new(
            provider_var(name, "API_KEY"),
            format!("provider {name:?} is in the chain but has no key"),
        ));
    }
    // The environment overrides the file, as everywhere.
    let temperature_var = provider_var(name, "TEMPERATURE");
    let max_tokens_var = provider_var(name, "MAX_TOKENS");
    let temperature = match file.and_then(|t| t.get("temperature")) {
        _ if s.get(&temperature_var).is_some() => optional(s, &temperature_var, "a number")?,
        None => None,
        Some(v) => Some(
            v.as_float()
                .or_else(|| v.as_integer().map(|i| i as f64))
                .ok_or_else(|| ConfigError::new(table_key("temperature"), "expected a number"))?
                as f32,
        ),
    };
    let max_tokens = match file.and_then(|t| t.get("max_tokens")) {
        _ if s.get(&max_tokens_var).is_some() => optional(s, &max_tokens_var, "a whole number")?,
        None => None,
        Some(v) => Some(
            v.as_integer()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| {
                    ConfigError::new(table_key("max_tokens"), "expected a whole number")
                })?,
        ),
    };
    if max_tokens == Some(0) {
        return Err(ConfigError::new(
            max_tokens_var,
            "expected a positive whole number",
        ));
    }
    Ok(ProviderConfig {
        name: name.into(),
        kind,
        base_url,
        api_key,
        model,
        temperature,
        max_tokens,
    })
}

/// One provider's fleet limits and breaker: `<NAME>_RPM`, `_RPM_BURST`,
/// `_TPM`, `_MAX_CONCURRENCY`, `_BREAKER_WINDOW`, `_BREAKER_MIN_CALLS`,
/// `_BREAKER_FAILURE_RATE`, `_BREAKER_OPEN_FOR`, `_BREAKER_OPEN_FOR_QUOTA`,
/// `_SLOW_CALL` (seconds where a time), or the same settings in lower case
/// without the prefix in `[providers.<name>]` of ferry.toml
/// (`requests_per_minute`, `burst`, `tokens_per_minute`, `max_concurrency`,
/// `breaker_window`, `breaker_min_calls`, `breaker_failure_rate`,
/// `breaker_open_for`, `breaker_open_for_quota`, `slow_call`).
fn gate_settings(s: &Sources, name: &str) -> Result<GateSettings, ConfigError> {
    let setting = |suffix: &str, file_key: &str| -> Option<(String, String)> {
        let var = provider_var(name, suffix);
        if let Some(v) = s.get(&var) {
            return Some((var, v));
        }
        let value = s.file_providers.get(name)?.get(file_key)?;
        let raw = value
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        Some((format!("providers.{name}.{file_key}"), raw))
    };
    fn parsed<T: FromStr>(
        found: Option<(String, String)>,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match found {
            None => Ok(default),
            Some((var, raw)) => raw
                .parse()
                .map_err(|_| ConfigError::new(var, format!("expected {expected}, got {raw:?}"))),
        }
    }
    let secs = |suffix: &str, key: &str, default: Duration| -> Result<Duration, ConfigError> {
        let found = setting(suffix, key);
        let var = found.as_ref().map(|(v, _)| v.clone()).unwrap_or_default();
        let secs: f64 = parsed(found, default.as_secs_f64(), "a number of seconds")?;
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(ConfigError::new(
                var,
                "expected a non-negative number of seconds",
            ));
        }
        Ok(Duration::from_secs_f64(secs))
    };
    let d = GateSettings::default();
    let rpm: u32 = parsed(
        setting("RPM", "requests_per_minute"),
        d.requests_per_minute,
        "requests per minute",
    )?;
    let failure_rate: f64 = parsed(
        setting("BREAKER_FAILURE_RATE", "breaker_failure_rate"),
        d.breaker.failure_rate,
        "a ratio",
    )?;
    if !(failure_rate > 0.0 && failure_rate <= 1.0) {
        return Err(ConfigError::new(
            provider_var(name, "BREAKER_FAILURE_RATE"),
            "expected a ratio in (0, 1]",
        ));
    }
    let slow = secs("SLOW_CALL", "slow_call", Duration::ZERO)?;
    Ok(GateSettings {
        requests_per_minute: rpm,
        // Default burst: three seconds' worth of the rate, at least one.
        burst: parsed(
            setting("RPM_BURST", "burst"),
            (rpm / 20).max(1),
            "a whole number",
        )?,
        tokens_per_minute: parsed(
            setting("TPM", "tokens_per_minute"),
            d.tokens_per_minute,
            "tokens per minute",
        )?,
        max_concurrency: parsed(
            setting("MAX_CONCURRENCY", "max_concurrency"),
            d.max_concurrency,
            "a whole number",
        )?,
        lease_ttl: d.lease_ttl,
        breaker: BreakerSettings {
            window: secs("BREAKER_WINDOW", "breaker_window", d.breaker.window)?
                .max(Duration::from_secs(1)),
            minimum_calls: parsed(
                setting("BREAKER_MIN_CALLS", "breaker_min_calls"),
                d.breaker.minimum_calls,
                "a whole number",
            )?,
            failure_rate,
            open_for: secs("BREAKER_OPEN_FOR", "breaker_open_for", d.breaker.open_for)?,
            open_for_quota: secs(
                "BREAKER_OPEN_FOR_QUOTA",
                "breaker_open_for_quota",
                d.breaker.open_for_quota,
            )?,
            slow_call: (!slow.is_zero()).then_some(slow),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_match_the_design_table() {
        let c = load(&[]).unwrap();
        assert_eq!(c.redis_url.expose(), "redis://127.0.0.1:6379");
        assert_eq!(c.prefix, "ferry");
        assert_eq!(c.listen.to_string(), "127.0.0.1:5000");
        assert_eq!(c.worker_admin_listen, None);
        assert!(c.providers.is_empty());
        assert_eq!(c.wechat.api_base, "https://api.weixin.qq.com");
        assert_eq!(c.log.level, "INFO");
        assert_eq!(c.log.format, None);
        assert_eq!(c.alerts.error_rate, 0.05);
        assert_eq!(c.alerts.response_time, Duration::from_secs(5));
        assert_eq!(c.alerts.requests_per_minute, 100);
    }

    #[test]
    fn ai_settings_have_defaults_and_are_read_from_the_environment() {
        let d = load(&[]).unwrap().ai;
        assert_eq!(d.connect_timeout, Duration::from_secs(5));
        assert_eq!(d.request_timeout, Duration::from_secs(60));
        assert_eq!(d.extra_ca_file, None);
        assert_eq!(d.attempts_per_provider, 3);
        assert_eq!(d.total_budget, Duration::from_secs(120));
        assert_eq!(
            (d.memory_turns, d.memory_ttl, d.max_prompt_chars),
            (10, Duration::from_secs(86_400), 12_000)
        );
        let c = load(&[
            ("FERRY_PROVIDER_CONNECT_TIMEOUT", "1.5"),
            ("FERRY_PROVIDER_TIMEOUT", "20"),
            ("FERRY_EXTRA_CA_FILE", "/etc/ferry/gateway-ca.pem"),
            ("FERRY_PROVIDER_ATTEMPTS", "2"),
            ("FERRY_AI_TOTAL_BUDGET", "45"),
            ("FERRY_MEMORY_TURNS", "0"),
            ("FERRY_MEMORY_TTL", "600"),
            ("FERRY_MAX_PROMPT_CHARS", "4000"),
        ])
        .unwrap()
        .ai;
        assert_eq!(c.connect_timeout, Duration::from_millis(1500));
        assert_eq!(c.request_timeout, Duration::from_secs(20));
        assert_eq!(
            c.extra_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ferry/gateway-ca.pem"))
        );
        assert_eq!(c.attempts_per_provider, 2);
        assert_eq!(c.total_budget, Duration::from_secs(45));
        assert_eq!(
            (c.memory_turns, c.memory_ttl, c.max_prompt_chars),
            (0, Duration::from_secs(600), 4000)
        );
        for var in [
            "FERRY_PROVIDER_CONNECT_TIMEOUT",
            "FERRY_PROVIDER_TIMEOUT",
            "FERRY_PROVIDER_ATTEMPTS",
            "FERRY_AI_TOTAL_BUDGET",
            "FERRY_MEMORY_TTL",
            "FERRY_MAX_PROMPT_CHARS",
        ] {
            assert_eq!(load(&[(var, "0")]).unwrap_err().var, var);
        }
        assert_eq!(
            load(&[("FERRY_MEMORY_TURNS", "-1")]).unwrap_err().var,
            "FERRY_MEMORY_TURNS"
        );
    }

    #[test]
    fn providers_default_to_every_one_with_a_key_in_order() {
        let c = load(&[
            ("QWEN_API_KEY", "q"),
            ("DEEPSEEK_API_KEY", "d"),
            ("OPENAI_API_KEY", "o"),
        ])
        .unwrap();
        let names: Vec<_> = c.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["deepseek", "qwen", "chatgpt"]);
        assert_eq!(c.providers[2].api_key.as_ref().unwrap().expose(), "o");
    }

    #[test]
    fn explicit_chain_with_overrides() {
        let c = load(&[
            ("FERRY_PROVIDERS", "qwen, deepseek"),
            ("QWEN_API_KEY", "q"),
            ("DEEPSEEK_API_KEY", "d"),
            ("DEEPSEEK_BASE_URL", "http://127.0.0.1:9/v1/"),
            ("DEEPSEEK_MODEL", "deepseek-reasoner"),
        ])
        .unwrap();
        assert_eq!(c.providers[0].name, "qwen");
        assert_eq!(c.providers[1].base_url, "http://127.0.0.1:9/v1");
        assert_eq!(c.providers[1].model, "deepseek-reasoner");
    }

    #[test]
    fn gate_settings_come_from_the_environment_over_the_file() {
        let dir = tempfile_dir();
        let path = dir.join("gates.toml");
        std::fs::write(&path, "[providers.qwen]\nrequests_per_minute = 600\nmax_concurrency = 8\nbreaker_open_for = 5\n").unwrap();
        let c = load(&[
            ("FERRY_CONFIG", path.to_str().unwrap()),
            ("QWEN_API_KEY", "q"),
            ("QWEN_RPM", "120"),
            ("QWEN_BREAKER_MIN_CALLS", "3"),
        ])
        .unwrap();
        let g = c.gate("qwen");
        assert_eq!(g.requests_per_minute, 120);
        assert_eq!(g.burst, 6);
        assert_eq!(g.max_concurrency, 8);
        assert_eq!(g.breaker.minimum_calls, 3);
        assert_eq!(g.breaker.open_for, Duration::from_secs(5));
        assert_eq!(
            load(&[("QWEN_API_KEY", "q"), ("QWEN_RPM", "many")])
                .unwrap_err()
                .var,
            "QWEN_RPM"
        );
        assert_eq!(
            load(&[("QWEN_API_KEY", "q"), ("QWEN_BREAKER_FAILURE_RATE", "2")])
                .unwrap_err()
                .var,
            "QWEN_BREAKER_FAILURE_RATE"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("FERRY_LISTEN", "nowhere")], "FERRY_LISTEN"),
            (
                &[("FERRY_WORKER_ADMIN_LISTEN", ":9090")],
                "FERRY_WORKER_ADMIN_LISTEN",
            ),
            (&[("REDIS_URL", "http://x")], "REDIS_URL"),
            (&[("LOG_FORMAT", "xml")], "LOG_FORMAT"),
            (&[("LOG_LEVEL", "loud")], "LOG_LEVEL"),
            (
                &[("API_ERROR_RATE_THRESHOLD", "5")],
                "API_ERROR_RATE_THRESHOLD",
            ),
            (&[("RATE_LIMIT_THRESHOLD", "-1")], "RATE_LIMIT_THRESHOLD"),
            (&[("FERRY_PROVIDERS", "nosuch")], "FERRY_PROVIDERS"),
            (&[("FERRY_PROVIDERS", "qwen")], "QWEN_API_KEY"),
            (&[("DOUBAO_API_KEY", "k")], "DOUBAO_MODEL"),
            (
                &[("WECHAT_ENCODING_AES_KEY", "short")],
                "WECHAT_ENCODING_AES_KEY",
            ),
            (
                &[("FERRY_WORKER_CONCURRENCY", "0")],
                "FERRY_WORKER_CONCURRENCY",
            ),
        ];
        for (vars, expected) in cases {
            let err = load(vars).unwrap_err();
            assert_eq!(err.var, *expected, "{err}");
            assert!(err.to_string().starts_with(expected));
        }
    }

    #[test]
    fn secret_values_never_appear_in_errors_or_debug() {
        let c = load(&[
            ("DEEPSEEK_API_KEY", "sk-very-secret"),
            ("REDIS_URL", "redis://:hunter2@h:1"),
        ])
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("sk-very-secret") && !dbg.contains("hunter2"));
        assert_eq!(c.redis_url_redacted(), "redis://:***@h:1");
        let err = load(&[("WECHAT_ENCODING_AES_KEY", "leakme")]).unwrap_err();
        assert!(!err.to_string().contains("leakme"));
    }

    #[test]
    fn file_values_are_overridden_by_the_environment() {
        let dir = tempfile_dir();
        let path = dir.join("ferry.toml");
        std::fs::write(
            &path,
            "ferry_prefix = \"fromfile\"\nlog_level = \"debug\"\n[providers.local]\nbase_url = \"http://127.0.0.1:8000/v1\"\nmodel = \"llama\"\ntemperature = 0.2\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = load(&[
            ("FERRY_CONFIG", p),
            ("LOG_LEVEL", "warn"),
            ("LOCAL_API_KEY", "x"),
        ])
        .unwrap();
        assert_eq!(c.prefix, "fromfile");
        assert_eq!(c.log.level, "warn");
        assert_eq!(c.providers.len(), 1);
        assert_eq!(c.providers[0].name, "local");
        assert_eq!(c.providers[0].temperature, Some(0.2));
        let c = load(&[
            ("FERRY_CONFIG", p),
            ("LOCAL_API_KEY", "x"),
            ("LOCAL_TEMPERATURE", "0.9"),
            ("LOCAL_MAX_TOKENS", "64"),
        ])
        .unwrap();
        assert_eq!(c.providers[0].temperature, Some(0.9));
        assert_eq!(c.providers[0].max_tokens, Some(64));
        let err = load(&[("FERRY_CONFIG", "/nonexistent/ferry.toml")]).unwrap_err();
        assert_eq!(err.var, "FERRY_CONFIG");
    }

    #[test]
    fn reply_settings_have_defaults_and_are_read_from_the_environment() {
        let d = load(&[]).unwrap();
        assert_eq!(d.wechat.token_source, crate::fleet::TokenSource::Stable);
        assert!(d.reply.typing_indicator);
        assert_eq!(d.reply.apology, DEFAULT_APOLOGY);
        assert_eq!(
            d.reply.user_limit,
            Some(UserLimit {
                per_minute: 20,
                burst: 5
            })
        );
        assert_eq!(d.reply.user_limit_text, DEFAULT_USER_LIMIT_TEXT);
        let c = load(&[
            ("WECHAT_TOKEN_ENDPOINT", "classic"),
            ("FERRY_TYPING_INDICATOR", "off"),
            ("FERRY_APOLOGY_TEXT", "sorry"),
            ("FERRY_USER_MESSAGES_PER_MINUTE", "6"),
            ("FERRY_USER_BURST", "2"),
            ("FERRY_USER_LIMIT_TEXT", "slow down"),
        ])
        .unwrap();
        assert_eq!(c.wechat.token_source, crate::fleet::TokenSource::Classic);
        assert!(!c.reply.typing_indicator);
        assert_eq!(c.reply.apology, "sorry");
        assert_eq!(
            c.reply.user_limit,
            Some(UserLimit {
                per_minute: 6,
                burst: 2
            })
        );
        assert_eq!(c.reply.user_limit_text, "slow down");
        let off = load(&[("FERRY_USER_MESSAGES_PER_MINUTE", "0")]).unwrap();
        assert_eq!(off.reply.user_limit, None);
        for (var, value) in [
            ("WECHAT_TOKEN_ENDPOINT", "fast"),
            ("FERRY_TYPING_INDICATOR", "maybe"),
            ("FERRY_USER_MESSAGES_PER_MINUTE", "-1"),
            ("FERRY_USER_BURST", "0"),
        ] {
            let err = load(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{err}");
        }
    }

    #[test]
    fn ingress_settings_have_defaults_and_name_the_variable_at_fault() {
        let d = load(&[]).unwrap().ingress;
        assert_eq!(d.ack_budget, Duration::from_millis(1500));
        assert_eq!(d.spool_dir, PathBuf::from("ferry-spool"));
        assert_eq!(d.spool_max_bytes, 64 * 1024 * 1024);
        assert_eq!(d.max_skew, Duration::from_secs(300));
        let rate = d.ip_rate.unwrap();
        assert_eq!((rate.per_second, rate.burst), (100, 200));
        assert!(rate.allow.is_empty() && d.trusted_proxies.is_empty());
        assert!(d.welcome.contains("感谢关注"));

        let c = load(&[
            (
                "FERRY_IP_RATE_ALLOW",
                "101.226.0.0/16, 203.0.113.7 2001:db8::/32",
            ),
            ("FERRY_TRUSTED_PROXIES", "127.0.0.1"),
            ("FERRY_WECHAT_WELCOME", "welcome!"),
        ])
        .unwrap()
        .ingress;
        let allow = c.ip_rate.unwrap().allow;
        assert_eq!(allow.len(), 3);
        assert!(allow[0].contains("101.226.99.1".parse().unwrap()));
        assert!(!allow[0].contains("101.227.0.1".parse().unwrap()));
        assert!(allow[1].contains("::ffff:203.0.113.7".parse().unwrap()));
        assert!(allow[2].contains("2001:db8::1".parse().unwrap()));
        assert!(!allow[2].contains("203.0.113.7".parse().unwrap()));
        assert_eq!(c.welcome, "welcome!");
        assert!(
            load(&[("FERRY_IP_RATE_LIMIT", "off")])
                .unwrap()
                .ingress
                .ip_rate
                .is_none()
        );

        for (var, bad) in [
            ("FERRY_ACK_BUDGET_MS", "0"),
            ("FERRY_ACK_BUDGET_MS", "5000"),
            ("FERRY_IP_RATE_LIMIT", "-3"),
            ("FERRY_IP_RATE_BURST", "0"),
            ("FERRY_IP_RATE_ALLOW", "10.0.0.0/33"),
            ("FERRY_TRUSTED_PROXIES", "proxy.local"),
            ("FERRY_WECHAT_MAX_SKEW", "0"),
            ("FERRY_SPOOL_MAX_BYTES", "0"),
        ] {
            assert_eq!(load(&[(var, bad)]).unwrap_err().var, var, "{var}={bad}");
        }
    }

    #[test]
    fn ip_ranges_match_by_prefix() {
        let all: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        let one: IpRange = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert_eq!(one.to_string(), "::1/128");
        let mapped = "::ffff:10.0.0.0/104".parse::<IpRange>();
        assert!(mapped.is_err(), "IPv4-mapped prefixes are written as IPv4");
    }

    #[test]
    fn every_variable_name_is_in_vars_all() {
        let source = include_str!("config.rs");
        let module = source
            .split("pub mod vars {")
            .nth(1)
            .and_then(|rest| rest.split("pub const ALL").next())
            .unwrap();
        let declared: Vec<&str> = module
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub const "))
            .filter_map(|l| l.split(':').next())
            .collect();
        assert!(declared.len() > 40);
        for name in declared {
            assert!(
                vars::ALL.contains(&name),
                "{name} is missing from vars::ALL"
            );
        }
        assert!(vars::is_known("LOCAL_API_KEY") && vars::is_known("QWEN_RPM"));
        assert!(!vars::is_known("DEEPSEK_APIKEY") && !vars::is_known("_API_KEY"));
    }

    #[test]
    fn several_keys_per_provider_are_a_comma_separated_list() {
        let c = load(&[
            ("DEEPSEEK_API_KEY", " k1, k2 ,,k3"),
            ("OPENAI_API_KEY", "o"),
        ])
        .unwrap();
        let keys: Vec<&str> = c.provider_keys["deepseek"]
            .iter()
            .map(|k| k.expose())
            .collect();
        assert_eq!(keys, ["k1", "k2", "k3"]);
        assert_eq!(c.providers[0].api_key.as_ref().unwrap().expose(), "k1");
        assert_eq!(c.provider_keys["chatgpt"].len(), 1);
        assert!(c.secrets_file_report.is_none());
    }

    fn secrets_file(dir: &std::path::Path, plaintext: &str) -> String {
        let path = dir.join("secrets.enc");
        let password = Secret::new("pw");
        let params = crate::secrets_file::KdfParams::default();
        crate::secrets_file::encrypt_to_file(&path, plaintext, &password, params).unwrap();
        path.to_str().unwrap().to_owned()
    }

    #[test]
    fn the_secrets_file_sits_between_the_environment_and_ferry_toml() {
        let dir = tempfile_dir().join("secrets-between");
        std::fs::create_dir_all(&dir).unwrap();
        let toml = dir.join("ferry.toml");
        std::fs::write(
            &toml,
            "wechat_token = \"from-toml\"\nwechat_app_id = \"wx1\"\n",
        )
        .unwrap();
        let path = secrets_file(
            &dir,
            "DEEPSEEK_API_KEY = [\"f1\", \"f2\"]\nWECHAT_TOKEN = \"from-file\"\nWECHAT_APP_SECRET = \"s-file\"\nNOT_A_FERRY_NAME = \"x\"\n",
        );
        let c = load(&[
            ("FERRY_CONFIG", toml.to_str().unwrap()),
            ("FERRY_SECRETS_FILE", &path),
            ("SECURE_CONFIG_PASSWORD", "pw"),
            ("WECHAT_APP_SECRET", "s-env"),
        ])
        .unwrap();
        let keys: Vec<&str> = c.provider_keys["deepseek"]
            .iter()
            .map(|k| k.expose())
            .collect();
        assert_eq!(keys, ["f1", "f2"]);
        assert_eq!(c.wechat.token.as_ref().unwrap().expose(), "from-file");
        assert_eq!(c.wechat.app_secret.as_ref().unwrap().expose(), "s-env");
        assert_eq!(c.wechat.app_id.as_deref(), Some("wx1"));
        let report = c.secrets_file_report.unwrap();
        assert_eq!(report.from_file, ["DEEPSEEK_API_KEY", "WECHAT_TOKEN"]);
        assert_eq!(report.overridden_by_env, ["WECHAT_APP_SECRET"]);
        assert_eq!(report.ignored, ["NOT_A_FERRY_NAME"]);
    }

    #[test]
    fn a_secrets_file_needs_its_password_and_the_right_one() {
        let dir = tempfile_dir().join("secrets-password");
        std::fs::create_dir_all(&dir).unwrap();
        let path = secrets_file(&dir, "DEEPSEEK_API_KEY = \"sk-hidden\"\n");
        let err = load(&[("FERRY_SECRETS_FILE", &path)]).unwrap_err();
        assert_eq!(err.var, "SECURE_CONFIG_PASSWORD");
        let err = load(&[
            ("FERRY_SECRETS_FILE", &path),
            ("SECURE_CONFIG_PASSWORD", "wrong"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "FERRY_SECRETS_FILE");
        assert!(err.reason.contains("password"), "{err}");
        assert!(!err.to_string().contains("sk-hidden"));
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ferry-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
