//! The per-client flood guard on `/wechat`: a token bucket per client IP
//! (governor's GCRA), refusing with 429 past the burst.
//!
//! WeChat pushes every user's messages from a small set of its own servers,
//! so a busy account can look like a flood from a few IPs. Those servers must
//! never be limited: put WeChat's callback IPs (fetched from WeChat's
//! `getcallbackip` API, see README) in `FERRY_IP_RATE_ALLOW`; behind a
//! reverse proxy, list the proxy in `FERRY_TRUSTED_PROXIES` so the limit
//! applies to the real client and not to the proxy. `FERRY_IP_RATE_LIMIT=off`
//! turns the limiter off (e.g. when the proxy already limits).
//!
//! IPv6 clients are limited per /64, the block one subscriber usually holds,
//! so rotating through one's own addresses gains nothing. The table of
//! clients is pruned of idle ones every minute, keeping memory bounded.

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
use crate::error::ApiError;
use crate::security::SecurityEvent;
use crate::state::AppState;

/// How often clients whose bucket has refilled are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Whether a request may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Limited { retry_after: Duration },
}

pub struct IpLimiter {
    buckets: DefaultKeyedRateLimiter<IpAddr>,
    allow: Vec<IpRange>,
}

impl IpLimiter {
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

    /// Takes one request from `client`'s bucket, unless it is allowlisted.
    pub fn check(&self, client: IpAddr) -> Verdict {
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

    /// Clients currently tracked.
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
/// handlers' logs) and refuses with 429 past its limit. Without connection
/// info (a router served without it) nothing is limited.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    if let Some(peer) = peer {
        let client = state.clients.resolve(peer, request.headers());
        request.extensions_mut().insert(ClientIp(client));
        if let Some(limiter) = &state.limiter
            && let Verdict::Limited { retry_after } = limiter.check(client)
        {
            state.security.report(
                SecurityEvent::RateLimited,
                Some(client),
                "over the per-IP request limit",
            );
            let retry_after_secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            return ApiError::RateLimited { retry_after_secs }.into_response();
        }
    }
    next.run(request).await
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

    #[test]
    fn a_client_is_limited_past_its_burst_and_others_are_not() {
        let l = limiter(1, 3, &[]);
        for _ in 0..3 {
            assert_eq!(l.check(ip("198.51.100.1")), Verdict::Allowed);
        }
        match l.check(ip("198.51.100.1")) {
            Verdict::Limited { retry_after } => assert!(retry_after <= Duration::from_secs(1)),
            Verdict::Allowed => panic!("the fourth request within a second must be limited"),
        }
        assert_eq!(l.check(ip("198.51.100.2")), Verdict::Allowed);
    }

    #[test]
    fn allowlisted_clients_are_never_limited() {
        let l = limiter(1, 1, &["101.226.0.0/16", "::1"]);
        for _ in 0..1000 {
            assert_eq!(l.check(ip("101.226.62.77")), Verdict::Allowed);
            assert_eq!(l.check(ip("::ffff:101.226.62.77")), Verdict::Allowed);
            assert_eq!(l.check(ip("::1")), Verdict::Allowed);
        }
        assert_eq!(l.tracked(), 0, "allowlisted clients take no memory");
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let l = limiter(1, 2, &[]);
        assert_eq!(l.check(ip("2001:db8:1:2::1")), Verdict::Allowed);
        assert_eq!(l.check(ip("2001:db8:1:2::ffff")), Verdict::Allowed);
        assert!(matches!(
            l.check(ip("2001:db8:1:2:abcd::9")),
            Verdict::Limited { .. }
        ));
        assert_eq!(l.check(ip("2001:db8:1:3::1")), Verdict::Allowed);
    }
}
