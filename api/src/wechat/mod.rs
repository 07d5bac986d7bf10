//! The WeChat callback: `GET /wechat` (URL verification) and `POST /wechat`
//! (pushed messages in plaintext, compatible or safe mode).
//!
//! A push is checked ([`verify`]: signature, timestamp window, then
//! `msg_signature` and decryption when encrypted), its body read only after
//! that (bounded: 413 above `FERRY_MAX_BODY_BYTES`), parsed, and turned into
//! an action ([`dispatch()`]). A job is handed to Redis with its dedup key in
//! the same atomic call, so a WeChat retry arriving while the first request
//! still runs never makes a second job, or to the spool when Redis does not
//! take it in time ([`crate::handoff`]). The answer is `success`, or a
//! passive reply ([`passive`]) for what needs no AI; in passive mode the
//! push is then held for its AI answer ([`hold`]).

pub mod credentials;
pub mod dispatch;
pub mod hold;
pub mod passive;
pub mod verify;

use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, body::Bytes};

use ferry_common::fleet::{CsQuota, cs_quota};
use ferry_common::job::kinds::WeChatReply;
use ferry_common::wechat::{Incoming, IncomingKind};

use self::dispatch::{Action, dispatch};
use self::hold::{Held, HeldFor};
use self::verify::{Caller, SignedQuery};
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::handoff;
use crate::state::AppState;
use ferry_common::telemetry::traces;
use tracing::Instrument as _;

fn caller<'a>(state: &'a AppState, client: Option<Extension<ClientIp>>) -> Caller<'a> {
    Caller {
        security: &state.security,
        ip: client.map(|Extension(ClientIp(ip))| ip),
    }
}

/// URL verification: answer `echostr` unchanged, only for a valid
/// signature. It has no side effect, so an old one replayed only echoes its
/// own `echostr`: no timestamp window here (WeChat's documented examples use
/// fixed timestamps).
pub async fn verify_url(
    State(state): State<AppState>,
    client: Option<Extension<ClientIp>>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let caller = caller(&state, client);
    let candidates = state.wechat.credentials.candidates();
    let signed = SignedQuery::parse(uri.query()).verify(&candidates, &caller)?;
    let echostr = signed
        .echostr
        .ok_or_else(|| ApiError::BadRequest("missing query parameter echostr".into()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], echostr).into_response())
}

/// Events after which WeChat allows 3 customer-service messages within a
/// minute (a menu click, a follow, a QR-code scan), resetting what the
/// user's last message allowed (WECHAT.md).
fn resets_allowance(message: &Incoming) -> bool {
    const EVENTS: &[&str] = &[
        "subscribe",
        "SCAN",
        "CLICK",
        "scancode_push",
        "scancode_waitmsg",
    ];
    matches!(&message.kind, IncomingKind::Event { event, .. }
        if EVENTS.iter().any(|e| e.eq_ignore_ascii_case(event)))
}

/// Records the event as the user's newest action for the allowance, best
/// effort within the acknowledgement budget: without it, an answer still
/// on its way could be sent as if the message's 5 were still allowed, and
/// WeChat would refuse the 4th with 45047 (not retried).
async fn record_action(state: &AppState, openid: &str) {
    let quota = CsQuota::new(state.queue.store().clone());
    let now = chrono::Utc::now().timestamp_millis();
    let recorded = tokio::time::timeout(
        state.wechat.ack_budget,
        quota.take(openid, now, cs_quota::AFTER_EVENT, 0),
    )
    .await;
    if !matches!(recorded, Ok(Ok(_))) {
        tracing::debug!("a menu click, follow or scan was not recorded for the allowance");
    }
}

/// The push's kind for its span (a fixed set: nothing the sender wrote).
fn msg_type(kind: &IncomingKind) -> &'static str {
    match kind {
        IncomingKind::Text { .. } => "text",
        IncomingKind::Voice { .. } => "voice",
        IncomingKind::Image { .. } => "image",
        IncomingKind::Event { .. } => "event",
        IncomingKind::Other { .. } => "other",
    }
}

/// A pushed message or event.
pub async fn receive(
    State(state): State<AppState>,
    client: Option<Extension<ClientIp>>,
    request: Request,
) -> Result<Response, ApiError> {
    let arrived = tokio::time::Instant::now();
    // Traces (issue 20): `Span::none()` unless an OTLP endpoint is set.
    let push = ferry_common::otel_span!(
        "wechat.push",
        wechat.msg_type = tracing::field::Empty,
        ferry.handed = tracing::field::Empty
    );
    let verifying = ferry_common::otel_span!(parent: &push, "verify");
    let caller = caller(&state, client);
    let ingress = &state.wechat;
    let candidates = ingress.credentials.candidates();
    let signed = SignedQuery::parse(request.uri().query()).verify(&candidates, &caller)?;
    let now = chrono::Utc::now().timestamp();
    verify::check_fresh(&signed, now, ingress.max_skew, &caller)?;
    // Only a signed, fresh request gets its body read.
    let body = Bytes::from_request(request, &state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::BadRequest("cannot read the request body".into())
        }
    })?;
    let message = verify::open(&signed, &body, &caller)?;
    drop(verifying);
    push.record("wechat.msg_type", msg_type(&message.kind));
    if resets_allowance(&message) {
        record_action(&state, &message.from_user).await;
    }
    match dispatch(&message, ingress) {
        Action::Answer(mut job) => {
            job.carry_trace(traces::traceparent(&push));
            let reply = state
                .passive
                .is_on()
                .then(|| serde_json::from_value::<WeChatReply>(job.payload.clone()).ok())
                .flatten();
            let Some(reply) = reply else {
                enqueue(&state, job, &push).await?;
                return Ok(passive::success());
            };
            job.payload["passive"] = true.into();
            let hand_off = async { enqueue(&state, job, &push).await.map(|_| ()) };
            let held = state
                .passive
                .hold(
                    &reply.openid,
                    &reply.push_key(),
                    reply.create_time,
                    arrived,
                    hand_off,
                )
                .await?;
            let mut response = match held {
                Held::Reply(text) => passive::text_reply(&message, &signed, &text, now),
                // WeChat stopped listening to this try and sends another.
                Held::NotYet => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            };
            response.extensions_mut().insert(HeldFor(arrived.elapsed()));
            Ok(response)
        }
        Action::Reply(text) => Ok(passive::text_reply(&message, &signed, &text, now)),
        Action::Forget { openid } => {
            handoff::forget(&state, &openid).await?;
            Ok(passive::success())
        }
        Action::Acknowledge => Ok(passive::success()),
    }
}

/// [`handoff::enqueue`] in an `enqueue` span under the push (where the
/// job went: `redis`, `duplicate` or `spooled`).
async fn enqueue(
    state: &AppState,
    job: ferry_common::job::NewJob,
    push: &tracing::Span,
) -> Result<handoff::Handed, ApiError> {
    let span = ferry_common::otel_span!(parent: push, "enqueue");
    let handed = handoff::enqueue(state, job).instrument(span).await?;
    if traces::on() {
        push.record(
            "ferry.handed",
            match handed {
                handoff::Handed::Redis { created: true } => "redis",
                handoff::Handed::Redis { created: false } => "duplicate",
                handoff::Handed::Spooled => "spooled",
            },
        );
    }
    Ok(handed)
}
