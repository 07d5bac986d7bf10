//! The chain's failure: every provider tried, and the error that ended it.

use std::time::Duration;

use crate::providers::{FailureClass, ProviderError};

/// No provider of the chain answered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", describe(.tried, .last))]
pub struct RouterError {
    /// The providers called, in order.
    pub tried: Vec<String>,
    /// The error that ended the call; `None` when no provider could be
    /// called (an empty chain, or no time left).
    pub last: Option<ProviderError>,
}

impl RouterError {
    /// The class of the last error; transient when nothing was called.
    pub fn class(&self) -> FailureClass {
        self.last
            .as_ref()
            .map_or(FailureClass::Transient, |e| e.class)
    }

    /// The last provider's hint of when to try again.
    pub fn retry_after(&self) -> Option<Duration> {
        self.last.as_ref().and_then(|e| e.retry_after)
    }
}

fn describe(tried: &[String], last: &Option<ProviderError>) -> String {
    match last {
        Some(last) if tried.is_empty() => format!("no provider was called: {last}"),
        Some(last) => format!(
            "no provider answered (tried {}); last error: {last}",
            tried.join(", ")
        ),
        None => "no provider was called: the chain is empty or the time budget is spent".into(),
    }
}
