//! A job that does nothing and succeeds: for measuring the queue engine's
//! own cost (bench/) and for tests of the runtime.

use futures::future::BoxFuture;

use ferry_common::job::Delivery;

use crate::handler::{Handler, HandlerError, JobNotes};

/// The kind name of no-op jobs.
pub const NOOP: &str = "noop";

pub struct Noop;

impl Handler for Noop {
    fn handle<'a>(
        &'a self,
        _job: &'a Delivery,
        _notes: JobNotes<'a>,
    ) -> BoxFuture<'a, Result<serde_json::Value, HandlerError>> {
        Box::pin(async { Ok(serde_json::Value::Null) })
    }
}
