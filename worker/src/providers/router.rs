//! The fallback chain: which provider to call next, and when to wait.
//!
//! Retrying happens at this one layer (PROVIDERS.md). Per provider, transient
//! and rate-limited failures are retried with capped exponential backoff and
//! full jitter, waiting at least the provider's own hint. Quota and auth
//! failures move straight to the next provider; a bad request or filtered
//! content would fail anywhere, so they end the call. No wait may outlast
//! the time budget: the router fails over instead of sleeping past it, and
//! each attempt is cut at the budget's end (a request cut short may still
//! run, and be billed, upstream).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use ferry_common::config::ProviderConfig;
use tracing::{debug, warn};

use ferry_common::fleet::{Admission, CallResult, Denial, Pass, ProviderGate};
use ferry_common::metrics as names;

use super::{Answer, ChatRequest, FailureClass, Provider, ProviderError};

/// The message of an attempt Ferry cut at the time budget (not the
/// provider's fault, so not counted against its breaker).
const BUDGET_CUT: &str = "no answer within the time budget";

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
        Some(last) => format!(
            "no provider answered (tried {}); last error: {last}",
            tried.join(", ")
        ),
        None => "no provider was called: the chain is empty or the time budget is spent".into(),
    }
}

/// Calls an ordered chain of providers until one answers.
#[derive(Debug, Clone)]
pub struct Router {
    providers: Vec<Provider>,
    policy: CallPolicy,
    /// The fleet gate of each provider (same order), when coordinated.
    gates: Vec<Option<ProviderGate>>,
}

impl Router {
    pub fn new(providers: Vec<Provider>, policy: CallPolicy) -> Self {
        let gates = vec![None; providers.len()];
        Self {
            providers,
            policy,
            gates,
        }
    }

    /// Puts every call through the fleet's gate of its provider (rate
    /// limits, concurrency leases, circuit breaker); `gate` is asked for
    /// each provider by name.
    pub fn with_gates(mut self, gate: impl Fn(&str) -> Option<ProviderGate>) -> Self {
        self.gates = self.providers.iter().map(|p| gate(p.name())).collect();
        self
    }

    /// A chain built from configuration, in its order, sharing `client`.
    pub fn from_configs(
        configs: &[ProviderConfig],
        client: &reqwest::Client,
        policy: CallPolicy,
    ) -> Self {
        let providers = configs
            .iter()
            .map(|c| Provider::new(c, client.clone()))
            .collect();
        Self::new(providers, policy)
    }

    /// The same router limited to one provider of its chain (with its
    /// gate): a request that names its provider gets no fallback.
    pub fn only(&self, name: &str) -> Option<Router> {
        let i = self.providers.iter().position(|p| p.name() == name)?;
        Some(Router {
            providers: vec![self.providers[i].clone()],
            policy: self.policy,
            gates: vec![self.gates.get(i).cloned().flatten()],
        })
    }

    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    pub fn policy(&self) -> &CallPolicy {
        &self.policy
    }

    /// Answers `req` from the first provider that can, within the smaller of
    /// `budget_left` (what the job has left) and the policy's total budget,
    /// with the policy's attempts on each provider.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        budget_left: Duration,
    ) -> Result<Answer, RouterError> {
        let allowance = Allowance {
            time: budget_left,
            attempts_per_provider: self.policy.max_attempts_per_provider,
        };
        self.chat_within(req, allowance).await
    }

    /// Answers `req` from the first provider that can, spending at most
    /// `allowance` (capped by the policy).
    pub async fn chat_within(
        &self,
        req: &ChatRequest,
        allowance: Allowance,
    ) -> Result<Answer, RouterError> {
        let budget = allowance.time.min(self.policy.total_budget);
        let attempts = allowance
            .attempts_per_provider
            .min(self.policy.max_attempts_per_provider)
            .max(1);
        let deadline = Instant::now()
            .checked_add(budget)
            .unwrap_or_else(far_future);
        let mut tried = Vec::new();
        let mut last = None;
        for provider in &self.providers {
            if Instant::now() >= deadline {
                warn!(
                    provider = provider.name(),
                    "time budget spent; not calling further providers"
                );
                break;
            }
            tried.push(provider.name().to_owned());
            match self
                .call_with_retries(provider, req, deadline, attempts)
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(err) => {
                    let fails_over = err.class.fails_over();
                    let next = if fails_over {
                        "failing over"
                    } else {
                        "stopping"
                    };
                    warn!(
                        provider = provider.name(),
                        class = %err.class,
                        status = err.status,
                        code = err.code.as_deref(),
                        error = %err.message,
                        "provider failed; {next}"
                    );
                    last = Some(err);
                    if !fails_over {
                        break;
                    }
                }
            }
        }
        Err(RouterError { tried, last })
    }

    /// One provider, retried while its failures are retryable, the
    /// `max_attempts` last, and each wait fits in the budget.
    async fn call_with_retries(
        &self,
        provider: &Provider,
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
            self.attempt(provider, req, deadline, attempt).await
        };
        call.retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|err: &ProviderError| err.class.is_retryable())
            .adjust(|err, ceiling| {
                let attempt = attempts.load(Ordering::Relaxed);
                let name = provider.name();
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

    /// One call to one provider, cut at the deadline. Every call passes
    /// here: the place for a circuit breaker or a rate limiter to hook in.
    async fn attempt(
        &self,
        provider: &Provider,
        req: &ChatRequest,
        deadline: Instant,
        attempt: u32,
    ) -> Result<Answer, ProviderError> {
        let gate = self
            .providers
            .iter()
            .position(|p| std::ptr::eq(p, provider))
            .and_then(|i| self.gates.get(i).cloned().flatten());
        let Some(gate) = gate else {
            return self.call(provider, req, deadline, attempt).await;
        };
        let estimate = estimate_tokens(req, provider.max_tokens());
        let pass = admit(&gate, provider.name(), estimate, deadline).await?;
        let started = Instant::now();
        let result = self.call(provider, req, deadline, attempt).await;
        let (outcome, tokens, hint, reason) = match &result {
            Ok(answer) => (
                CallResult::Success,
                Some(answer.usage.total_tokens),
                None,
                String::new(),
            ),
            Err(err) => (gate_result(err), None, err.retry_after, err.to_string()),
        };
        gate.settle(pass, outcome, started.elapsed(), tokens, hint, &reason)
            .await;
        result
    }

    /// The provider call itself, cut at the deadline.
    async fn call(
        &self,
        provider: &Provider,
        req: &ChatRequest,
        deadline: Instant,
        attempt: u32,
    ) -> Result<Answer, ProviderError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let over_budget =
            || ProviderError::new(provider.name(), FailureClass::Transient, BUDGET_CUT);
        if remaining.is_zero() {
            return Err(over_budget());
        }
        let started = Instant::now();
        let result = tokio::time::timeout(remaining, provider.chat(req))
            .await
            .unwrap_or_else(|_| Err(over_budget()));
        record_call(provider.name(), &result, started.elapsed());
        match &result {
            Ok(answer) => debug!(
                provider = provider.name(),
                attempt,
                latency_ms = millis(answer.latency),
                "provider answered"
            ),
            Err(err) => {
                debug!(provider = provider.name(), attempt, class = %err.class, "provider call failed")
            }
        }
        result
    }
}

/// Waits for the fleet's permission to call, as long as the deadline allows.
/// An open breaker fails over at once; a limit whose wait would outlast the
/// deadline is reported as rate limited with that wait, so the router fails
/// over instead of sleeping past the budget.
async fn admit(
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

/// Counts one call that was made (or cut at the deadline) for `/metrics`:
/// its outcome, latency, and the tokens the provider reported.
fn record_call(provider: &str, result: &Result<Answer, ProviderError>, elapsed: Duration) {
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
}

/// What a call's failure tells the fleet about the provider's health.
fn gate_result(err: &ProviderError) -> CallResult {
    match err.class {
        FailureClass::Transient if err.message == BUDGET_CUT => CallResult::Neutral,
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
/// about two characters a token across Chinese and English, plus the answer.
fn estimate_tokens(req: &ChatRequest, max_tokens: Option<u32>) -> u32 {
    let chars: usize = req.messages.iter().map(|m| m.content.chars().count()).sum();
    (chars / 2) as u32 + max_tokens.unwrap_or(512)
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A deadline that never comes, for an unbounded budget.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use ferry_common::Secret;
    use ferry_common::config::ProviderKind;

    use super::*;
    use crate::providers::ChatMessage;

    fn config(name: &str, kind: ProviderKind, base_url: &str, key: Option<&str>) -> ProviderConfig {
        ProviderConfig {
            name: name.into(),
            kind,
            base_url: base_url.into(),
            api_key: key.map(Secret::from),
            model: "m".into(),
            temperature: None,
            max_tokens: None,
        }
    }

    fn router(configs: &[ProviderConfig], max_attempts: u32) -> Router {
        let policy = CallPolicy {
            max_attempts_per_provider: max_attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            total_budget: Duration::from_secs(30),
        };
        Router::from_configs(configs, &reqwest::Client::new(), policy)
    }

    fn hello() -> ChatRequest {
        ChatRequest::new(vec![ChatMessage::user("hello")])
    }

    /// Nothing listens on port 1: the connection is refused at once.
    const DEAD: &str = "http://127.0.0.1:1/v1";

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

    #[tokio::test]
    async fn an_unreachable_provider_is_retried_then_the_next_one_answers() {
        let r = router(
            &[
                config("dead", ProviderKind::OpenAi, DEAD, Some("k")),
                config("echo", ProviderKind::Echo, "", None),
            ],
            2,
        );
        let answer = r.chat(&hello(), Duration::from_secs(30)).await.unwrap();
        assert_eq!(
            (answer.provider.as_str(), answer.text.as_str()),
            ("echo", "hello")
        );
    }

    #[tokio::test]
    async fn when_every_provider_fails_the_error_lists_them_and_keeps_the_last_class() {
        let r = router(
            &[
                config("nokey", ProviderKind::Gemini, DEAD, None),
                config("dead", ProviderKind::OpenAi, DEAD, Some("k")),
            ],
            2,
        );
        let err = r.chat(&hello(), Duration::from_secs(30)).await.unwrap_err();
        assert_eq!(err.tried, ["nokey", "dead"]);
        assert_eq!(err.class(), FailureClass::Transient);
        assert!(
            err.to_string()
                .starts_with("no provider answered (tried nokey, dead)"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_bad_request_stops_the_chain() {
        let r = router(
            &[
                config("echo", ProviderKind::Echo, "", None),
                config("other", ProviderKind::Echo, "", None),
            ],
            3,
        );
        let err = r
            .chat(&ChatRequest::default(), Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(err.tried, ["echo"]);
        assert_eq!(err.class(), FailureClass::BadRequest);
    }

    #[tokio::test]
    async fn with_no_time_left_no_provider_is_called() {
        let r = router(&[config("echo", ProviderKind::Echo, "", None)], 3);
        let err = r.chat(&hello(), Duration::ZERO).await.unwrap_err();
        assert!(err.tried.is_empty() && err.last.is_none());
        assert_eq!(err.class(), FailureClass::Transient);
    }

    #[test]
    fn the_call_can_run_on_any_worker_thread() {
        fn assert_send<T: Send>(_: &T) {}
        let r = router(&[], 1);
        let req = hello();
        assert_send(&r.chat(&req, Duration::ZERO));
    }
}
