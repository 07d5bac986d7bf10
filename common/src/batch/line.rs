//! One request of the jobs API or one line of a JSONL batch, checked before
//! anything is enqueued: a request that could never succeed is refused at
//! the door with its reason, instead of failing later on a worker.
//!
//! Pure (no I/O), so the api validates a whole batch stream line by line
//! and the rules are tested here.

use std::collections::HashSet;

use serde::Deserialize;

use crate::config::{ProviderConfig, ProviderKind};
use crate::job::kinds::{ChatCompletion, ChatParameters, ChatTurn};

/// Longest `custom_id`, in bytes.
pub const MAX_CUSTOM_ID_BYTES: usize = 64;
/// Most messages in one request.
pub const MAX_MESSAGES: usize = 256;
/// Longest `model`, in bytes.
pub const MAX_MODEL_BYTES: usize = 128;
/// Largest `max_tokens` accepted.
pub const MAX_TOKENS: u32 = 131_072;
/// Most `stop` sequences (OpenAI's limit; Gemini takes 5).
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Longest `stop` sequence, in bytes.
pub const MAX_STOP_BYTES: usize = 256;

const ALL_FORMATS: &[ProviderKind] = &[
    ProviderKind::OpenAi,
    ProviderKind::Gemini,
    ProviderKind::Echo,
];
const OPENAI_ONLY: &[ProviderKind] = &[ProviderKind::OpenAi, ProviderKind::Echo];

/// Which wire formats (PROVIDERS.md) carry each optional sampling
/// parameter, by its OpenAI name; README's "Coming from OpenAI's Batch
/// API" has the same table. A parameter the asked provider's format lacks
/// is refused at the door, never silently dropped. (The echo provider
/// ignores them all, so it takes them all.)
pub const PARAMETERS: &[(&str, &[ProviderKind])] = &[
    ("temperature", ALL_FORMATS),
    ("max_tokens", ALL_FORMATS),
    ("top_p", ALL_FORMATS),
    ("stop", ALL_FORMATS),
    ("frequency_penalty", OPENAI_ONLY),
    ("presence_penalty", OPENAI_ONLY),
];

/// Whether the wire format `kind` carries the parameter `name`.
pub fn format_supports(kind: ProviderKind, name: &str) -> bool {
    PARAMETERS
        .iter()
        .any(|(field, kinds)| *field == name && kinds.contains(&kind))
}

/// The parameters `p` sets, by their OpenAI names, in [`PARAMETERS`] order.
pub fn set_parameters(p: &ChatParameters) -> Vec<&'static str> {
    let set = [
        p.temperature.is_some(),
        p.max_tokens.is_some(),
        p.top_p.is_some(),
        p.stop.is_some(),
        p.frequency_penalty.is_some(),
        p.presence_penalty.is_some(),
    ];
    PARAMETERS
        .iter()
        .zip(set)
        .filter(|(_, set)| *set)
        .map(|((name, _), _)| *name)
        .collect()
}

/// A request as sent: a batch line, or the body of `POST /v1/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(default)]
    custom_id: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    model: Option<String>,
    messages: Vec<ChatTurn>,
    #[serde(default)]
    parameters: ChatParameters,
}

/// A valid request: the job's payload and the caller's id for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRequest {
    pub custom_id: Option<String>,
    pub payload: ChatCompletion,
}

/// What a request is checked against.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The providers of the configured chain, by name.
    pub providers: Vec<String>,
    /// The same providers with their wire format and models: what a
    /// parameter is checked against, and what the `model` of an OpenAI
    /// Batch API line is routed by ([`super::openai`]).
    pub models: Vec<ProviderModels>,
}

/// One provider of the chain as requests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderModels {
    pub name: String,
    pub kind: ProviderKind,
    /// `<NAME>_MODEL`.
    pub model: String,
    /// `<NAME>_VISION_MODEL`, if any.
    pub vision_model: Option<String>,
}

impl ProviderModels {
    pub fn of(config: &ProviderConfig) -> Self {
        Self {
            name: config.name.clone(),
            kind: config.kind,
            model: config.model.clone(),
            vision_model: config.vision_model.clone(),
        }
    }
}

impl Rules {
    /// The rules of a deployment whose chain is `chain`.
    pub fn new(chain: &[ProviderConfig]) -> Self {
        Self {
            providers: chain.iter().map(|p| p.name.clone()).collect(),
            models: chain.iter().map(ProviderModels::of).collect(),
        }
    }

    /// The first parameter `p` sets that a provider asked cannot take:
    /// `provider` alone when named, else every provider of the chain (any
    /// of them may answer). Returns the parameter and the provider.
    pub fn unsupported_parameter(
        &self,
        provider: Option<&str>,
        p: &ChatParameters,
    ) -> Option<(&'static str, String)> {
        let asked: Vec<&ProviderModels> = self
            .models
            .iter()
            .filter(|m| provider.is_none_or(|name| m.name == name))
            .collect();
        set_parameters(p).into_iter().find_map(|field| {
            asked
                .iter()
                .find(|m| !format_supports(m.kind, field))
                .map(|m| (field, m.name.clone()))
        })
    }

    /// Checks one request; `needs_custom_id` for batch lines. The reason is
    /// meant for the caller: it names the field and never echoes content.
    pub fn check(&self, raw: &[u8], needs_custom_id: bool) -> Result<ValidRequest, String> {
        let wire: Wire = serde_json::from_slice(raw).map_err(|e| {
            // serde's message names fields and positions, never values.
            format!("not a valid request object: {e}")
        })?;
        let custom_id = match (wire.custom_id, needs_custom_id) {
            (None, true) => return Err("custom_id is required".into()),
            (Some(id), _) => {
                check_custom_id(&id)?;
                Some(id)
            }
            (None, false) => None,
        };
        if let Some(provider) = &wire.provider
            && !self.providers.iter().any(|p| p == provider)
        {
            return Err(format!(
                "unknown provider {:?}: this deployment has {}",
                truncate(provider, 32),
                self.providers.join(", ")
            ));
        }
        if let Some(model) = &wire.model {
            if wire.provider.is_none() {
                return Err("model needs provider: a model belongs to one provider".into());
            }
            check_model(model)?;
        }
        check_messages(&wire.messages)?;
        check_parameters(&wire.parameters)?;
        if let Some((field, provider)) =
            self.unsupported_parameter(wire.provider.as_deref(), &wire.parameters)
        {
            return Err(format!(
                "parameters.{field} is not supported by provider {provider:?} (its wire format has no such field)"
            ));
        }
        Ok(ValidRequest {
            custom_id,
            payload: ChatCompletion {
                provider: wire.provider,
                model: wire.model,
                messages: wire.messages,
                parameters: wire.parameters,
            },
        })
    }
}

/// A caller's id of a batch line: 1 to [`MAX_CUSTOM_ID_BYTES`], no
/// control characters.
pub(crate) fn check_custom_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_CUSTOM_ID_BYTES {
        return Err(format!(
            "custom_id must be 1 to {MAX_CUSTOM_ID_BYTES} bytes long"
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("custom_id must not contain control characters".into());
    }
    Ok(())
}

/// A model name a caller chose: it becomes part of a URL path (Gemini).
pub(crate) fn check_model(model: &str) -> Result<(), String> {
    if model.is_empty() || model.len() > MAX_MODEL_BYTES {
        return Err(format!("model must be 1 to {MAX_MODEL_BYTES} bytes long"));
    }
    let plain = model
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._:/@".contains(c));
    if !plain || model.contains("..") {
        return Err("model may use letters, digits and - . _ : / @ only".into());
    }
    Ok(())
}

pub(crate) fn check_messages(messages: &[ChatTurn]) -> Result<(), String> {
    if messages.is_empty() || messages.len() > MAX_MESSAGES {
        return Err(format!("messages must hold 1 to {MAX_MESSAGES} messages"));
    }
    for (i, m) in messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
            return Err(format!(
                "messages[{i}].role must be system, user or assistant"
            ));
        }
    }
    if !messages.iter().any(|m| m.role == "user") {
        return Err("messages must include a user message".into());
    }
    Ok(())
}

fn check_parameters(p: &ChatParameters) -> Result<(), String> {
    match parameter_problem(p) {
        Some((field, problem)) => Err(format!("parameters.{field} {problem}")),
        None => Ok(()),
    }
}

/// The first parameter out of its range, and what its range is.
pub(crate) fn parameter_problem(p: &ChatParameters) -> Option<(&'static str, String)> {
    let within = |v: Option<f32>, lo: f32, hi: f32| v.is_none_or(|v| (lo..=hi).contains(&v));
    if !within(p.temperature, 0.0, 2.0) {
        return Some(("temperature", "must be between 0 and 2".into()));
    }
    if p.max_tokens.is_some_and(|n| !(1..=MAX_TOKENS).contains(&n)) {
        return Some(("max_tokens", format!("must be between 1 and {MAX_TOKENS}")));
    }
    if !within(p.top_p, 0.0, 1.0) {
        return Some(("top_p", "must be between 0 and 1".into()));
    }
    if let Some(stop) = &p.stop
        && (stop.is_empty()
            || stop.len() > MAX_STOP_SEQUENCES
            || stop
                .iter()
                .any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES))
    {
        return Some((
            "stop",
            format!("must hold 1 to {MAX_STOP_SEQUENCES} sequences of 1 to {MAX_STOP_BYTES} bytes"),
        ));
    }
    if !within(p.frequency_penalty, -2.0, 2.0) {
        return Some(("frequency_penalty", "must be between -2 and 2".into()));
    }
    if !within(p.presence_penalty, -2.0, 2.0) {
        return Some(("presence_penalty", "must be between -2 and 2".into()));
    }
    None
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// The custom_ids seen so far in one batch: each may appear once, so the
/// results have one line per custom_id.
#[derive(Debug, Default)]
pub struct SeenIds(HashSet<String>);

impl SeenIds {
    /// Records `id`; an error if it was seen before.
    pub fn insert(&mut self, id: &str) -> Result<(), String> {
        if self.0.insert(id.to_owned()) {
            Ok(())
        } else {
            Err("custom_id is used by an earlier line; each must be unique".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        let mut gemini = ProviderConfig::echo();
        gemini.name = "gemini".into();
        gemini.kind = ProviderKind::Gemini;
        gemini.model = "gemini-2.0-flash".into();
        let mut deepseek = ProviderConfig::echo();
        deepseek.name = "deepseek".into();
        deepseek.kind = ProviderKind::OpenAi;
        deepseek.model = "deepseek-chat".into();
        let mut rules = Rules::new(&[deepseek, ProviderConfig::echo(), gemini]);
        // The old checks below name only these two.
        rules.providers.truncate(2);
        rules
    }

    fn check(line: &str) -> Result<ValidRequest, String> {
        rules().check(line.as_bytes(), true)
    }

    #[test]
    fn a_complete_line_becomes_a_payload() {
        let v = check(
            r#"{"custom_id":"a-1","provider":"deepseek","model":"deepseek-reasoner","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"parameters":{"temperature":0.2,"max_tokens":100}}"#,
        )
        .unwrap();
        assert_eq!(v.custom_id.as_deref(), Some("a-1"));
        assert_eq!(v.payload.provider.as_deref(), Some("deepseek"));
        assert_eq!(v.payload.parameters.max_tokens, Some(100));
    }

    #[test]
    fn each_bad_line_gets_a_reason_naming_the_field() {
        let cases = [
            ("not json", "not a valid request object"),
            (
                r#"{"messages":[{"role":"user","content":"x"}]}"#,
                "custom_id is required",
            ),
            (
                r#"{"custom_id":"","messages":[{"role":"user","content":"x"}]}"#,
                "custom_id must be",
            ),
            (
                r#"{"custom_id":"a","provider":"nope","messages":[{"role":"user","content":"x"}]}"#,
                "unknown provider \"nope\"",
            ),
            (
                r#"{"custom_id":"a","model":"m","messages":[{"role":"user","content":"x"}]}"#,
                "model needs provider",
            ),
            (r#"{"custom_id":"a","messages":[]}"#, "messages must hold"),
            (
                r#"{"custom_id":"a","messages":[{"role":"robot","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"custom_id":"a","messages":[{"role":"system","content":"x"}]}"#,
                "a user message",
            ),
            (
                r#"{"custom_id":"a","messages":[{"role":"user","content":"x"}],"parameters":{"temperature":3}}"#,
                "temperature",
            ),
            (
                r#"{"custom_id":"a","messages":[{"role":"user","content":"x"}],"extra":1}"#,
                "unknown field `extra`",
            ),
        ];
        for (line, expected) in cases {
            let err = check(line).unwrap_err();
            assert!(err.contains(expected), "{line}: {err}");
        }
    }

    #[test]
    fn a_parameter_the_providers_format_lacks_is_refused_not_dropped() {
        let line = |provider: &str, parameters: &str| {
            format!(
                r#"{{"custom_id":"a",{provider}"messages":[{{"role":"user","content":"x"}}],"parameters":{parameters}}}"#
            )
        };
        let ok = check(&line(
            r#""provider":"deepseek","#,
            r#"{"top_p":0.9,"stop":["END"],"frequency_penalty":0.5}"#,
        ))
        .unwrap();
        assert_eq!(ok.payload.parameters.top_p, Some(0.9));
        assert_eq!(ok.payload.parameters.stop, Some(vec!["END".to_owned()]));
        let mut rules = rules();
        rules.providers.push("gemini".into());
        let gemini = rules
            .check(
                line(r#""provider":"gemini","#, r#"{"presence_penalty":1}"#).as_bytes(),
                true,
            )
            .unwrap_err();
        assert_eq!(
            gemini,
            "parameters.presence_penalty is not supported by provider \"gemini\" (its wire format has no such field)"
        );
        // Without a provider any of the chain may answer: all must take it.
        let chain = rules
            .check(line("", r#"{"frequency_penalty":1}"#).as_bytes(), true)
            .unwrap_err();
        assert!(chain.contains("\"gemini\""), "{chain}");
        assert!(
            rules
                .check(line("", r#"{"top_p":1}"#).as_bytes(), true)
                .is_ok()
        );
        for (parameters, field) in [
            (r#"{"top_p":1.5}"#, "parameters.top_p"),
            (r#"{"stop":[]}"#, "parameters.stop"),
            (r#"{"stop":["a","b","c","d","e"]}"#, "parameters.stop"),
            (
                r#"{"frequency_penalty":-3}"#,
                "parameters.frequency_penalty",
            ),
        ] {
            let err = check(&line("", parameters)).unwrap_err();
            assert!(err.starts_with(field), "{parameters}: {err}");
        }
    }

    #[test]
    fn a_custom_id_may_appear_once() {
        let mut seen = SeenIds::default();
        assert!(seen.insert("a").is_ok());
        assert!(seen.insert("b").is_ok());
        assert!(seen.insert("a").unwrap_err().contains("unique"));
    }
}
