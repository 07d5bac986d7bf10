//! Security events: refused requests that look like attacks rather than
//! mistakes (forged signatures, replayed requests, floods, XML with
//! declarations). Each is logged under the `security` tracing target, so
//! operators can route and alert on them, counted in [`SecurityCounters`]
//! (the dashboard) and in `ferry_security_events_total{kind}` (`/metrics`).
//!
//! A log line names the event, the client address and a short reason; never
//! the token, a signature, a nonce or the body.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// A kind of refused request worth an operator's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityEvent {
    /// `signature` or `msg_signature` does not match: not from WeChat.
    BadSignature,
    /// Correctly signed but outside the timestamp window: a replay.
    Replay,
    /// Refused by the per-IP limiter.
    RateLimited,
    /// A signed body with a DOCTYPE or entity declaration (XXE attempt).
    ForbiddenXml,
    /// A bearer token (or dashboard cookie) that is not configured.
    BadToken,
    /// A valid token used on a route outside its scopes.
    Forbidden,
}

impl SecurityEvent {
    pub fn name(self) -> &'static str {
        match self {
            SecurityEvent::BadSignature => "bad_signature",
            SecurityEvent::Replay => "replay",
            SecurityEvent::RateLimited => "rate_limited",
            SecurityEvent::ForbiddenXml => "forbidden_xml",
            SecurityEvent::BadToken => "bad_token",
            SecurityEvent::Forbidden => "forbidden",
        }
    }
}

/// How many of each [`SecurityEvent`] this process has seen.
#[derive(Debug, Default)]
pub struct SecurityCounters {
    bad_signature: AtomicU64,
    replay: AtomicU64,
    rate_limited: AtomicU64,
    forbidden_xml: AtomicU64,
    bad_token: AtomicU64,
    forbidden: AtomicU64,
}

/// A snapshot of [`SecurityCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecurityCounts {
    pub bad_signature: u64,
    pub replay: u64,
    pub rate_limited: u64,
    pub forbidden_xml: u64,
    pub bad_token: u64,
    pub forbidden: u64,
}

/// Past the first, a flood's refusals are logged one in this many, so the
/// log does not become the flood's amplifier.
const RATE_LIMITED_LOG_EVERY: u64 = 1000;

impl SecurityCounters {
    /// The counts so far.
    pub fn counts(&self) -> SecurityCounts {
        SecurityCounts {
            bad_signature: self.bad_signature.load(Ordering::Relaxed),
            replay: self.replay.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            forbidden_xml: self.forbidden_xml.load(Ordering::Relaxed),
            bad_token: self.bad_token.load(Ordering::Relaxed),
            forbidden: self.forbidden.load(Ordering::Relaxed),
        }
    }

    /// Counts `event` and logs it (target `security`) with the client and a
    /// short reason that must not contain secrets or request content.
    pub fn report(&self, event: SecurityEvent, client: Option<IpAddr>, reason: &str) {
        let counter = match event {
            SecurityEvent::BadSignature => &self.bad_signature,
            SecurityEvent::Replay => &self.replay,
            SecurityEvent::RateLimited => &self.rate_limited,
            SecurityEvent::ForbiddenXml => &self.forbidden_xml,
            SecurityEvent::BadToken => &self.bad_token,
            SecurityEvent::Forbidden => &self.forbidden,
        };
        let total = counter.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::counter!(ferry_common::metrics::SECURITY_EVENTS, "kind" => event.name())
            .increment(1);
        if event == SecurityEvent::RateLimited {
            metrics::counter!(ferry_common::metrics::LIMITER_REJECTIONS, "limiter" => "ip")
                .increment(1);
        }
        // Every refusal is verified first (the limiter answers 429 only
        // after a failure), so any kind can come as a flood: each is logged
        // the first time and then once per RATE_LIMITED_LOG_EVERY.
        if total != 1 && total % RATE_LIMITED_LOG_EVERY != 0 {
            return;
        }
        let client = client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        tracing::warn!(
            target: "security",
            event = event.name(),
            client = %client,
            total,
            "refused: {reason}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_is_counted_on_its_own() {
        let counters = SecurityCounters::default();
        let ip = Some("203.0.113.9".parse().unwrap());
        counters.report(SecurityEvent::BadSignature, ip, "signature mismatch");
        counters.report(SecurityEvent::BadSignature, None, "msg_signature mismatch");
        counters.report(SecurityEvent::Replay, ip, "timestamp 3600 s off");
        for _ in 0..2500 {
            counters.report(SecurityEvent::RateLimited, ip, "over the limit");
        }
        assert_eq!(
            counters.counts(),
            SecurityCounts {
                bad_signature: 2,
                replay: 1,
                rate_limited: 2500,
                forbidden_xml: 0,
                bad_token: 0,
                forbidden: 0,
            }
        );
    }
}
