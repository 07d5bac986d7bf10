//! Environment variable names: the one place each is spelled.

pub const FERRY_CONFIG: &str = "FERRY_CONFIG";
pub const REDIS_URL: &str = "REDIS_URL";
/// A Redis Cluster's seed nodes (`host:port` or URLs, comma-separated),
/// instead of `REDIS_URL`.
pub const REDIS_CLUSTER_NODES: &str = "REDIS_CLUSTER_NODES";
/// Partitions per queue (`wechat=6,batch=6`; one each by default).
pub const FERRY_QUEUE_PARTITIONS: &str = "FERRY_QUEUE_PARTITIONS";
/// `replica`: the ingress answers WeChat once one replica has the push;
/// `none`: once the primary has it.
pub const FERRY_DURABLE_ACK: &str = "FERRY_DURABLE_ACK";
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
/// OpenTelemetry's standard variables (issue 20): traces are exported over
/// OTLP/HTTP only when one of the two endpoints is set. The exporter reads
/// the endpoints, `OTEL_EXPORTER_OTLP_HEADERS` and `_TIMEOUT` itself.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// Only `http/protobuf` (the OTLP/HTTP default) is built in.
pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const OTEL_EXPORTER_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
pub const OTEL_EXPORTER_OTLP_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
/// Default `ferry-<subcommand>` (`ferry-api`, `ferry-worker`, `ferry-dev`).
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// Extra resource attributes, `key=value,...` (read by the SDK).
pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
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
pub const FERRY_CONTINUE_KEYWORD: &str = "FERRY_CONTINUE_KEYWORD";
pub const FERRY_CONTINUE_TEXT: &str = "FERRY_CONTINUE_TEXT";
pub const FERRY_PASSIVE_PENDING_TEXT: &str = "FERRY_PASSIVE_PENDING_TEXT";
pub const FERRY_IMAGE_PROMPT: &str = "FERRY_IMAGE_PROMPT";
pub const FERRY_IMAGE_FAILED_TEXT: &str = "FERRY_IMAGE_FAILED_TEXT";
/// `customer_service` (default), `passive` or `auto`.
pub const WECHAT_REPLY_MODE: &str = "WECHAT_REPLY_MODE";
/// Passive mode: how long the ingress holds a try for the answer.
pub const FERRY_PASSIVE_WAIT_MS: &str = "FERRY_PASSIVE_WAIT_MS";
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
    REDIS_CLUSTER_NODES,
    FERRY_QUEUE_PARTITIONS,
    FERRY_DURABLE_ACK,
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
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_SERVICE_NAME,
    OTEL_RESOURCE_ATTRIBUTES,
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
    FERRY_CONTINUE_KEYWORD,
    FERRY_CONTINUE_TEXT,
    FERRY_PASSIVE_PENDING_TEXT,
    FERRY_IMAGE_PROMPT,
    FERRY_IMAGE_FAILED_TEXT,
    WECHAT_REPLY_MODE,
    FERRY_PASSIVE_WAIT_MS,
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
    "_VISION_MODEL",
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
