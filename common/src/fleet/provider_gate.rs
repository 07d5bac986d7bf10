//! The gate around every AI provider call, shared by the whole fleet: a
//! global GCRA rate limit (requests and tokens per minute), a concurrency
//! limit of expiring leases, and a circuit breaker. One Redis function call
//! before the call ([`ProviderGate::admit`]) and one after it
//! ([`ProviderGate::settle`]); see `migrations/ferry_fleet.lua`.
//!
//! A local `governor` limiter in each process sits in front of Redis, so a
//! process that is over the rate on its own is told so without a round trip.
//!
//! When Redis cannot be reached for coordination the gate fails open: the
//! call proceeds under the local limiter only, and its settle is dropped. A
//! worker without Redis fetches no new jobs anyway, so this only concerns
//! calls already in flight.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use redis::Pipeline;

use crate::store::Store;

/// Limits and breaker settings of one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct GateSettings {
    /// Requests per minute for the whole fleet (0: no limit).
    pub requests_per_minute: u32,
    /// Requests that may go back to back.
    pub burst: u32,
    /// Tokens per minute for the whole fleet (0: no limit).
    pub tokens_per_minute: u32,
    /// Calls in flight at once across the fleet (0: no limit).
    pub max_concurrency: u32,
    /// A lease (and a probe) expires after this: a crashed holder's slot
    /// frees itself. Set it above the per-attempt timeout.
    pub lease_ttl: Duration,
    pub breaker: BreakerSettings,
}

/// In the spirit of resilience4j's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// The sliding time window the failure ratio is computed over.
    pub window: Duration,
    /// Calls in the window before the ratio counts.
    pub minimum_calls: u32,
    /// Failure ratio that opens the breaker.
    pub failure_rate: f64,
    /// How long it stays open before one probe.
    pub open_for: Duration,
    /// How long quota and auth failures keep it open.
    pub open_for_quota: Duration,
    /// Calls slower than this count as failures (None: never).
    pub slow_call: Option<Duration>,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            minimum_calls: 10,
            failure_rate: 0.5,
            open_for: Duration::from_secs(30),
            open_for_quota: Duration::from_secs(600),
            slow_call: None,
        }
    }
}

impl Default for GateSettings {
    fn default() -> Self {
        Self {
            requests_per_minute: 0,
            burst: 1,
            tokens_per_minute: 0,
            max_concurrency: 0,
            lease_ttl: Duration::from_secs(120),
            breaker: BreakerSettings::default(),
        }
    }
}

/// Why a call may not go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The breaker is open (or its one probe is out): fall over.
    Open,
    /// Over the requests-per-minute limit (or slowed by a 429 hint).
    Rate,
    /// Over the tokens-per-minute limit.
    Tokens,
    /// Too many calls in flight.
    Concurrency,
}

/// Permission to make one call; hand it back to [`ProviderGate::settle`].
#[derive(Debug, Clone)]
pub struct Pass {
    lease: String,
    probe: bool,
    estimate: u32,
    /// False when Redis was unreachable and only the local limiter applied.
    coordinated: bool,
}

impl Pass {
    /// Whether this call is the breaker's one probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

#[derive(Debug, Clone)]
pub enum Admission {
    Granted(Pass),
    Denied { why: Denial, retry_after: Duration },
}

/// How a call ended, as far as the fleet is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    Success,
    /// Transient failure (5xx, timeout, reset): counts toward the breaker.
    Failure,
    /// Out of credit or quota: the breaker opens for long.
    Quota,
    /// Bad key: the breaker opens for long.
    Auth,
    /// 429: slows the fleet by the hint; not a health verdict.
    RateLimited,
    /// The request's own fault (bad request, filtered content).
    Neutral,
}

impl CallResult {
    fn as_str(self) -> &'static str {
        match self {
            CallResult::Success => "ok",
            CallResult::Failure => "fail",
            CallResult::Quota => "quota",
            CallResult::Auth => "auth",
            CallResult::RateLimited => "rate_limited",
            CallResult::Neutral => "neutral",
        }
    }
}

/// The breaker's state after a settle, and whether that settle changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerState {
    pub state: String,
    pub changed: bool,
}

/// One provider's gate.
#[derive(Clone)]
pub struct ProviderGate {
    store: Store,
    provider: String,
    keys: [String; 5],
    settings: GateSettings,
    local: Option<Arc<DefaultDirectRateLimiter>>,
}

impl std::fmt::Debug for ProviderGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderGate")
            .field("provider", &self.provider)
            .field("settings", &self.settings)
            .finish()
    }
}

impl ProviderGate {
    pub fn new(store: &Store, provider: &str, settings: GateSettings) -> Self {
        let local = NonZeroU32::new(settings.requests_per_minute).map(|rpm| {
            let burst = NonZeroU32::new(settings.burst.max(1)).unwrap_or(NonZeroU32::MIN);
            Arc::new(RateLimiter::direct(
                Quota::per_minute(rpm).allow_burst(burst),
            ))
        });
        Self {
            store: store.clone(),
            provider: provider.to_owned(),
            keys: store.keys().provider(provider).all(),
            settings,
            local,
        }
    }

    pub fn settings(&self) -> &GateSettings {
        &self.settings
    }

    /// Asks the fleet for permission to call, reserving `estimated_tokens`.
    pub async fn admit(&self, estimated_tokens: u32) -> Admission {
        if let Some(local) = &self.local
            && let Err(not_until) = local.check()
        {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Admission::Denied {
                why: Denial::Rate,
                retry_after: wait,
            };
        }
        let lease = ulid::Ulid::new().to_string();
        match self.admit_in_redis(&lease, estimated_tokens).await {
            Ok(admission) => admission,
            Err(e) => {
                tracing::warn!(provider = %self.provider, error = %e, "fleet coordination unreachable: calling under the local limit only");
                Admission::Granted(Pass {
                    lease,
                    probe: false,
                    estimate: estimated_tokens,
                    coordinated: false,
                })
            }
        }
    }

    async fn admit_in_redis(&self, lease: &str, estimate: u32) -> Result<Admission, GateError> {
        let s = &self.settings;
        let ttl_ms = s.lease_ttl.as_millis() as u64;
        let mut pipe = Pipeline::new();
        call(&mut pipe, "ferry_admit", &self.keys)
            .arg(s.requests_per_minute)
            .arg(s.burst.max(1))
            .arg(s.tokens_per_minute)
            .arg(estimate)
            .arg(s.max_concurrency)
            .arg(lease)
            .arg(ttl_ms)
            .arg(ttl_ms);
        let mut conn = self.store.conn().await?;
        let (reply,): (Vec<redis::Value>,) = crate::functions::run(&mut conn, &pipe).await?;
        let mut it = reply.into_iter();
        let status: String = redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil))?;
        let wait: u64 = redis::from_redis_value(it.next().unwrap_or(redis::Value::Int(0)))?;
        let retry_after = Duration::from_millis(wait);
        Ok(match status.as_str() {
            "ok" => {
                let role: String = redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil))?;
                if role == "probe" {
                    tracing::info!(provider = %self.provider, "circuit breaker half-open: this call is the fleet's one probe");
                    count_transition(&self.provider, "half_open");
                }
                Admission::Granted(Pass {
                    lease: lease.to_owned(),
                    probe: role == "probe",
                    estimate,
                    coordinated: true,
                })
            }
            "open" => Admission::Denied {
                why: Denial::Open,
                retry_after,
            },
            "tokens" => Admission::Denied {
                why: Denial::Tokens,
                retry_after,
            },
            "concurrency" => Admission::Denied {
                why: Denial::Concurrency,
                retry_after,
            },
            _ => Admission::Denied {
                why: Denial::Rate,
                retry_after,
            },
        })
    }

    /// Reports how the call ended: releases the lease, corrects the token
    /// reservation with what was used, spreads a 429 hint to the fleet, and
    /// moves the breaker. Returns the breaker state (None if Redis was
    /// unreachable).
    pub async fn settle(
        &self,
        pass: Pass,
        result: CallResult,
        elapsed: Duration,
        tokens_used: Option<u32>,
        hint: Option<Duration>,
        reason: &str,
    ) -> Option<BreakerState> {
        if !pass.coordinated {
            return None;
        }
        let b = &self.settings.breaker;
        let result = match (result, b.slow_call) {
            (CallResult::Success, Some(slow)) if elapsed > slow => CallResult::Failure,
            (r, _) => r,
        };
        let correction = tokens_used.map_or(0, |used| i64::from(used) - i64::from(pass.estimate));
        let mut pipe = Pipeline::new();
        call(&mut pipe, "ferry_settle", &self.keys)
            .arg(&pass.lease)
            .arg(if pass.probe { "probe" } else { "call" })
            .arg(result.as_str())
            .arg(correction)
            .arg(hint.map_or(0, |h| h.as_millis() as u64))
            .arg(b.window.as_secs().max(1))
            .arg(b.minimum_calls.max(1))
            .arg(b.failure_rate)
            .arg(b.open_for.as_millis() as u64)
            .arg(b.open_for_quota.as_millis() as u64)
            .arg(self.settings.tokens_per_minute)
            .arg(reason);
        let settled: Result<((String, i32),), GateError> = async {
            let mut conn = self.store.conn().await?;
            Ok(crate::functions::run(&mut conn, &pipe).await?)
        }
        .await;
        match settled {
            Ok(((state, changed),)) => {
                let state = BreakerState {
                    state,
                    changed: changed == 1,
                };
                if state.changed {
                    tracing::warn!(provider = %self.provider, breaker = %state.state, reason, "circuit breaker changed state");
                    count_transition(&self.provider, &state.state);
                }
                Some(state)
            }
            Err(e) => {
                tracing::warn!(provider = %self.provider, error = %e, "could not report a provider call to the fleet");
                None
            }
        }
    }
}

/// Counts a breaker move for `/metrics` (`to`: `open`, `half_open`, `closed`).
pub(crate) fn count_transition(provider: &str, to: &str) {
    metrics::counter!(
        crate::metrics::BREAKER_TRANSITIONS,
        "provider" => provider.to_owned(),
        "to" => to.to_owned()
    )
    .increment(1);
}

fn call<'a>(pipe: &'a mut Pipeline, name: &str, keys: &[String; 5]) -> &'a mut Pipeline {
    crate::functions::fcall(pipe, name, &keys.each_ref().map(String::as_str))
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("{0}")]
    Redis(#[from] crate::store::RedisError),
}

crate::wraps_redis_error!(GateError);
