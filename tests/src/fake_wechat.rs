//! A fake of WeChat's server API (WECHAT.md): the access-token endpoints and
//! the customer-service message endpoints, speaking WeChat's JSON exactly.
//!
//! It issues tokens, checks `access_token` on every call (an unknown or
//! expired token gets errcode 40001, as WeChat answers), records what users
//! were sent and every send attempt with its answer, counts token fetches,
//! and can be told to answer any errcode, at once or after some messages
//! were accepted.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

/// A customer-service message WeChat accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub touser: String,
    pub content: String,
}

/// One `custom/send` call the fake answered, accepted or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendAttempt {
    /// Empty when the body had none.
    pub touser: String,
    pub content: String,
    /// What the fake answered (0: accepted).
    pub errcode: i64,
}

#[derive(Default)]
struct Inner {
    app_id: String,
    app_secret: String,
    /// Tokens currently valid.
    valid_tokens: Vec<String>,
    token_counter: u64,
    token_fetches: u64,
    classic_token_fetches: u64,
    expires_in: u64,
    sent: Vec<SentMessage>,
    /// When each of `sent` was accepted (same order).
    sent_at: Vec<Instant>,
    attempts: Vec<SendAttempt>,
    typing: Vec<(String, String)>,
    /// errcodes to answer to the next sends, in order, each once at least
    /// `.0` messages were accepted.
    send_errors: VecDeque<(usize, i64)>,
    send_delay: Option<Duration>,
    /// WeChat's customer-service allowance per user: messages left and
    /// until when, since the user's last action ([`FakeWeChat::user_wrote`]).
    /// Users the test never said acted are not counted.
    allowances: std::collections::HashMap<String, (u32, Instant)>,
    /// Answer 48001 to every customer-service call (an unverified
    /// subscription account).
    no_customer_service: bool,
    /// Media `media/get` serves, by media id.
    media: std::collections::HashMap<String, Media>,
    /// `media/get` calls, by media id (whatever they were answered).
    media_downloads: std::collections::HashMap<String, u64>,
}

#[derive(Clone)]
pub struct FakeWeChat {
    inner: Arc<Mutex<Inner>>,
    addr: SocketAddr,
}

#[derive(Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

impl FakeWeChat {
    pub async fn start(app_id: &str, app_secret: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            app_id: app_id.into(),
            app_secret: app_secret.into(),
            expires_in: 7200,
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/cgi-bin/stable_token", post(stable_token))
            .route("/cgi-bin/token", get(classic_token))
            .route("/cgi-bin/message/custom/send", post(custom_send))
            .route("/cgi-bin/message/custom/typing", post(custom_typing))
            .route("/cgi-bin/media/get", get(media_get))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self { inner, addr }
    }

    /// The value for `WECHAT_API_BASE`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn sent(&self) -> Vec<SentMessage> {
        self.inner.lock().unwrap().sent.clone()
    }

    /// Every accepted message with the moment the fake accepted it, in
    /// order (for latency measurements: from an event to the reply).
    pub fn sent_with_times(&self) -> Vec<(SentMessage, Instant)> {
        let inner = self.inner.lock().unwrap();
        inner
            .sent
            .iter()
            .cloned()
            .zip(inner.sent_at.iter().copied())
            .collect()
    }

    pub fn sent_to(&self, openid: &str) -> Vec<String> {
        self.sent()
            .into_iter()
            .filter(|m| m.touser == openid)
            .map(|m| m.content)
            .collect()
    }

    /// Every `custom/send` call answered, in order, with its errcode (a
    /// call whose client went away before the answer is not one).
    pub fn send_attempts(&self) -> Vec<SendAttempt> {
        self.inner.lock().unwrap().attempts.clone()
    }

    /// The `custom/send` calls answered for one user.
    pub fn send_attempts_to(&self, openid: &str) -> Vec<SendAttempt> {
        self.send_attempts()
            .into_iter()
            .filter(|a| a.touser == openid)
            .collect()
    }

    /// Token fetches, from either endpoint.
    pub fn token_fetches(&self) -> u64 {
        self.inner.lock().unwrap().token_fetches
    }

    /// Token fetches from the classic `/cgi-bin/token` endpoint.
    pub fn classic_token_fetches(&self) -> u64 {
        self.inner.lock().unwrap().classic_token_fetches
    }

    pub fn typing(&self) -> Vec<(String, String)> {
        self.inner.lock().unwrap().typing.clone()
    }

    /// Expires every issued token now (the next send gets 42001).
    pub fn expire_tokens(&self) {
        self.inner.lock().unwrap().valid_tokens.clear();
    }

    /// The next sends answer these errcodes, one each, in order.
    pub fn fail_next_sends(&self, errcodes: &[i64]) {
        self.fail_sends_after(0, errcodes);
    }

    /// Once `accepted` messages were accepted (in all), the next sends
    /// answer these errcodes, one each, in order.
    pub fn fail_sends_after(&self, accepted: usize, errcodes: &[i64]) {
        self.inner
            .lock()
            .unwrap()
            .send_errors
            .extend(errcodes.iter().map(|&code| (accepted, code)));
    }

    /// The user sent a message: WeChat allows 5 customer-service messages
    /// within 48 hours from now, and refuses the 6th with 45047 (the
    /// allowance does not add up: it is reset, not increased).
    pub fn user_wrote(&self, openid: &str) {
        self.user_acted(openid, 5, Duration::from_secs(48 * 3600));
    }

    /// The user clicked a menu item, followed or scanned: 3 messages within
    /// a minute.
    pub fn user_clicked(&self, openid: &str) {
        self.user_acted(openid, 3, Duration::from_secs(60));
    }

    fn user_acted(&self, openid: &str, messages: u32, within: Duration) {
        self.inner
            .lock()
            .unwrap()
            .allowances
            .insert(openid.into(), (messages, Instant::now() + within));
    }

    /// The account has no customer-service API: every send and typing
    /// call gets 48001 (api unauthorized).
    pub fn refuse_customer_service(&self, refuse: bool) {
        self.inner.lock().unwrap().no_customer_service = refuse;
    }

    pub fn set_send_delay(&self, delay: Option<Duration>) {
        self.inner.lock().unwrap().send_delay = delay;
    }

    /// Waits until `n` messages were accepted, or panics after `timeout`.
    pub async fn wait_for_sent(&self, n: usize, timeout: Duration) -> Vec<SentMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let sent = self.sent();
            if sent.len() >= n {
                return sent;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "expected {n} customer-service messages, got {}: {sent:?}",
                    sent.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn issue_token(inner: &mut Inner) -> Value {
    inner.token_fetches += 1;
    if inner.valid_tokens.is_empty() {
        inner.token_counter += 1;
        inner
            .valid_tokens
            .push(format!("FAKE_TOKEN_{}", inner.token_counter));
    }
    json!({"access_token": inner.valid_tokens.last().unwrap(), "expires_in": inner.expires_in})
}

async fn stable_token(
    State(inner): State<Arc<Mutex<Inner>>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut inner = inner.lock().unwrap();
    if body["grant_type"] != "client_credential" {
        return Json(json!({"errcode": 40002, "errmsg": "invalid grant_type"}));
    }
    if body["appid"] != inner.app_id.as_str() || body["secret"] != inner.app_secret.as_str() {
        return Json(json!({"errcode": 40125, "errmsg": "invalid appsecret"}));
    }
    if body["force_refresh"] == true {
        inner.valid_tokens.clear();
    }
    Json(issue_token(&mut inner))
}

#[derive(Deserialize)]
struct ClassicQuery {
    grant_type: String,
    appid: String,
    secret: String,
}

async fn classic_token(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(q): Query<ClassicQuery>,
) -> Json<Value> {
    let mut inner = inner.lock().unwrap();
    if q.grant_type != "client_credential"
        || q.appid != inner.app_id
        || q.secret != inner.app_secret
    {
        return Json(json!({"errcode": 40125, "errmsg": "invalid appsecret"}));
    }
    // Each classic fetch issues a new token.
    inner.valid_tokens.clear();
    inner.classic_token_fetches += 1;
    Json(issue_token(&mut inner))
}

fn check_token(inner: &Inner, q: &TokenQuery) -> Option<Value> {
    match &q.access_token {
        None => Some(json!({"errcode": 41001, "errmsg": "access_token missing"})),
        Some(t) if inner.valid_tokens.contains(t) => None,
        Some(t) if t.starts_with("FAKE_TOKEN_") => {
            Some(json!({"errcode": 42001, "errmsg": "access_token expired"}))
        }
        Some(_) => Some(
            json!({"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}),
        ),
    }
}

async fn custom_send(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(q): Query<TokenQuery>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let delay = inner.lock().unwrap().send_delay;
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let mut inner = inner.lock().unwrap();
    let answer = answer_send(&mut inner, &q, &body);
    inner.attempts.push(SendAttempt {
        touser: body["touser"].as_str().unwrap_or_default().into(),
        content: body["text"]["content"].as_str().unwrap_or_default().into(),
        errcode: answer["errcode"].as_i64().unwrap_or_default(),
    });
    Json(answer)
}

/// What WeChat answers an account without the customer-service API.
fn unauthorized() -> Value {
    json!({"errcode": 48001, "errmsg": "api unauthorized"})
}

fn answer_send(inner: &mut Inner, q: &TokenQuery, body: &Value) -> Value {
    if let Some(err) = check_token(inner, q) {
        return err;
    }
    if inner.no_customer_service {
        return unauthorized();
    }
    let accepted = inner.sent.len();
    if inner
        .send_errors
        .front()
        .is_some_and(|(after, _)| accepted >= *after)
    {
        let (_, code) = inner.send_errors.pop_front().unwrap();
        return json!({"errcode": code, "errmsg": format!("fake error {code}")});
    }
    let (Some(touser), Some("text"), Some(content)) = (
        body["touser"].as_str(),
        body["msgtype"].as_str(),
        body["text"]["content"].as_str(),
    ) else {
        return json!({"errcode": 44002, "errmsg": "empty post data or bad shape"});
    };
    if content.len() >= 2048 {
        return json!({"errcode": 45002, "errmsg": "content size out of limit"});
    }
    if let Some((left, until)) = inner.allowances.get_mut(touser) {
        if *left == 0 || Instant::now() >= *until {
            return json!({"errcode": 45047, "errmsg": "out of response count limit"});
        }
        *left -= 1;
    }
    inner.sent.push(SentMessage {
        touser: touser.into(),
        content: content.into(),
    });
    inner.sent_at.push(Instant::now());
    json!({"errcode": 0, "errmsg": "ok"})
}

async fn custom_typing(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(q): Query<TokenQuery>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut inner = inner.lock().unwrap();
    if let Some(err) = check_token(&inner, &q) {
        return Json(err);
    }
    if inner.no_customer_service {
        return Json(unauthorized());
    }
    let (Some(touser), Some(command)) = (body["touser"].as_str(), body["command"].as_str()) else {
        return Json(json!({"errcode": 44002, "errmsg": "bad shape"}));
    };
    inner.typing.push((touser.into(), command.into()));
    Json(json!({"errcode": 0, "errmsg": "ok"}))
}

/// A file `media/get` serves.
#[derive(Clone)]
struct Media {
    content_type: String,
    bytes: Arc<[u8]>,
    /// Sent in chunks without a Content-Length.
    chunked: bool,
}

impl FakeWeChat {
    /// Serves `bytes` as the temporary media `media_id` with this
    /// Content-Type (and a Content-Length), as WeChat serves a photo.
    pub fn put_media(&self, media_id: &str, content_type: &str, bytes: &[u8]) {
        self.put(media_id, content_type, bytes, false);
    }

    /// [`Self::put_media`], sent in chunks without a Content-Length (the
    /// size is known only by reading).
    pub fn put_media_chunked(&self, media_id: &str, content_type: &str, bytes: &[u8]) {
        self.put(media_id, content_type, bytes, true);
    }

    fn put(&self, media_id: &str, content_type: &str, bytes: &[u8], chunked: bool) {
        let media = Media {
            content_type: content_type.into(),
            bytes: bytes.into(),
            chunked,
        };
        self.inner
            .lock()
            .unwrap()
            .media
            .insert(media_id.into(), media);
    }

    /// `media/get` calls for `media_id`, whatever they were answered.
    pub fn media_downloads(&self, media_id: &str) -> u64 {
        let inner = self.inner.lock().unwrap();
        inner.media_downloads.get(media_id).copied().unwrap_or(0)
    }
}

#[derive(Deserialize)]
struct MediaQuery {
    access_token: Option<String>,
    media_id: Option<String>,
}

/// `GET /cgi-bin/media/get`: the file itself, or WeChat's JSON error.
async fn media_get(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(q): Query<MediaQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;

    let media_id = q.media_id.unwrap_or_default();
    let media = {
        let mut inner = inner.lock().unwrap();
        *inner.media_downloads.entry(media_id.clone()).or_default() += 1;
        let token = TokenQuery {
            access_token: q.access_token,
        };
        if let Some(err) = check_token(&inner, &token) {
            return Json(err).into_response();
        }
        match inner.media.get(&media_id) {
            Some(media) => media.clone(),
            None => {
                return Json(json!({"errcode": 40007, "errmsg": "invalid media_id"}))
                    .into_response();
            }
        }
    };
    let extension = media.content_type.rsplit('/').next().unwrap_or("bin");
    let disposition = format!("attachment; filename=\"{media_id}.{extension}\"");
    let headers = [
        (axum::http::header::CONTENT_TYPE, media.content_type.clone()),
        (axum::http::header::CONTENT_DISPOSITION, disposition),
    ];
    if !media.chunked {
        return (headers, media.bytes.to_vec()).into_response();
    }
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = media
        .bytes
        .chunks(64 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let body = axum::body::Body::from_stream(futures::stream::iter(chunks));
    (headers, body).into_response()
}
