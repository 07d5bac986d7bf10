//! The floor Ferry's WeChat ingress is measured against (issue 19): a bare
//! axum handler for `POST /wechat` that does what any ingress must and
//! nothing else.
//!
//! - It checks `signature` (SHA-1 over token, `timestamp`, `nonce`, with
//!   `ferry_common::wechat::sign`, compared with `==`: a real check, not
//!   constant-time), and refuses a wrong or missing one with 401.
//! - With `encrypt_type=aes` it also checks `msg_signature` over token,
//!   `timestamp`, `nonce` and the body's `Encrypt` value, found by a byte
//!   search (no XML parser). **It does not decrypt**, and it does not parse
//!   the message, check the timestamp window, deduplicate or build a job.
//! - It does ONE `XADD <stream> * body <the raw body>` on one redis-rs
//!   multiplexed connection (concurrent requests share it, pipelined by the
//!   connection), and answers `success` with the `Content-Type` Ferry sends.
//!
//! Served by `axum::serve` with `TCP_NODELAY` on accepted sockets, as
//! `ferry_api::serve` does.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use ferry_common::wechat;
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

/// What the floor says about itself, for a program's output.
pub const DESCRIPTION: &str = "floor = bare axum POST /wechat: checks signature (and msg_signature \
     over the <Encrypt> value found by a byte search, in safe mode), reads the body, ONE XADD \
     <stream> * body <bytes> on a multiplexed connection, answers success. It does NOT decrypt, \
     parse the XML, check the timestamp window or deduplicate.";

const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// The floor's state: the token, the stream, one multiplexed connection.
pub struct Floor {
    token: String,
    stream: String,
    conn: MultiplexedConnection,
}

impl Floor {
    /// Connects to Redis at `redis_url` (one multiplexed connection).
    pub async fn connect(redis_url: &str, token: &str, stream: &str) -> anyhow::Result<Arc<Self>> {
        let conn = redis::Client::open(redis_url)?
            .get_multiplexed_async_connection()
            .await?;
        Ok(Arc::new(Self {
            token: token.to_owned(),
            stream: stream.to_owned(),
            conn,
        }))
    }
}

/// The floor's one route.
pub fn router(floor: Arc<Floor>) -> Router {
    Router::new()
        .route("/wechat", post(receive))
        .with_state(floor)
}

/// Serves the floor on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    floor: Arc<Floor>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(floor))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// The query parameters the check needs (borrowed when not escaped).
#[derive(Default)]
struct Query<'a> {
    signature: Option<std::borrow::Cow<'a, str>>,
    timestamp: Option<std::borrow::Cow<'a, str>>,
    nonce: Option<std::borrow::Cow<'a, str>>,
    encrypt_type: Option<std::borrow::Cow<'a, str>>,
    msg_signature: Option<std::borrow::Cow<'a, str>>,
}

fn parse_query(query: &str) -> Query<'_> {
    let mut q = Query::default();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match &*name {
            "signature" => &mut q.signature,
            "timestamp" => &mut q.timestamp,
            "nonce" => &mut q.nonce,
            "encrypt_type" => &mut q.encrypt_type,
            "msg_signature" => &mut q.msg_signature,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }
    q
}

/// The `Encrypt` value of a safe-mode body (CDATA or plain text), by a
/// byte search.
fn encrypt_value(body: &[u8]) -> Option<&str> {
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let open = find(body, b"<Encrypt>")? + b"<Encrypt>".len();
    let rest = &body[open..];
    let value = match rest.strip_prefix(b"<![CDATA[") {
        Some(cdata) => &cdata[..find(cdata, b"]]>")?],
        None => &rest[..find(rest, b"</Encrypt>")?],
    };
    std::str::from_utf8(value).ok()
}

async fn receive(
    State(floor): State<Arc<Floor>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    {
        let q = parse_query(query.as_deref().unwrap_or(""));
        let (Some(signature), Some(timestamp), Some(nonce)) = (
            q.signature.as_deref(),
            q.timestamp.as_deref(),
            q.nonce.as_deref(),
        ) else {
            return (
                StatusCode::BAD_REQUEST,
                "missing signature, timestamp or nonce",
            )
                .into_response();
        };
        if wechat::sign(&[floor.token.as_str(), timestamp, nonce]) != signature {
            return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
        }
        if q.encrypt_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("aes"))
        {
            let (Some(msg_signature), Some(encrypt)) =
                (q.msg_signature.as_deref(), encrypt_value(&body))
            else {
                return (StatusCode::BAD_REQUEST, "missing msg_signature or Encrypt")
                    .into_response();
            };
            if wechat::sign(&[floor.token.as_str(), timestamp, nonce, encrypt]) != msg_signature {
                return (StatusCode::UNAUTHORIZED, "bad msg_signature").into_response();
            }
        }
    }
    let mut conn = floor.conn.clone();
    let added: redis::RedisResult<()> = redis::cmd("XADD")
        .arg(&floor.stream)
        .arg("*")
        .arg("body")
        .arg(&body[..])
        .query_async(&mut conn)
        .await;
    match added {
        Ok(()) => ([(header::CONTENT_TYPE, TEXT)], "success").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "redis").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_encrypt_value() {
        assert_eq!(
            encrypt_value(b"<xml><ToUserName><![CDATA[gh]]></ToUserName><Encrypt><![CDATA[abc+/=]]></Encrypt></xml>"),
            Some("abc+/=")
        );
        assert_eq!(
            encrypt_value(b"<xml><Encrypt>xyz</Encrypt></xml>"),
            Some("xyz")
        );
        assert_eq!(encrypt_value(b"<xml></xml>"), None);
    }
}
