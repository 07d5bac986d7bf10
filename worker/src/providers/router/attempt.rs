//! One attempt on one provider: through its fleet gate (if it has one),
//! cut at the deadline, and counted for `/metrics`.

use std::time::{Duration, Instant};

use tracing::debug;

use super::{Link, Router};
use crate::providers::gate;
use crate::providers::{Answer, ChatRequest, FailureClass, Provider, ProviderError, millis};
use ferry_common::metrics as names;

/// Why an attempt got no answer.
#[derive(Debug)]
pub(in crate::providers) enum Failure {
    /// The provider failed, or the way to it did.
    Provider(ProviderError),
    /// Ferry cut the attempt at the time budget: not the provider's fault,
    /// so its breaker does not count it.
    BudgetCut(ProviderError),
}

impl Failure {
    fn budget_cut(provider: &str) -> Self {
        Self::BudgetCut(ProviderError::new(
            provider,
            FailureClass::Transient,
            "no answer within the time budget",
        ))
    }

    /// The error the chain sees (a budget cut is transient).
    pub(in crate::providers) fn error(&self) -> &ProviderError {
        match self {
            Self::Provider(err) | Self::BudgetCut(err) => err,
        }
    }
}

impl From<Failure> for ProviderError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Provider(err) | Failure::BudgetCut(err) => err,
        }
    }
}

impl Router {
    /// One call to one provider, cut at the deadline. Every call passes
    /// here: the one place the fleet's gate admits and settles it.
    pub(super) async fn attempt(
        &self,
        link: &Link,
        req: &ChatRequest,
        deadline: Instant,
        attempt: u32,
    ) -> Result<Answer, ProviderError> {
        let provider = &link.provider;
        let Some(gate) = &link.gate else {
            return Ok(self.call(provider, req, deadline, attempt).await?);
        };
        let estimate = gate::estimate_tokens(req, provider.max_tokens());
        let pass = gate::admit(gate, provider.name(), estimate, deadline).await?;
        let started = Instant::now();
        let result = self.call(provider, req, deadline, attempt).await;
        gate::settle(gate, pass, &result, started.elapsed()).await;
        Ok(result?)
    }

    /// The provider call itself, cut at the deadline.
    async fn call(
        &self,
        provider: &Provider,
        req: &ChatRequest,
        deadline: Instant,
        attempt: u32,
    ) -> Result<Answer, Failure> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Failure::budget_cut(provider.name()));
        }
        let started = Instant::now();
        let result = match tokio::time::timeout(remaining, provider.chat(req)).await {
            Ok(result) => result.map_err(Failure::Provider),
            Err(_) => Err(Failure::budget_cut(provider.name())),
        };
        let outcome = record_call(
            provider.name(),
            result.as_ref().map_err(Failure::error),
            started.elapsed(),
        );
        if let Some(history) = &self.history {
            history.provider_call(provider.name(), outcome, started.elapsed());
        }
        match &result {
            Ok(answer) => debug!(
                provider = provider.name(),
                attempt,
                latency_ms = millis(answer.latency),
                "provider answered"
            ),
            Err(failure) => {
                debug!(provider = provider.name(), attempt, class = %failure.error().class, "provider call failed")
            }
        }
        result
    }
}

/// Counts one call that was made (or cut at the deadline) for `/metrics`:
/// its outcome, latency, and the tokens the provider reported. Returns the
/// outcome label.
fn record_call(
    provider: &str,
    result: Result<&Answer, &ProviderError>,
    elapsed: Duration,
) -> &'static str {
    let provider = provider.to_owned();
    let outcome = match result {
        Ok(answer) => {
            let tokens = |kind: &'static str, n: u32| {
                metrics::counter!(names::PROVIDER_TOKENS, "provider" => provider.clone(), "type" => kind)
                    .increment(u64::from(n));
            };
            tokens("prompt", answer.usage.prompt_tokens);
            tokens("completion", answer.usage.completion_tokens);
            "success"
        }
        Err(err) => {
            metrics::counter!(names::PROVIDER_ERRORS, "provider" => provider.clone(), "class" => err.class.as_str())
                .increment(1);
            err.class.as_str()
        }
    };
    metrics::counter!(names::PROVIDER_CALLS, "provider" => provider.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!(names::PROVIDER_LATENCY, "provider" => provider)
        .record(elapsed.as_secs_f64());
    outcome
}
