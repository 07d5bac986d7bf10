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
//! ARCHITECTURE.md, "The provider gate").

mod attempt;
mod error;
mod policy;
mod retry;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use ferry_common::config::ProviderConfig;
use ferry_common::fleet::ProviderGate;
use tracing::warn;

use super::{Answer, ChatRequest, Provider};

pub(super) use attempt::Failure;
pub use error::RouterError;
pub use policy::{Allowance, CallPolicy};

/// Calls an ordered chain of providers until one answers.
#[derive(Debug, Clone)]
pub struct Router {
    chain: Vec<Link>,
    policy: CallPolicy,
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
        Self { chain, policy }
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
        })
    }

    /// The chain's providers, in order.
    pub fn providers(&self) -> Vec<&Provider> {
        self.chain.iter().map(|link| &link.provider).collect()
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
        for link in &self.chain {
            let name = link.provider.name();
            if Instant::now() >= deadline {
                warn!(
                    provider = name,
                    "time budget spent; not calling further providers"
                );
                break;
            }
            tried.push(name.to_owned());
            match self.call_with_retries(link, req, deadline, attempts).await {
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

/// A deadline that never comes, for an unbounded budget.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}
