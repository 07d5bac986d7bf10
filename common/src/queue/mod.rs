//! The Redis Streams queue engine: every Redis operation on jobs lives in
//! this module (as asynq keeps them in `rdb`), each state change one call of
//! a function from `migrations/`.
//!
//! - [`enqueue`]: producers add jobs (with idempotency keys).
//! - [`delivery`]: workers fetch, start, and record outcomes.
//! - [`recovery`]: leases, take-over of abandoned entries, due retries.
//! - [`inspect`]: counts and the dead-letter stream, for operators.

pub mod browse;
pub mod delivery;
pub mod enqueue;
pub mod inspect;
pub mod lookup;
pub mod notes;
pub mod partitions;
pub mod recovery;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::job::JobId;
use crate::keys::{Keys, QueueKeys};
use crate::store::{RedisError, Store};

pub use crate::functions::is_function_missing;
pub use delivery::{Fetched, Outcome};

/// Interactive WeChat replies: served first.
pub const WECHAT: &str = "wechat";
/// Batch submissions: served with the capacity WeChat leaves, never starved.
pub const BATCH: &str = "batch";
/// Every queue, in priority order.
pub const QUEUES: &[&str] = &[WECHAT, BATCH];

/// `queue` as a metrics label: a known queue's `'static` name, else
/// `other` (so no caller can grow a label set, and nothing is allocated).
pub fn label(queue: &str) -> &'static str {
    QUEUES
        .iter()
        .copied()
        .find(|q| *q == queue)
        .unwrap_or("other")
}

/// Queue names appear in keys and job ids: keep them plain.
pub fn is_valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{0}")]
    Redis(#[from] RedisError),
    #[error("unknown queue {0:?}")]
    UnknownQueue(String),
    #[error("corrupt job record {id}: {reason}")]
    Corrupt { id: String, reason: String },
    #[error("payload is not JSON: {0}")]
    Payload(#[from] serde_json::Error),
}

crate::wraps_redis_error!(QueueError);

/// The queue engine of one deployment, on its [`Store`].
#[derive(Clone)]
pub struct JobQueue {
    store: Store,
    /// How long finished job records are kept.
    retention: Duration,
    /// The fleet's most partitions ever, per queue (see [`partitions`]).
    seen: Arc<RwLock<HashMap<String, u16>>>,
}

impl JobQueue {
    pub fn new(store: Store, retention: Duration) -> Self {
        Self {
            store,
            retention,
            seen: Arc::default(),
        }
    }

    /// The keys of the partition holding `job`.
    pub fn keys_of(&self, job: &JobId) -> QueueKeys {
        self.keys().partition(&job.partition())
    }

    /// The Redis handle the queue runs on, to build the fleet's other
    /// Redis-backed parts from.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn keys(&self) -> &Keys {
        self.store.keys()
    }

    /// A pooled connection to the queue's Redis.
    pub(crate) async fn conn(&self) -> Result<crate::connection::Conn, QueueError> {
        Ok(self.store.conn().await?)
    }

    fn retention_secs(&self) -> u64 {
        self.retention.as_secs().max(1)
    }
}
