//! What a job handler is, and how it says a job failed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use ferry_common::job::Delivery;

pub use crate::job_notes::{JobNotes, NotHeld};

/// Why an attempt failed, from the handler's point of view.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HandlerError {
    /// Worth another attempt; `after` (an upstream's Retry-After) wins over
    /// the backoff schedule.
    #[error("{error}")]
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// No attempt can succeed (bad input, a permanent upstream refusal).
    #[error("{0}")]
    Permanent(String),
    /// The job is no longer this worker's (a note told so): the attempt
    /// ends without an outcome, its new holder records one.
    #[error("{0}")]
    NotHeld(#[from] NotHeld),
}

impl HandlerError {
    pub fn retry(error: impl Into<String>) -> Self {
        Self::Retry {
            error: error.into(),
            after: None,
        }
    }
}

/// Runs jobs of one kind. The result is stored on the job record; `notes`
/// keeps what an attempt did across attempts (see [`crate::job_notes`]).
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        job: &'a Delivery,
        notes: JobNotes<'a>,
    ) -> BoxFuture<'a, Result<serde_json::Value, HandlerError>>;
}

/// Handlers by job kind.
#[derive(Clone, Default)]
pub struct Handlers {
    /// Kinds are the constants of `ferry_common::job::kinds` (or a test's):
    /// `'static`, so the metrics label a job by its kind without copying it.
    by_kind: HashMap<&'static str, Arc<dyn Handler>>,
}

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(mut self, kind: &'static str, handler: impl Handler) -> Self {
        self.by_kind.insert(kind, Arc::new(handler));
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.by_kind.get(kind)
    }

    /// The handler of `kind` with the kind's registered (`'static`) name.
    pub fn lookup(&self, kind: &str) -> Option<(&'static str, &Arc<dyn Handler>)> {
        self.by_kind.get_key_value(kind).map(|(k, h)| (*k, h))
    }
}
