//! OpenAI's Batch API on Ferry's batches, the pure part (no I/O): a line
//! of an input file (`{"custom_id","method","url","body"}`) checked and
//! translated into a `chat.completion` payload, its `model` routed to a
//! provider of the chain, the ids of files, and the fields an OpenAI batch
//! keeps on its Ferry batch. The api's `openai` module serves the routes.
//!
//! The model picks the provider: a configured `<P>_MODEL` or
//! `<P>_VISION_MODEL` names its provider (the first in chain order when
//! several share a name), `provider/model` names both, and `auto` asks the
//! chain with fallback. Body fields Ferry cannot pass on, or that the
//! asked provider's wire format lacks ([`super::line::PARAMETERS`]), are
//! refused with the line's error, never dropped.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::line::{
    MAX_TOKENS, ProviderModels, Rules, SeenIds, check_custom_id, check_messages, check_model,
    parameter_problem,
};
use crate::job::kinds::{ChatCompletion, ChatParameters, ChatTurn};
use crate::keys::{MAX_PARTITIONS, Partition};
use crate::queue::BATCH;

/// The one endpoint a batch (and each of its lines) may name.
pub const CHAT_COMPLETIONS: &str = "/v1/chat/completions";
/// The one completion window.
pub const COMPLETION_WINDOW: &str = "24h";
/// What [`COMPLETION_WINDOW`] means: a batch still running this long after
/// it was created expires (its queued lines are not run).
pub const WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The model that asks the chain, with fallback, each provider its own
/// configured model.
pub const AUTO_MODEL: &str = "auto";
/// Most metadata pairs, longest key and value (OpenAI's limits).
pub const MAX_METADATA_PAIRS: usize = 16;
pub const MAX_METADATA_KEY: usize = 64;
pub const MAX_METADATA_VALUE: usize = 512;

/// Why one line of an input file cannot run: OpenAI's batch error, less
/// the line number (the caller knows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
}

impl LineError {
    fn new(code: &'static str, param: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    /// The error as the batch object lists it.
    pub fn at(self, line: u64) -> BatchError {
        BatchError {
            code: self.code.to_owned(),
            line: Some(line),
            message: self.message,
            param: self.param,
        }
    }
}

/// One entry of a batch's `errors.data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchError {
    pub code: String,
    /// 1-based line of the input file.
    pub line: Option<u64>,
    pub message: String,
    pub param: Option<String>,
}

/// The lines of one input file, checked in order (custom_ids must be
/// unique across the file).
pub struct InputLines<'a> {
    rules: &'a Rules,
    seen: SeenIds,
}

impl<'a> InputLines<'a> {
    pub fn new(rules: &'a Rules) -> Self {
        Self {
            rules,
            seen: SeenIds::default(),
        }
    }

    /// One non-blank line: its custom_id and the job's payload.
    pub fn check(&mut self, raw: &[u8]) -> Result<(String, ChatCompletion), LineError> {
        let value: Value = serde_json::from_slice(raw).map_err(|e| {
            LineError::new(
                "invalid_json_line",
                None,
                format!("the line is not valid JSON: {e}"),
            )
        })?;
        let Value::Object(line) = value else {
            return Err(LineError::new(
                "invalid_json_line",
                None,
                "the line is not a JSON object",
            ));
        };
        if let Some(k) = line
            .keys()
            .find(|k| !matches!(k.as_str(), "custom_id" | "method" | "url" | "body"))
        {
            return Err(LineError::new(
                "invalid_request",
                Some(k),
                format!(
                    "unknown field {:?}: a line has custom_id, method, url and body",
                    cut(k)
                ),
            ));
        }
        let custom_id = required_str(&line, "custom_id", "custom_id")?;
        check_custom_id(custom_id)
            .map_err(|m| LineError::new("invalid_custom_id", Some("custom_id"), m))?;
        let method = required_str(&line, "method", "method")?;
        if method != "POST" {
            return Err(LineError::new(
                "invalid_method",
                Some("method"),
                "method must be POST",
            ));
        }
        let url = required_str(&line, "url", "url")?;
        if url != CHAT_COMPLETIONS {
            return Err(LineError::new(
                "invalid_url",
                Some("url"),
                format!(
                    "url {:?} is not this batch's endpoint: every line of a batch goes to {CHAT_COMPLETIONS}",
                    cut(url)
                ),
            ));
        }
        let body = match line.get("body") {
            Some(Value::Object(body)) => body,
            None | Some(Value::Null) => return Err(missing("body")),
            Some(_) => {
                return Err(LineError::new(
                    "invalid_body",
                    Some("body"),
                    "body must be a chat completion request object",
                ));
            }
        };
        let payload = chat_request(self.rules, body)?;
        self.seen
            .insert(custom_id)
            .map_err(|m| LineError::new("duplicate_custom_id", Some("custom_id"), m))?;
        Ok((custom_id.to_owned(), payload))
    }
}

/// Where a `model` goes: the provider (`None`: the chain, with fallback)
/// and the model to ask it (`None`: its configured one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub provider: Option<String>,
    pub model: Option<String>,
}

/// Routes `model`: a configured model or vision model (first in chain
/// order), [`AUTO_MODEL`], or `provider/model`.
pub fn route(rules: &Rules, model: &str) -> Result<Route, LineError> {
    let to = |p: &ProviderModels, model: &str| Route {
        provider: Some(p.name.clone()),
        model: (model != p.model).then(|| model.to_owned()),
    };
    if let Some(p) = rules
        .models
        .iter()
        .find(|p| p.model == model || p.vision_model.as_deref() == Some(model))
    {
        return Ok(to(p, model));
    }
    if model == AUTO_MODEL {
        return Ok(Route {
            provider: None,
            model: None,
        });
    }
    if let Some((name, rest)) = model.split_once('/')
        && let Some(p) = rules.models.iter().find(|p| p.name == name)
    {
        check_model(rest).map_err(|m| LineError::new("invalid_value", Some("body.model"), m))?;
        return Ok(to(p, rest));
    }
    let known: Vec<String> = rules
        .models
        .iter()
        .flat_map(|p| {
            std::iter::once(format!("{} ({})", p.model, p.name))
                .chain(p.vision_model.iter().map(|v| format!("{v} ({})", p.name)))
        })
        .collect();
    Err(LineError::new(
        "model_not_found",
        Some("body.model"),
        format!(
            "model {:?} is not configured on this deployment: use one of {}, <provider>/<model>, or {AUTO_MODEL}",
            cut(model),
            known.join(", ")
        ),
    ))
}

/// The body fields Ferry passes on (OpenAI's names), besides `model` and
/// `messages`; `n` (1 only), `stream` (false only) and
/// `max_completion_tokens` (another name for `max_tokens`) are accepted too.
const BODY_FIELDS: &[&str] = &[
    "model",
    "messages",
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "top_p",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "n",
    "stream",
];

fn chat_request(rules: &Rules, body: &Map<String, Value>) -> Result<ChatCompletion, LineError> {
    // `null` is "not set", as OpenAI reads it.
    let body: Map<String, Value> = body
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !body.contains_key("messages") {
        return Err(LineError::new(
            "invalid_body",
            Some("body.messages"),
            "body is not a chat completion request: it has no messages",
        ));
    }
    if let Some(k) = body.keys().find(|k| !BODY_FIELDS.contains(&k.as_str())) {
        return Err(LineError::new(
            "unsupported_parameter",
            Some(&format!("body.{}", cut(k))),
            format!(
                "body.{} is not supported by Ferry's batches (they pass on model, messages, {})",
                cut(k),
                BODY_FIELDS[2..].join(", ")
            ),
        ));
    }
    let model = required_str(&body, "model", "body.model")?;
    let route = route(rules, model)?;
    let messages = messages(body.get("messages"))?;
    check_messages(&messages)
        .map_err(|m| LineError::new("invalid_body", Some("body.messages"), format!("body.{m}")))?;
    if body.get("n").is_some_and(|n| n.as_u64() != Some(1)) {
        return Err(LineError::new(
            "unsupported_parameter",
            Some("body.n"),
            "body.n must be 1: Ferry answers each request with one choice",
        ));
    }
    if body.get("stream").is_some_and(|s| s != &Value::Bool(false)) {
        return Err(LineError::new(
            "unsupported_parameter",
            Some("body.stream"),
            "body.stream must be false in a batch",
        ));
    }
    if body.contains_key("max_tokens") && body.contains_key("max_completion_tokens") {
        return Err(LineError::new(
            "invalid_body",
            Some("body.max_completion_tokens"),
            "set max_tokens or max_completion_tokens, not both",
        ));
    }
    let max_tokens = match body
        .get("max_tokens")
        .map(|v| ("max_tokens", v))
        .or_else(|| {
            body.get("max_completion_tokens")
                .map(|v| ("max_completion_tokens", v))
        }) {
        None => None,
        Some((name, v)) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=MAX_TOKENS).contains(n))
                .ok_or_else(|| {
                    invalid(
                        name,
                        format!("must be a whole number from 1 to {MAX_TOKENS}"),
                    )
                })?,
        ),
    };
    let parameters = ChatParameters {
        temperature: number(&body, "temperature")?,
        max_tokens,
        top_p: number(&body, "top_p")?,
        stop: stop(body.get("stop"))?,
        frequency_penalty: number(&body, "frequency_penalty")?,
        presence_penalty: number(&body, "presence_penalty")?,
    };
    if let Some((field, problem)) = parameter_problem(&parameters) {
        return Err(invalid(field, problem));
    }
    if let Some((field, provider)) =
        rules.unsupported_parameter(route.provider.as_deref(), &parameters)
    {
        let whom = match &route.provider {
            Some(_) => format!("model {:?} (provider {provider})", cut(model)),
            None => format!("provider {provider} of the chain ({AUTO_MODEL} may ask any)"),
        };
        return Err(LineError::new(
            "unsupported_parameter",
            Some(&format!("body.{field}")),
            format!(
                "body.{field} is not supported by {whom}: its wire format has no such field; leave it out or pick a model of another provider"
            ),
        ));
    }
    Ok(ChatCompletion {
        provider: route.provider,
        model: route.model,
        messages,
        parameters,
    })
}

fn messages(raw: Option<&Value>) -> Result<Vec<ChatTurn>, LineError> {
    let bad = |i: usize, what: &str| {
        LineError::new(
            "invalid_body",
            Some(&format!("body.messages[{i}]")),
            format!("body.messages[{i}] {what}"),
        )
    };
    let list = match raw {
        None => return Err(missing("body.messages")),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(LineError::new(
                "invalid_body",
                Some("body.messages"),
                "body.messages must be an array of messages",
            ));
        }
    };
    let mut turns = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(bad(i, "must be an object"));
        };
        if let Some(k) = m.keys().find(|k| !matches!(k.as_str(), "role" | "content")) {
            return Err(LineError::new(
                "unsupported_parameter",
                Some(&format!("body.messages[{i}].{}", cut(k))),
                format!(
                    "body.messages[{i}].{} is not supported by Ferry's batches (a message has role and content)",
                    cut(k)
                ),
            ));
        }
        let role = match m.get("role").and_then(Value::as_str) {
            // OpenAI's newer name for the system prompt.
            Some("system" | "developer") => "system",
            Some(role @ ("user" | "assistant")) => role,
            _ => return Err(bad(i, "role must be system, developer, user or assistant")),
        };
        let content = match m.get("content") {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(parts)) => text_parts(parts).map_err(|what| bad(i, &what))?,
            _ => return Err(bad(i, "content must be a string or an array of text parts")),
        };
        turns.push(ChatTurn {
            role: role.to_owned(),
            content,
        });
    }
    Ok(turns)
}

/// `[{"type":"text","text":..}, ..]`, joined by newlines. Other parts
/// (pictures, audio, files) are not passed on, so they are refused.
fn text_parts(parts: &[Value]) -> Result<String, String> {
    if parts.is_empty() {
        return Err("content must not be an empty array".into());
    }
    let mut texts = Vec::with_capacity(parts.len());
    for part in parts {
        let kind = part.get("type").and_then(Value::as_str);
        match (kind, part.get("text").and_then(Value::as_str)) {
            (Some("text"), Some(text)) => texts.push(text),
            (Some("text"), None) => return Err("has a text part without text".into()),
            (other, _) => {
                return Err(format!(
                    "has a content part of type {:?}: batches take text parts only",
                    cut(other.unwrap_or("?"))
                ));
            }
        }
    }
    Ok(texts.join("\n"))
}

fn stop(raw: Option<&Value>) -> Result<Option<Vec<String>>, LineError> {
    let not_strings = || invalid("stop", "must be a string or an array of strings".into());
    match raw {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(list)) => list
            .iter()
            .map(|s| s.as_str().map(str::to_owned).ok_or_else(not_strings))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(not_strings()),
    }
}

fn number(body: &Map<String, Value>, name: &str) -> Result<Option<f32>, LineError> {
    match body.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(|n| Some(n as f32))
            .ok_or_else(|| invalid(name, "must be a number".into())),
    }
}

fn required_str<'v>(
    object: &'v Map<String, Value>,
    name: &str,
    param: &str,
) -> Result<&'v str, LineError> {
    match object.get(name) {
        None | Some(Value::Null) => Err(missing(param)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(LineError::new(
            "invalid_request",
            Some(param),
            format!("{param} must be a string"),
        )),
    }
}

fn missing(param: &str) -> LineError {
    LineError::new(
        "missing_required_parameter",
        Some(param),
        format!("{param} is required"),
    )
}

fn invalid(field: &str, problem: String) -> LineError {
    LineError::new(
        "invalid_value",
        Some(&format!("body.{field}")),
        format!("body.{field} {problem}"),
    )
}

/// At most 40 characters of a caller's text, for a message (names only,
/// never content).
fn cut(s: &str) -> String {
    s.chars().take(40).collect()
}

/// A batch's `metadata`: string pairs, kept in the order sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(pub Vec<(String, String)>);

impl Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = Metadata;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Metadata, A::Error> {
                let mut pairs: Vec<(String, String)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    match pairs.iter_mut().find(|(seen, _)| *seen == k) {
                        Some(pair) => pair.1 = v,
                        None => pairs.push((k, v)),
                    }
                }
                Ok(Metadata(pairs))
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// Checks a batch's `metadata` (OpenAI's limits).
pub fn check_metadata(metadata: &Metadata) -> Result<(), String> {
    if metadata.0.len() > MAX_METADATA_PAIRS {
        return Err(format!("metadata holds at most {MAX_METADATA_PAIRS} pairs"));
    }
    for (k, v) in &metadata.0 {
        if k.chars().count() > MAX_METADATA_KEY || v.chars().count() > MAX_METADATA_VALUE {
            return Err(format!(
                "metadata keys are at most {MAX_METADATA_KEY} characters and values at most {MAX_METADATA_VALUE}"
            ));
        }
    }
    Ok(())
}

/// The batch hash fields an OpenAI batch adds to its Ferry batch (written
/// in the call that opens it).
pub const INPUT_FILE_FIELD: &str = "openai_input_file";
pub const ENDPOINT_FIELD: &str = "openai_endpoint";
pub const WINDOW_FIELD: &str = "openai_window";
pub const METADATA_FIELD: &str = "openai_metadata";
pub const ERRORS_FIELD: &str = "openai_errors";

/// What an OpenAI batch keeps besides its Ferry batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenAiBatch {
    pub input_file_id: String,
    pub endpoint: String,
    pub completion_window: String,
    pub metadata: Option<Metadata>,
    /// Why it failed validation (nothing ran), in line order.
    pub errors: Vec<BatchError>,
}

impl OpenAiBatch {
    /// The fields to keep on the batch hash.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            (INPUT_FILE_FIELD, self.input_file_id.clone()),
            (ENDPOINT_FIELD, self.endpoint.clone()),
            (WINDOW_FIELD, self.completion_window.clone()),
        ];
        if let Some(m) = &self.metadata {
            fields.push((
                METADATA_FIELD,
                serde_json::to_string(m).expect("serializes"),
            ));
        }
        if !self.errors.is_empty() {
            let errors = serde_json::to_string(&self.errors).expect("serializes");
            fields.push((ERRORS_FIELD, errors));
        }
        fields
    }

    /// Read back from a batch hash; `None` for a batch of Ferry's own API.
    pub fn from_fields(f: &HashMap<String, String>) -> Option<Self> {
        let input_file_id = f.get(INPUT_FILE_FIELD)?.clone();
        Some(Self {
            input_file_id,
            endpoint: f.get(ENDPOINT_FIELD).cloned().unwrap_or_default(),
            completion_window: f.get(WINDOW_FIELD).cloned().unwrap_or_default(),
            metadata: f
                .get(METADATA_FIELD)
                .and_then(|m| serde_json::from_str(m).ok()),
            errors: f
                .get(ERRORS_FIELD)
                .and_then(|e| serde_json::from_str(e).ok())
                .unwrap_or_default(),
        })
    }
}

/// What a file id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRef {
    /// An uploaded file, kept in this partition of the batch queue (its
    /// owner's).
    Uploaded(Partition),
    /// The output file of a batch, made from its results when read.
    Output(String),
    /// The error file of a batch, made likewise.
    Errors(String),
}

const OUTPUT_SUFFIX: &str = "-output";
const ERRORS_SUFFIX: &str = "-errors";

/// A new uploaded file's id in `partition`: `file-<ULID>` in partition 0,
/// `file-<n>-<ULID>` in partition n (the id alone finds its keys).
pub fn new_file_id(partition: &Partition) -> String {
    match partition.index {
        0 => format!("file-{}", ulid::Ulid::new()),
        n => format!("file-{n}-{}", ulid::Ulid::new()),
    }
}

/// The output file of batch `batch_id`: `file-<batch id>-output`.
pub fn output_file_id(batch_id: &str) -> String {
    format!("file-{batch_id}{OUTPUT_SUFFIX}")
}

/// The error file of batch `batch_id`: `file-<batch id>-errors`.
pub fn error_file_id(batch_id: &str) -> String {
    format!("file-{batch_id}{ERRORS_SUFFIX}")
}

/// What `id` names, `None` when it is no file id of Ferry's (ids become
/// parts of keys: check them first).
pub fn parse_file_id(id: &str) -> Option<FileRef> {
    let rest = id.strip_prefix("file-")?;
    if let Some(batch) = rest.strip_suffix(OUTPUT_SUFFIX) {
        return super::is_batch_id(batch).then(|| FileRef::Output(batch.to_owned()));
    }
    if let Some(batch) = rest.strip_suffix(ERRORS_SUFFIX) {
        return super::is_batch_id(batch).then(|| FileRef::Errors(batch.to_owned()));
    }
    let (index, ulid) = match rest.split_once('-') {
        None => (0, rest),
        Some((raw, ulid)) => {
            let n: u16 = raw.parse().ok()?;
            if n == 0 || n.to_string() != raw || n > MAX_PARTITIONS {
                return None;
            }
            (n, ulid)
        }
    };
    ulid.parse::<ulid::Ulid>().ok()?;
    Some(FileRef::Uploaded(Partition::new(BATCH, index)))
}

/// The ULID that ends a batch or uploaded file id: its creation order.
pub fn ulid_of(id: &str) -> Option<ulid::Ulid> {
    let start = id.len().checked_sub(26)?;
    id.get(start..)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProviderConfig, ProviderKind};

    fn provider(
        name: &str,
        kind: ProviderKind,
        model: &str,
        vision: Option<&str>,
    ) -> ProviderConfig {
        let mut p = ProviderConfig::echo();
        p.name = name.into();
        p.kind = kind;
        p.model = model.into();
        p.vision_model = vision.map(str::to_owned);
        p
    }

    fn rules() -> Rules {
        Rules::new(&[
            provider("deepseek", ProviderKind::OpenAi, "deepseek-chat", None),
            provider(
                "qwen",
                ProviderKind::OpenAi,
                "qwen-plus",
                Some("qwen-vl-max"),
            ),
            provider(
                "gemini",
                ProviderKind::Gemini,
                "gemini-2.0-flash",
                Some("gemini-2.0-flash"),
            ),
            // A second provider configured with a model the first has.
            provider("local", ProviderKind::OpenAi, "deepseek-chat", None),
        ])
    }

    fn line(body: &str) -> String {
        format!(
            r#"{{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{body}}}"#
        )
    }

    fn check(raw: &str) -> Result<(String, ChatCompletion), LineError> {
        let rules = rules();
        InputLines::new(&rules).check(raw.as_bytes())
    }

    #[test]
    fn the_model_picks_the_provider() {
        let rules = rules();
        let to = |provider: Option<&str>, model: Option<&str>| Route {
            provider: provider.map(str::to_owned),
            model: model.map(str::to_owned),
        };
        let cases = [
            // A configured model: the first provider in chain order.
            ("deepseek-chat", to(Some("deepseek"), None)),
            ("qwen-plus", to(Some("qwen"), None)),
            ("qwen-vl-max", to(Some("qwen"), Some("qwen-vl-max"))),
            ("gemini-2.0-flash", to(Some("gemini"), None)),
            (
                "deepseek/deepseek-reasoner",
                to(Some("deepseek"), Some("deepseek-reasoner")),
            ),
            ("local/deepseek-chat", to(Some("local"), None)),
            ("auto", to(None, None)),
        ];
        for (model, expected) in cases {
            assert_eq!(route(&rules, model).unwrap(), expected, "{model}");
        }
        let unknown = route(&rules, "gpt-4o").unwrap_err();
        assert_eq!(unknown.code, "model_not_found");
        assert_eq!(unknown.param.as_deref(), Some("body.model"));
        assert!(
            unknown.message.starts_with(
                "model \"gpt-4o\" is not configured on this deployment: use one of deepseek-chat (deepseek), qwen-plus (qwen), qwen-vl-max (qwen)"
            ),
            "{}",
            unknown.message
        );
        assert_eq!(
            route(&rules, "nosuch/model").unwrap_err().code,
            "model_not_found"
        );
        assert_eq!(
            route(&rules, "deepseek/../x").unwrap_err().code,
            "invalid_value"
        );
    }

    #[test]
    fn a_line_becomes_a_payload_with_its_parameters() {
        let (id, payload) = check(&line(
            r#"{"model":"deepseek/deepseek-reasoner","messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"temperature":0.5,"max_completion_tokens":64,"top_p":0.9,"stop":"END","frequency_penalty":0.1,"presence_penalty":null,"n":1,"stream":false}"#,
        ))
        .unwrap();
        assert_eq!(id, "r1");
        assert_eq!(payload.provider.as_deref(), Some("deepseek"));
        assert_eq!(payload.model.as_deref(), Some("deepseek-reasoner"));
        assert_eq!(payload.messages[0].role, "system");
        assert_eq!(payload.messages[1].content, "a\nb");
        let p = &payload.parameters;
        assert_eq!(
            (
                p.temperature,
                p.max_tokens,
                p.top_p,
                p.frequency_penalty,
                p.presence_penalty
            ),
            (Some(0.5), Some(64), Some(0.9), Some(0.1), None)
        );
        assert_eq!(p.stop, Some(vec!["END".to_owned()]));
    }

    #[test]
    fn each_bad_line_gets_openais_code_and_param() {
        let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
        let cases: Vec<(String, &str, Option<&str>)> = vec![
            ("not json".into(), "invalid_json_line", None),
            ("[1]".into(), "invalid_json_line", None),
            (
                r#"{"method":"POST","url":"/v1/chat/completions","body":{}}"#.into(),
                "missing_required_parameter",
                Some("custom_id"),
            ),
            (
                line(&format!(r#"{{"model":"deepseek-chat",{msgs}}}"#)).replace("POST", "GET"),
                "invalid_method",
                Some("method"),
            ),
            (
                line(&format!(r#"{{"model":"text-embedding-3-small",{msgs}}}"#))
                    .replace("/v1/chat/completions", "/v1/embeddings"),
                "invalid_url",
                Some("url"),
            ),
            (line(r#""hi""#), "invalid_body", Some("body")),
            (
                line(&format!("{{{msgs}}}")),
                "missing_required_parameter",
                Some("body.model"),
            ),
            (
                line(r#"{"model":"deepseek-chat","input":"x"}"#),
                "invalid_body",
                Some("body.messages"),
            ),
            (
                line(&format!(r#"{{"model":"gpt-4o",{msgs}}}"#)),
                "model_not_found",
                Some("body.model"),
            ),
            (
                line(r#"{"model":"deepseek-chat","messages":[{"role":"tool","content":"x"}]}"#),
                "invalid_body",
                Some("body.messages[0]"),
            ),
            (
                line(r#"{"model":"deepseek-chat","messages":[{"role":"system","content":"x"}]}"#),
                "invalid_body",
                Some("body.messages"),
            ),
            (
                line(
                    r#"{"model":"deepseek-chat","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
                ),
                "invalid_body",
                Some("body.messages[0]"),
            ),
            (
                line(&format!(r#"{{"model":"deepseek-chat",{msgs},"tools":[]}}"#)),
                "unsupported_parameter",
                Some("body.tools"),
            ),
            (
                line(&format!(r#"{{"model":"deepseek-chat",{msgs},"n":2}}"#)),
                "unsupported_parameter",
                Some("body.n"),
            ),
            (
                line(&format!(
                    r#"{{"model":"deepseek-chat",{msgs},"temperature":5}}"#
                )),
                "invalid_value",
                Some("body.temperature"),
            ),
            (
                line(&format!(
                    r#"{{"model":"deepseek-chat",{msgs},"max_tokens":0}}"#
                )),
                "invalid_value",
                Some("body.max_tokens"),
            ),
            (
                line(&format!(
                    r#"{{"model":"gemini-2.0-flash",{msgs},"frequency_penalty":0.5}}"#
                )),
                "unsupported_parameter",
                Some("body.frequency_penalty"),
            ),
            (
                line(&format!(
                    r#"{{"model":"auto",{msgs},"presence_penalty":0.5}}"#
                )),
                "unsupported_parameter",
                Some("body.presence_penalty"),
            ),
        ];
        for (raw, code, param) in cases {
            let err = check(&raw).unwrap_err();
            assert_eq!(
                (err.code, err.param.as_deref()),
                (code, param),
                "{raw}: {err:?}"
            );
        }
        let gemini = check(&line(&format!(
            r#"{{"model":"gemini-2.0-flash",{msgs},"frequency_penalty":0.5}}"#
        )))
        .unwrap_err();
        assert!(
            gemini.message.starts_with(
                "body.frequency_penalty is not supported by model \"gemini-2.0-flash\" (provider gemini)"
            ),
            "{}",
            gemini.message
        );
    }

    #[test]
    fn a_custom_id_may_appear_once_per_file() {
        let rules = rules();
        let mut lines = InputLines::new(&rules);
        let raw = line(r#"{"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}]}"#);
        assert!(lines.check(raw.as_bytes()).is_ok());
        let again = lines.check(raw.as_bytes()).unwrap_err();
        assert_eq!(again.code, "duplicate_custom_id");
        assert_eq!(again.at(7).line, Some(7));
    }

    #[test]
    fn file_ids_name_their_partition_or_their_batch() {
        let p3 = Partition::new(BATCH, 3);
        let uploaded = new_file_id(&p3);
        assert!(uploaded.starts_with("file-3-"), "{uploaded}");
        assert_eq!(parse_file_id(&uploaded), Some(FileRef::Uploaded(p3)));
        let first = new_file_id(&Partition::first(BATCH));
        assert_eq!(
            parse_file_id(&first),
            Some(FileRef::Uploaded(Partition::first(BATCH)))
        );
        let batch = super::super::new_batch_id(&Partition::new(BATCH, 2));
        assert_eq!(
            parse_file_id(&output_file_id(&batch)),
            Some(FileRef::Output(batch.clone()))
        );
        assert_eq!(
            parse_file_id(&error_file_id(&batch)),
            Some(FileRef::Errors(batch.clone()))
        );
        assert_eq!(ulid_of(&batch), ulid_of(&batch));
        assert!(ulid_of(&uploaded).is_some());
        for bad in [
            "file-",
            "file-x",
            "file-03-01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "file-0-01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "file-batch_nope-output",
            "x",
        ] {
            assert_eq!(parse_file_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_openai_batch_round_trips_through_its_hash_fields() {
        let batch = OpenAiBatch {
            input_file_id: "file-1".into(),
            endpoint: CHAT_COMPLETIONS.into(),
            completion_window: COMPLETION_WINDOW.into(),
            metadata: Some(Metadata(vec![
                ("nightly".to_owned(), "yes".to_owned()),
                ("a".to_owned(), "first".to_owned()),
            ])),
            errors: vec![LineError::new("invalid_url", Some("url"), "x").at(3)],
        };
        let fields: HashMap<String, String> = batch
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(OpenAiBatch::from_fields(&fields), Some(batch));
        assert_eq!(OpenAiBatch::from_fields(&HashMap::new()), None);
        let too_many = Metadata((0..17).map(|i| (i.to_string(), String::new())).collect());
        assert!(check_metadata(&too_many).is_err());
        let sent: Metadata = serde_json::from_str(r#"{"z":"1","a":"2"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&sent).unwrap(),
            r#"{"z":"1","a":"2"}"#
        );
    }
}
