//! How hard the router may try: the configured policy, and one call's share
//! of a larger budget.

use std::time::Duration;

/// How hard to try each provider, and for how long in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallPolicy {
    /// Attempts on one provider, the first included (at least one is made).
    pub max_attempts_per_provider: u32,
    /// Backoff ceiling before the first retry; it doubles per retry.
    pub base_delay: Duration,
    /// Largest backoff ceiling (a provider's hint may ask for longer).
    pub max_delay: Duration,
    /// The whole call, every provider and wait included.
    pub total_budget: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            max_attempts_per_provider: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            total_budget: Duration::from_secs(90),
        }
    }
}

/// What one call may spend: the caller's share of a larger budget (the
/// job's), within the policy's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// The whole call, every provider and wait included (at most the
    /// policy's total budget).
    pub time: Duration,
    /// Attempts on each provider, the first included (at least one, at most
    /// the policy's).
    pub attempts_per_provider: u32,
}
