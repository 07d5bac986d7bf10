//! The per-client flood guard on `/wechat`: a client IP that keeps sending
//! requests refused for verification or parsing reasons (missing or bad
//! `signature` or `msg_signature`, a timestamp outside the window, a
//! malformed, oversized or forbidden body) gets `FERRY_IP_RATE_BURST` such
//! refusals, then 429 with `Retry-After` instead of the reason until its
//! bucket (governor's, one per client) refills at `FERRY_IP_RATE_LIMIT`
//! failures a second. It slows down whoever probes the verifier and the
//! parser (forgers, scanners, replayers) and makes them stand out as
//! `rate_limited`; it saves no work, as every request is verified (a SHA-1
//! over a few short strings, with bodies bounded by `FERRY_MAX_BODY_BYTES`).
//!
//! A request whose signature checks out is never limited, whatever its rate
//! and whatever its address did before: only WeChat holds the token, and
//! WeChat pushes every user's messages from a few servers, so a busy
//! account must not be throttled (a push refused three times is dropped),
//! and an address refused for failures must still get WeChat's pushes
//! through. So nothing is checked before verification: [`guard`] takes one
//! unit from the client's bucket only when the handler's response carries
//! [`FailedVerification`] (set by [`crate::error::ApiError`]'s response),
//! and turns that response into a 429 when the bucket is empty.
//! `FERRY_IP_RATE_ALLOW` exempts addresses altogether (never counted);
//! `FERRY_IP_RATE_LIMIT=off` turns the limiter off. Behind a reverse proxy,
//! list it in `FERRY_TRUSTED_PROXIES`, or every failure counts against the
//! proxy.
//!
//! IPv6 clients are counted per /64, the block one subscriber usually
//! holds, so rotating through one's own addresses gains nothing. Only
//! clients that failed have a bucket, and buckets that are full again are
//! pruned every minute, keeping memory bounded.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferry_common::config::{IpRange, IpRateLimit};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use crate::client_ip::ClientIp;
use crate::error::{ApiError, FailedVerification};
use crate::security::SecurityEvent;
use crate::state::AppState;

/// How often clients whose bucket has refilled are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What becomes of a failed request's refusal.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the client's burst of failures: the refusal is sent as is.
    Allowed,
    /// Past it: the refusal becomes a 429.
    Limited { retry_after: Duration },
}

pub struct IpLimiter {
    /// One bucket of failures per client that failed lately.
    buckets: DefaultKeyedRateLimiter<IpAddr>,
    allow: Vec<IpRange>,
}

impl IpLimiter {
    /// `per_second` failed requests per second per client, `burst` of them
    /// at once.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32, allow: Vec<IpRange>) -> Self {
        Self {
            buckets: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            allow,
        }
    }

    /// From the validated configuration (whose numbers are positive).
    pub fn from_config(config: &IpRateLimit) -> Self {
        let nonzero = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Self::new(
            nonzero(config.per_second),
            nonzero(config.burst),
            config.allow.clone(),
        )
    }

    /// Counts one request of `client` refused for a verify/parse reason:
    /// takes a unit from its bucket, or, once its burst of failures is used
    /// up, answers `Limited` (and takes nothing). Allowlisted clients are
    /// never counted.
    pub fn record_failure(&self, client: IpAddr) -> Verdict {
        let client = client.to_canonical();
        if self.allow.iter().any(|range| range.contains(client)) {
            return Verdict::Allowed;
        }
        match self.buckets.check_key(&bucket_of(client)) {
            Ok(()) => Verdict::Allowed,
            Err(not_until) => Verdict::Limited {
                retry_after: not_until.wait_time_from(self.buckets.clock().now()),
            },
        }
    }

    /// Clients currently tracked (those that failed lately).
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Forgets clients whose bucket is full again (they look like new ones).
    pub fn prune(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }
}

/// The bucket a client draws from: its IPv4 address, or its IPv6 /64.
fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

/// Middleware on `/wechat`: resolves the client (kept as [`ClientIp`] for the
/// handlers' logs), lets the handler verify the request, and when the
/// handler refused it for a verify/parse reason counts that against the
/// client, answering 429 instead once the client is past its burst of
/// failures. Any other response passes untouched. Without connection info
/// (a router served without it) nothing is limited.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let Some(peer) = peer else {
        return next.run(request).await;
    };
    let client = state.clients.resolve(peer, request.headers());
    request.extensions_mut().insert(ClientIp(client));
    let response = next.run(request).await;
    let Some(limiter) = &state.limiter else {
        return response;
    };
    if response.extensions().get::<FailedVerification>().is_none() {
        return response;
    }
    match limiter.record_failure(client) {
        Verdict::Allowed => response,
        Verdict::Limited { retry_after } => {
            state.security.report(
                SecurityEvent::RateLimited,
                Some(client),
                "over the per-IP limit of failed requests",
            );
            let retry_after_secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            ApiError::RateLimited { retry_after_secs }.into_response()
        }
    }
}

/// Prunes idle clients every minute until `shutdown`.
pub async fn prune_until(limiter: Arc<IpLimiter>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => limiter.prune(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: u32, burst: u32, allow: &[&str]) -> IpLimiter {
        IpLimiter::from_config(&IpRateLimit {
            per_second,
            burst,
            allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Fails `n` times at once and returns the verdicts.
    fn fail(l: &IpLimiter, client: &str, n: usize) -> Vec<Verdict> {
        (0..n).map(|_| l.record_failure(ip(client))).collect()
    }

    fn limited(verdict: Verdict) -> bool {
        matches!(verdict, Verdict::Limited { .. })
    }

    #[test]
    fn a_client_is_limited_past_its_burst_of_failures_and_others_are_not() {
        let l = limiter(1, 3, &[]);
        assert_eq!(fail(&l, "198.51.100.1", 3), [Verdict::Allowed; 3]);
        match l.record_failure(ip("198.51.100.1")) {
            Verdict::Limited { retry_after } => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
            }
            Verdict::Allowed => panic!("the fourth failure within a second must be limited"),
        }
        assert_eq!(l.record_failure(ip("198.51.100.2")), Verdict::Allowed);
        assert_eq!(l.tracked(), 2, "one bucket per failing client");
    }

    #[test]
    fn limited_failures_take_nothing_and_the_bucket_refills_at_the_rate() {
        let l = limiter(20, 1, &[]);
        assert_eq!(l.record_failure(ip("198.51.100.1")), Verdict::Allowed);
        let verdicts = fail(&l, "198.51.100.1", 1000);
        assert!(verdicts.iter().all(|&v| limited(v)), "{:?}", verdicts[0]);
        let Verdict::Limited { retry_after } = verdicts[999] else {
            unreachable!()
        };
        assert!(
            retry_after <= Duration::from_millis(50),
            "a thousand limited failures did not push the refill back: {retry_after:?}"
        );
        std::thread::sleep(retry_after + Duration::from_millis(5));
        assert_eq!(l.record_failure(ip("198.51.100.1")), Verdict::Allowed);
        assert!(limited(l.record_failure(ip("198.51.100.1"))));
    }

    #[test]
    fn allowlisted_clients_are_never_counted_nor_limited() {
        let l = limiter(1, 1, &["101.226.0.0/16", "::1"]);
        for client in ["101.226.62.77", "::ffff:101.226.62.77", "::1"] {
            assert!(
                fail(&l, client, 1000)
                    .iter()
                    .all(|&v| v == Verdict::Allowed)
            );
        }
        assert_eq!(l.tracked(), 0, "allowlisted clients take no memory");
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let l = limiter(1, 2, &[]);
        assert_eq!(l.record_failure(ip("2001:db8:1:2::1")), Verdict::Allowed);
        assert_eq!(l.record_failure(ip("2001:db8:1:2::ffff")), Verdict::Allowed);
        assert!(limited(l.record_failure(ip("2001:db8:1:2:abcd::9"))));
        assert_eq!(l.record_failure(ip("2001:db8:1:3::1")), Verdict::Allowed);
    }

    #[test]
    fn clients_whose_bucket_refilled_are_pruned() {
        let l = limiter(20, 100, &[]);
        // Full again after 50 ms.
        let _ = fail(&l, "198.51.100.1", 1);
        // Empty: full again after 5 s.
        let _ = fail(&l, "198.51.100.2", 100);
        assert_eq!(l.tracked(), 2);
        l.prune();
        assert_eq!(l.tracked(), 2, "neither bucket is full yet");
        std::thread::sleep(Duration::from_millis(400));
        l.prune();
        assert_eq!(
            l.tracked(),
            1,
            "the one-failure client's bucket is full again"
        );
        assert!(
            fail(&l, "198.51.100.2", 100).into_iter().any(limited),
            "the kept bucket has only refilled part of its burst"
        );
    }
}
