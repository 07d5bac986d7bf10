//! Job kinds and their payloads: the contract between the producers (api)
//! and the handlers (worker), which never depend on each other.

use serde::{Deserialize, Serialize};

use crate::queue::WECHAT;

/// Answer one WeChat user's message with an AI reply, delivered through the
/// customer-service API.
pub const WECHAT_REPLY: &str = "wechat.reply";

/// One chat completion asked through the jobs API or a batch line: the
/// answer (or the error) is stored on the job record.
pub const CHAT_COMPLETION: &str = "chat.completion";

/// POST a finished batch's summary to its webhook, signed.
pub const BATCH_WEBHOOK: &str = "batch.webhook";

/// The queue a kind is enqueued on.
pub fn queue_of(kind: &str) -> &'static str {
    match kind {
        WECHAT_REPLY => WECHAT,
        _ => crate::queue::BATCH,
    }
}

/// Attempts before a kind's job is dead-lettered.
pub fn max_attempts_of(kind: &str) -> u32 {
    match kind {
        // A user waits: retry a few times, then apologise.
        WECHAT_REPLY => 4,
        // Provider failures are retried within each attempt already.
        CHAT_COMPLETION => 4,
        _ => 8,
    }
}

/// Payload of [`WECHAT_REPLY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeChatReply {
    /// The user's openid (`FromUserName`).
    pub openid: String,
    /// The official account (`ToUserName`).
    pub account: String,
    /// What the user wrote (or what speech recognition heard).
    pub content: String,
    /// WeChat's message id, for tracing a reply back to its message.
    pub msg_id: Option<i64>,
    /// `CreateTime` of the message, unix seconds.
    pub create_time: i64,
    /// A photo the user sent (`MediaId`): the answer comes from a vision
    /// model, and `content` is empty (the worker asks `FERRY_IMAGE_PROMPT`).
    /// The picture itself is fetched by the worker and never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    /// The ingress holds WeChat's request for this answer (passive mode):
    /// the worker hands the answer to the ingress instead of sending it
    /// through the customer-service API.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passive: bool,
}

/// The note of a [`WECHAT_REPLY`] job counting the parts of its answer
/// WeChat accepted, rewritten after each one: a retry resumes after it, the
/// job lookup shows it.
pub const NOTE_PARTS_SENT: &str = "parts_sent";

/// The note of when WeChat accepted part `n` (from 1) of the answer, unix
/// milliseconds by the worker's clock: written in the same `HSET` as
/// [`NOTE_PARTS_SENT`], so a count never lacks its times.
pub fn note_part_sent_ms(n: usize) -> String {
    format!("{PART_SENT_MS}{n}")
}

/// What [`note_part_sent_ms`] names start with, the part number after it.
pub const PART_SENT_MS: &str = "part_sent_ms:";

impl WeChatReply {
    /// Names the push among the user's (its `MsgId`): the passive reply
    /// slot of the push is keyed by it, for the api and the worker alike.
    pub fn push_key(&self) -> String {
        match self.msg_id {
            Some(id) => id.to_string(),
            None => format!("t{}", self.create_time),
        }
    }
}

/// Payload of [`CHAT_COMPLETION`]: what a jobs API request or a batch line
/// asks (validated by [`crate::batch::line`] before it is enqueued).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// One provider of the configured chain; `None`: the chain, with
    /// fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The model to ask of `provider` instead of its configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub messages: Vec<ChatTurn>,
    #[serde(default)]
    pub parameters: ChatParameters,
}

/// One message of a conversation: `role` is `system`, `user` or `assistant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChatTurn {
    pub role: String,
    pub content: String,
}

/// Sampling parameters a caller may set; the provider's configured ones
/// apply otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChatParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Nucleus sampling (0 to 1): OpenAI's `top_p`, Gemini's `topP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Up to 4 sequences that end the answer: OpenAI's `stop`, Gemini's
    /// `stopSequences`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// -2 to 2; the OpenAI-compatible wire format only (Gemini has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// -2 to 2; the OpenAI-compatible wire format only (Gemini has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
}

/// Payload of [`BATCH_WEBHOOK`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchWebhook {
    pub batch_id: String,
}
