//! A fake AI provider (PROVIDERS.md) speaking one of the two wire formats
//! exactly: OpenAI chat completions or Gemini's native `generateContent`.
//!
//! The real providers cannot be reached from tests, and a mock of Ferry's
//! own client would prove nothing about the wire. So this is an HTTP server
//! on a free loopback port that checks every request as the provider would
//! (path, key header, body shape, model), answers a wrong one as the provider
//! does (401 `invalid_api_key`, Gemini's 400 `API_KEY_INVALID`, 404 for an
//! unknown model, 400 for a malformed body), and records what it received so
//! tests can assert the conversation that was sent, pictures included
//! (decoded from OpenAI's `data:` URL parts or Gemini's `inline_data`, a
//! malformed one a 400). Each valid request takes
//! the next [`Reply`] of a script (success, an error with headers, a stall,
//! DeepSeek's leading blank lines, a connection reset mid-answer); with an
//! empty script it answers with the last user message.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ferry_common::Secret;
use ferry_common::config::{ProviderConfig, ProviderKind};
use serde_json::{Map, Value, json};

use crate::tls_server::TlsServer;

/// Which wire format the fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeKind {
    /// `POST /v1/chat/completions`, `Authorization: Bearer KEY`.
    OpenAi,
    /// `POST /v1beta/models/{model}:generateContent`, `x-goog-api-key: KEY`.
    Gemini,
}

/// A message as received, whatever the format: `role` is `system`, `user`
/// or `assistant` (Gemini's `model` and `systemInstruction` mapped back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeMessage {
    pub role: String,
    pub content: String,
}

impl FakeMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A picture a request carried, decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct FakeImage {
    /// The message it came with (an index into [`Received::messages`]).
    pub message: usize,
    pub mime_type: String,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for FakeImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FakeImage {{ message: {}, mime_type: {:?}, {} bytes }}",
            self.message,
            self.mime_type,
            self.bytes.len()
        )
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// The key header as sent: `Authorization` (OpenAI) or
    /// `x-goog-api-key` (Gemini).
    pub key_header: Option<String>,
    /// An `Authorization` header on a Gemini request (there should be none).
    pub authorization: Option<String>,
    pub body: Value,
    /// The model named by the body (OpenAI) or the path (Gemini).
    pub model: Option<String>,
    pub messages: Vec<FakeMessage>,
    /// The pictures, in order (each belongs to a user message).
    pub images: Vec<FakeImage>,
    /// What was wrong with the request, if anything (it was answered with
    /// the provider's error and took no scripted reply).
    pub problem: Option<String>,
}

/// What to answer to one valid request.
#[derive(Debug, Clone)]
pub struct Reply {
    outcome: Outcome,
    stall: Duration,
    leading_blank_lines: usize,
    headers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
enum Outcome {
    Success {
        /// `None`: the last user message.
        text: Option<String>,
        usage: Option<(u32, u32)>,
        finish_reason: Option<String>,
    },
    Error {
        status: u16,
        body: Value,
    },
    /// The connection breaks after the headers, before any body.
    Reset,
}

impl Reply {
    fn with(outcome: Outcome) -> Self {
        Self {
            outcome,
            stall: Duration::ZERO,
            leading_blank_lines: 0,
            headers: Vec::new(),
        }
    }

    /// Success, answering with the last user message (the default).
    pub fn echo() -> Self {
        Self::success(None)
    }

    /// Success with this text.
    pub fn text(text: impl Into<String>) -> Self {
        Self::success(Some(text.into()))
    }

    fn success(text: Option<String>) -> Self {
        Self::with(Outcome::Success {
            text,
            usage: None,
            finish_reason: None,
        })
    }

    /// The usage to report (default: 10 prompt and 5 completion tokens).
    /// Only for a success.
    pub fn usage(mut self, prompt: u32, completion: u32) -> Self {
        if let Outcome::Success { usage, .. } = &mut self.outcome {
            *usage = Some((prompt, completion));
        }
        self
    }

    /// The finish reason to report (default `stop` / `STOP`), e.g. Gemini's
    /// `SAFETY` or OpenAI's `content_filter`. Only for a success.
    pub fn finish_reason(mut self, reason: &str) -> Self {
        if let Outcome::Success { finish_reason, .. } = &mut self.outcome {
            *finish_reason = Some(reason.into());
        }
        self
    }

    /// An error answer with this status and JSON body.
    pub fn error(status: u16, body: Value) -> Self {
        Self::with(Outcome::Error { status, body })
    }

    /// An OpenAI-shaped error: `{"error":{"message","type","code"}}`.
    pub fn openai_error(status: u16, code: &str, message: &str) -> Self {
        Self::error(
            status,
            json!({"error": {"message": message, "type": code, "param": null, "code": code}}),
        )
    }

    /// A Gemini-shaped error: `{"error":{"code","message","status","details"}}`.
    pub fn gemini_error(
        status: u16,
        grpc_status: &str,
        message: &str,
        details: Vec<Value>,
    ) -> Self {
        let error = json!({
            "code": status,
            "message": message,
            "status": grpc_status,
            "details": details,
        });
        Self::error(status, json!({ "error": error }))
    }

    /// A 200 whose connection breaks before the body: a connection reset.
    pub fn reset() -> Self {
        Self::with(Outcome::Reset)
    }

    /// A response header, e.g. `Retry-After` or `retry-after-ms`.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Waits this long before answering.
    pub fn stall(mut self, delay: Duration) -> Self {
        self.stall = delay;
        self
    }

    /// Sends `n` blank lines before the JSON, as DeepSeek does while it
    /// holds a slow request open (here in the same body, after any stall).
    pub fn leading_blank_lines(mut self, n: usize) -> Self {
        self.leading_blank_lines = n;
        self
    }
}

struct Inner {
    kind: FakeKind,
    key: String,
    model: String,
    /// A second model it accepts, the one asked about pictures.
    vision_model: Option<String>,
    script: VecDeque<Reply>,
    /// The answer when the script is empty (`None`: echo).
    default: Option<Reply>,
    received: Vec<Received>,
    /// Requests whose answer (after any stall) was sent.
    answered: usize,
}

type Shared = Arc<Mutex<Inner>>;

/// A running fake provider. Clones share the same server.
#[derive(Clone)]
pub struct FakeProvider {
    kind: FakeKind,
    addr: SocketAddr,
    inner: Shared,
    /// Set when the fake is served over TLS ([`FakeProvider::start_tls`]).
    tls: Option<Arc<TlsServer>>,
}

impl FakeProvider {
    /// Starts a fake on 127.0.0.1 (a free port) that accepts only
    /// `expected_key` and `expected_model`, over plain HTTP/1.1.
    pub async fn start(kind: FakeKind, expected_key: &str, expected_model: &str) -> Self {
        let (inner, app) = Self::app(kind, expected_key, expected_model);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self {
            kind,
            addr,
            inner,
            tls: None,
        }
    }

    /// [`start`](Self::start), served over TLS as the real providers are:
    /// HTTP/2 for a client that offers it, with at most `max_streams` calls
    /// at once on one connection. The client must trust [`ca_file`](Self::ca_file).
    pub async fn start_tls(
        kind: FakeKind,
        expected_key: &str,
        expected_model: &str,
        max_streams: u32,
    ) -> Self {
        let (inner, app) = Self::app(kind, expected_key, expected_model);
        let server = TlsServer::start(app, max_streams).await;
        Self {
            kind,
            addr: server.addr,
            inner,
            tls: Some(Arc::new(server)),
        }
    }

    /// The CA that issued a TLS fake's certificate (PEM), for
    /// `FERRY_EXTRA_CA_FILE`; `None` for a plain-HTTP fake.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().map(|t| t.ca_file.path())
    }

    /// Connections a TLS fake accepted so far; `None` for a plain-HTTP fake.
    pub fn tls_connections(&self) -> Option<usize> {
        self.tls.as_ref().map(|t| t.connections())
    }

    fn app(kind: FakeKind, expected_key: &str, expected_model: &str) -> (Shared, Router) {
        let inner = Arc::new(Mutex::new(Inner {
            kind,
            key: expected_key.into(),
            model: expected_model.into(),
            vision_model: None,
            script: VecDeque::new(),
            default: None,
            received: Vec::new(),
            answered: 0,
        }));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        (inner, app)
    }

    /// The base URL with its version path (`<P>_BASE_URL`).
    pub fn base_url(&self) -> String {
        let origin = match &self.tls {
            Some(tls) => tls.origin(),
            None => format!("http://{}", self.addr),
        };
        match self.kind {
            FakeKind::OpenAi => format!("{origin}/v1"),
            FakeKind::Gemini => format!("{origin}/v1beta"),
        }
    }

    /// A provider configuration pointing at this fake, with its key and model.
    pub fn provider_config(&self, name: &str) -> ProviderConfig {
        let inner = self.inner.lock().unwrap();
        ProviderConfig {
            name: name.into(),
            kind: match self.kind {
                FakeKind::OpenAi => ProviderKind::OpenAi,
                FakeKind::Gemini => ProviderKind::Gemini,
            },
            base_url: self.base_url(),
            api_key: Some(Secret::from(inner.key.as_str())),
            model: inner.model.clone(),
            vision_model: inner.vision_model.clone(),
            temperature: None,
            max_tokens: None,
        }
    }

    /// Accepts `model` too (besides the expected one): the vision model,
    /// also in [`Self::provider_config`].
    pub fn accept_vision_model(&self, model: &str) {
        self.inner.lock().unwrap().vision_model = Some(model.into());
    }

    /// The answer to every request once the script is empty (e.g. an error
    /// to make the provider fail every call); `None` goes back to echoing.
    pub fn set_default(&self, reply: Option<Reply>) {
        self.inner.lock().unwrap().default = reply;
    }

    /// Queues the answer to the next valid request not yet scripted.
    pub fn push(&self, reply: Reply) {
        self.inner.lock().unwrap().script.push_back(reply);
    }

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// How many requests were received.
    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().received.len()
    }

    /// How many requests were answered (their stall over).
    pub fn answered(&self) -> usize {
        self.inner.lock().unwrap().answered
    }
}

async fn handle(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (reply, status, json) = {
        let mut inner = inner.lock().unwrap();
        let (received, rejected) = inspect(&inner, &method, &uri, &headers, &body);
        let reply = match &rejected {
            Some(r) => rejection(inner.kind, r),
            None => inner
                .script
                .pop_front()
                .or_else(|| inner.default.clone())
                .unwrap_or_else(Reply::echo),
        };
        let (status, json) = render(&inner, &reply, &received);
        inner.received.push(received);
        (reply, status, json)
    };
    if !reply.stall.is_zero() {
        tokio::time::sleep(reply.stall).await;
    }
    inner.lock().unwrap().answered += 1;
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (name, value) in &reply.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if matches!(reply.outcome, Outcome::Reset) {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by fake");
        let body = futures::stream::once(async move { Err::<Bytes, _>(reset) });
        return builder.body(Body::from_stream(body)).unwrap();
    }
    let text = format!("{}{json}", "\n".repeat(reply.leading_blank_lines));
    builder.body(Body::from(text)).unwrap()
}

/// Reads a request and finds the first thing the provider would reject.
fn inspect(
    inner: &Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> (Received, Option<Rejection>) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let key_header = match inner.kind {
        FakeKind::OpenAi => header("authorization"),
        FakeKind::Gemini => header("x-goog-api-key"),
    };
    let mut received = Received {
        at: Instant::now(),
        method: method.to_string(),
        path: uri.path().to_owned(),
        key_header,
        authorization: header("authorization"),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
        model: None,
        messages: Vec::new(),
        images: Vec::new(),
        problem: None,
    };
    let checked = match inner.kind {
        FakeKind::OpenAi => check_openai(inner, headers, &mut received),
        FakeKind::Gemini => check_gemini(inner, headers, &mut received),
    };
    let rejected = checked.err();
    received.problem = rejected
        .as_ref()
        .map(|r| format!("{} {}", r.status, r.reason));
    (received, rejected)
}

/// Why the provider would reject a request, and with which status.
struct Rejection {
    status: u16,
    reason: String,
}

impl Rejection {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }
}

/// A malformed body: 400, as every provider answers one.
impl From<&str> for Rejection {
    fn from(reason: &str) -> Self {
        Self::new(400, reason)
    }
}

impl From<String> for Rejection {
    fn from(reason: String) -> Self {
        Self::new(400, reason)
    }
}

fn check_common(headers: &HeaderMap, received: &Received) -> Result<(), Rejection> {
    if received.method != "POST" {
        return Err(Rejection::new(
            405,
            format!("method {} not allowed", received.method),
        ));
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err(format!("content-type {content_type:?} is not application/json").into());
    }
    if !received.body.is_object() {
        return Err("the body is not a JSON object".into());
    }
    Ok(())
}

fn check_openai(
    inner: &Inner,
    headers: &HeaderMap,
    received: &mut Received,
) -> Result<(), Rejection> {
    if received.path != "/v1/chat/completions" {
        return Err(Rejection::new(
            404,
            format!("unknown path {}", received.path),
        ));
    }
    if received.key_header.as_deref() != Some(format!("Bearer {}", inner.key).as_str()) {
        return Err(Rejection::new(401, "invalid_api_key"));
    }
    check_common(headers, received)?;
    let body = received.body.as_object().cloned().unwrap_or_default();
    only_keys(
        &body,
        &[
            "model",
            "messages",
            "temperature",
            "max_tokens",
            "top_p",
            "stop",
            "frequency_penalty",
            "presence_penalty",
            "stream",
        ],
    )?;
    received.model = body.get("model").and_then(Value::as_str).map(str::to_owned);
    if !received.model.as_deref().is_some_and(|m| inner.accepts(m)) {
        return Err(Rejection::new(
            404,
            format!("model_not_found {:?}", received.model),
        ));
    }
    if body.get("stream") != Some(&Value::Bool(false)) {
        return Err("stream must be false".into());
    }
    optional_number(&body, "temperature")?;
    optional_count(&body, "max_tokens")?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages must be an array")?;
    for m in messages {
        let m = m.as_object().ok_or("a message is not an object")?;
        only_keys(m, &["role", "content"])?;
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if !matches!(role, "system" | "user" | "assistant") {
            return Err(format!("unknown role {role:?}").into());
        }
        let content = match m.get("content") {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(parts)) if role == "user" => {
                let index = received.messages.len();
                openai_parts(parts, index, &mut received.images)?
            }
            Some(Value::Array(_)) => return Err(format!("{role} content must be a string").into()),
            _ => return Err("content must be a string or an array of parts".into()),
        };
        received.messages.push(FakeMessage::new(role, &content));
    }
    if received.messages.is_empty() {
        return Err("messages is empty".into());
    }
    Ok(())
}

fn check_gemini(
    inner: &Inner,
    headers: &HeaderMap,
    received: &mut Received,
) -> Result<(), Rejection> {
    let model = received
        .path
        .strip_prefix("/v1beta/models/")
        .and_then(|rest| rest.strip_suffix(":generateContent"))
        .map(str::to_owned);
    let Some(model) = model else {
        return Err(Rejection::new(
            404,
            format!("unknown path {}", received.path),
        ));
    };
    received.model = Some(model.clone());
    if received.key_header.as_deref() != Some(inner.key.as_str()) {
        return Err(Rejection::new(400, "API_KEY_INVALID"));
    }
    if received.authorization.is_some() {
        return Err(Rejection::new(
            401,
            "unexpected Authorization header (the key goes in x-goog-api-key)",
        ));
    }
    if !inner.accepts(&model) {
        return Err(Rejection::new(404, format!("models/{model} is not found")));
    }
    check_common(headers, received)?;
    let body = received.body.as_object().cloned().unwrap_or_default();
    only_keys(
        &body,
        &["contents", "systemInstruction", "generationConfig"],
    )?;
    if let Some(system) = body.get("systemInstruction") {
        let system = system
            .as_object()
            .ok_or("systemInstruction must be an object")?;
        only_keys(system, &["parts"])?;
        for text in texts(system, 0, None)? {
            received.messages.push(FakeMessage::new("system", &text));
        }
    }
    if let Some(config) = body.get("generationConfig") {
        let config = config
            .as_object()
            .ok_or("generationConfig must be an object")?;
        only_keys(
            config,
            &["temperature", "maxOutputTokens", "topP", "stopSequences"],
        )?;
        optional_number(config, "temperature")?;
        optional_count(config, "maxOutputTokens")?;
    }
    let contents = body
        .get("contents")
        .and_then(Value::as_array)
        .ok_or("contents must be an array")?;
    if contents.is_empty() {
        return Err("contents is not specified".into());
    }
    for content in contents {
        let content = content.as_object().ok_or("a content is not an object")?;
        only_keys(content, &["role", "parts"])?;
        let role = match content.get("role").and_then(Value::as_str) {
            Some("user") => "user",
            Some("model") => "assistant",
            other => return Err(format!("unknown role {other:?}").into()),
        };
        let index = received.messages.len();
        let images = (role == "user").then_some(&mut received.images);
        let text = texts(content, index, images)?.concat();
        received.messages.push(FakeMessage::new(role, &text));
    }
    Ok(())
}

impl Inner {
    fn accepts(&self, model: &str) -> bool {
        model == self.model || self.vision_model.as_deref() == Some(model)
    }
}

/// The texts of `{"parts":[{"text":..}, ..]}`; where `images` is given (a
/// user turn), `{"inline_data":{"mime_type":..,"data":..}}` parts too
/// (or the camelCase `inlineData`/`mimeType` the REST API also takes),
/// decoded into `images` as pictures of message `index`.
fn texts(
    object: &Map<String, Value>,
    index: usize,
    mut images: Option<&mut Vec<FakeImage>>,
) -> Result<Vec<String>, Rejection> {
    let parts = object
        .get("parts")
        .and_then(Value::as_array)
        .ok_or("parts must be an array")?;
    if parts.is_empty() {
        return Err("parts is empty".into());
    }
    let mut texts = Vec::new();
    for p in parts {
        let p = p.as_object().ok_or("a part is not an object")?;
        let inline = p.get("inline_data").or_else(|| p.get("inlineData"));
        match (inline, images.as_deref_mut()) {
            (Some(inline), Some(images)) => {
                only_keys(p, &["inline_data", "inlineData"])?;
                let inline = inline.as_object().ok_or("inline_data must be an object")?;
                only_keys(inline, &["mime_type", "mimeType", "data"])?;
                let mime_type = inline
                    .get("mime_type")
                    .or_else(|| inline.get("mimeType"))
                    .and_then(Value::as_str)
                    .ok_or("inline_data.mime_type must be a string")?;
                let data = inline
                    .get("data")
                    .and_then(Value::as_str)
                    .ok_or("inline_data.data must be a string")?;
                images.push(picture(index, mime_type, data)?);
            }
            (Some(_), None) => return Err("inline_data is only for user turns".into()),
            (None, _) => {
                only_keys(p, &["text"])?;
                let text = p.get("text").and_then(Value::as_str);
                texts.push(text.ok_or("text must be a string")?.to_owned());
            }
        }
    }
    Ok(texts)
}

/// The text of an OpenAI user message's parts,
/// `[{"type":"text","text":..}, {"type":"image_url","image_url":{"url":"data:..."}}]`,
/// with its pictures decoded into `images`.
fn openai_parts(
    parts: &[Value],
    index: usize,
    images: &mut Vec<FakeImage>,
) -> Result<String, Rejection> {
    if parts.is_empty() {
        return Err("content is an empty array".into());
    }
    let mut text = String::new();
    for part in parts {
        let part = part.as_object().ok_or("a content part is not an object")?;
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                only_keys(part, &["type", "text"])?;
                let t = part.get("text").and_then(Value::as_str);
                text.push_str(t.ok_or("a text part's text must be a string")?);
            }
            Some("image_url") => {
                only_keys(part, &["type", "image_url"])?;
                let image_url = part
                    .get("image_url")
                    .and_then(Value::as_object)
                    .ok_or("image_url must be an object")?;
                only_keys(image_url, &["url", "detail"])?;
                let url = image_url
                    .get("url")
                    .and_then(Value::as_str)
                    .ok_or("image_url.url must be a string")?;
                // The fake fetches nothing: only inline pictures.
                let (mime_type, data) = url
                    .strip_prefix("data:")
                    .and_then(|rest| rest.split_once(";base64,"))
                    .ok_or("image_url.url must be a data:<mime>;base64,<data> URL")?;
                images.push(picture(index, mime_type, data)?);
            }
            other => return Err(format!("unknown content part type {other:?}").into()),
        }
    }
    Ok(text)
}

/// A picture as the provider would take it: an image mime type and
/// non-empty standard base64.
fn picture(index: usize, mime_type: &str, data: &str) -> Result<FakeImage, Rejection> {
    let is_image = mime_type
        .strip_prefix("image/")
        .is_some_and(|subtype| !subtype.is_empty());
    if !is_image {
        return Err(format!("unsupported image mime type {mime_type:?}").into());
    }
    let bytes = BASE64
        .decode(data)
        .map_err(|e| format!("the image data is not valid base64: {e}"))?;
    if bytes.is_empty() {
        return Err("the image data is empty".into());
    }
    Ok(FakeImage {
        message: index,
        mime_type: mime_type.into(),
        bytes,
    })
}

fn only_keys(object: &Map<String, Value>, allowed: &[&str]) -> Result<(), Rejection> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("unknown field {k:?}").into()),
        None => Ok(()),
    }
}

fn optional_number(object: &Map<String, Value>, key: &str) -> Result<(), Rejection> {
    match object.get(key) {
        Some(v) if !v.is_number() => Err(format!("{key} must be a number").into()),
        _ => Ok(()),
    }
}

fn optional_count(object: &Map<String, Value>, key: &str) -> Result<(), Rejection> {
    match object.get(key) {
        Some(v) if v.as_u64().is_none_or(|n| n == 0) => {
            Err(format!("{key} must be a positive integer").into())
        }
        _ => Ok(()),
    }
}

/// The provider's own answer to a request it rejects.
fn rejection(kind: FakeKind, rejected: &Rejection) -> Reply {
    let (status, message) = (rejected.status, rejected.reason.as_str());
    match kind {
        FakeKind::OpenAi if status == 401 => {
            Reply::openai_error(401, "invalid_api_key", "Incorrect API key provided.")
        }
        FakeKind::OpenAi if status == 404 && message.starts_with("model_not_found") => {
            Reply::openai_error(
                404,
                "model_not_found",
                "The model does not exist or you do not have access to it.",
            )
        }
        FakeKind::OpenAi => Reply::openai_error(status, "invalid_request_error", message),
        FakeKind::Gemini if message == "API_KEY_INVALID" => Reply::gemini_error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            vec![json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            })],
        ),
        FakeKind::Gemini => {
            let grpc = match status {
                401 => "UNAUTHENTICATED",
                404 => "NOT_FOUND",
                _ => "INVALID_ARGUMENT",
            };
            Reply::gemini_error(status, grpc, message, Vec::new())
        }
    }
}

/// The status and JSON text of a reply, in the fake's wire format.
fn render(inner: &Inner, reply: &Reply, received: &Received) -> (StatusCode, String) {
    let last_user = || {
        received
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.clone())
            .unwrap_or_default()
    };
    let (text, usage, finish) = match &reply.outcome {
        Outcome::Error { status, body } => {
            return (StatusCode::from_u16(*status).unwrap(), body.to_string());
        }
        Outcome::Reset => return (StatusCode::OK, String::new()),
        Outcome::Success {
            text,
            usage,
            finish_reason,
        } => (
            text.clone().unwrap_or_else(last_user),
            *usage,
            finish_reason.clone(),
        ),
    };
    let (prompt, completion) = usage.unwrap_or((10, 5));
    let n = inner.received.len() + 1;
    // The model asked (the text or the vision one), as providers report it.
    let model = received
        .model
        .clone()
        .unwrap_or_else(|| inner.model.clone());
    let body = match inner.kind {
        FakeKind::OpenAi => json!({
            "id": format!("chatcmpl-fake-{n}"),
            "object": "chat.completion",
            "created": 1_700_000_000 + n,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish.unwrap_or_else(|| "stop".into()),
            }],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }),
        FakeKind::Gemini => {
            let mut candidate =
                json!({"finishReason": finish.unwrap_or_else(|| "STOP".into()), "index": 0});
            if !text.is_empty() {
                candidate["content"] = json!({"role": "model", "parts": [{"text": text}]});
            }
            json!({
                "candidates": [candidate],
                "usageMetadata": {
                    "promptTokenCount": prompt,
                    "candidatesTokenCount": completion,
                    "totalTokenCount": prompt + completion,
                },
                "modelVersion": model,
                "responseId": format!("fake-{n}"),
            })
        }
    };
    (StatusCode::OK, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(url: &str, headers: &[(&str, &str)], body: Value) -> (u16, Value) {
        let mut request = reqwest::Client::new().post(url).json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_str(response.text().await.unwrap().trim_start()).unwrap(),
        )
    }

    #[tokio::test]
    async fn an_openai_request_with_an_unknown_field_is_rejected_and_recorded() {
        let fake = FakeProvider::start(FakeKind::OpenAi, "k", "m").await;
        let url = format!("{}/chat/completions", fake.base_url());
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false, "maxTokens": 5});

        let (status, answer) = post(&url, &[("authorization", "Bearer k")], body).await;

        assert_eq!(status, 400);
        assert_eq!(answer["error"]["code"], "invalid_request_error");
        assert_eq!(
            fake.requests()[0].problem.as_deref(),
            Some("400 unknown field \"maxTokens\"")
        );
    }

    #[tokio::test]
    async fn pictures_are_decoded_in_both_formats_and_a_malformed_one_is_a_400() {
        let openai = FakeProvider::start(FakeKind::OpenAi, "k", "m").await;
        openai.accept_vision_model("m-vl");
        let url = format!("{}/chat/completions", openai.base_url());
        let auth = [("authorization", "Bearer k")];
        let with_url = |image_url: &str| {
            json!({"model": "m-vl", "stream": false, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what?"},
                {"type": "image_url", "image_url": {"url": image_url}},
            ]}]})
        };
        let (ok, _) = post(&url, &auth, with_url("data:image/png;base64,AAEC")).await;
        let (bad, _) = post(&url, &auth, with_url("data:image/png;base64,@@")).await;
        let (remote, _) = post(&url, &auth, with_url("https://example.com/a.png")).await;
        assert_eq!((ok, bad, remote), (200, 400, 400));
        let first = &openai.requests()[0];
        assert_eq!(first.messages[0].content, "what?");
        assert_eq!(
            first.images,
            [FakeImage {
                message: 0,
                mime_type: "image/png".into(),
                bytes: vec![0, 1, 2],
            }]
        );

        let gemini = FakeProvider::start(FakeKind::Gemini, "k", "g").await;
        let url = format!("{}/models/g:generateContent", gemini.base_url());
        let with_part = |part: Value| json!({"contents": [{"role": "user", "parts": [{"text": "what?"}, part]}]});
        let key = [("x-goog-api-key", "k")];
        let inline = json!({"inline_data": {"mime_type": "image/jpeg", "data": "/9j/"}});
        let camel = json!({"inlineData": {"mimeType": "image/jpeg", "data": "/9j/"}});
        let text_type = json!({"inline_data": {"mime_type": "text/html", "data": "/9j/"}});
        let (ok, _) = post(&url, &key, with_part(inline)).await;
        let (also, _) = post(&url, &key, with_part(camel)).await;
        let (bad, _) = post(&url, &key, with_part(text_type)).await;
        assert_eq!((ok, also, bad), (200, 200, 400));
        let received = gemini.requests();
        assert_eq!(received[0].images[0].bytes, [0xff, 0xd8, 0xff]);
        assert_eq!(received[1].images[0].mime_type, "image/jpeg");
    }

    #[tokio::test]
    async fn gemini_answers_a_wrong_key_with_api_key_invalid() {
        let fake = FakeProvider::start(FakeKind::Gemini, "k", "m").await;
        let url = format!("{}/models/m:generateContent", fake.base_url());
        let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});

        let (status, answer) = post(&url, &[("x-goog-api-key", "wrong")], body).await;

        assert_eq!(status, 400);
        assert_eq!(answer["error"]["details"][0]["reason"], "API_KEY_INVALID");
    }

    #[tokio::test]
    async fn with_no_script_gemini_echoes_the_last_user_message() {
        let fake = FakeProvider::start(FakeKind::Gemini, "k", "m").await;
        let url = format!("{}/models/m:generateContent", fake.base_url());
        let body = json!({
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "contents": [
                {"role": "user", "parts": [{"text": "one"}]},
                {"role": "model", "parts": [{"text": "two"}]},
                {"role": "user", "parts": [{"text": "three"}]},
            ],
        });

        let (status, answer) = post(&url, &[("x-goog-api-key", "k")], body).await;

        assert_eq!(status, 200);
        assert_eq!(
            answer["candidates"][0]["content"]["parts"][0]["text"],
            "three"
        );
        assert_eq!(answer["candidates"][0]["finishReason"], "STOP");
        let roles: Vec<_> = fake.requests()[0]
            .messages
            .iter()
            .map(|m| m.role.clone())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
    }

    #[tokio::test]
    async fn scripted_replies_come_in_order_with_their_headers_and_blank_lines() {
        let fake = FakeProvider::start(FakeKind::OpenAi, "k", "m").await;
        fake.push(
            Reply::openai_error(429, "rate_limit_exceeded", "slow down")
                .header("retry-after-ms", "200"),
        );
        fake.push(Reply::text("late").leading_blank_lines(2));
        let url = format!("{}/chat/completions", fake.base_url());
        let body =
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false});
        let send = || {
            reqwest::Client::new()
                .post(&url)
                .bearer_auth("k")
                .json(&body)
                .send()
        };

        let limited = send().await.unwrap();
        let late = send().await.unwrap().text().await.unwrap();
        let (status, echoed) = post(&url, &[("authorization", "Bearer k")], body.clone()).await;

        assert_eq!(limited.status().as_u16(), 429);
        assert_eq!(limited.headers()["retry-after-ms"], "200");
        assert!(late.starts_with("\n\n{"), "{late:?}");
        assert_eq!(
            (status, &echoed["choices"][0]["message"]["content"]),
            (200, &json!("hi"))
        );
        assert_eq!(fake.count(), 3);
    }
}
