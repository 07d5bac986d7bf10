//! One provider, retried: capped exponential backoff with full jitter, at
//! least the provider's hint, and never a wait that outlasts the budget.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use tracing::warn;

use super::{Link, Router};
use crate::providers::{Answer, ChatRequest, ProviderError, millis};

impl Router {
    /// One provider, retried while its failures are retryable, the
    /// `max_attempts` last, and each wait fits in the budget.
    pub(super) async fn call_with_retries(
        &self,
        link: &Link,
        req: &ChatRequest,
        deadline: Instant,
        max_attempts: u32,
    ) -> Result<Answer, ProviderError> {
        let counter = AtomicU32::new(0);
        let attempts = &counter;
        let retries = max_attempts.saturating_sub(1);
        let backoff = ExponentialBuilder::new()
            .with_min_delay(self.policy.base_delay)
            .with_max_delay(self.policy.max_delay)
            .with_max_times(retries as usize);
        let call = || async move {
            let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            self.attempt(link, req, deadline, attempt).await
        };
        call.retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|err: &ProviderError| err.class.is_retryable())
            .adjust(|err, ceiling| {
                let attempt = attempts.load(Ordering::Relaxed);
                let name = link.provider.name();
                let Some(ceiling) = ceiling else {
                    warn!(provider = name, class = %err.class, attempt, "attempts exhausted");
                    return None;
                };
                let remaining = deadline.saturating_duration_since(Instant::now());
                let wait = plan_wait(ceiling, rand::random(), err.retry_after, remaining);
                match wait {
                    Some(wait) => warn!(
                        provider = name,
                        class = %err.class,
                        attempt,
                        wait_ms = millis(wait),
                        "retrying"
                    ),
                    None => warn!(
                        provider = name,
                        class = %err.class,
                        attempt,
                        hint_ms = err.retry_after.map(millis),
                        remaining_ms = millis(remaining),
                        "the wait would outlast the time budget"
                    ),
                }
                wait
            })
            .await
    }
}

/// The wait before the next attempt: full jitter under the backoff
/// `ceiling` (`jitter` in `[0, 1)`), and at least the provider's `hint`.
/// `None` when that wait would not leave time for another attempt.
fn plan_wait(
    ceiling: Duration,
    jitter: f64,
    hint: Option<Duration>,
    remaining: Duration,
) -> Option<Duration> {
    let wait = ceiling
        .mul_f64(jitter.clamp(0.0, 1.0))
        .max(hint.unwrap_or_default());
    (wait < remaining).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_jittered_under_the_ceiling_but_at_least_the_hint() {
        let ms = Duration::from_millis;
        let plenty = Duration::from_secs(60);
        assert_eq!(plan_wait(ms(1000), 0.0, None, plenty), Some(ms(0)));
        assert_eq!(plan_wait(ms(1000), 0.5, None, plenty), Some(ms(500)));
        assert_eq!(
            plan_wait(ms(1000), 0.5, Some(ms(800)), plenty),
            Some(ms(800))
        );
        assert_eq!(
            plan_wait(ms(100), 0.9, Some(ms(5000)), plenty),
            Some(ms(5000))
        );
    }

    #[test]
    fn a_wait_that_would_outlast_the_budget_is_not_taken() {
        let ms = Duration::from_millis;
        assert_eq!(plan_wait(ms(100), 0.5, Some(ms(2000)), ms(1000)), None);
        assert_eq!(plan_wait(ms(100), 0.5, None, ms(50)), None);
        assert_eq!(plan_wait(ms(100), 0.0, None, Duration::ZERO), None);
    }
}
