//! The fallback chain: which provider to call next, and when to wait.
//!
//! Retrying happens at this one layer (PROVIDERS.md). Per provider, transient
//! and rate-limited failures are retried with capped exponential backoff and
//! full jitter, waiting at least the provider's own hint ([`retry`]). Quota
//! and auth failures move straight to the next provider; a bad request or
//! filtered content would fail anywhere, so they end the call. No wait may
//! outlast the time budget: the router fails over instead of sleeping past
//! it, and each attempt is cut at the budget's end ([`attempt`]; a request
//! cut short may still run, and be billed, upstream). Every attempt passes
//! its provider's fleet gate, when it has one ([`super::gate`];
//! ARCHITECTURE.md, "The provider gate"). A request with a picture goes
//! only to the chain's providers that have a vision model, in chain order,
//! and asks that model (unless the request names its own).

mod attempt;
mod error;
mod policy;
mod retry;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_common::config::ProviderConfig;
use ferry_common::fleet::ProviderGate;
use ferry_common::history::History;
use tracing::warn;

use super::{Answer, ChatRequest, FailureClass, Provider, ProviderError};

pub(super) use attempt::Failure;
pub use error::RouterError;
pub use policy::{Allowance, CallPolicy};

/// Calls an ordered chain of providers until one answers.
#[derive(Debug, Clone)]
pub struct Router {
    chain: Vec<Link>,
    policy: CallPolicy,
    /// Where each call is counted for the fleet's history (charts).
    history: Option<Arc<History>>,
}

/// One provider of the chain and the fleet gate its calls pass (`None`:
/// not coordinated).
#[derive(Debug, Clone)]
struct Link {
    provider: Provider,
    gate: Option<ProviderGate>,
}

impl Router {
    pub fn new(providers: Vec<Provider>, policy: CallPolicy) -> Self {
        let chain = providers
            .into_iter()
            .map(|provider| Link {
                provider,
                gate: None,
            })
            .collect();
        Self {
            chain,
            policy,
            history: None,
        }
    }

    /// Counts every call (outcome, latency) in the fleet's history.
    pub fn with_history(mut self, history: Arc<History>) -> Self {
        self.history = Some(history);
        self
    }

    /// Puts every call through the fleet's gate of its provider (rate
    /// limits, concurrency leases, circuit breaker); `gate` is asked for
    /// each provider by name.
    pub fn with_gates(mut self, gate: impl Fn(&str) -> Option<ProviderGate>) -> Self {
        for link in &mut self.chain {
            link.gate = gate(link.provider.name());
        }
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
        let link = self.chain.iter().find(|l| l.provider.name() == name)?;
        Some(Router {
            chain: vec![link.clone()],
            policy: self.policy,
            history: self.history.clone(),
        })
    }

    /// The chain's providers, in order.
    pub fn providers(&self) -> Vec<&Provider> {
        self.chain.iter().map(|link| &link.provider).collect()
    }

    pub fn policy(&self) -> &CallPolicy {
        &self.policy
    }

    /// Whether any provider of the chain can be asked about a picture.
    pub fn has_vision(&self) -> bool {
        self.chain
            .iter()
            .any(|link| link.provider.vision_model().is_some())
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
        if req.image.is_some() && !self.has_vision() {
            return Err(no_vision(&self.chain));
        }
        let mut tried = Vec::new();
        let mut last = None;
        for link in &self.chain {
            let Some(req) = asked_of(link, req) else {
                continue;
            };
            let name = link.provider.name();
            if Instant::now() >= deadline {
                warn!(
                    provider = name,
                    "time budget spent; not calling further providers"
                );
                break;
            }
            tried.push(name.to_owned());
            match self.call_with_retries(link, &req, deadline, attempts).await {
                Ok(answer) => return Ok(answer),
                Err(err) => {
                    let fails_over = err.class.fails_over();
                    let next = if fails_over {
                        "failing over"
                    } else {
                        "stopping"
                    };
                    warn!(
                        provider = name,
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
}

/// What `link` is asked: `req` itself, or for a picture the same request
/// to the provider's vision model (unless the request names its model);
/// `None` when the provider cannot see pictures. Cheap: the picture's
/// bytes are shared, not copied.
fn asked_of<'r>(link: &Link, req: &'r ChatRequest) -> Option<Cow<'r, ChatRequest>> {
    if req.image.is_none() || req.overrides.model.is_some() {
        return (req.image.is_none() || link.provider.vision_model().is_some())
            .then_some(Cow::Borrowed(req));
    }
    let model = link.provider.vision_model()?;
    let mut asked = req.clone();
    asked.overrides.model = Some(model.to_owned());
    Some(Cow::Owned(asked))
}

/// A picture, and no provider of the chain to show it to.
fn no_vision(chain: &[Link]) -> RouterError {
    let names: Vec<&str> = chain.iter().map(|l| l.provider.name()).collect();
    let message = format!(
        "the message carries a picture, but no provider of the chain ({}) has a vision model: set <NAME>_VISION_MODEL",
        names.join(", ")
    );
    RouterError {
        tried: Vec::new(),
        last: Some(ProviderError::new(
            "router",
            FailureClass::BadRequest,
            message,
        )),
    }
}

/// A deadline that never comes, for an unbounded budget.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}
