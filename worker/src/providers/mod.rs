//! AI providers: one chat call to one model, whatever its wire format.
//!
//! Handlers ask for an [`Answer`] to a [`ChatRequest`] and should not care
//! that DeepSeek speaks OpenAI's shape and Gemini its own, nor how a 429
//! from Zhipu differs from a 429 from OpenAI. So each wire format lives in
//! its own file (`openai`, `gemini`), every failure is reduced to a
//! [`FailureClass`] (`failure`), and the [`Router`] alone decides retries and
//! failover along the configured chain from that class. The built-in echo
//! provider answers instantly with the user's own words, so `ferry dev` and
//! tests run with no key and no network.
//!
//! A request may carry one picture ([`Image`], a WeChat photo) with its
//! newest user message: each wire format sends it inline (base64), and the
//! router asks only providers with a vision model for it.

mod failure;
mod gate;
mod gemini;
mod http;
mod openai;
mod router;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use ferry_common::config::{ProviderConfig, ProviderKind};
use serde::{Deserialize, Serialize};

pub use failure::{Classification, FailureClass, ProviderError, classify, retry_hint};
pub use gemini::Gemini;
pub use http::{HttpSettings, HttpSetupError, build_client};
pub use openai::OpenAiCompatible;
pub use router::{Allowance, CallPolicy, Router, RouterError};

/// Who said a message. Serialized lowercase, as the OpenAI shape wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// A conversation to answer, oldest message first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    /// What the caller asked for instead of the provider's configuration
    /// (jobs API and batch lines); empty for WeChat replies.
    #[serde(default)]
    pub overrides: Overrides,
    /// A picture that belongs to the newest user message. Never serialized:
    /// a request is never stored with its picture.
    #[serde(skip)]
    pub image: Option<Image>,
}

/// A picture sent to a vision model: its mime type (`image/jpeg`, ...) and
/// its bytes. Cheap to clone (the bytes are shared); its Debug output shows
/// only the size, so the picture never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    pub mime_type: String,
    bytes: Arc<[u8]>,
}

impl Image {
    pub fn new(mime_type: impl Into<String>, bytes: impl Into<Arc<[u8]>>) -> Self {
        Self {
            mime_type: mime_type.into(),
            bytes: bytes.into(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The bytes in standard base64 (what both wire formats carry).
    pub(crate) fn base64(&self) -> String {
        BASE64.encode(&self.bytes)
    }
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("mime_type", &self.mime_type)
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .finish()
    }
}

/// A request's own model and sampling parameters; each `None` keeps the
/// provider's configured value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    pub model: Option<String>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    /// The following are sent only when set (no configured default):
    /// OpenAI's `top_p`, Gemini's `topP`.
    pub top_p: Option<f32>,
    /// OpenAI's `stop`, Gemini's `stopSequences`.
    pub stop: Option<Vec<String>>,
    /// OpenAI-compatible providers only (checked before a job is enqueued).
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
}

impl ChatRequest {
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        Self {
            messages,
            overrides: Overrides::default(),
            image: None,
        }
    }

    pub fn with_overrides(mut self, overrides: Overrides) -> Self {
        self.overrides = overrides;
        self
    }

    /// Attaches a picture to the newest user message.
    pub fn with_image(mut self, image: Image) -> Self {
        self.image = Some(image);
        self
    }

    /// The newest user message, if any.
    pub fn last_user_message(&self) -> Option<&str> {
        self.last_user_index()
            .map(|i| self.messages[i].content.as_str())
    }

    /// Where the newest user message is (the one a picture belongs to).
    fn last_user_index(&self) -> Option<usize> {
        self.messages.iter().rposition(|m| m.role == Role::User)
    }

    /// The picture and the index of the message it belongs to.
    pub(crate) fn image_at(&self) -> Option<(usize, &Image)> {
        let image = self.image.as_ref()?;
        Some((self.last_user_index()?, image))
    }
}

/// Tokens a call consumed, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The provider's configured name (`deepseek`, `gemini`, ...).
    pub provider: String,
    /// The model that answered, as the provider reported it (else as
    /// configured).
    pub model: String,
    pub text: String,
    pub usage: Usage,
    /// From sending the request to having parsed the answer.
    pub latency: Duration,
    /// Why the answer ended, in OpenAI's words (`stop`, `length`, ...),
    /// when the provider said.
    pub finish_reason: Option<String>,
    /// The provider's id of its answer (OpenAI's `id`, Gemini's
    /// `responseId`), when it gave one.
    pub response_id: Option<String>,
}

/// What a wire format extracts from a successful answer.
#[derive(Debug)]
struct Completion {
    model: Option<String>,
    text: String,
    usage: Usage,
    finish_reason: Option<String>,
    response_id: Option<String>,
}

/// One provider of the chain, speaking its own wire format.
#[derive(Debug, Clone)]
pub enum Provider {
    OpenAi(OpenAiCompatible),
    Gemini(Gemini),
    Echo(Echo),
}

/// The built-in provider that answers with the last user message.
#[derive(Debug, Clone)]
pub struct Echo {
    config: ProviderConfig,
}

impl Provider {
    /// A provider for `config`, sharing `client` (see [`build_client`]).
    pub fn new(config: &ProviderConfig, client: reqwest::Client) -> Self {
        let config = config.clone();
        match config.kind {
            ProviderKind::OpenAi => Self::OpenAi(OpenAiCompatible::new(config, client)),
            ProviderKind::Gemini => Self::Gemini(Gemini::new(config, client)),
            ProviderKind::Echo => Self::Echo(Echo { config }),
        }
    }

    fn config(&self) -> &ProviderConfig {
        match self {
            Self::OpenAi(p) => &p.config,
            Self::Gemini(p) => &p.config,
            Self::Echo(p) => &p.config,
        }
    }

    /// The configured name, used in logs, errors and [`Answer::provider`].
    pub fn name(&self) -> &str {
        &self.config().name
    }

    /// The configured model.
    pub fn model(&self) -> &str {
        &self.config().model
    }

    /// The model asked about pictures (`None`: this provider is text only).
    pub fn vision_model(&self) -> Option<&str> {
        self.config().vision_model.as_deref()
    }

    pub fn kind(&self) -> ProviderKind {
        self.config().kind
    }

    /// The configured answer length, if any.
    pub fn max_tokens(&self) -> Option<u32> {
        self.config().max_tokens
    }

    /// One call, no retry: retries and failover are the [`Router`]'s.
    pub async fn chat(&self, req: &ChatRequest) -> Result<Answer, ProviderError> {
        if req.messages.is_empty() {
            let msg = "the conversation has no messages";
            return Err(ProviderError::new(
                self.name(),
                FailureClass::BadRequest,
                msg,
            ));
        }
        if req.image.is_some() && req.last_user_index().is_none() {
            let msg = "the picture has no user message to belong to";
            return Err(ProviderError::new(
                self.name(),
                FailureClass::BadRequest,
                msg,
            ));
        }
        let started = Instant::now();
        let completion = match self {
            Self::OpenAi(p) => p.complete(req).await?,
            Self::Gemini(p) => p.complete(req).await?,
            Self::Echo(_) => Completion {
                model: None,
                text: req.last_user_message().unwrap_or_default().to_owned(),
                usage: Usage::default(),
                finish_reason: Some("stop".into()),
                response_id: None,
            },
        };
        Ok(Answer {
            provider: self.name().to_owned(),
            model: completion.model.unwrap_or_else(|| {
                req.overrides
                    .model
                    .clone()
                    .unwrap_or_else(|| self.model().to_owned())
            }),
            text: completion.text,
            usage: completion.usage,
            latency: started.elapsed(),
            finish_reason: completion.finish_reason,
            response_id: completion.response_id,
        })
    }
}

/// Milliseconds, for logs.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo() -> Provider {
        let config = ProviderConfig {
            name: "echo".into(),
            kind: ProviderKind::Echo,
            base_url: String::new(),
            api_key: None,
            model: "echo".into(),
            vision_model: None,
            temperature: None,
            max_tokens: None,
        };
        Provider::new(&config, reqwest::Client::new())
    }

    #[test]
    fn roles_serialize_lowercase() {
        let json = serde_json::to_string(&ChatMessage::assistant("hi")).unwrap();
        assert_eq!(json, r#"{"role":"assistant","content":"hi"}"#);
    }

    #[tokio::test]
    async fn echo_answers_with_the_last_user_message() {
        let req = ChatRequest::new(vec![
            ChatMessage::system("be brief"),
            ChatMessage::user("first"),
            ChatMessage::assistant("ok"),
            ChatMessage::user("second"),
        ]);
        let answer = echo().chat(&req).await.unwrap();
        assert_eq!(answer.text, "second");
        assert_eq!(
            (answer.provider.as_str(), answer.model.as_str()),
            ("echo", "echo")
        );
    }

    #[test]
    fn a_picture_shows_only_its_size_and_is_never_serialized() {
        let image = Image::new("image/png", vec![7u8; 2048]);
        let req = ChatRequest::new(vec![ChatMessage::user("look")]).with_image(image);
        assert_eq!(
            format!("{:?}", req.image.as_ref().unwrap()),
            r#"Image { mime_type: "image/png", bytes: <2048 bytes> }"#
        );
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json.get("image"), None, "{json}");
        assert_eq!(req.image_at().map(|(i, _)| i), Some(0));
    }

    #[tokio::test]
    async fn a_picture_without_a_user_message_is_a_bad_request() {
        let image = Image::new("image/png", vec![1u8]);
        let req = ChatRequest::new(vec![ChatMessage::system("s")]).with_image(image);
        let err = echo().chat(&req).await.unwrap_err();
        assert_eq!(err.class, FailureClass::BadRequest);
    }

    #[tokio::test]
    async fn an_empty_conversation_is_a_bad_request() {
        let err = echo().chat(&ChatRequest::default()).await.unwrap_err();
        assert_eq!(err.class, FailureClass::BadRequest);
    }
}
