//! One AI budget per message (ARCHITECTURE.md, "One AI budget per
//! message"): the time from a message's arrival (the job's `created_at`) to
//! its answer is bounded by `FERRY_AI_TOTAL_BUDGET`, and the router's
//! in-call retries and the queue's job retries both spend from it.
//!
//! Only the first attempt retries within the call; a later attempt is
//! itself the retry, so it asks each provider once. The calls a message can
//! cost add up, chain × (attempts per provider + job retries), instead of
//! multiplying, chain × attempts per provider × job attempts.
//!
//! Job times are Redis server time and the budget is measured with the
//! worker's clock, so hosts are assumed to keep NTP time (a skew moves the
//! budget by as much).

use std::time::Duration;

use chrono::{DateTime, Utc};

use ferry_common::job::Delivery;

use crate::providers::{Allowance, RouterError};

/// What is left of `total` for a job created at `created_at`, at `now`.
pub fn budget_left(total: Duration, created_at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    let elapsed = (now - created_at).to_std().unwrap_or_default();
    total.saturating_sub(elapsed)
}

/// What this attempt may spend: what is left, and retries within the call
/// on the first attempt only.
pub(super) fn allowance(policy_attempts: u32, job: &Delivery, left: Duration) -> Allowance {
    Allowance {
        time: left,
        attempts_per_provider: if job.attempt <= 1 { policy_attempts } else { 1 },
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum AfterFailure {
    Retry { after: Option<Duration> },
    GiveUp,
}

/// After the chain failed with `error`, with `left` of the budget: a job
/// retry only while attempts and budget are left and the provider's hint
/// (if any) is shorter than what is left. Waiting out a longer hint would
/// only delay the same apology.
pub(super) fn after_failure(error: &RouterError, job: &Delivery, left: Duration) -> AfterFailure {
    let hint = error.retry_after();
    let worth_a_retry = error.class().is_retryable()
        && job.attempt < job.max_attempts
        && !left.is_zero()
        && hint.is_none_or(|h| h < left);
    if worth_a_retry {
        AfterFailure::Retry { after: hint }
    } else {
        AfterFailure::GiveUp
    }
}

#[cfg(test)]
mod tests {
    use ferry_common::job::JobId;

    use super::*;
    use crate::providers::{FailureClass, ProviderError};

    const MINUTE: Duration = Duration::from_secs(60);

    fn job(attempt: u32, max_attempts: u32) -> Delivery {
        Delivery {
            id: JobId::new("wechat"),
            entry_id: "1-0".into(),
            kind: "wechat.reply".into(),
            payload: serde_json::Value::Null,
            attempt,
            max_attempts,
            created_at: Utc::now(),
        }
    }

    fn failed(class: FailureClass, hint: Option<Duration>) -> RouterError {
        let mut last = ProviderError::new("p", class, "m");
        last.retry_after = hint;
        RouterError {
            tried: vec!["p".into()],
            last: Some(last),
        }
    }

    #[test]
    fn the_budget_left_is_the_total_less_the_time_since_the_message_arrived() {
        let created = Utc::now();
        let later = |secs| created + chrono::Duration::seconds(secs);
        assert_eq!(
            budget_left(MINUTE, created, later(20)),
            Duration::from_secs(40)
        );
        assert_eq!(budget_left(MINUTE, created, later(60)), Duration::ZERO);
        assert_eq!(budget_left(MINUTE, created, later(600)), Duration::ZERO);
        // A worker clock behind Redis's: nothing spent yet.
        assert_eq!(budget_left(MINUTE, created, later(-5)), MINUTE);
    }

    #[test]
    fn only_the_first_attempt_retries_within_the_call() {
        let first = allowance(3, &job(1, 4), MINUTE);
        let second = allowance(3, &job(2, 4), Duration::from_secs(30));
        assert_eq!((first.attempts_per_provider, first.time), (3, MINUTE));
        assert_eq!(
            (second.attempts_per_provider, second.time),
            (1, Duration::from_secs(30))
        );
    }

    #[test]
    fn a_transient_failure_with_budget_and_attempts_left_is_retried_after_the_hint() {
        let hint = Some(Duration::from_secs(5));
        assert_eq!(
            after_failure(&failed(FailureClass::Transient, None), &job(1, 4), MINUTE),
            AfterFailure::Retry { after: None }
        );
        assert_eq!(
            after_failure(&failed(FailureClass::RateLimited, hint), &job(3, 4), MINUTE),
            AfterFailure::Retry { after: hint }
        );
    }

    #[test]
    fn the_job_gives_up_when_budget_attempts_or_hope_are_gone() {
        let long_hint = Some(Duration::from_secs(61));
        let cases = [
            (failed(FailureClass::Transient, None), job(4, 4), MINUTE),
            (
                failed(FailureClass::Transient, None),
                job(1, 4),
                Duration::ZERO,
            ),
            (
                failed(FailureClass::RateLimited, long_hint),
                job(1, 4),
                MINUTE,
            ),
            (failed(FailureClass::Quota, None), job(1, 4), MINUTE),
            (failed(FailureClass::Auth, None), job(1, 4), MINUTE),
            (failed(FailureClass::BadRequest, None), job(1, 4), MINUTE),
            (
                failed(FailureClass::ContentFiltered, None),
                job(1, 4),
                MINUTE,
            ),
        ];
        for (error, job, left) in cases {
            assert_eq!(
                after_failure(&error, &job, left),
                AfterFailure::GiveUp,
                "{error} at attempt {} with {left:?} left",
                job.attempt
            );
        }
    }
}
