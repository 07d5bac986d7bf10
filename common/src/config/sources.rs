//! Where values come from (the environment, then the secrets file, then
//! `ferry.toml`) and the typed readers every setting goes through.

use super::*;

/// Where values come from: the environment, then the secrets file, then
/// ferry.toml.
pub(super) struct Sources {
    pub(super) env: HashMap<String, String>,
    pub(super) secrets: Option<(PathBuf, Secrets)>,
    pub(super) file: BTreeMap<String, toml::Value>,
    pub(super) file_providers: BTreeMap<String, toml::Table>,
}

impl Sources {
    pub(super) fn new(env: HashMap<String, String>) -> Result<Self, ConfigError> {
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
    pub(super) fn secrets_file(&self) -> Result<Option<(PathBuf, Secrets)>, ConfigError> {
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
    pub(super) fn secrets_file_report(&self) -> Option<SecretsFileReport> {
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
    pub(super) fn get(&self, var: &str) -> Option<String> {
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
    pub(super) fn list(&self, var: &str) -> Vec<String> {
        self.get(var)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub(super) fn secret(&self, var: &str) -> Option<Secret> {
        self.get(var).map(Secret::from)
    }

    pub(super) fn parse<T: FromStr>(
        &self,
        var: &str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|_| ConfigError::new(var, format!("expected {expected}, got {raw:?}"))),
        }
    }

    pub(super) fn seconds(&self, var: &str, default_secs: f64) -> Result<Duration, ConfigError> {
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

/// A list of IPs and CIDR blocks separated by commas or spaces.
pub(super) fn ip_ranges(s: &Sources, var: &str) -> Result<Vec<IpRange>, ConfigError> {
    s.get(var)
        .unwrap_or_default()
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(|item| item.parse().map_err(|reason| ConfigError::new(var, reason)))
        .collect()
}

pub(super) fn positive<T>(s: &Sources, var: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Default,
{
    let value = s.parse(var, default, "a positive whole number")?;
    if value <= T::default() {
        return Err(ConfigError::new(var, "expected a positive whole number"));
    }
    Ok(value)
}

pub(super) fn url_var(s: &Sources, var: &str, default: &str) -> Result<String, ConfigError> {
    http_url(var, &s.get(var).unwrap_or_else(|| default.to_owned()))
}

/// Checks an http(s) URL and drops its trailing slash.
pub(super) fn http_url(var: &str, raw: &str) -> Result<String, ConfigError> {
    let parsed =
        url::Url::parse(raw).map_err(|e| ConfigError::new(var, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::new(var, "expected an http:// or https:// URL"));
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

pub(super) fn optional<T: FromStr>(
    s: &Sources,
    var: &str,
    expected: &str,
) -> Result<Option<T>, ConfigError> {
    s.get(var)
        .map(|raw| {
            raw.parse()
                .map_err(|_| ConfigError::new(var, format!("expected {expected}, got {raw:?}")))
        })
        .transpose()
}
