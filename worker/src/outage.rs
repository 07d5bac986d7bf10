//! How a background loop lives through Redis going away: after a failed
//! pass it waits a backoff (capped, no crash loop) instead of its usual
//! interval, and logs the outage once when it starts and once when it ends
//! instead of once per failed call. [`repeat`] is that loop, shared by the
//! heartbeat, the lease keeper, the promoter and the recoverer.

use std::fmt::Display;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The longest backoff after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3);

/// How a loop waits between passes.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// After a pass that worked.
    pub every: Duration,
    /// After a pass that failed.
    pub after_failure: AfterFailure,
}

#[derive(Debug, Clone, Copy)]
pub enum AfterFailure {
    /// Doubling from 100 ms up to `cap`.
    Backoff { cap: Duration },
    /// Always the same wait: for a loop whose work cannot wait (the lease
    /// keeper: the visibility timeout keeps running through an outage).
    Fixed(Duration),
}

/// One pass of a background loop.
pub trait Pass: Send {
    type Error: Display;
    fn pass(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Runs `pass`, then waits as `pace` says, until `shutdown`.
pub async fn repeat(
    task: &'static str,
    pace: Pace,
    shutdown: &CancellationToken,
    mut pass: impl Pass,
) {
    let mut outage = Outage::new(task);
    loop {
        let wait = match pass.pass().await {
            Ok(()) => {
                outage.ok();
                pace.every
            }
            Err(e) => {
                let backoff = outage.failed(&e);
                match pace.after_failure {
                    AfterFailure::Backoff { cap } => backoff.min(cap),
                    AfterFailure::Fixed(wait) => wait,
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

pub struct Outage {
    task: &'static str,
    failures: u32,
}

impl Outage {
    pub fn new(task: &'static str) -> Self {
        Self { task, failures: 0 }
    }

    /// Records a failure; returns how long to wait before trying again.
    pub fn failed(&mut self, error: &dyn Display) -> Duration {
        self.failures += 1;
        if self.failures == 1 {
            tracing::warn!(task = self.task, error = %error, "Redis call failed; retrying with backoff");
        } else if self.failures.is_multiple_of(20) {
            tracing::warn!(task = self.task, failures = self.failures, error = %error, "Redis still failing");
        }
        let exp = self.failures.min(6);
        Duration::from_millis(50 * (1 << exp)).min(MAX_BACKOFF)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let mut outage = Outage::new("test");
        let waits: Vec<u64> = (0..8)
            .map(|_| outage.failed(&"down").as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3000, 3000, 3000]);
        outage.ok();
        assert_eq!(outage.failed(&"down again"), Duration::from_millis(100));
    }

    /// Fails four times, then works; stops after six passes.
    struct Flaky<'a> {
        started: tokio::time::Instant,
        at: &'a mut Vec<u64>,
        shutdown: &'a CancellationToken,
    }

    impl Pass for Flaky<'_> {
        type Error = &'static str;
        async fn pass(&mut self) -> Result<(), &'static str> {
            self.at.push(self.started.elapsed().as_millis() as u64);
            if self.at.len() == 6 {
                self.shutdown.cancel();
            }
            if self.at.len() <= 4 {
                Err("down")
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_loop_backs_off_and_a_working_one_keeps_its_pace() {
        let shutdown = CancellationToken::new();
        let mut at = Vec::new();
        let pace = Pace {
            every: Duration::from_secs(1),
            after_failure: AfterFailure::Backoff {
                cap: Duration::from_millis(500),
            },
        };
        let flaky = Flaky {
            started: tokio::time::Instant::now(),
            at: &mut at,
            shutdown: &shutdown,
        };
        repeat("test", pace, &shutdown, flaky).await;
        // Fails: waits 100, 200, 400, then the cap 500; works: its second.
        assert_eq!(at, [0, 100, 300, 700, 1200, 2200]);
    }
}
