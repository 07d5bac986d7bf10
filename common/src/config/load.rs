//! Building a [`Config`]: each section read and validated from the
//! [`Sources`], so a bad value stops start-up naming its variable.

use super::providers::{self, api_keys, gate_settings};
use super::sources::{ip_ranges, positive, url_var};
use super::*;

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

        let redis = redis_target(&s)?;
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
            reply_mode: reply_mode(&s)?,
            passive_wait: Duration::from_millis(s.parse(
                vars::FERRY_PASSIVE_WAIT_MS,
                4500,
                "milliseconds, under WeChat's 5,000",
            )?),
        };
        if wechat.passive_wait >= Duration::from_secs(5) {
            return Err(ConfigError::new(
                vars::FERRY_PASSIVE_WAIT_MS,
                "must be under 5000: WeChat gives up on a try after 5 s",
            ));
        }
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
            partitions: Partitions::parse(
                &s.get(vars::FERRY_QUEUE_PARTITIONS).unwrap_or_default(),
                crate::queue::QUEUES,
            )
            .map_err(|e| ConfigError::new(vars::FERRY_QUEUE_PARTITIONS, e))?,
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
        let providers = providers::configured(&s)?;
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

        let ingress = ingress_config(&s, &redis)?;
        Ok(Config {
            redis,
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
            ingress,
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

    /// Where Redis is, any password replaced, for logs and messages.
    pub fn redis_redacted(&self) -> String {
        self.redis.redacted()
    }
}

/// One Redis (`REDIS_URL`, the default) or a cluster
/// (`REDIS_CLUSTER_NODES`), never both.
fn redis_target(s: &Sources) -> Result<RedisTarget, ConfigError> {
    let is_url = |u: &str| {
        u.starts_with("redis://") || u.starts_with("rediss://") || u.starts_with("unix://")
    };
    match (s.get(vars::REDIS_URL), s.get(vars::REDIS_CLUSTER_NODES)) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            vars::REDIS_CLUSTER_NODES,
            format!(
                "set either {} (one Redis) or this (a cluster), not both",
                vars::REDIS_URL
            ),
        )),
        (None, Some(nodes)) => {
            let seeds: Vec<Secret> = nodes
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| {
                    if n.starts_with("redis://") || n.starts_with("rediss://") {
                        Ok(Secret::from(n.to_owned()))
                    } else if n
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                    {
                        Ok(Secret::from(format!("redis://{n}")))
                    } else {
                        Err(ConfigError::new(
                            vars::REDIS_CLUSTER_NODES,
                            "expected host:port or redis:// / rediss:// URLs, comma-separated",
                        ))
                    }
                })
                .collect::<Result<_, _>>()?;
            if seeds.is_empty() {
                return Err(ConfigError::new(vars::REDIS_CLUSTER_NODES, "names no node"));
            }
            Ok(RedisTarget::Cluster(seeds))
        }
        (url, None) => {
            let url = url.unwrap_or_else(|| "redis://127.0.0.1:6379".into());
            if !is_url(&url) {
                return Err(ConfigError::new(
                    vars::REDIS_URL,
                    "expected a redis:// or rediss:// URL",
                ));
            }
            Ok(RedisTarget::Single(Secret::from(url)))
        }
    }
}

/// `FERRY_DURABLE_ACK`: `replica` by default on a cluster (a failover
/// must not lose a push WeChat was told was taken), `none` on one Redis
/// (which usually has no replica to wait for).
fn durable_ack(s: &Sources, redis: &RedisTarget) -> Result<DurableAck, ConfigError> {
    match s
        .get(vars::FERRY_DURABLE_ACK)
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None if redis.is_cluster() => Ok(DurableAck::Replica),
        None | Some("none") => Ok(DurableAck::None),
        Some("replica") => Ok(DurableAck::Replica),
        Some(other) => Err(ConfigError::new(
            vars::FERRY_DURABLE_ACK,
            format!("expected none or replica, got {other:?}"),
        )),
    }
}

/// The slowest acknowledgement budget accepted: the spool's own write limit
/// (1 s) on top must still leave room under WeChat's 5 s.
pub(super) const MAX_ACK_BUDGET_MS: u64 = 3000;

pub(super) fn ingress_config(
    s: &Sources,
    redis: &RedisTarget,
) -> Result<IngressConfig, ConfigError> {
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
        durable_ack: durable_ack(s, redis)?,
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

pub(super) fn api_tokens(s: &Sources) -> Result<ApiTokens, ConfigError> {
    let admin = s.get(vars::FERRY_ADMIN_TOKEN);
    ApiTokens::parse(&s.list(vars::FERRY_API_TOKENS), admin.as_deref()).map_err(|e| {
        let var = match e {
            TokenConfigError::Api { .. } => vars::FERRY_API_TOKENS,
            TokenConfigError::Admin { .. } => vars::FERRY_ADMIN_TOKEN,
        };
        ConfigError::new(var, e.to_string())
    })
}

pub(super) fn ai_config(s: &Sources) -> Result<AiConfig, ConfigError> {
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

pub(super) fn reply_mode(s: &Sources) -> Result<ReplyMode, ConfigError> {
    match s
        .get(vars::WECHAT_REPLY_MODE)
        .map(|v| v.to_ascii_lowercase())
    {
        None => Ok(ReplyMode::CustomerService),
        Some(v) if v == "customer_service" => Ok(ReplyMode::CustomerService),
        Some(v) if v == "passive" => Ok(ReplyMode::Passive),
        Some(v) if v == "auto" => Ok(ReplyMode::Auto),
        Some(other) => Err(ConfigError::new(
            vars::WECHAT_REPLY_MODE,
            format!("expected customer_service, passive or auto, got {other:?}"),
        )),
    }
}

pub(super) fn token_source(s: &Sources) -> Result<crate::fleet::TokenSource, ConfigError> {
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

pub(super) fn jobs_api_config(s: &Sources) -> Result<JobsApiConfig, ConfigError> {
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

pub(super) fn reply_config(s: &Sources) -> Result<ReplyConfig, ConfigError> {
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
        continue_keyword: text(vars::FERRY_CONTINUE_KEYWORD, DEFAULT_CONTINUE_KEYWORD)
            .trim()
            .to_owned(),
        continue_text: text(vars::FERRY_CONTINUE_TEXT, DEFAULT_CONTINUE_TEXT),
        passive_pending_text: text(
            vars::FERRY_PASSIVE_PENDING_TEXT,
            DEFAULT_PASSIVE_PENDING_TEXT,
        ),
        image_prompt: text(vars::FERRY_IMAGE_PROMPT, DEFAULT_IMAGE_PROMPT),
        image_failed_text: text(vars::FERRY_IMAGE_FAILED_TEXT, DEFAULT_IMAGE_FAILED_TEXT),
    })
}
