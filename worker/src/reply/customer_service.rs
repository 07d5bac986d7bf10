//! WeChat's customer-service (客服) message API: the asynchronous reply.
//!
//! Every errcode is classified per WECHAT.md's table:
//! - -1 (system busy) is worth a retry: the job retries with the queue's
//!   backoff. WeChat did not take the message, so the retry duplicates
//!   nothing.
//! - 40001/40014/42001 (token invalid, illegal, expired): the fleet's cached
//!   token is dropped only if it is still the one that failed (a stale
//!   failure never drops a fresher token), and the call is tried once more
//!   with the token the fleet has then. A second refusal in a row is left
//!   to a job retry.
//! - 45015, 45047, 45009, 48001 and any other code are permanent: never
//!   retried (a blind retry could spam the user or burn the account's
//!   quota). 45009 and 48001 stop replies for the whole account, so they are
//!   logged at error level on the `alert` target with `alert = true`.
//!
//! Every errcode is counted ([`ReplyCounters`]). `custom/send` is not
//! idempotent, so a call whose answer is lost (a timeout after WeChat took
//! the message) is a retry that may duplicate: see ARCHITECTURE.md, "The
//! duplicate window".

use serde::Deserialize;
use serde_json::json;
use tracing::Instrument as _;

use ferry_common::fleet::{TokenCache, TokenError};

use super::counters::ReplyCounters;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying later (system busy, network, Redis).
    #[error("{0}")]
    Retry(String),
    /// WeChat will not take this message; do not retry.
    #[error("WeChat errcode {errcode}: {reason}")]
    Permanent { errcode: i64, reason: String },
}

/// What Ferry does with a (non-token) errcode.
fn classify(errcode: i64, errmsg: &str) -> SendError {
    let reason = match errcode {
        -1 => return SendError::Retry(format!("WeChat system busy (errcode -1): {errmsg}")),
        45015 => "outside the 48-hour reply window, or the user unfollowed",
        45047 => "too many messages for this user interaction; wait until the user writes again",
        45009 => "the account's daily API quota is used up; no replies until tomorrow",
        48001 => "the account is not authorised for the customer-service API",
        _ => errmsg,
    };
    SendError::Permanent {
        errcode,
        reason: reason.to_owned(),
    }
}

fn is_token_error(errcode: i64) -> bool {
    matches!(errcode, 40001 | 40014 | 42001)
}

/// Errcodes that stop every reply of the account: someone must act.
fn is_alert(errcode: i64) -> bool {
    matches!(errcode, 45009 | 48001)
}

/// Logs a refusal at the level it deserves.
fn report(error: &SendError) {
    match error {
        SendError::Permanent { errcode, reason } if is_alert(*errcode) => tracing::error!(
            target: "alert",
            alert = true,
            errcode,
            reason = %reason,
            "WeChat refuses customer-service messages for the whole account; replies are dead-lettered until this is fixed"
        ),
        SendError::Permanent { errcode, reason } => tracing::warn!(
            errcode,
            reason = %reason,
            "WeChat refused a customer-service message; it is not retried"
        ),
        SendError::Retry(error) => tracing::info!(error = %error, "WeChat call to be retried"),
    }
}

#[derive(Deserialize)]
struct WeChatReply {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

#[derive(Clone)]
pub struct CustomerService {
    http: reqwest::Client,
    api_base: String,
    tokens: TokenCache,
    counters: ReplyCounters,
}

impl CustomerService {
    pub fn new(
        http: reqwest::Client,
        api_base: String,
        tokens: TokenCache,
        counters: ReplyCounters,
    ) -> Self {
        Self {
            http,
            api_base,
            tokens,
            counters,
        }
    }

    pub async fn send_text(&self, openid: &str, content: &str) -> Result<(), SendError> {
        let body = json!({"touser": openid, "msgtype": "text", "text": {"content": content}});
        // Traces: the path only (the URL's query holds the access token),
        // never the openid; `wechat.errcode` of WeChat's last answer.
        let span = ferry_common::otel_span!(
            "wechat.send",
            otel.kind = "client",
            url.path = "/cgi-bin/message/custom/send",
            http.response.status_code = tracing::field::Empty,
            wechat.errcode = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let sent = self
            .call("/cgi-bin/message/custom/send", &body)
            .instrument(span.clone())
            .await;
        if sent.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        sent?;
        self.counters.part_sent();
        Ok(())
    }

    pub async fn typing(&self, openid: &str) -> Result<(), SendError> {
        let body = json!({"touser": openid, "command": "Typing"});
        self.call("/cgi-bin/message/custom/typing", &body).await
    }

    /// One API call, tried once more after a token refusal.
    async fn call(&self, path: &str, body: &serde_json::Value) -> Result<(), SendError> {
        let mut refused_once = false;
        loop {
            let token = self.tokens.get().await.map_err(token_error)?;
            let reply = self.post(path, &token, body).await.inspect_err(|_| {
                self.counters.unanswered();
            })?;
            let code = reply.errcode;
            if ferry_common::telemetry::traces::on() {
                tracing::Span::current().record("wechat.errcode", code);
            }
            if code == 0 {
                return Ok(());
            }
            self.counters.errcode(code);
            if !is_token_error(code) {
                let error = classify(code, &reply.errmsg);
                report(&error);
                return Err(error);
            }
            if refused_once {
                return Err(SendError::Retry(format!(
                    "WeChat refused the fleet's new access token too (errcode {code}: {})",
                    reply.errmsg
                )));
            }
            refused_once = true;
            let dropped = self.tokens.invalidate(&token).await.map_err(token_error)?;
            self.counters.token_refused(dropped);
            tracing::info!(
                errcode = code,
                dropped,
                "WeChat refused the access token; trying once more with the fleet's current one"
            );
        }
    }

    async fn post(
        &self,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> Result<WeChatReply, SendError> {
        // Errors go through `without_url`: the URL carries the access token.
        let response = self
            .http
            .post(format!("{}{path}", self.api_base))
            .query(&[("access_token", token)])
            .json(body)
            .send()
            .await
            .map_err(|e| SendError::Retry(format!("cannot reach WeChat: {}", e.without_url())))?;
        let status = response.status();
        if ferry_common::telemetry::traces::on() {
            tracing::Span::current().record("http.response.status_code", status.as_u16());
        }
        if !status.is_success() {
            return Err(SendError::Retry(format!("WeChat answered HTTP {status}")));
        }
        response
            .json()
            .await
            .map_err(|e| SendError::Retry(format!("unreadable WeChat answer: {}", e.without_url())))
    }
}

/// A failed token fetch: busy is worth a retry; any other refusal is the
/// account's configuration (secret, IP whitelist, quota) and needs a person.
fn token_error(e: TokenError) -> SendError {
    match e {
        TokenError::WeChat {
            errcode: -1,
            errmsg,
        } => SendError::Retry(format!(
            "WeChat's token endpoint is busy (errcode -1): {errmsg}"
        )),
        TokenError::WeChat { errcode, errmsg } => {
            let error = SendError::Permanent {
                errcode,
                reason: format!("WeChat refused the access-token request: {errmsg}"),
            };
            tracing::error!(
                target: "alert",
                alert = true,
                errcode,
                errmsg = %errmsg,
                "WeChat refuses to issue an access token (check WECHAT_APP_ID, WECHAT_APP_SECRET and the IP whitelist); replies are dead-lettered until this is fixed"
            );
            error
        }
        other => SendError::Retry(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errcodes_are_classified_per_the_table() {
        assert!(matches!(classify(-1, "busy"), SendError::Retry(_)));
        for code in [45015, 45047, 45009, 48001, 40003] {
            assert!(
                matches!(classify(code, ""), SendError::Permanent { errcode, .. } if errcode == code)
            );
        }
        assert!(is_token_error(40001) && is_token_error(40014) && is_token_error(42001));
        assert!(!is_token_error(45015));
    }

    #[test]
    fn only_account_wide_refusals_are_alerts() {
        assert!(is_alert(45009) && is_alert(48001));
        for code in [-1, 45015, 45047, 40001] {
            assert!(!is_alert(code), "{code}");
        }
    }

    /// The events one closure logs: (target, level, `alert` field).
    fn logged(f: impl FnOnce()) -> Vec<(String, tracing::Level, Option<bool>)> {
        use std::sync::{Arc, Mutex};
        use tracing::field::{Field, Visit};
        use tracing::span::{Attributes, Id, Record};
        use tracing::{Event, Metadata, Subscriber};

        type Seen = Arc<Mutex<Vec<(String, tracing::Level, Option<bool>)>>>;
        struct Capture(Seen);
        struct Alert(Option<bool>);
        impl Visit for Alert {
            fn record_bool(&mut self, field: &Field, value: bool) {
                if field.name() == "alert" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
        }
        impl Subscriber for Capture {
            fn enabled(&self, _: &Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &Attributes<'_>) -> Id {
                Id::from_u64(1)
            }
            fn record(&self, _: &Id, _: &Record<'_>) {}
            fn record_follows_from(&self, _: &Id, _: &Id) {}
            fn event(&self, event: &Event<'_>) {
                let mut alert = Alert(None);
                event.record(&mut alert);
                let meta = event.metadata();
                let seen = (meta.target().to_owned(), *meta.level(), alert.0);
                self.0.lock().unwrap().push(seen);
            }
            fn enter(&self, _: &Id) {}
            fn exit(&self, _: &Id) {}
        }
        let seen = Seen::default();
        tracing::subscriber::with_default(Capture(seen.clone()), f);
        seen.lock().unwrap().clone()
    }

    #[test]
    fn quota_and_authorisation_refusals_are_logged_as_alerts_and_others_are_not() {
        for code in [45009, 48001] {
            let events = logged(|| report(&classify(code, "")));
            assert_eq!(
                events,
                vec![("alert".to_owned(), tracing::Level::ERROR, Some(true))],
                "{code}"
            );
        }
        for code in [45015, 45047, -1] {
            let events = logged(|| report(&classify(code, "")));
            assert!(
                events.iter().all(|(target, level, alert)| target != "alert"
                    && *level > tracing::Level::ERROR
                    && alert.is_none()),
                "{code}: {events:?}"
            );
        }
    }

    #[test]
    fn a_busy_token_endpoint_is_retried_and_a_refusal_is_an_alert() {
        let busy = TokenError::WeChat {
            errcode: -1,
            errmsg: "system error".into(),
        };
        let refused = TokenError::WeChat {
            errcode: 40164,
            errmsg: "invalid ip".into(),
        };
        assert!(matches!(token_error(busy), SendError::Retry(_)));
        let mut error = None;
        let events = logged(|| error = Some(token_error(refused)));
        assert!(matches!(
            error,
            Some(SendError::Permanent { errcode: 40164, .. })
        ));
        assert_eq!(
            events,
            vec![("alert".to_owned(), tracing::Level::ERROR, Some(true))],
            "a refused token request stops the account: an alert"
        );
    }
}
