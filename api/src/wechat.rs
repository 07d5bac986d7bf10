//! The WeChat callback: `GET /wechat` (URL verification) and `POST /wechat`
//! (pushed messages, plaintext, compatible or safe mode).
//!
//! A push is checked (signature, then `msg_signature` and decryption when
//! encrypted), parsed, and enqueued with its dedup key in the same atomic
//! call, so a WeChat retry arriving while the first request still runs never
//! makes a second job. The answer is `success`: the reply itself travels
//! later through the customer-service API.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use ferry_common::job::kinds::{self, WeChatReply};
use ferry_common::job::{Idempotency, NewJob};
use ferry_common::wechat::{self, Incoming, IncomingKind, MessageError};

use crate::error::ApiError;
use crate::state::{AppState, WeChatIngress};

#[derive(Deserialize)]
pub struct Signed {
    signature: String,
    timestamp: String,
    nonce: String,
    echostr: Option<String>,
    encrypt_type: Option<String>,
    msg_signature: Option<String>,
}

fn check_signature(ingress: &WeChatIngress, q: &Signed) -> Result<(), ApiError> {
    if wechat::verify(
        &q.signature,
        &[ingress.token.expose(), &q.timestamp, &q.nonce],
    ) {
        Ok(())
    } else {
        tracing::warn!(target: "security", event = "bad_signature", "WeChat request with an invalid signature refused");
        Err(ApiError::BadSignature)
    }
}

/// URL verification: answer `echostr` unchanged, only for a valid signature.
pub async fn verify_url(
    State(state): State<AppState>,
    Query(q): Query<Signed>,
) -> Result<Response, ApiError> {
    check_signature(&state.wechat, &q)?;
    let echostr = q
        .echostr
        .ok_or_else(|| ApiError::BadRequest("missing echostr".into()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], echostr).into_response())
}

/// A pushed message or event.
pub async fn receive(
    State(state): State<AppState>,
    Query(q): Query<Signed>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_signature(&state.wechat, &q)?;
    let message = decode(&state.wechat, &q, &body)?;
    if let Some(content) = answerable_text(&message) {
        let payload = WeChatReply {
            openid: message.from_user.clone(),
            account: message.to_user.clone(),
            content: content.to_owned(),
            msg_id: message.msg_id(),
            create_time: message.create_time,
        };
        let job = NewJob {
            kind: kinds::WECHAT_REPLY.into(),
            queue: kinds::queue_of(kinds::WECHAT_REPLY).into(),
            payload: serde_json::to_value(&payload)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?,
            max_attempts: kinds::max_attempts_of(kinds::WECHAT_REPLY),
            idempotency: Some(Idempotency {
                key: message.dedup_key(),
                ttl: state.wechat.dedup_ttl,
            }),
        };
        let enqueued = state.queue.enqueue(&job).await.map_err(|e| {
            tracing::error!(error = %e, "cannot enqueue a WeChat message");
            ApiError::Unavailable
        })?;
        if enqueued.created {
            tracing::info!(job = %enqueued.id, "WeChat message enqueued");
        } else {
            tracing::info!(job = %enqueued.id, "WeChat retry of a message already enqueued: dropped");
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain")], "success").into_response())
}

/// Plaintext, or decrypted from `<Encrypt>` after checking `msg_signature`.
fn decode(ingress: &WeChatIngress, q: &Signed, body: &[u8]) -> Result<Incoming, ApiError> {
    if q.encrypt_type.as_deref() != Some("aes") {
        return wechat::parse(body).map_err(bad_message);
    }
    let crypt = ingress.crypt.as_ref().ok_or_else(|| {
        ApiError::BadRequest(
            "encrypted message, but WECHAT_ENCODING_AES_KEY is not configured".into(),
        )
    })?;
    let envelope = wechat::parse_encrypted_envelope(body).map_err(bad_message)?;
    let msg_signature = q.msg_signature.as_deref().unwrap_or_default();
    if !wechat::verify(
        msg_signature,
        &[
            ingress.token.expose(),
            &q.timestamp,
            &q.nonce,
            &envelope.encrypt,
        ],
    ) {
        tracing::warn!(target: "security", event = "bad_msg_signature", "encrypted WeChat message with an invalid msg_signature refused");
        return Err(ApiError::BadSignature);
    }
    let xml = crypt
        .decrypt(&envelope.encrypt)
        .map_err(|e| ApiError::BadRequest(format!("cannot decrypt: {e}")))?;
    wechat::parse(xml.as_bytes()).map_err(bad_message)
}

fn bad_message(e: MessageError) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

/// The text an AI should answer, if the message has one.
fn answerable_text(message: &Incoming) -> Option<&str> {
    match &message.kind {
        IncomingKind::Text { content, .. } => Some(content),
        IncomingKind::Voice {
            recognition: Some(text),
            ..
        } => Some(text),
        _ => None,
    }
}
