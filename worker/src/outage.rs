//! How a background loop lives through Redis going away: back off (capped,
//! no crash loop), log the outage once when it starts and once when it ends
//! instead of once per failed call.

use std::time::Duration;

pub struct Outage {
    task: &'static str,
    failures: u32,
}

impl Outage {
    pub fn new(task: &'static str) -> Self {
        Self { task, failures: 0 }
    }

    /// Records a failure; returns how long to wait before trying again.
    pub fn failed(&mut self, error: &dyn std::fmt::Display) -> Duration {
        self.failures += 1;
        if self.failures == 1 {
            tracing::warn!(task = self.task, error = %error, "Redis call failed; retrying with backoff");
        } else if self.failures.is_multiple_of(20) {
            tracing::warn!(task = self.task, failures = self.failures, error = %error, "Redis still failing");
        }
        let exp = self.failures.min(6);
        Duration::from_millis(50 * (1 << exp)).min(Duration::from_secs(3))
    }

    /// Records a success, logging the recovery if there was an outage.
    pub fn ok(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                task = self.task,
                failures = self.failures,
                "Redis is reachable again"
            );
            self.failures = 0;
        }
    }
}
