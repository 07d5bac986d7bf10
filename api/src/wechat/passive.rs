//! Answers carried by the HTTP response itself: `success` (acknowledged, the
//! reply comes later through the customer-service API), or a passive text
//! reply. A request in compatible or safe mode (`encrypt_type=aes`) gets the
//! reply encrypted, with a fresh `msg_signature` over token, timestamp,
//! nonce and `Encrypt`, as WeChat requires in safe mode.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ferry_common::wechat::{self, Incoming};

use super::verify::Signed;

const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const XML: HeaderValue = HeaderValue::from_static("application/xml; charset=utf-8");

/// Acknowledges without a passive reply.
pub fn success() -> Response {
    ([(header::CONTENT_TYPE, TEXT)], "success").into_response()
}

/// A passive text reply to `message`, encrypted when the request was.
pub fn text_reply(message: &Incoming, signed: &Signed, content: &str, now: i64) -> Response {
    let xml = wechat::passive_text_reply(&message.from_user, &message.to_user, now, content);
    let credentials = &signed.credentials;
    let body = match &credentials.crypt {
        Some(crypt) if signed.encrypted => {
            let Ok(encrypt) = crypt.encrypt(&xml) else {
                // Only a reply over 4 GiB cannot be encrypted.
                tracing::error!("cannot encrypt a passive reply: acknowledging without it");
                return success();
            };
            let timestamp = now.to_string();
            let signature = wechat::sign(&[
                credentials.token.expose(),
                &timestamp,
                &signed.nonce,
                &encrypt,
            ]);
            wechat::encrypted_reply(&encrypt, &signature, &timestamp, &signed.nonce)
        }
        _ => xml,
    };
    ([(header::CONTENT_TYPE, XML)], body).into_response()
}
