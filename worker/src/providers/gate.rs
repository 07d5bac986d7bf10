//! What the router tells a provider's fleet gate around each attempt: one
//! `admit` before the call (with a token estimate), one `settle` after
//! (ARCHITECTURE.md, "The provider gate").

use std::time::{Duration, Instant};

use tracing::debug;

use ferry_common::fleet::{Admission, CallResult, Denial, Pass, ProviderGate};
use ferry_common::metrics as names;

use super::router::Failure;
use super::{Answer, ChatRequest, FailureClass, ProviderError, millis};

/// Waits for the fleet's permission to call, as long as the deadline allows.
/// An open breaker fails over at once; a limit whose wait would outlast the
/// deadline is reported as rate limited with that wait, so the router fails
/// over instead of sleeping past the budget.
pub(super) async fn admit(
    gate: &ProviderGate,
    provider: &str,
    estimate: u32,
    deadline: Instant,
) -> Result<Pass, ProviderError> {
    loop {
        let admission = gate.admit(estimate).await;
        if let Admission::Denied { why, .. } = &admission {
            let limiter = match why {
                Denial::Open => "breaker_open",
                Denial::Rate => "provider_rate",
                Denial::Tokens => "provider_tokens",
                Denial::Concurrency => "provider_concurrency",
            };
            metrics::counter!(names::LIMITER_REJECTIONS, "limiter" => limiter).increment(1);
        }
        match admission {
            Admission::Granted(pass) => return Ok(pass),
            Admission::Denied {
                why: Denial::Open,
                retry_after,
            } => {
                let mut err =
                    ProviderError::new(provider, FailureClass::Unavailable, "circuit breaker open");
                err.retry_after = Some(retry_after);
                return Err(err);
            }
            Admission::Denied { why, retry_after } => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if retry_after >= remaining {
                    let mut err = ProviderError::new(
                        provider,
                        FailureClass::RateLimited,
                        format!("fleet limit ({why:?}) reached"),
                    );
                    err.retry_after = Some(retry_after);
                    return Err(err);
                }
                debug!(
                    provider,
                    ?why,
                    wait_ms = millis(retry_after),
                    "waiting for the fleet limit"
                );
                tokio::time::sleep(retry_after).await;
            }
        }
    }
}

/// Reports how the admitted call ended, `elapsed` after it started.
pub(super) async fn settle(
    gate: &ProviderGate,
    pass: Pass,
    result: &Result<Answer, Failure>,
    elapsed: Duration,
) {
    let (outcome, tokens, hint, reason) = match result {
        Ok(answer) => (
            CallResult::Success,
            Some(answer.usage.total_tokens),
            None,
            String::new(),
        ),
        Err(failure) => {
            let err = failure.error();
            (health(failure), None, err.retry_after, err.to_string())
        }
    };
    gate.settle(pass, outcome, elapsed, tokens, hint, &reason)
        .await;
}

/// What a call's failure tells the fleet about the provider's health.
fn health(failure: &Failure) -> CallResult {
    let err = match failure {
        Failure::BudgetCut(_) => return CallResult::Neutral,
        Failure::Provider(err) => err,
    };
    match err.class {
        FailureClass::Transient => CallResult::Failure,
        FailureClass::RateLimited => CallResult::RateLimited,
        FailureClass::Quota => CallResult::Quota,
        FailureClass::Auth => CallResult::Auth,
        FailureClass::BadRequest | FailureClass::ContentFiltered | FailureClass::Unavailable => {
            CallResult::Neutral
        }
    }
}

/// A rough token count for the reservation (corrected after the call):
/// about two characters a token across Chinese and English, plus the answer,
/// plus about a thousand for a picture (vision models bill it in tiles).
pub(super) fn estimate_tokens(req: &ChatRequest, max_tokens: Option<u32>) -> u32 {
    let chars: usize = req.messages.iter().map(|m| m.content.chars().count()).sum();
    let picture = if req.image.is_some() { 1024 } else { 0 };
    (chars / 2) as u32 + max_tokens.unwrap_or(512) + picture
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(class: FailureClass) -> Failure {
        Failure::Provider(ProviderError::new("p", class, "m"))
    }

    #[test]
    fn a_budget_cut_is_not_held_against_the_provider() {
        let cut = Failure::BudgetCut(ProviderError::new("p", FailureClass::Transient, "m"));
        assert_eq!(health(&cut), CallResult::Neutral);
        assert_eq!(
            health(&provider(FailureClass::Transient)),
            CallResult::Failure
        );
    }

    #[test]
    fn each_class_tells_the_fleet_what_it_says_of_the_providers_health() {
        let cases = [
            (FailureClass::RateLimited, CallResult::RateLimited),
            (FailureClass::Quota, CallResult::Quota),
            (FailureClass::Auth, CallResult::Auth),
            (FailureClass::BadRequest, CallResult::Neutral),
            (FailureClass::ContentFiltered, CallResult::Neutral),
            (FailureClass::Unavailable, CallResult::Neutral),
        ];
        for (class, expected) in cases {
            assert_eq!(health(&provider(class)), expected, "{class}");
        }
    }
}
