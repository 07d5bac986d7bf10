//! The OpenAI chat-completions wire format.
//!
//! DeepSeek, Qwen, ChatGPT, Zhipu and Doubao all speak it, and so does any
//! endpoint added from configuration alone, so this one file serves five
//! providers and more. It tolerates what they do differently: DeepSeek's
//! blank lines before the JSON, a 200 that carries an error object, and
//! Zhipu's `sensitive` finish reason. A picture goes with its user message
//! as a `data:` URL part (PROVIDERS.md, "Pictures"): WeChat's own image
//! URLs are neither reachable by the providers nor lasting.

use ferry_common::KeyRing;
use ferry_common::config::ProviderConfig;
use reqwest::header::AUTHORIZATION;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::failure::{FailureClass, ProviderError};
use super::http::{auth_header, next_key, post_json};
use super::{ChatRequest, Completion, Role, Usage};

/// A provider speaking the OpenAI chat-completions shape.
#[derive(Debug, Clone)]
pub struct OpenAiCompatible {
    pub(super) config: ProviderConfig,
    client: reqwest::Client,
    /// The keys, used in turn (the configured `api_key` until replaced).
    keys: KeyRing,
}

#[derive(Serialize)]
struct RequestBody<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f32>,
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: Role,
    content: Content<'a>,
}

/// A plain string, or (the user message a picture belongs to) its parts.
#[derive(Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(&'a str),
    Parts(Vec<ContentPart<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentPart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Serialize)]
struct ImageUrl {
    /// `data:<mime>;base64,<BASE64>`.
    url: String,
}

/// The conversation as the wire carries it: every message a plain string,
/// but the one the picture belongs to, which becomes text and image parts.
fn wire_messages(req: &ChatRequest) -> Vec<WireMessage<'_>> {
    let image = req.image_at();
    req.messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let content = match image {
                Some((at, image)) if at == i => Content::Parts(vec![
                    ContentPart::Text { text: &m.content },
                    ContentPart::ImageUrl {
                        image_url: ImageUrl {
                            url: format!("data:{};base64,{}", image.mime_type, image.base64()),
                        },
                    },
                ]),
                _ => Content::Text(&m.content),
            };
            WireMessage {
                role: m.role,
                content,
            }
        })
        .collect()
}

#[derive(Deserialize)]
struct ResponseBody {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<WireUsage>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<Message>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    total_tokens: Option<u32>,
}

/// Finish reasons meaning the provider withheld the answer: OpenAI's
/// `content_filter`, Zhipu's `sensitive`.
const FILTERED_FINISH_REASONS: &[&str] = &["content_filter", "sensitive"];

impl OpenAiCompatible {
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
        let auth = auth_header(name, AUTHORIZATION, &format!("Bearer {}", key.expose()))?;
        let body = RequestBody {
            model: req.overrides.model.as_deref().unwrap_or(&self.config.model),
            messages: wire_messages(req),
            temperature: req.overrides.temperature.or(self.config.temperature),
            max_tokens: req.overrides.max_tokens.or(self.config.max_tokens),
            top_p: req.overrides.top_p,
            stop: req.overrides.stop.as_deref(),
            frequency_penalty: req.overrides.frequency_penalty,
            presence_penalty: req.overrides.presence_penalty,
            stream: false,
        };
        let url = format!("{}/chat/completions", self.config.base_url);
        let result = match post_json(&self.client, name, &url, auth, &body).await {
            Ok(text) => parse_response(name, &text),
            Err(e) => Err(e),
        };
        result.map_err(|e| e.scrub(key.expose()))
    }
}

/// Reads a 2xx answer. Leading whitespace (DeepSeek's keep-alive blank
/// lines) is skipped before parsing.
fn parse_response(provider: &str, body: &str) -> Result<Completion, ProviderError> {
    let parsed: ResponseBody = serde_json::from_str(body.trim_start()).map_err(|e| {
        let msg = format!(
            "unparsable answer (line {}, column {})",
            e.line(),
            e.column()
        );
        ProviderError::new(provider, FailureClass::Transient, msg)
    })?;
    let Some(choice) = parsed.choices.into_iter().next() else {
        if parsed.error.is_some() {
            return Err(ProviderError::from_response(provider, 200, None, body));
        }
        return Err(ProviderError::new(
            provider,
            FailureClass::Transient,
            "the answer has no choices",
        ));
    };
    let finish = choice.finish_reason.unwrap_or_default();
    let (content, refusal) = match choice.message {
        Some(m) => (m.content.unwrap_or_default(), m.refusal),
        None => (String::new(), None),
    };
    if FILTERED_FINISH_REASONS.contains(&finish.as_str())
        || (content.is_empty() && refusal.is_some())
    {
        let mut err = ProviderError::new(
            provider,
            FailureClass::ContentFiltered,
            "the provider withheld the answer",
        );
        err.code = Some(if finish.is_empty() {
            "refusal".into()
        } else {
            finish
        });
        return Err(err);
    }
    if content.trim().is_empty() {
        let msg = format!("the answer is empty (finish_reason {finish:?})");
        let mut err = ProviderError::new(provider, FailureClass::Transient, msg);
        err.code = (!finish.is_empty()).then_some(finish);
        return Err(err);
    }
    let usage = parsed.usage.map_or_else(Usage::default, |u| Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u
            .total_tokens
            .unwrap_or(u.prompt_tokens + u.completion_tokens),
    });
    Ok(Completion {
        model: parsed.model.filter(|m| !m.is_empty()),
        text: content,
        usage,
        finish_reason: (!finish.is_empty()).then_some(finish),
        response_id: parsed.id.filter(|id| !id.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"id":"c1","object":"chat.completion","model":"deepseek-chat",
        "choices":[{"index":0,"message":{"role":"assistant","content":"你好"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;

    use crate::providers::{ChatMessage, Image};

    #[test]
    fn the_request_body_is_the_openai_shape() {
        let req = ChatRequest::new(vec![ChatMessage::system("s"), ChatMessage::user("u")]);
        let body = RequestBody {
            model: "m",
            messages: wire_messages(&req),
            temperature: Some(0.5),
            max_tokens: None,
            top_p: None,
            stop: None,
            frequency_penalty: None,
            presence_penalty: None,
            stream: false,
        };
        let json = serde_json::to_value(&body).unwrap();
        let expected = serde_json::json!({
            "model": "m",
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
            "temperature": 0.5,
            "stream": false,
        });
        assert_eq!(json, expected);
    }

    #[test]
    fn a_picture_becomes_a_data_url_part_of_the_newest_user_message_only() {
        let req = ChatRequest::new(vec![
            ChatMessage::system("s"),
            ChatMessage::user("earlier"),
            ChatMessage::assistant("a"),
            ChatMessage::user("what is this?"),
        ])
        .with_image(Image::new("image/png", b"\x89PNG\r\n".to_vec()));
        let body = RequestBody {
            model: "qwen-vl-max",
            messages: wire_messages(&req),
            temperature: None,
            max_tokens: Some(100),
            top_p: None,
            stop: None,
            frequency_penalty: None,
            presence_penalty: None,
            stream: false,
        };
        let json = serde_json::to_string(&body).unwrap();
        let expected = concat!(
            r#"{"model":"qwen-vl-max","messages":["#,
            r#"{"role":"system","content":"s"},"#,
            r#"{"role":"user","content":"earlier"},"#,
            r#"{"role":"assistant","content":"a"},"#,
            r#"{"role":"user","content":[{"type":"text","text":"what is this?"},"#,
            r#"{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0K"}}]}"#,
            r#"],"max_tokens":100,"stream":false}"#,
        );
        assert_eq!(json, expected);
    }

    #[test]
    fn sampling_parameters_go_out_only_when_set() {
        let req = ChatRequest::new(vec![ChatMessage::user("u")]);
        let stop = vec!["END".to_owned()];
        let body = RequestBody {
            model: "m",
            messages: wire_messages(&req),
            temperature: None,
            max_tokens: None,
            top_p: Some(0.5),
            stop: Some(&stop),
            frequency_penalty: Some(0.25),
            presence_penalty: None,
            stream: false,
        };
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(
            json,
            r#"{"model":"m","messages":[{"role":"user","content":"u"}],"top_p":0.5,"stop":["END"],"frequency_penalty":0.25,"stream":false}"#
        );
    }

    #[test]
    fn an_answer_gives_text_model_and_usage() {
        let c = parse_response("deepseek", OK).unwrap();
        assert_eq!(c.text, "你好");
        assert_eq!(c.model.as_deref(), Some("deepseek-chat"));
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
        assert_eq!(c.response_id.as_deref(), Some("c1"));
        let usage = Usage {
            prompt_tokens: 12,
            completion_tokens: 3,
            total_tokens: 15,
        };
        assert_eq!(c.usage, usage);
    }

    #[test]
    fn leading_blank_lines_are_skipped() {
        let body = format!("\n\n  \r\n\n{OK}");
        assert_eq!(parse_response("deepseek", &body).unwrap().text, "你好");
    }

    #[test]
    fn a_filtered_finish_reason_is_content_filtered() {
        let body = OK.replace(
            r#""finish_reason":"stop""#,
            r#""finish_reason":"sensitive""#,
        );
        let err = parse_response("zhipu", &body).unwrap_err();
        assert_eq!(err.class, FailureClass::ContentFiltered);
        assert_eq!(err.code.as_deref(), Some("sensitive"));
    }

    #[test]
    fn an_error_object_in_a_200_is_classified() {
        let body = r#"{"error":{"code":"1302","message":"too fast"}}"#;
        let err = parse_response("zhipu", body).unwrap_err();
        assert_eq!(err.class, FailureClass::RateLimited);
    }

    #[test]
    fn garbage_or_an_empty_answer_is_transient() {
        for body in ["<html>", "{}", &OK.replace("你好", "")] {
            let err = parse_response("p", body).unwrap_err();
            assert_eq!(err.class, FailureClass::Transient, "{body}");
        }
    }
}
