//! What a provider failure means for the caller: one of seven classes.
//!
//! A status code alone is not enough: several providers send billing or
//! quota exhaustion as 429, Zhipu and Doubao put the real reason in a
//! business code, and Gemini puts its retry hint in the body. [`classify`]
//! reads status AND body (PROVIDERS.md, "Failure classes") so the router can
//! decide between retrying, failing over and stopping. It is pure, so every
//! example of the table is a unit test.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;

/// What to do about a failed provider call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// 5xx, connection reset, timeout, overload: retry with backoff.
    Transient,
    /// Too many requests: wait at least the hint, then retry.
    RateLimited,
    /// Billing or quota exhausted: no retry on this provider; fail over.
    Quota,
    /// Bad or missing key, or a model/endpoint this key cannot use: fail over.
    Auth,
    /// The request itself is wrong (e.g. prompt too long): fail the job.
    BadRequest,
    /// The provider refused the content: answer the user politely.
    ContentFiltered,
    /// The fleet's circuit breaker for this provider is open: no call was
    /// made; fail over at once.
    Unavailable,
}

impl FailureClass {
    /// Whether trying the same provider again may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Transient | Self::RateLimited)
    }

    /// Whether the next provider of the chain may succeed where this one
    /// failed. A bad request or filtered content would fail everywhere.
    pub fn fails_over(self) -> bool {
        !matches!(self, Self::BadRequest | Self::ContentFiltered)
    }

    /// A stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::RateLimited => "rate_limited",
            Self::Quota => "quota",
            Self::Auth => "auth",
            Self::BadRequest => "bad_request",
            Self::ContentFiltered => "content_filtered",
            Self::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for FailureClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call to one provider. `message` is short and comes from the
/// provider's error message or from Ferry: never the key, never the prompt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{provider}: {class}{}: {message}", detail(.status, .code))]
pub struct ProviderError {
    pub provider: String,
    pub class: FailureClass,
    /// The HTTP status, when the provider answered.
    pub status: Option<u16>,
    /// The provider's error code or name (`rate_limit_exceeded`, `1305`,
    /// `ServerOverloaded`, `RESOURCE_EXHAUSTED`, ...).
    pub code: Option<String>,
    pub message: String,
    /// The provider's hint of when to try again (retryable classes only).
    pub retry_after: Option<Duration>,
}

fn detail(status: &Option<u16>, code: &Option<String>) -> String {
    match (status, code) {
        (Some(s), Some(c)) => format!(" (HTTP {s}, {c})"),
        (Some(s), None) => format!(" (HTTP {s})"),
        (None, Some(c)) => format!(" ({c})"),
        (None, None) => String::new(),
    }
}

/// Longest provider message kept, in characters.
const MAX_MESSAGE_CHARS: usize = 200;

impl ProviderError {
    /// A failure decided by Ferry itself (no HTTP answer to classify).
    pub fn new(provider: &str, class: FailureClass, message: impl Into<String>) -> Self {
        Self {
            provider: provider.to_owned(),
            class,
            status: None,
            code: None,
            message: shorten(&message.into()),
            retry_after: None,
        }
    }

    /// An error answer from the provider.
    pub(crate) fn from_response(
        provider: &str,
        status: u16,
        retry_hint: Option<Duration>,
        body: &str,
    ) -> Self {
        let c = classify(status, retry_hint, body);
        Self {
            provider: provider.to_owned(),
            class: c.class,
            status: Some(status),
            code: c.code,
            message: c.message,
            retry_after: c.retry_after,
        }
    }

    /// Removes `secret` from the message, in case a provider echoes the key.
    pub(crate) fn scrub(mut self, secret: &str) -> Self {
        if !secret.is_empty() && self.message.contains(secret) {
            self.message = self.message.replace(secret, "[redacted]");
        }
        self
    }

    /// The provider answered, but its output token cap (`max_tokens`) ran
    /// out before any text: the key, model and endpoint work, the cap is too
    /// small (a thinking model may spend it all on thoughts).
    pub fn is_cut_by_max_tokens(&self) -> bool {
        self.class == FailureClass::Transient
            && self.status.is_none()
            && matches!(self.code.as_deref(), Some("length" | "MAX_TOKENS"))
    }

    /// A request that got no HTTP answer: always transient (it may still be
    /// running, and billed, upstream).
    pub(crate) fn network(provider: &str, err: &reqwest::Error) -> Self {
        let what = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "could not connect"
        } else if err.is_body() || err.is_decode() {
            "the answer was cut off"
        } else {
            "request failed"
        };
        // Without the URL: shorter, and nothing request-specific leaks.
        let cause = std::error::Error::source(err)
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        Self::new(provider, FailureClass::Transient, format!("{what}{cause}"))
    }
}

/// The verdict on one error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub class: FailureClass,
    pub code: Option<String>,
    pub message: String,
    pub retry_after: Option<Duration>,
}

/// Decides the class of an error answer from its status, the retry hint of
/// its headers (see [`retry_hint`]) and its body. A body that is not an
/// error object falls back on the status alone.
pub fn classify(status: u16, retry_hint: Option<Duration>, body: &str) -> Classification {
    let facts = ErrorFacts::parse(body);
    let by_code = facts
        .codes
        .iter()
        .find_map(|code| class_of_code(code, &facts).map(|class| (class, code.clone())));
    let (class, code) = match by_code {
        Some((class, code)) => (class, Some(code)),
        None => (class_of_status(status), facts.codes.first().cloned()),
    };
    let message = match facts.message.as_deref().map(str::trim) {
        Some(m) if !m.is_empty() => shorten(m),
        _ => format!("HTTP {status}{}", reason(status)),
    };
    let retry_after = if class.is_retryable() {
        max_opt(retry_hint, facts.retry_delay)
    } else {
        None
    };
    Classification {
        class,
        code,
        message,
        retry_after,
    }
}

/// Codes, names and statuses found in the body, by provider convention:
/// `error.code` (OpenAI, Zhipu's `"1305"`, Doubao's `ServerOverloaded`),
/// `error.status` (Gemini's `RESOURCE_EXHAUSTED`), `error.type`, Gemini
/// `ErrorInfo.reason`, and a top-level `code` (DashScope's native shape).
#[derive(Default)]
struct ErrorFacts {
    codes: Vec<String>,
    message: Option<String>,
    /// Gemini `RetryInfo.retryDelay`.
    retry_delay: Option<Duration>,
    /// The message or a `QuotaFailure` violation names a per-day quota.
    per_day: bool,
}

impl ErrorFacts {
    fn parse(body: &str) -> Self {
        let Ok(value) = serde_json::from_str::<Value>(body.trim_start()) else {
            return Self::default();
        };
        // Gemini sometimes wraps the error object in a one-element array.
        let value = match value {
            Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
            other => other,
        };
        let error = match value.get("error") {
            Some(e) if e.is_object() => e,
            _ => &value,
        };
        let mut facts = Self::default();
        for field in ["code", "status", "type"] {
            if let Some(code) = error.get(field).and_then(Value::as_str) {
                facts.push_code(code);
            }
        }
        let details = error.get("details").and_then(Value::as_array);
        for detail in details.into_iter().flatten() {
            facts.read_detail(detail);
        }
        if let Some(code) = value.get("code").and_then(Value::as_str) {
            facts.push_code(code);
        }
        if let Some(code) = error.get("code").and_then(Value::as_i64) {
            facts.push_code(&code.to_string());
        }
        facts.message = error
            .get("message")
            .or_else(|| value.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(m) = &facts.message {
            facts.per_day |= mentions_per_day(m);
        }
        facts
    }

    fn push_code(&mut self, code: &str) {
        let code = code.trim();
        if !code.is_empty() && !self.codes.iter().any(|c| c == code) {
            self.codes.push(code.to_owned());
        }
    }

    fn read_detail(&mut self, detail: &Value) {
        let kind = detail.get("@type").and_then(Value::as_str).unwrap_or("");
        if kind.ends_with("RetryInfo") {
            let delay = detail.get("retryDelay").and_then(Value::as_str);
            self.retry_delay = max_opt(self.retry_delay, delay.and_then(parse_proto_duration));
        } else if kind.ends_with("QuotaFailure") {
            let violations = detail.get("violations").and_then(Value::as_array);
            for v in violations.into_iter().flatten() {
                self.per_day |= ["quotaId", "quotaMetric", "description"]
                    .iter()
                    .filter_map(|f| v.get(*f).and_then(Value::as_str))
                    .any(mentions_per_day);
            }
        } else if kind.ends_with("ErrorInfo")
            && let Some(reason) = detail.get("reason").and_then(Value::as_str)
        {
            self.push_code(reason);
        }
    }
}

fn mentions_per_day(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("perday") || lower.contains("per day") || lower.contains("per_day")
}

/// The class a provider's code or name stands for (PROVIDERS.md table).
fn class_of_code(code: &str, facts: &ErrorFacts) -> Option<FailureClass> {
    use FailureClass::*;
    let class = match code {
        // Zhipu 1301; DashScope (Qwen) moderation; Azure-style OpenAI filter.
        "1301" | "DataInspectionFailed" | "data_inspection_failed" | "content_filter" => {
            ContentFiltered
        }
        // Zhipu 1261: prompt too long.
        "1261" => BadRequest,
        // `Arrearage`: DashScope's overdue account.
        "insufficient_quota"
        | "1113"
        | "1304"
        | "1308"
        | "1310"
        | "AccountOverdueError"
        | "AccountQuotaExceeded"
        | "Arrearage" => Quota,
        // `API_KEY_INVALID`: Gemini sends a bad key as 400 with this reason.
        "invalid_api_key"
        | "AuthenticationError"
        | "InvalidApiKey"
        | "API_KEY_INVALID"
        | "model_not_found" => Auth,
        "1305" | "ServerOverloaded" => Transient,
        "rate_limit_exceeded" | "1302" | "1303" | "RequestBurstTooFast" => RateLimited,
        // Doubao `*RateLimitExceeded` (and `RateLimitExceeded.*`); DashScope
        // `Throttling.RateQuota` and its other `Throttling*` codes.
        c if c.contains("RateLimitExceeded") || c.starts_with("Throttling") => RateLimited,
        "RESOURCE_EXHAUSTED" if facts.per_day => Quota,
        "RESOURCE_EXHAUSTED" => RateLimited,
        _ => return None,
    };
    Some(class)
}

/// The class of a status when the body names nothing Ferry knows.
fn class_of_status(status: u16) -> FailureClass {
    use FailureClass::*;
    match status {
        // 404: this endpoint or model does not exist for this key, a provider
        // configuration fault like a bad key: fail over and alert.
        401 | 403 | 404 => Auth,
        402 => Quota,
        408 | 409 | 425 => Transient,
        429 => RateLimited,
        400..=499 => BadRequest,
        _ => Transient,
    }
}

fn reason(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!(" {r}"))
        .unwrap_or_default()
}

/// The retry hint of an answer's headers: `retry-after-ms` (milliseconds,
/// OpenAI-style), else `Retry-After` (seconds, or an HTTP date).
pub fn retry_hint(headers: &HeaderMap) -> Option<Duration> {
    let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
    parse_retry_hint(
        get("retry-after-ms"),
        get(RETRY_AFTER.as_str()),
        SystemTime::now(),
    )
}

fn parse_retry_hint(ms: Option<&str>, after: Option<&str>, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = ms.and_then(|v| v.trim().parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let after = after?.trim();
    if let Ok(secs) = after.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let date = chrono::DateTime::parse_from_rfc2822(after).ok()?;
    Some(
        SystemTime::from(date)
            .duration_since(now)
            .unwrap_or_default(),
    )
}

/// A protobuf JSON duration: `"47s"`, `"1.5s"`.
fn parse_proto_duration(text: &str) -> Option<Duration> {
    let secs: f64 = text.trim().strip_suffix('s')?.parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

fn max_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    a.max(b)
}

/// One line, at most [`MAX_MESSAGE_CHARS`] characters.
fn shorten(message: &str) -> String {
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::FailureClass::*;
    use super::*;

    fn openai_error(code: &str, kind: &str) -> String {
        format!(r#"{{"error":{{"message":"m","type":"{kind}","code":"{code}"}}}}"#)
    }

    fn code_error(code: &str) -> String {
        format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#)
    }

    const GEMINI_RETRY: &str = r#"{"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[
        {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
        {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"47s"}]}}"#;
    const GEMINI_RETRY_FRACTION: &str = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message":"slow down","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}}"#;
    const GEMINI_PER_DAY: &str = r#"{"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[
        {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
        {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"23s"}]}}"#;
    const GEMINI_PER_DAY_MESSAGE: &str = r#"[{"error":{"code":429,"message":"Quota exceeded for quota metric 'Generate requests' and limit 'requests per day'","status":"RESOURCE_EXHAUSTED"}}]"#;
    const GEMINI_BAD_KEY: &str = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#;

    /// One row: (what, status, header hint, body, class, code, retry_after).
    type Case = (
        &'static str,
        u16,
        Option<Duration>,
        String,
        FailureClass,
        Option<&'static str>,
        Option<Duration>,
    );

    /// Every example of PROVIDERS.md's failure table, plus the status
    /// fallbacks.
    #[test]
    fn every_example_of_the_failure_table_is_classified_as_documented() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let cases: Vec<Case> = vec![
            // transient
            ("500", 500, None, String::new(), Transient, None, None),
            ("502 html", 502, None, "<html>bad gateway</html>".into(), Transient, None, None),
            ("503", 503, None, String::new(), Transient, None, None),
            ("504", 504, None, String::new(), Transient, None, None),
            ("deepseek 503", 503, None, r#"{"error":{"message":"Server overloaded","type":"server_error"}}"#.into(), Transient, Some("server_error"), None),
            ("zhipu 1305", 429, None, code_error("1305"), Transient, Some("1305"), None),
            ("doubao ServerOverloaded", 429, None, r#"{"error":{"code":"ServerOverloaded","message":"m","param":"","type":"TooManyRequests"}}"#.into(), Transient, Some("ServerOverloaded"), None),
            ("503 with Retry-After", 503, Some(s(2)), String::new(), Transient, None, Some(s(2))),
            // rate limited
            ("openai rate_limit_exceeded", 429, Some(ms(200)), openai_error("rate_limit_exceeded", "requests"), RateLimited, Some("rate_limit_exceeded"), Some(ms(200))),
            ("zhipu 1302", 429, None, code_error("1302"), RateLimited, Some("1302"), None),
            ("zhipu 1303", 429, None, code_error("1303"), RateLimited, Some("1303"), None),
            ("doubao ModelAccountRpmRateLimitExceeded", 429, None, code_error("ModelAccountRpmRateLimitExceeded"), RateLimited, Some("ModelAccountRpmRateLimitExceeded"), None),
            ("doubao AccountRateLimitExceeded", 429, None, code_error("AccountRateLimitExceeded"), RateLimited, Some("AccountRateLimitExceeded"), None),
            ("doubao RateLimitExceeded.EndpointRPMExceeded", 429, None, code_error("RateLimitExceeded.EndpointRPMExceeded"), RateLimited, Some("RateLimitExceeded.EndpointRPMExceeded"), None),
            ("doubao RequestBurstTooFast", 429, None, code_error("RequestBurstTooFast"), RateLimited, Some("RequestBurstTooFast"), None),
            ("qwen Throttling.RateQuota (compatible)", 429, None, openai_error("Throttling.RateQuota", "Throttling.RateQuota"), RateLimited, Some("Throttling.RateQuota"), None),
            ("qwen Throttling.RateQuota (native)", 429, None, r#"{"code":"Throttling.RateQuota","message":"Requests rate limit exceeded","request_id":"r"}"#.into(), RateLimited, Some("Throttling.RateQuota"), None),
            ("gemini RetryInfo 47s", 429, None, GEMINI_RETRY.into(), RateLimited, Some("RESOURCE_EXHAUSTED"), Some(s(47))),
            ("gemini RetryInfo 1.5s", 429, None, GEMINI_RETRY_FRACTION.into(), RateLimited, Some("RESOURCE_EXHAUSTED"), Some(ms(1500))),
            ("plain 429", 429, Some(s(3)), String::new(), RateLimited, None, Some(s(3))),
            // quota / billing
            ("openai insufficient_quota", 429, Some(s(1)), openai_error("insufficient_quota", "insufficient_quota"), Quota, Some("insufficient_quota"), None),
            ("deepseek 402", 402, None, openai_error("invalid_request_error", "unknown_error"), Quota, Some("invalid_request_error"), None),
            ("deepseek 402 bare", 402, None, r#"{"error":{"message":"Insufficient Balance"}}"#.into(), Quota, None, None),
            ("zhipu 1113 as 429", 429, None, code_error("1113"), Quota, Some("1113"), None),
            ("zhipu 1304", 429, None, code_error("1304"), Quota, Some("1304"), None),
            ("zhipu 1308", 429, None, code_error("1308"), Quota, Some("1308"), None),
            ("zhipu 1310", 429, None, code_error("1310"), Quota, Some("1310"), None),
            ("doubao AccountOverdueError", 403, None, code_error("AccountOverdueError"), Quota, Some("AccountOverdueError"), None),
            ("doubao AccountQuotaExceeded", 429, None, code_error("AccountQuotaExceeded"), Quota, Some("AccountQuotaExceeded"), None),
            ("gemini per-day QuotaFailure", 429, None, GEMINI_PER_DAY.into(), Quota, Some("RESOURCE_EXHAUSTED"), None),
            ("gemini per-day message", 429, None, GEMINI_PER_DAY_MESSAGE.into(), Quota, Some("RESOURCE_EXHAUSTED"), None),
            // auth
            ("401", 401, None, String::new(), Auth, None, None),
            ("403", 403, None, String::new(), Auth, None, None),
            ("openai invalid_api_key", 401, None, openai_error("invalid_api_key", "invalid_request_error"), Auth, Some("invalid_api_key"), None),
            ("doubao AuthenticationError", 401, None, code_error("AuthenticationError"), Auth, Some("AuthenticationError"), None),
            ("gemini bad key as 400", 400, None, GEMINI_BAD_KEY.into(), Auth, Some("API_KEY_INVALID"), None),
            // bad request
            ("400", 400, None, String::new(), BadRequest, None, None),
            ("422", 422, None, openai_error("invalid_request_error", "invalid_request_error"), BadRequest, Some("invalid_request_error"), None),
            ("zhipu 1261", 400, None, code_error("1261"), BadRequest, Some("1261"), None),
            // content filtered
            ("zhipu 1301", 400, None, code_error("1301"), ContentFiltered, Some("1301"), None),
            // unparsable bodies fall back on the status
            ("unparsable 429", 429, None, "Too Many Requests".into(), RateLimited, None, None),
            ("unparsable 401", 401, None, "{not json".into(), Auth, None, None),
            ("unparsable 400", 400, None, "\n\n<html/>".into(), BadRequest, None, None),
        ];
        for (what, status, hint, body, class, code, retry_after) in cases {
            let c = classify(status, hint, &body);
            assert_eq!(c.class, class, "{what}: class");
            assert_eq!(c.code.as_deref(), code, "{what}: code");
            assert_eq!(c.retry_after, retry_after, "{what}: retry_after");
            assert!(!c.message.is_empty(), "{what}: message");
        }
    }

    #[test]
    fn the_message_comes_from_the_body_or_the_status() {
        let c = classify(
            429,
            None,
            &openai_error("rate_limit_exceeded", "requests")
                .replace("\"m\"", "\"Rate limit reached\""),
        );
        assert_eq!(c.message, "Rate limit reached");
        assert_eq!(
            classify(502, None, "<html>").message,
            "HTTP 502 Bad Gateway"
        );
    }

    #[test]
    fn a_long_message_is_cut_to_one_short_line() {
        let long = "x".repeat(1000);
        let body = format!(r#"{{"error":{{"message":"line one\n{long}"}}}}"#);
        let c = classify(400, None, &body);
        assert!(c.message.starts_with("line one x"));
        assert!(!c.message.contains('\n'));
        assert!(c.message.chars().count() <= MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn the_key_never_reaches_the_error_message() {
        let body = openai_error("invalid_api_key", "x")
            .replace("\"m\"", "\"Incorrect API key provided: sk-live-123\"");
        let err = ProviderError::from_response("chatgpt", 401, None, &body).scrub("sk-live-123");
        assert_eq!(err.class, Auth);
        assert!(!err.to_string().contains("sk-live-123"), "{err}");
    }

    #[test]
    fn the_error_names_provider_class_status_and_code() {
        let err = ProviderError::from_response("zhipu", 429, None, &code_error("1113"));
        assert_eq!(err.to_string(), "zhipu: quota (HTTP 429, 1113): m");
    }

    #[test]
    fn retry_hints_come_from_retry_after_ms_then_retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_400);
        let ms = Duration::from_millis;
        assert_eq!(parse_retry_hint(Some("200"), Some("9"), now), Some(ms(200)));
        assert_eq!(
            parse_retry_hint(Some("1500.5"), None, now),
            Some(Duration::from_micros(1_500_500))
        );
        assert_eq!(parse_retry_hint(None, Some("7"), now), Some(ms(7000)));
        assert_eq!(parse_retry_hint(None, Some("0.25"), now), Some(ms(250)));
        // 2015-10-21T07:28:00Z is 1_445_412_480: 80 s after `now`.
        assert_eq!(
            parse_retry_hint(None, Some("Wed, 21 Oct 2015 07:28:00 GMT"), now),
            Some(Duration::from_secs(80))
        );
        assert_eq!(
            parse_retry_hint(None, Some("Wed, 21 Oct 2015 07:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_hint(None, Some("soon"), now), None);
        assert_eq!(parse_retry_hint(Some("-5"), None, now), None);
        assert_eq!(parse_retry_hint(None, None, now), None);
    }

    #[test]
    fn header_and_retry_info_hints_combine_to_the_longer_wait() {
        let c = classify(429, Some(Duration::from_secs(60)), GEMINI_RETRY);
        assert_eq!(c.retry_after, Some(Duration::from_secs(60)));
    }

    #[test]
    fn classes_know_whether_to_retry_and_to_fail_over() {
        let all = [
            Transient,
            RateLimited,
            Quota,
            Auth,
            BadRequest,
            ContentFiltered,
            Unavailable,
        ];
        let retry: Vec<_> = all.iter().map(|c| c.is_retryable()).collect();
        let over: Vec<_> = all.iter().map(|c| c.fails_over()).collect();
        assert_eq!(retry, [true, true, false, false, false, false, false]);
        assert_eq!(over, [true, true, true, true, false, false, true]);
    }
}
