//! The one state every handler shares.

use std::sync::Arc;
use std::time::Duration;

use ferry_common::queue::JobQueue;

use crate::admin::AdminSettings;
use crate::auth::Authenticator;
use crate::batcher::EnqueueBatcher;
use crate::client_ip::ClientIpResolver;
use crate::limiter::IpLimiter;
use crate::ops::Ops;
use crate::security::SecurityCounters;
use crate::spool::Spool;
use crate::wechat::credentials::CredentialStore;
use ferry_common::alerts::AlertEvaluator;

/// What the WeChat callback needs to check, decode and answer pushes.
pub struct WeChatIngress {
    /// `WECHAT_TOKEN` and the EncodingAESKey (compatible and safe modes),
    /// swapped on SIGHUP with an overlap for the console to catch up.
    pub credentials: CredentialStore,
    /// How long a message id is remembered to drop WeChat's retries.
    pub dedup_ttl: Duration,
    /// Time Redis gets to take a push before it is spooled.
    pub ack_budget: Duration,
    /// Largest accepted distance between a push's `timestamp` and now.
    pub max_skew: Duration,
    /// Photos are answered (a configured provider has a vision model):
    /// an image push becomes a job instead of the unsupported reply.
    pub vision: bool,
    /// The passive replies that need no AI.
    pub texts: ReplyTexts,
}

/// Fixed answers sent in the HTTP response itself.
#[derive(Debug, Clone)]
pub struct ReplyTexts {
    /// To a new follower (`subscribe`).
    pub welcome: String,
    /// To images and other types the AI cannot read.
    pub unsupported: String,
    /// To a voice message without speech recognition.
    pub voice_unrecognized: String,
}

/// The handle every handler gets: one `Arc`, so the per-request clones axum
/// makes of its state cost a reference count, not an allocation.
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    pub fn new(shared: SharedState) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

pub struct SharedState {
    pub queue: JobQueue,
    /// Pushes' enqueues, batched into shared Redis round trips.
    pub batcher: Arc<EnqueueBatcher>,
    pub wechat: Arc<WeChatIngress>,
    pub max_body_bytes: usize,
    /// Serve `/dev/replies` (only `ferry dev`, with the console reply sink).
    pub dev_outbox: bool,
    /// `ferry dev`'s one-time dashboard sign-in link; `None` (and no such
    /// route) everywhere else.
    pub dev_sign_in: Option<Arc<crate::dev::DevSignIn>>,
    /// Where pushes go when Redis does not take them in time.
    pub spool: Arc<Spool>,
    /// Who a request comes from (peer, or the client a trusted proxy names).
    pub clients: Arc<ClientIpResolver>,
    /// The per-IP flood guard; `None` when turned off.
    pub limiter: Option<Arc<IpLimiter>>,
    /// Refused requests that look like attacks, by kind.
    pub security: SecurityCounters,
    /// `/metrics`, `/healthz`, `/readyz` (shared with a worker's admin port).
    pub ops: Arc<Ops>,
    /// The checklist's alerts, fed by `/wechat` responses.
    pub alerts: Arc<AlertEvaluator>,
    /// The dashboard's sign-in and what it shows.
    pub admin: AdminSettings,
    /// Bearer tokens of the jobs, batch and admin APIs.
    pub auth: Arc<Authenticator>,
    /// The jobs and batches API (`/v1`).
    pub jobs: Arc<crate::v1::JobsApi>,
    /// Holding pushes for their answer in passive mode.
    pub passive: Arc<crate::wechat::hold::PassiveIngress>,
}

impl SharedState {
    /// The security event counts of this process.
    pub fn security(&self) -> &SecurityCounters {
        &self.security
    }
}
