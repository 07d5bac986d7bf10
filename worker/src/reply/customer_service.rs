//! WeChat's customer-service (客服) message API: the asynchronous reply.
//!
//! Every errcode is classified per WECHAT.md: -1 is retried; a token error
//! (40001/40014/42001) drops the fleet's cached token only if it is still the
//! one that failed, then the send is tried once more; 45015, 45047, 45009 and
//! 48001 are permanent and never retried (a blind retry could spam the user
//! or burn the account's quota). `custom/send` is not idempotent, so a send
//! whose answer was lost is a retry that might duplicate: see ARCHITECTURE.md.

use serde::Deserialize;
use serde_json::json;

use ferry_common::fleet::{TokenCache, TokenError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying later (system busy, network, Redis).
    #[error("{0}")]
    Retry(String),
    /// WeChat will not take this message; do not retry.
    #[error("WeChat errcode {errcode}: {reason}")]
    Permanent { errcode: i64, reason: String },
}

/// What Ferry does with an errcode.
fn classify(errcode: i64, errmsg: &str) -> SendError {
    let reason = match errcode {
        -1 => return SendError::Retry(format!("WeChat system busy (errcode -1): {errmsg}")),
        45015 => "outside the 48-hour reply window, or the user unfollowed",
        45047 => "too many messages for this user interaction; wait until the user writes again",
        45009 => "the account's daily API quota is used up",
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
}

impl CustomerService {
    pub fn new(http: reqwest::Client, api_base: String, tokens: TokenCache) -> Self {
        Self {
            http,
            api_base,
            tokens,
        }
    }

    pub async fn send_text(&self, openid: &str, content: &str) -> Result<(), SendError> {
        let body = json!({"touser": openid, "msgtype": "text", "text": {"content": content}});
        self.call("/cgi-bin/message/custom/send", &body).await
    }

    pub async fn typing(&self, openid: &str) -> Result<(), SendError> {
        let body = json!({"touser": openid, "command": "Typing"});
        self.call("/cgi-bin/message/custom/typing", &body).await
    }

    /// One API call, with one retry after a token refresh.
    async fn call(&self, path: &str, body: &serde_json::Value) -> Result<(), SendError> {
        let mut refreshed = false;
        loop {
            let token = self.tokens.get().await.map_err(token_error)?;
            let reply = self.post(path, &token, body).await?;
            match reply.errcode {
                0 => return Ok(()),
                code if is_token_error(code) && !refreshed => {
                    refreshed = true;
                    tracing::info!(
                        errcode = code,
                        "WeChat refused the access token; refreshing it for the fleet"
                    );
                    self.tokens.invalidate(&token).await.map_err(token_error)?;
                }
                code => return Err(classify(code, &reply.errmsg)),
            }
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
        if !status.is_success() {
            return Err(SendError::Retry(format!("WeChat answered HTTP {status}")));
        }
        response
            .json()
            .await
            .map_err(|e| SendError::Retry(format!("unreadable WeChat answer: {}", e.without_url())))
    }
}

fn token_error(e: TokenError) -> SendError {
    match e {
        TokenError::WeChat { errcode, errmsg } => SendError::Permanent {
            errcode,
            reason: format!("WeChat refused the token request: {errmsg}"),
        },
        other => SendError::Retry(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errcodes_are_classified_per_the_table() {
        assert!(matches!(classify(-1, "busy"), SendError::Retry(_)));
        for code in [45015, 45047, 45009, 48001] {
            assert!(
                matches!(classify(code, ""), SendError::Permanent { errcode, .. } if errcode == code)
            );
        }
        assert!(is_token_error(40001) && is_token_error(40014) && is_token_error(42001));
        assert!(!is_token_error(45015));
    }
}
