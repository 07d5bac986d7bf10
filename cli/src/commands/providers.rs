//! `ferry providers [check]`: the AI provider chain as the worker would use
//! it, and a live check of each provider.
//!
//! The list needs neither network nor Redis and never shows a key, only
//! whether one is set. `check` makes one tiny call to each provider, without
//! retries, and exits non-zero if any failed: after a deploy or a key
//! rotation it tells which provider is wrong and why (the failure class of
//! PROVIDERS.md and the provider's own message).

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use ferry_common::config::{Config, ProviderConfig, ProviderKind, redact_url, vars};
use ferry_worker::providers::{Answer, ChatMessage, ChatRequest, Provider, ProviderError};

use crate::app;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Make one tiny call to each provider (no retries) and report.
    Check,
}

/// The check's question, and the most tokens its answer may take.
const PROBE: &str = "Reply with the single word: ok";
const PROBE_MAX_TOKENS: u32 = 16;

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (config, _guard) = app::init()?;
    let mut out = std::io::stdout();
    match args.action {
        None => list(&config, &mut out),
        Some(Action::Check) => check(&config, &mut out).await,
    }
}

/// Prints the chain in fallback order with each provider's settings, then
/// the call and memory settings.
pub fn list(config: &Config, out: &mut impl Write) -> anyhow::Result<()> {
    if config.providers.is_empty() {
        writeln!(out, "{}", no_provider())?;
    } else {
        let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
        writeln!(out, "chain (fallback order): {}", names.join(" -> "))?;
        let mut rows = vec![row(&[
            "provider",
            "kind",
            "model",
            "temperature",
            "max tokens",
            "key",
            "base URL",
        ])];
        rows.extend(config.providers.iter().map(describe));
        write!(out, "{}", table(&rows))?;
    }
    let ai = &config.ai;
    writeln!(
        out,
        "calls: {} attempt(s) per provider; {} per message in all; connect timeout {}; attempt timeout {}; extra CA: {}",
        ai.attempts_per_provider,
        secs(ai.total_budget),
        secs(ai.connect_timeout),
        secs(ai.request_timeout),
        ai.extra_ca_file
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string()),
    )?;
    writeln!(
        out,
        "memory: last {} turn(s) per user, kept {}; prompts up to {} characters; system prompt: {}",
        ai.memory_turns,
        secs(ai.memory_ttl),
        ai.max_prompt_chars,
        config
            .system_prompt
            .as_ref()
            .map_or("none".into(), |s| format!(
                "{} characters",
                s.chars().count()
            )),
    )?;
    Ok(())
}

fn describe(p: &ProviderConfig) -> Vec<String> {
    let or_default = |v: Option<String>| v.unwrap_or_else(|| "default".into());
    // A gateway URL may carry credentials (`https://user:pw@host`).
    let base_url = if p.base_url.contains('@') {
        redact_url(&p.base_url)
    } else {
        p.base_url.clone()
    };
    let (kind, key, base_url) = match p.kind {
        ProviderKind::OpenAi => ("openai", key_state(p), base_url),
        ProviderKind::Gemini => ("gemini", key_state(p), base_url),
        ProviderKind::Echo => ("echo", "not needed", "built in".into()),
    };
    vec![
        p.name.clone(),
        kind.into(),
        p.model.clone(),
        or_default(p.temperature.map(|t| t.to_string())),
        or_default(p.max_tokens.map(|t| t.to_string())),
        key.into(),
        base_url,
    ]
}

fn key_state(p: &ProviderConfig) -> &'static str {
    if p.api_key.is_some() {
        "set"
    } else {
        "missing"
    }
}

/// Calls each provider once, all at once, and prints one line per provider
/// in chain order. Fails if any provider failed.
pub async fn check(config: &Config, out: &mut impl Write) -> anyhow::Result<()> {
    if config.providers.is_empty() {
        bail!("{}", no_provider());
    }
    let client = app::provider_client(config)?;
    let calls: Vec<_> = config
        .providers
        .iter()
        .map(|c| {
            let provider = Provider::new(&tiny(c), client.clone());
            tokio::spawn(async move { provider.chat(&probe()).await })
        })
        .collect();
    let mut rows = vec![row(&["provider", "result", "latency", "detail"])];
    let mut failed = Vec::new();
    for (c, call) in config.providers.iter().zip(calls) {
        let result = call.await?;
        if result.is_err() {
            failed.push(c.name.as_str());
        }
        rows.push(report(&c.name, result));
    }
    write!(out, "{}", table(&rows))?;
    out.flush()?;
    if !failed.is_empty() {
        bail!(
            "{} of {} provider(s) failed the check: {}",
            failed.len(),
            config.providers.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// The provider's settings with the answer capped to a few tokens.
fn tiny(config: &ProviderConfig) -> ProviderConfig {
    let cap = config
        .max_tokens
        .map_or(PROBE_MAX_TOKENS, |m| m.min(PROBE_MAX_TOKENS));
    ProviderConfig {
        max_tokens: Some(cap),
        ..config.clone()
    }
}

fn probe() -> ChatRequest {
    ChatRequest::new(vec![ChatMessage::user(PROBE)])
}

fn report(name: &str, result: Result<Answer, ProviderError>) -> Vec<String> {
    match result {
        Ok(a) => vec![
            name.into(),
            "ok".into(),
            millis(a.latency),
            format!("{}, {} tokens", a.model, a.usage.total_tokens),
        ],
        // Key, model and endpoint work; the tiny cap ran out while the
        // model was thinking.
        Err(e) if e.is_cut_by_max_tokens() => vec![
            name.into(),
            "ok".into(),
            "-".into(),
            format!("answered, but used all {PROBE_MAX_TOKENS} tokens before any text"),
        ],
        Err(e) => {
            let full = e.to_string();
            let detail = full
                .strip_prefix(&format!("{name}: "))
                .unwrap_or(&full)
                .to_owned();
            vec![name.into(), "FAILED".into(), "-".into(), detail]
        }
    }
}

fn no_provider() -> String {
    format!(
        "{}: no AI provider is configured; set a key such as DEEPSEEK_API_KEY (or FERRY_PROVIDERS=echo to test)",
        vars::FERRY_PROVIDERS
    )
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Left-aligned columns two spaces apart; the last column unpadded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for r in rows {
        let last = r.len().saturating_sub(1);
        for (i, cell) in r.iter().enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count() + 2;
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            }
        }
        text.push('\n');
    }
    text
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Config {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    #[test]
    fn the_list_shows_chain_and_settings_but_never_a_key() {
        let config = load(&[
            ("FERRY_PROVIDERS", "deepseek,echo"),
            ("DEEPSEEK_API_KEY", "sk-secret-abcd"),
            ("DEEPSEEK_TEMPERATURE", "0.7"),
            ("DEEPSEEK_BASE_URL", "https://user:pw@gateway.example/v1"),
        ]);
        let mut out = Vec::new();
        list(&config, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("chain (fallback order): deepseek -> echo\n"),
            "{out}"
        );
        let deepseek = out.lines().find(|l| l.starts_with("deepseek ")).unwrap();
        let cells: Vec<&str> = deepseek.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "deepseek",
                "openai",
                "deepseek-chat",
                "0.7",
                "default",
                "set",
                "https://user:***@gateway.example/v1"
            ]
        );
        assert!(!out.contains("sk-secret") && !out.contains("abcd") && !out.contains(":pw@"));
        assert!(
            out.contains("3 attempt(s) per provider; 120 s per message"),
            "{out}"
        );
    }

    #[test]
    fn the_probe_caps_the_answer_to_a_few_tokens() {
        let config = load(&[("DEEPSEEK_API_KEY", "k"), ("DEEPSEEK_MAX_TOKENS", "4096")]);
        assert_eq!(
            tiny(&config.providers[0]).max_tokens,
            Some(PROBE_MAX_TOKENS)
        );
    }
}
