//! The per-client flood guard on `/wechat`: it counts the requests a client
//! IP gets refused for verification or parsing reasons, and answers a client
//! that keeps failing with 429 before its next request is even verified.
//!
//! Only WeChat holds the token, so a request whose signature checks out is
//! never counted, whatever its rate: WeChat pushes every user's messages from
//! a small set of its own servers, and a busy account must not be throttled
//! (a push refused three times is dropped). What is counted are the refusals
//! the handlers make for verify/parse reasons (missing or bad `signature`,
//! bad `msg_signature`, a timestamp outside the window, a malformed, oversized
//! or forbidden body): [`crate::error::ApiError`]'s response marks those with
//! the [`FailedVerification`] extension, and [`guard`] consumes one unit of
//! the client's failure bucket for each. A flood of forged, unsigned or
//! replayed requests from one address thus gets `FERRY_IP_RATE_BURST`
//! refusals, then a cheap 429 (no HMAC, no decryption, no body read) until
//! its bucket refills at `FERRY_IP_RATE_LIMIT` failures per second.
//!
//! **Decision:** the bucket is consulted before verification, so a blocked
//! address is refused even for a request that would have verified. A WeChat
//! server's address can only be blocked by failures sent from that address,
//! which nobody else can do over TCP (no handshake with a spoofed source);
//! behind a reverse proxy that holds only if the proxy is listed in
//! `FERRY_TRUSTED_PROXIES`, otherwise every request seems to come from the
//! proxy and one forger would block everyone. `FERRY_IP_RATE_ALLOW` exempts
//! addresses altogether (never counted, never limited);
//! `FERRY_IP_RATE_LIMIT=off` turns the limiter off.
//!
//! The bucket is a GCRA kept here rather than governor's: governor can only
//! take from a bucket, and the check before verification must look without
//! taking. Per client it is one instant, its theoretical arrival time (TAT):
//! a failure moves it to `max(TAT, now) + 1/rate`; a client is over its
//! burst when its TAT is more than `(burst - 1)/rate` ahead of now. Only
//! clients that failed have an entry, and an entry whose TAT has passed
//! (its bucket is full again) is pruned every minute, keeping memory
//! bounded. IPv6 clients are counted per /64, the block one subscriber
//! usually holds, so rotating through one's own addresses gains nothing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferry_common::config::{IpRange, IpRateLimit};
use tokio_util::sync::CancellationToken;

use crate::client_ip::ClientIp;
use crate::error::{ApiError, FailedVerification};
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
    /// Each failing client's theoretical arrival time.
    failures: RwLock<HashMap<IpAddr, Instant>>,
    /// One failure's weight: 1 / the rate.
    interval: Duration,
    /// How far ahead of now a TAT may be and the client still pass:
    /// `(burst - 1)` intervals.
    tolerance: Duration,
    allow: Vec<IpRange>,
}

impl IpLimiter {
    /// `per_second` failed requests per second per client, `burst` of them
    /// at once.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32, allow: Vec<IpRange>) -> Self {
        let interval = (Duration::from_secs(1) / per_second.get()).max(Duration::from_nanos(1));
        Self {
            failures: RwLock::new(HashMap::new()),
            interval,
            tolerance: interval * (burst.get() - 1),
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

    /// Whether `client` may be heard: limited once it has used up its
    /// burst of failures. Takes nothing from the bucket.
    pub fn check(&self, client: IpAddr) -> Verdict {
        self.check_at(client, Instant::now())
    }

    /// Counts one failed request of `client` (allowlisted ones are not).
    pub fn record_failure(&self, client: IpAddr) {
        self.record_failure_at(client, Instant::now());
    }

    /// Clients currently tracked (those that failed lately).
    pub fn tracked(&self) -> usize {
        self.failures
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Forgets clients whose bucket is full again (they look like new ones).
    pub fn prune(&self) {
        self.prune_at(Instant::now());
    }

    /// The bucket `client` counts against, or `None` when allowlisted.
    fn key(&self, client: IpAddr) -> Option<IpAddr> {
        let client = client.to_canonical();
        if self.allow.iter().any(|range| range.contains(client)) {
            return None;
        }
        Some(bucket_of(client))
    }

    fn check_at(&self, client: IpAddr, now: Instant) -> Verdict {
        let Some(key) = self.key(client) else {
            return Verdict::Allowed;
        };
        let failures = self.failures.read().unwrap_or_else(PoisonError::into_inner);
        let Some(tat) = failures.get(&key) else {
            return Verdict::Allowed;
        };
        let ahead = tat.saturating_duration_since(now);
        if ahead > self.tolerance {
            Verdict::Limited {
                retry_after: ahead - self.tolerance,
            }
        } else {
            Verdict::Allowed
        }
    }

    fn record_failure_at(&self, client: IpAddr, now: Instant) {
        let Some(key) = self.key(client) else {
            return;
        };
        let mut failures = self
            .failures
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let tat = failures.entry(key).or_insert(now);
        *tat = (*tat).max(now) + self.interval;
    }

    fn prune_at(&self, now: Instant) {
        let mut failures = self
            .failures
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        failures.retain(|_, tat| *tat > now);
        failures.shrink_to_fit();
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
/// handlers' logs), refuses with 429 a client past its burst of failures
/// before anything is verified, and counts the request against the client
/// when the handler refused it for a verify/parse reason. Without connection
/// info (a router served without it) nothing is limited.
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
    let Some(limiter) = &state.limiter else {
        return next.run(request).await;
    };
    if let Verdict::Limited { retry_after } = limiter.check(client) {
        state.security.report(
            SecurityEvent::RateLimited,
            Some(client),
            "over the per-IP limit of failed requests",
        );
        let retry_after_secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        return ApiError::RateLimited { retry_after_secs }.into_response();
    }
    let response = next.run(request).await;
    if response.extensions().get::<FailedVerification>().is_some() {
        limiter.record_failure(client);
    }
    response
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

    /// Fails `n` times at `now`.
    fn fail(l: &IpLimiter, client: &str, n: usize, now: Instant) {
        for _ in 0..n {
            l.record_failure_at(ip(client), now);
        }
    }

    #[test]
    fn a_client_is_limited_once_its_burst_of_failures_is_used_and_others_are_not() {
        let l = limiter(1, 3, &[]);
        let now = Instant::now();
        for _ in 0..2 {
            fail(&l, "198.51.100.1", 1, now);
            assert_eq!(l.check_at(ip("198.51.100.1"), now), Verdict::Allowed);
        }
        fail(&l, "198.51.100.1", 1, now);
        assert_eq!(
            l.check_at(ip("198.51.100.1"), now),
            Verdict::Limited {
                retry_after: Duration::from_secs(1)
            },
            "the burst of 3 is used: the next failure is allowed in a second"
        );
        assert_eq!(l.check_at(ip("198.51.100.2"), now), Verdict::Allowed);
    }

    #[test]
    fn checking_takes_nothing_so_successes_never_count() {
        let l = limiter(1, 2, &[]);
        let now = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(l.check_at(ip("101.226.62.77"), now), Verdict::Allowed);
        }
        assert_eq!(l.tracked(), 0, "a client that never failed takes no memory");
        fail(&l, "101.226.62.77", 1, now);
        for _ in 0..1000 {
            assert_eq!(l.check_at(ip("101.226.62.77"), now), Verdict::Allowed);
        }
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let l = limiter(10, 2, &[]);
        let start = Instant::now();
        fail(&l, "198.51.100.1", 2, start);
        let at = |ms| start + Duration::from_millis(ms);
        assert!(matches!(
            l.check_at(ip("198.51.100.1"), at(50)),
            Verdict::Limited { retry_after } if retry_after == Duration::from_millis(50)
        ));
        assert_eq!(l.check_at(ip("198.51.100.1"), at(100)), Verdict::Allowed);
        // One more failure after a unit came back uses it again.
        fail(&l, "198.51.100.1", 1, at(100));
        assert!(matches!(
            l.check_at(ip("198.51.100.1"), at(150)),
            Verdict::Limited { .. }
        ));
        assert_eq!(l.check_at(ip("198.51.100.1"), at(200)), Verdict::Allowed);
    }

    #[test]
    fn failures_racing_past_the_check_block_for_longer() {
        let l = limiter(10, 2, &[]);
        let now = Instant::now();
        // Five concurrent requests all passed the check, then all failed.
        fail(&l, "198.51.100.1", 5, now);
        assert_eq!(
            l.check_at(ip("198.51.100.1"), now),
            Verdict::Limited {
                retry_after: Duration::from_millis(400)
            }
        );
    }

    #[test]
    fn allowlisted_clients_are_never_counted_nor_limited() {
        let l = limiter(1, 1, &["101.226.0.0/16", "::1"]);
        let now = Instant::now();
        for client in ["101.226.62.77", "::ffff:101.226.62.77", "::1"] {
            fail(&l, client, 1000, now);
            assert_eq!(l.check_at(ip(client), now), Verdict::Allowed);
        }
        assert_eq!(l.tracked(), 0, "allowlisted clients take no memory");
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let l = limiter(1, 2, &[]);
        let now = Instant::now();
        fail(&l, "2001:db8:1:2::1", 1, now);
        fail(&l, "2001:db8:1:2::ffff", 1, now);
        assert!(matches!(
            l.check_at(ip("2001:db8:1:2:abcd::9"), now),
            Verdict::Limited { .. }
        ));
        assert_eq!(l.check_at(ip("2001:db8:1:3::1"), now), Verdict::Allowed);
    }

    #[test]
    fn clients_whose_bucket_refilled_are_pruned() {
        let l = limiter(10, 5, &[]);
        let now = Instant::now();
        fail(&l, "198.51.100.1", 1, now);
        fail(&l, "198.51.100.2", 5, now);
        assert_eq!(l.tracked(), 2);
        l.prune_at(now + Duration::from_millis(100));
        assert_eq!(
            l.tracked(),
            1,
            "the one-failure client's bucket is full again"
        );
        l.prune_at(now + Duration::from_millis(500));
        assert_eq!(l.tracked(), 0);
    }
}
