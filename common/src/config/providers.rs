//! The AI providers: the wire formats, the providers Ferry knows by name,
//! and reading each one's settings (`<NAME>_*` variables and
//! `[providers.<name>]` tables), keys and fleet gate.

use super::sources::{http_url, optional};
use super::*;

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
    /// The model asked when a message carries a picture (`None`: this
    /// provider answers text only, and the router skips it for pictures).
    pub vision_model: Option<String>,
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
            vision_model: None,
            temperature: None,
            max_tokens: None,
        }
    }
}

/// A provider Ferry knows without any configuration file.
pub(super) struct KnownProvider {
    name: &'static str,
    kind: ProviderKind,
    base_url: &'static str,
    /// `None`: the model must be configured (Doubao's endpoint ids).
    model: Option<&'static str>,
    /// The default vision model (`None`: text only unless one is
    /// configured).
    vision_model: Option<&'static str>,
}

/// The known providers, in the default fallback order.
pub(super) const KNOWN_PROVIDERS: &[KnownProvider] = &[
    KnownProvider {
        name: "deepseek",
        kind: ProviderKind::OpenAi,
        base_url: "https://api.deepseek.com",
        model: Some("deepseek-chat"),
        vision_model: None,
    },
    KnownProvider {
        name: "qwen",
        kind: ProviderKind::OpenAi,
        base_url: "https://dashscope.aliyuncs.com/compatible-mode/v1",
        model: Some("qwen-plus"),
        vision_model: Some("qwen-vl-max"),
    },
    KnownProvider {
        name: "chatgpt",
        kind: ProviderKind::OpenAi,
        base_url: "https://api.openai.com/v1",
        model: Some("gpt-4o-mini"),
        vision_model: Some("gpt-4o-mini"),
    },
    KnownProvider {
        name: "gemini",
        kind: ProviderKind::Gemini,
        base_url: "https://generativelanguage.googleapis.com/v1beta",
        model: Some("gemini-2.0-flash"),
        vision_model: Some("gemini-2.0-flash"),
    },
    KnownProvider {
        name: "zhipu",
        kind: ProviderKind::OpenAi,
        base_url: "https://open.bigmodel.cn/api/paas/v4",
        model: Some("glm-4-flash"),
        vision_model: Some("glm-4v-flash"),
    },
    KnownProvider {
        name: "doubao",
        kind: ProviderKind::OpenAi,
        base_url: "https://ark.cn-beijing.volces.com/api/v3",
        model: None,
        // Doubao's models are endpoint ids: a vision one must be configured.
        vision_model: None,
    },
];

/// The name of the built-in echo provider.
pub const ECHO_PROVIDER: &str = "echo";

/// The provider's `<NAME>_...` variable.
pub(super) fn provider_var(name: &str, suffix: &str) -> String {
    format!("{}_{suffix}", name.to_ascii_uppercase())
}

pub(super) fn configured(s: &Sources) -> Result<Vec<ProviderConfig>, ConfigError> {
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
pub(super) fn api_keys(s: &Sources, name: &str) -> Vec<Secret> {
    let keys = s.list(&provider_var(name, "API_KEY"));
    let keys = if keys.is_empty() && name == "chatgpt" {
        s.list(vars::OPENAI_API_KEY)
    } else {
        keys
    };
    keys.into_iter().map(Secret::from).collect()
}

pub(super) fn api_key(s: &Sources, name: &str) -> Option<Secret> {
    api_keys(s, name).into_iter().next()
}

pub(super) fn provider(s: &Sources, name: &str) -> Result<ProviderConfig, ConfigError> {
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
    let vision_model = vision_model(s, name, known, file);
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
        vision_model,
        temperature,
        max_tokens,
    })
}

/// `<NAME>_VISION_MODEL` (environment, secrets file, ferry.toml), else the
/// table's `vision_model`, else the known provider's default. Set but empty
/// turns pictures off for this provider.
fn vision_model(
    s: &Sources,
    name: &str,
    known: Option<&KnownProvider>,
    file: Option<&toml::Table>,
) -> Option<String> {
    let var = provider_var(name, "VISION_MODEL");
    let text = |v: Option<&toml::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
    // `Sources::get` reads an empty value as unset; here empty means off,
    // so the places an empty value can be set are asked directly.
    let set = s
        .env
        .get(&var)
        .cloned()
        .or_else(|| s.get(&var))
        .or_else(|| text(s.file.get(&var)))
        .or_else(|| text(file.and_then(|t| t.get("vision_model"))));
    match set {
        Some(v) => Some(v.trim().to_owned()).filter(|v| !v.is_empty()),
        None => known.and_then(|k| k.vision_model).map(str::to_owned),
    }
}

/// One provider's fleet limits and breaker: `<NAME>_RPM`, `_RPM_BURST`,
/// `_TPM`, `_MAX_CONCURRENCY`, `_BREAKER_WINDOW`, `_BREAKER_MIN_CALLS`,
/// `_BREAKER_FAILURE_RATE`, `_BREAKER_OPEN_FOR`, `_BREAKER_OPEN_FOR_QUOTA`,
/// `_SLOW_CALL` (seconds where a time), or the same settings in lower case
/// without the prefix in `[providers.<name>]` of ferry.toml
/// (`requests_per_minute`, `burst`, `tokens_per_minute`, `max_concurrency`,
/// `breaker_window`, `breaker_min_calls`, `breaker_failure_rate`,
/// `breaker_open_for`, `breaker_open_for_quota`, `slow_call`).
pub(super) fn gate_settings(s: &Sources, name: &str) -> Result<GateSettings, ConfigError> {
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
