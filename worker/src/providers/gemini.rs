//! Gemini's native `generateContent` wire format.
//!
//! Gemini differs from the OpenAI shape in every part: the model is in the
//! path, the key in `x-goog-api-key`, the assistant is `model`, system
//! messages go to `systemInstruction`, a refusal is a `finishReason` or a
//! `promptFeedback.blockReason` instead of an error, and the retry hint is in
//! the error body (handled by `failure`). A picture is one more part of
//! its user turn, `inline_data` in base64 (PROVIDERS.md, "Gemini").

use ferry_common::KeyRing;
use ferry_common::config::ProviderConfig;
use reqwest::header::HeaderName;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::failure::{FailureClass, ProviderError};
use super::http::{auth_header, next_key, post_json};
use super::{ChatRequest, Completion, Role, Usage};

/// A provider speaking Gemini's native format.
#[derive(Debug, Clone)]
pub struct Gemini {
    pub(super) config: ProviderConfig,
    client: reqwest::Client,
    /// The keys, used in turn (the configured `api_key` until replaced).
    keys: KeyRing,
}

const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-goog-api-key");

/// Finish and block reasons meaning Gemini withheld the answer.
const SAFETY_REASONS: &[&str] = &[
    "SAFETY",
    "PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "RECITATION",
    "IMAGE_SAFETY",
];

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestBody<'a> {
    contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation_config: Option<GenerationConfig<'a>>,
}

#[derive(Serialize)]
struct Content<'a> {
    role: &'static str,
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
struct SystemInstruction<'a> {
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Part<'a> {
    Text { text: &'a str },
    InlineData { inline_data: InlineData<'a> },
}

#[derive(Serialize)]
struct InlineData<'a> {
    mime_type: &'a str,
    /// The bytes in base64.
    data: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<&'a [String]>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseBody {
    #[serde(default)]
    candidates: Vec<Candidate>,
    prompt_feedback: Option<PromptFeedback>,
    usage_metadata: Option<UsageMetadata>,
    model_version: Option<String>,
    response_id: Option<String>,
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    content: Option<CandidateContent>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Vec<CandidatePart>,
}

#[derive(Deserialize)]
struct CandidatePart {
    text: Option<String>,
    /// A thinking summary, not part of the answer.
    #[serde(default)]
    thought: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    block_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u32,
    #[serde(default)]
    candidates_token_count: u32,
    #[serde(default)]
    thoughts_token_count: u32,
    total_token_count: Option<u32>,
}

impl Gemini {
    pub(super) fn new(config: ProviderConfig, client: reqwest::Client) -> Self {
        let keys = KeyRing::new(config.api_key.clone());
        Self {
            config,
            client,
            keys,
        }
    }

    /// The provider's keys: replace them to add or rotate keys while running.
    pub fn key_ring(&self) -> &KeyRing {
        &self.keys
    }

    pub(super) async fn complete(&self, req: &ChatRequest) -> Result<Completion, ProviderError> {
        let name = self.config.name.as_str();
        let key = next_key(name, &self.keys)?;
        let auth = auth_header(name, API_KEY_HEADER, key.expose())?;
        let body = request_body(&self.config, req);
        let model = req
            .overrides
            .model
            .as_deref()
            .unwrap_or(&self.config.model)
            .trim_start_matches("models/");
        let url = format!("{}/models/{model}:generateContent", self.config.base_url);
        let result = match post_json(&self.client, name, &url, auth, &body).await {
            Ok(text) => parse_response(name, &text),
            Err(e) => Err(e),
        };
        result.map_err(|e| e.scrub(key.expose()))
    }
}

fn request_body<'a>(config: &ProviderConfig, req: &'a ChatRequest) -> RequestBody<'a> {
    let mut system = Vec::new();
    let mut contents = Vec::new();
    let image = req.image_at();
    for (i, m) in req.messages.iter().enumerate() {
        let part = Part::Text { text: &m.content };
        match m.role {
            Role::System => system.push(part),
            Role::User => {
                let mut parts = vec![part];
                if let Some((at, image)) = image
                    && at == i
                {
                    parts.push(Part::InlineData {
                        inline_data: InlineData {
                            mime_type: &image.mime_type,
                            data: image.base64(),
                        },
                    });
                }
                contents.push(Content {
                    role: "user",
                    parts,
                });
            }
            Role::Assistant => contents.push(Content {
                role: "model",
                parts: vec![part],
            }),
        }
    }
    let temperature = req.overrides.temperature.or(config.temperature);
    let max_output_tokens = req.overrides.max_tokens.or(config.max_tokens);
    let top_p = req.overrides.top_p;
    let stop_sequences = req.overrides.stop.as_deref();
    let generation_config = (temperature.is_some()
        || max_output_tokens.is_some()
        || top_p.is_some()
        || stop_sequences.is_some())
    .then_some(GenerationConfig {
        temperature,
        max_output_tokens,
        top_p,
        stop_sequences,
    });
    RequestBody {
        contents,
        system_instruction: (!system.is_empty()).then_some(SystemInstruction { parts: system }),
        generation_config,
    }
}

fn filtered(provider: &str, reason: String) -> ProviderError {
    let mut err = ProviderError::new(
        provider,
        FailureClass::ContentFiltered,
        "Gemini withheld the answer",
    );
    err.code = Some(reason);
    err
}

fn parse_response(provider: &str, body: &str) -> Result<Completion, ProviderError> {
    let parsed: ResponseBody = serde_json::from_str(body.trim_start()).map_err(|e| {
        let msg = format!(
            "unparsable answer (line {}, column {})",
            e.line(),
            e.column()
        );
        ProviderError::new(provider, FailureClass::Transient, msg)
    })?;
    if parsed.error.is_some() {
        return Err(ProviderError::from_response(provider, 200, None, body));
    }
    if let Some(reason) = parsed.prompt_feedback.and_then(|f| f.block_reason) {
        return Err(filtered(provider, reason));
    }
    let Some(candidate) = parsed.candidates.into_iter().next() else {
        return Err(ProviderError::new(
            provider,
            FailureClass::Transient,
            "the answer has no candidates",
        ));
    };
    let finish = candidate.finish_reason.unwrap_or_default();
    if SAFETY_REASONS.contains(&finish.as_str()) {
        return Err(filtered(provider, finish));
    }
    let text: String = candidate
        .content
        .map(|c| c.parts)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !p.thought)
        .filter_map(|p| p.text)
        .collect();
    if text.trim().is_empty() {
        let msg = format!("the answer is empty (finishReason {finish:?})");
        let mut err = ProviderError::new(provider, FailureClass::Transient, msg);
        err.code = (!finish.is_empty()).then_some(finish);
        return Err(err);
    }
    // Thinking tokens are billed as output.
    let usage = parsed.usage_metadata.map_or_else(Usage::default, |u| {
        let completion = u.candidates_token_count + u.thoughts_token_count;
        Usage {
            prompt_tokens: u.prompt_token_count,
            completion_tokens: completion,
            total_tokens: u
                .total_token_count
                .unwrap_or(u.prompt_token_count + completion),
        }
    });
    Ok(Completion {
        model: parsed.model_version.filter(|m| !m.is_empty()),
        text,
        usage,
        finish_reason: openai_finish_reason(&finish),
        response_id: parsed.response_id.filter(|id| !id.is_empty()),
    })
}

/// Gemini's `finishReason` in OpenAI's words (`STOP` is `stop`,
/// `MAX_TOKENS` is `length`; safety reasons never get here).
fn openai_finish_reason(finish: &str) -> Option<String> {
    match finish {
        "" | "FINISH_REASON_UNSPECIFIED" => None,
        "STOP" => Some("stop".into()),
        "MAX_TOKENS" => Some("length".into()),
        other => Some(other.to_ascii_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use ferry_common::config::ProviderKind;
    use serde_json::json;

    use super::*;
    use crate::providers::{ChatMessage, Image};

    fn config(temperature: Option<f32>, max_tokens: Option<u32>) -> ProviderConfig {
        ProviderConfig {
            name: "gemini".into(),
            kind: ProviderKind::Gemini,
            base_url: "http://x/v1beta".into(),
            api_key: None,
            model: "gemini-2.0-flash".into(),
            vision_model: Some("gemini-2.0-flash".into()),
            temperature,
            max_tokens,
        }
    }

    #[test]
    fn system_messages_become_the_system_instruction_and_the_assistant_is_model() {
        let req = ChatRequest::new(vec![
            ChatMessage::system("be brief"),
            ChatMessage::user("hi"),
            ChatMessage::assistant("hello"),
            ChatMessage::user("again"),
        ]);
        let json = serde_json::to_value(request_body(&config(Some(0.5), Some(64)), &req)).unwrap();
        let expected = json!({
            "contents": [
                {"role": "user", "parts": [{"text": "hi"}]},
                {"role": "model", "parts": [{"text": "hello"}]},
                {"role": "user", "parts": [{"text": "again"}]},
            ],
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "generationConfig": {"temperature": 0.5, "maxOutputTokens": 64},
        });
        assert_eq!(json, expected);
    }

    #[test]
    fn a_picture_is_one_more_inline_data_part_of_the_newest_user_turn() {
        let req = ChatRequest::new(vec![
            ChatMessage::system("be brief"),
            ChatMessage::user("earlier"),
            ChatMessage::assistant("ok"),
            ChatMessage::user("what is this?"),
        ])
        .with_image(Image::new("image/jpeg", b"\xff\xd8\xff\xe0".to_vec()));
        let json = serde_json::to_string(&request_body(&config(None, None), &req)).unwrap();
        let expected = concat!(
            r#"{"contents":["#,
            r#"{"role":"user","parts":[{"text":"earlier"}]},"#,
            r#"{"role":"model","parts":[{"text":"ok"}]},"#,
            r#"{"role":"user","parts":[{"text":"what is this?"},"#,
            r#"{"inline_data":{"mime_type":"image/jpeg","data":"/9j/4A=="}}]}"#,
            r#"],"systemInstruction":{"parts":[{"text":"be brief"}]}}"#,
        );
        assert_eq!(json, expected);
    }

    #[test]
    fn top_p_and_stop_become_top_p_and_stop_sequences() {
        let mut req = ChatRequest::new(vec![ChatMessage::user("hi")]);
        req.overrides.top_p = Some(0.5);
        req.overrides.stop = Some(vec!["END".into()]);
        let json = serde_json::to_value(request_body(&config(None, None), &req)).unwrap();
        assert_eq!(
            json["generationConfig"],
            json!({"topP": 0.5, "stopSequences": ["END"]})
        );
    }

    #[test]
    fn without_settings_there_is_no_generation_config() {
        let req = ChatRequest::new(vec![ChatMessage::user("hi")]);
        let json = serde_json::to_value(request_body(&config(None, None), &req)).unwrap();
        assert_eq!(
            json,
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
        );
    }

    #[test]
    fn the_answer_joins_the_parts_and_skips_thoughts() {
        let body = r#"{"candidates":[{"content":{"role":"model","parts":[
            {"text":"thinking...","thought":true},{"text":"Hello, "},{"text":"world"}]},"finishReason":"STOP"}],
            "usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2,"thoughtsTokenCount":5,"totalTokenCount":11},
            "modelVersion":"gemini-2.0-flash-001"}"#;
        let c = parse_response("gemini", body).unwrap();
        assert_eq!(c.text, "Hello, world");
        assert_eq!(c.model.as_deref(), Some("gemini-2.0-flash-001"));
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
        let usage = Usage {
            prompt_tokens: 4,
            completion_tokens: 7,
            total_tokens: 11,
        };
        assert_eq!(c.usage, usage);
    }

    #[test]
    fn a_safety_finish_reason_or_a_blocked_prompt_is_content_filtered() {
        let bodies = [
            r#"{"candidates":[{"finishReason":"SAFETY","index":0}]}"#,
            r#"{"candidates":[{"content":{"parts":[]},"finishReason":"PROHIBITED_CONTENT"}]}"#,
            r#"{"candidates":[{"finishReason":"BLOCKLIST"}]}"#,
            r#"{"promptFeedback":{"blockReason":"SAFETY"}}"#,
        ];
        for body in bodies {
            let err = parse_response("gemini", body).unwrap_err();
            assert_eq!(err.class, FailureClass::ContentFiltered, "{body}");
        }
    }

    #[test]
    fn no_candidates_or_no_text_is_transient() {
        for body in ["{}", r#"{"candidates":[{"finishReason":"MAX_TOKENS"}]}"#] {
            let err = parse_response("gemini", body).unwrap_err();
            assert_eq!(err.class, FailureClass::Transient, "{body}");
        }
    }

    #[test]
    fn an_answer_cut_by_the_token_cap_before_any_text_says_so() {
        let body = r#"{"candidates":[{"content":{"parts":[{"text":"hmm","thought":true}]},"finishReason":"MAX_TOKENS"}]}"#;
        let err = parse_response("gemini", body).unwrap_err();
        assert!(err.is_cut_by_max_tokens(), "{err}");
        assert!(
            !parse_response("gemini", "{}")
                .unwrap_err()
                .is_cut_by_max_tokens()
        );
    }
}
