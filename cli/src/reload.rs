//! SIGHUP: re-read the configuration and swap in the secrets a running
//! process can change, so a key is rotated without a restart.
//!
//! What reloads today: the worker's provider keys (every provider of the
//! chain has a [`KeyRing`], shared with its HTTP client), the api's bearer
//! tokens (`FERRY_API_TOKENS`, `FERRY_ADMIN_TOKEN`) and its WeChat token and
//! EncodingAESKey (the previous ones stay accepted for an hour, until the
//! console has the new ones: see `ferry_api::wechat::credentials`). What
//! does not: the provider chain itself and every other setting, the WeChat
//! app secret (held by the token cache) and the Redis URL (held by the
//! pools). A change
//! to one of those is logged as needing a restart; the running values stay.
//! A configuration that no longer loads (a bad value, a wrong password) is
//! logged and changes nothing.

use std::collections::BTreeMap;

use ferry_common::config::{Config, ConfigError, vars};
use std::sync::Arc;

use ferry_api::{Authenticator, WeChatIngress};
use ferry_common::{KeyRing, Secret};
use ferry_worker::providers::{Provider, Router};
use tokio_util::sync::CancellationToken;

/// What SIGHUP can change in this process, and what it can only report.
#[derive(Default)]
pub struct Reloadable {
    /// The key rings of the provider chain, by provider name.
    key_rings: BTreeMap<String, KeyRing>,
    /// Secrets in use that only a restart changes: name and running value.
    fixed: Vec<(&'static str, Option<Secret>)>,
    /// The api's bearer tokens.
    api_tokens: Option<Arc<Authenticator>>,
    /// The api's WeChat credentials.
    wechat: Option<Arc<WeChatIngress>>,
}

/// What one reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Providers whose keys were replaced, with their new number of keys.
    pub replaced: Vec<(String, usize)>,
    /// Providers the new configuration gives no key: they keep theirs
    /// (changing the chain needs a restart).
    pub kept: Vec<String>,
    /// Secrets that changed but are only read at start-up.
    pub needs_restart: Vec<&'static str>,
    /// Whether the api's bearer tokens changed (and were swapped in).
    pub api_tokens_replaced: bool,
    /// Whether the api's WeChat token or AES key changed (and were swapped
    /// in, the previous ones still accepted for a while).
    pub wechat_rotated: bool,
}

impl Reloadable {
    /// The worker's: its providers' key rings (filled with every configured
    /// key at once), plus the secrets it reads only at start-up.
    pub fn for_worker(config: &Config, router: &Router) -> Self {
        let key_rings = router
            .providers()
            .iter()
            .filter_map(|provider| {
                let ring = match provider {
                    Provider::OpenAi(p) => p.key_ring(),
                    Provider::Gemini(p) => p.key_ring(),
                    Provider::Echo(_) => return None,
                };
                Some((provider.name().to_owned(), ring.clone()))
            })
            .collect();
        let reloadable = Self {
            key_rings,
            api_tokens: None,
            wechat: None,
            fixed: vec![
                (vars::WECHAT_APP_SECRET, config.wechat.app_secret.clone()),
                (
                    vars::FERRY_WEBHOOK_SECRET,
                    config.jobs_api.webhook_secret.clone(),
                ),
                (config.redis.variable(), Some(config.redis.as_secret())),
            ],
        };
        reloadable.apply(config);
        reloadable
    }

    /// The api's: its bearer tokens and WeChat credentials are swapped; for
    /// the rest, a reload checks the new configuration and says what needs
    /// a restart.
    pub fn for_api(config: &Config, state: &ferry_api::AppState) -> Self {
        Self {
            key_rings: BTreeMap::new(),
            api_tokens: Some(Arc::clone(&state.auth)),
            wechat: Some(Arc::clone(&state.wechat)),
            fixed: vec![(config.redis.variable(), Some(config.redis.as_secret()))],
        }
    }

    /// Swaps in `config`'s provider keys; reports what changed.
    pub fn apply(&self, config: &Config) -> Reloaded {
        let mut done = Reloaded::default();
        for (name, ring) in &self.key_rings {
            match config.provider_keys.get(name).filter(|k| !k.is_empty()) {
                Some(keys) => {
                    if ring.replace(keys.iter().cloned()) {
                        done.replaced.push((name.clone(), keys.len()));
                    }
                }
                None => done.kept.push(name.clone()),
            }
        }
        if let Some(auth) = &self.api_tokens {
            done.api_tokens_replaced = auth.replace(config.api_tokens.clone());
        }
        if let Some(wechat) = &self.wechat {
            match crate::app::wechat_credentials(config) {
                Ok(next) => done.wechat_rotated = wechat.credentials.rotate(next),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: the WeChat credentials do not load; the running ones stay")
                }
            }
        }
        for (var, running) in &self.fixed {
            if *running != fixed_value(config, var) {
                done.needs_restart.push(var);
            }
        }
        done
    }

    /// Loads the configuration again with `load` and applies it, logging
    /// the outcome (names and counts, never values).
    pub fn reload(&self, load: impl Fn() -> Result<Config, ConfigError>) -> Option<Reloaded> {
        let config = match load() {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: the configuration does not load; nothing changed");
                return None;
            }
        };
        if let Some(report) = &config.secrets_file_report {
            report.log();
        }
        let done = self.apply(&config);
        let replaced: Vec<String> = done
            .replaced
            .iter()
            .map(|(name, n)| format!("{name}:{n}"))
            .collect();
        tracing::info!(
            provider_keys_replaced = %replaced.join(","),
            api_tokens_replaced = done.api_tokens_replaced,
            wechat_credentials_rotated = done.wechat_rotated,
            "SIGHUP: configuration re-read"
        );
        if !done.kept.is_empty() {
            tracing::warn!(
                providers = %done.kept.join(","),
                "SIGHUP: no key configured any more for these providers; they keep their keys until a restart"
            );
        }
        if !done.needs_restart.is_empty() {
            tracing::warn!(
                changed = %done.needs_restart.join(","),
                "SIGHUP: these secrets changed but are read only at start-up: restart to use them"
            );
        }
        Some(done)
    }
}

fn fixed_value(config: &Config, var: &str) -> Option<Secret> {
    match var {
        vars::WECHAT_APP_SECRET => config.wechat.app_secret.clone(),
        vars::WECHAT_TOKEN => config.wechat.token.clone(),
        vars::WECHAT_ENCODING_AES_KEY => config.wechat.encoding_aes_key.clone(),
        vars::REDIS_URL | vars::REDIS_CLUSTER_NODES => Some(config.redis.as_secret()),
        vars::FERRY_WEBHOOK_SECRET => config.jobs_api.webhook_secret.clone(),
        _ => None,
    }
}

/// Reloads on every SIGHUP until `shutdown`, with `load` (in production
/// `Config::from_env`). The handler is installed before this returns, so a
/// SIGHUP right after never ends the process.
pub fn on_sighup(
    reloadable: Reloadable,
    load: impl Fn() -> Result<Config, ConfigError> + Send + 'static,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hangups.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP received: reloading secrets");
                    reloadable.reload(&load);
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use ferry_worker::providers::CallPolicy;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    fn keys(ring: &KeyRing) -> Vec<String> {
        (0..ring.len())
            .map(|_| ring.next_key().unwrap().expose().to_owned())
            .collect()
    }

    #[test]
    fn a_worker_uses_every_configured_key_and_a_reload_replaces_them() {
        let start = config(&[
            ("DEEPSEEK_API_KEY", "d1,d2"),
            ("QWEN_API_KEY", "q1"),
            ("WECHAT_APP_SECRET", "s1"),
        ]);
        let router = Router::from_configs(
            &start.providers,
            &reqwest::Client::new(),
            CallPolicy::default(),
        );
        let reloadable = Reloadable::for_worker(&start, &router);
        assert_eq!(keys(&reloadable.key_rings["deepseek"]), ["d1", "d2"]);

        let next = config(&[
            ("DEEPSEEK_API_KEY", "d2,d3,d4"),
            ("QWEN_API_KEY", "q1"),
            ("WECHAT_APP_SECRET", "s2"),
        ]);
        let done = reloadable.apply(&next);
        assert_eq!(done.replaced, [("deepseek".to_owned(), 3)]);
        assert_eq!(done.needs_restart, [vars::WECHAT_APP_SECRET]);
        assert_eq!(keys(&reloadable.key_rings["deepseek"]), ["d2", "d3", "d4"]);
    }

    #[test]
    fn a_provider_left_without_a_key_keeps_its_keys() {
        let start = config(&[("DEEPSEEK_API_KEY", "d1"), ("QWEN_API_KEY", "q1")]);
        let router = Router::from_configs(
            &start.providers,
            &reqwest::Client::new(),
            CallPolicy::default(),
        );
        let reloadable = Reloadable::for_worker(&start, &router);
        let done = reloadable.apply(&config(&[("DEEPSEEK_API_KEY", "d9")]));
        assert_eq!(done.kept, ["qwen"]);
        assert_eq!(keys(&reloadable.key_rings["qwen"]), ["q1"]);
    }

    #[test]
    fn a_configuration_that_does_not_load_changes_nothing() {
        let start = config(&[("DEEPSEEK_API_KEY", "d1")]);
        let router = Router::from_configs(
            &start.providers,
            &reqwest::Client::new(),
            CallPolicy::default(),
        );
        let reloadable = Reloadable::for_worker(&start, &router);
        let failed = reloadable.reload(|| Err(ConfigError::new("FERRY_LISTEN", "bad")));
        assert!(failed.is_none());
        assert_eq!(keys(&reloadable.key_rings["deepseek"]), ["d1"]);
    }

    /// An api's state (its pool connects lazily: no Redis needed) and
    /// the reloadable parts of it, with `vars` plus a spool directory.
    fn api(vars: &[(&str, &str)]) -> (tempfile::TempDir, Config, ferry_api::AppState) {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().to_str().unwrap().to_owned();
        let mut all = vars.to_vec();
        all.push(("FERRY_SPOOL_DIR", &spool));
        let config = config(&all);
        let queue = crate::app::job_queue(&config, 1).unwrap();
        let state = crate::app::api_state(&config, queue, false).unwrap();
        (dir, config, state)
    }

    #[test]
    fn the_api_rotates_its_wechat_token_and_reports_what_needs_a_restart() {
        let (_dir, start, state) = api(&[("WECHAT_TOKEN", "t1")]);
        let reloadable = Reloadable::for_api(&start, &state);
        assert_eq!(reloadable.apply(&start), Reloaded::default());

        let next = config(&[("WECHAT_TOKEN", "t2"), ("REDIS_URL", "redis://10.0.0.9")]);
        let done = reloadable.apply(&next);
        assert!(done.wechat_rotated);
        assert_eq!(done.needs_restart, [vars::REDIS_URL]);
        let tokens: Vec<String> = state
            .wechat
            .credentials
            .candidates()
            .iter()
            .map(|c| c.token.expose().to_owned())
            .collect();
        assert_eq!(tokens, ["t2", "t1"]);
    }

    #[test]
    fn the_api_keeps_its_wechat_credentials_when_the_new_ones_are_unusable() {
        let (_dir, start, state) = api(&[("WECHAT_TOKEN", "t1")]);
        let reloadable = Reloadable::for_api(&start, &state);
        // An AES key without the appid it belongs to.
        let bad = config(&[
            ("WECHAT_TOKEN", "t2"),
            (
                "WECHAT_ENCODING_AES_KEY",
                "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            ),
        ]);
        assert!(!reloadable.apply(&bad).wechat_rotated);
        assert_eq!(state.wechat.credentials.candidates().len(), 1);
    }

    #[test]
    fn the_api_swaps_its_bearer_tokens() {
        use ferry_common::api_tokens::{Scope, hash_hex};
        let entry = |token: &str| format!("ci:submit:{}", hash_hex(token));
        let old = entry("old");
        let (_dir, start, state) = api(&[("WECHAT_TOKEN", "t1"), ("FERRY_API_TOKENS", &old)]);
        let reloadable = Reloadable::for_api(&start, &state);
        let (auth, counters) = (&state.auth, &state.security);
        assert!(
            auth.check(Some("old"), Scope::Submit, None, counters)
                .is_ok()
        );

        let done = reloadable.apply(&config(&[
            ("WECHAT_TOKEN", "t1"),
            ("FERRY_API_TOKENS", &entry("new")),
        ]));
        assert!(done.api_tokens_replaced && !done.wechat_rotated);
        assert!(
            auth.check(Some("old"), Scope::Submit, None, counters)
                .is_err()
        );
        assert!(
            auth.check(Some("new"), Scope::Submit, None, counters)
                .is_ok()
        );
        assert_eq!(counters.counts().bad_token, 1);
    }
}
