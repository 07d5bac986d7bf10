//! What a failed attempt becomes: a retry after a backoff, or a dead letter.
//!
//! Exponential backoff with full jitter (AWS's "Exponential Backoff and
//! Jitter"), capped; an upstream's "retry after" hint wins; permanent errors
//! and the last attempt go to the dead-letter stream with the reason.

use std::time::Duration;

use rand::Rng;

use ferry_common::job::Delivery;
use ferry_common::queue::Outcome;

use crate::handler::HandlerError;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The backoff ceiling for the first retry.
    pub base: Duration,
    /// No retry waits longer than this (except an upstream's own hint).
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The outcome of a failed attempt; `None` when there is none to
    /// record because the job is another worker's now.
    pub fn decide(&self, job: &Delivery, error: HandlerError) -> Option<Outcome> {
        Some(match error {
            HandlerError::NotHeld(_) => return None,
            HandlerError::Permanent(reason) => Outcome::Dead { reason },
            HandlerError::Retry { error, .. } if job.attempt >= job.max_attempts => Outcome::Dead {
                reason: format!("gave up after {} attempts: {error}", job.attempt),
            },
            HandlerError::Retry { error, after } => Outcome::Retry {
                delay: after.unwrap_or_else(|| self.backoff(job.attempt)),
                error,
            },
        })
    }

    /// Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))].
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.ceiling(attempt)
            .mul_f64(rand::thread_rng().r#gen::<f64>())
    }

    /// The upper bound of the wait before retry number `attempt`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exp).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_common::job::JobId;

    fn job(attempt: u32, max_attempts: u32) -> Delivery {
        Delivery {
            id: JobId::new("batch"),
            entry_id: "1-0".into(),
            kind: "noop".into(),
            payload: serde_json::Value::Null,
            attempt,
            max_attempts,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn backoff_grows_exponentially_within_the_cap() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(200));
        assert_eq!(p.ceiling(4), Duration::from_millis(800));
        assert_eq!(p.ceiling(5), Duration::from_secs(1));
        assert_eq!(p.ceiling(500), Duration::from_secs(1));
        for attempt in 1..10 {
            assert!(p.backoff(attempt) <= p.ceiling(attempt));
        }
    }

    #[test]
    fn a_hint_wins_and_the_last_attempt_is_dead() {
        let p = RetryPolicy::default();
        let hinted = HandlerError::Retry {
            error: "429".into(),
            after: Some(Duration::from_secs(47)),
        };
        assert_eq!(
            p.decide(&job(1, 3), hinted.clone()).unwrap(),
            Outcome::Retry {
                error: "429".into(),
                delay: Duration::from_secs(47)
            }
        );
        assert!(
            matches!(p.decide(&job(3, 3), hinted), Some(Outcome::Dead { reason }) if reason.contains("after 3 attempts"))
        );
        assert!(matches!(
            p.decide(&job(1, 3), HandlerError::Permanent("bad".into())),
            Some(Outcome::Dead { reason }) if reason == "bad"
        ));
        assert_eq!(
            p.decide(&job(1, 3), HandlerError::NotHeld(crate::handler::NotHeld)),
            None,
            "a job another worker holds now has no outcome to record here"
        );
    }
}
