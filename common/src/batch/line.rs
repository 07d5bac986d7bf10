//! One request of the jobs API or one line of a JSONL batch, checked before
//! anything is enqueued: a request that could never succeed is refused at
//! the door with its reason, instead of failing later on a worker.
//!
//! Pure (no I/O), so the api validates a whole batch stream line by line
//! and the rules are tested here.

use std::collections::HashSet;

use serde::Deserialize;

use crate::job::kinds::{ChatCompletion, ChatParameters, ChatTurn};

/// Longest `custom_id`, in bytes.
pub const MAX_CUSTOM_ID_BYTES: usize = 64;
/// Most messages in one request.
pub const MAX_MESSAGES: usize = 256;
/// Longest `model`, in bytes.
pub const MAX_MODEL_BYTES: usize = 128;
/// Largest `max_tokens` accepted.
pub const MAX_TOKENS: u32 = 131_072;

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
}

impl Rules {
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
                if id.is_empty() || id.len() > MAX_CUSTOM_ID_BYTES {
                    return Err(format!(
                        "custom_id must be 1 to {MAX_CUSTOM_ID_BYTES} bytes long"
                    ));
                }
                if id.chars().any(char::is_control) {
                    return Err("custom_id must not contain control characters".into());
                }
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
            if model.is_empty() || model.len() > MAX_MODEL_BYTES {
                return Err(format!("model must be 1 to {MAX_MODEL_BYTES} bytes long"));
            }
            // Gemini puts the model in the URL path.
            let plain = model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._:/@".contains(c));
            if !plain || model.contains("..") {
                return Err("model may use letters, digits and - . _ : / @ only".into());
            }
        }
        check_messages(&wire.messages)?;
        check_parameters(&wire.parameters)?;
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

fn check_messages(messages: &[ChatTurn]) -> Result<(), String> {
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
    if let Some(t) = p.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err("parameters.temperature must be between 0 and 2".into());
    }
    if let Some(n) = p.max_tokens
        && !(1..=MAX_TOKENS).contains(&n)
    {
        return Err(format!(
            "parameters.max_tokens must be between 1 and {MAX_TOKENS}"
        ));
    }
    Ok(())
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
        Rules {
            providers: vec!["deepseek".into(), "echo".into()],
        }
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
    fn a_custom_id_may_appear_once() {
        let mut seen = SeenIds::default();
        assert!(seen.insert("a").is_ok());
        assert!(seen.insert("b").is_ok());
        assert!(seen.insert("a").unwrap_err().contains("unique"));
    }
}
