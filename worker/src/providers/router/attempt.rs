//! One attempt on one provider: through its fleet gate (if it has one),
//! cut at the deadline, and counted for `/metrics`.

use std::time::{Duration, Instant};

use tracing::{Instrument as _, debug};

use ferry_common::telemetry::traces;

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
        let span = provider_span(&link.provider, req, attempt);
        let result = self
            .gated(link, req, deadline, attempt)
            .instrument(span.clone())
            .await;
        if traces::on() {
            record_outcome(&span, &result);
        }
        result
    }

    async fn gated(
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

/// A `provider.call` span (traces on only), with OpenTelemetry's GenAI
/// names: `gen_ai.system` (the provider's configured name),
/// `gen_ai.request.model`; the outcome fills in the rest.
fn provider_span(provider: &Provider, req: &ChatRequest, attempt: u32) -> tracing::Span {
    if !traces::on() {
        return tracing::Span::none();
    }
    let model = req
        .overrides
        .model
        .as_deref()
        .or(if req.image.is_some() {
            provider.vision_model()
        } else {
            None
        })
        .unwrap_or(provider.model());
    ferry_common::otel_span!(
        "provider.call",
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.system = provider.name(),
        gen_ai.request.model = model,
        ferry.provider.attempt = attempt,
        ferry.provider.class = tracing::field::Empty,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// The call's class (`ok` or a [`FailureClass`] name) and, on an answer,
/// the model that answered and the tokens the provider reported.
fn record_outcome(span: &tracing::Span, result: &Result<Answer, ProviderError>) {
    match result {
        Ok(answer) => {
            span.record("ferry.provider.class", "ok");
            span.record("gen_ai.response.model", answer.model.as_str());
            span.record("gen_ai.usage.input_tokens", answer.usage.prompt_tokens);
            span.record("gen_ai.usage.output_tokens", answer.usage.completion_tokens);
        }
        Err(err) => {
            span.record("ferry.provider.class", err.class.as_str());
            span.record("otel.status_code", "ERROR");
        }
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
