//! What the reply path counts, for operators: parts WeChat accepted, every
//! errcode WeChat answered, calls that never got an answer, the fleet token's
//! fetches and invalidations, apologies and per-user limit notices.
//!
//! One [`ReplyCounters`] per worker process, shared (cheaply cloned) by the
//! customer-service client and the `wechat.reply` handler; counters only go
//! up. Each count is also recorded through the `metrics` facade (names in
//! `ferry_common::metrics`), which `/metrics` exports; the snapshot serves
//! tests and in-process readers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_common::metrics as names;
use serde::Serialize;

#[derive(Clone, Default)]
pub struct ReplyCounters {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    parts_sent: AtomicU64,
    errcodes: Mutex<BTreeMap<i64, u64>>,
    unanswered: AtomicU64,
    token_fetches: Arc<AtomicU64>,
    token_invalidations: AtomicU64,
    stale_token_failures: AtomicU64,
    apologies: AtomicU64,
    rate_limited: AtomicU64,
    limit_notices: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplyCountersSnapshot {
    /// Messages (answer parts, apologies, notices) WeChat accepted.
    pub parts_sent: u64,
    /// Non-zero errcodes WeChat answered to customer-service calls, by code.
    pub errcodes: BTreeMap<i64, u64>,
    /// Calls that got no usable answer (network, HTTP status, bad body).
    pub unanswered: u64,
    /// Access tokens this process fetched for the fleet.
    pub token_fetches: u64,
    /// Times this process dropped the fleet's token after WeChat refused it.
    pub token_invalidations: u64,
    /// Refusals of a token the fleet had already replaced (nothing dropped).
    pub stale_token_failures: u64,
    /// Apologies sent because the AI failed for good.
    pub apologies: u64,
    /// Messages over the per-user limit (not asked of the AI).
    pub rate_limited: u64,
    /// Notices sent to users over the limit.
    pub limit_notices: u64,
}

impl ReplyCounters {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter a `TokenCache` counts its fetches in
    /// (`TokenCache::counting_fetches_in`).
    pub fn token_fetch_counter(&self) -> Arc<AtomicU64> {
        self.inner.token_fetches.clone()
    }

    pub fn snapshot(&self) -> ReplyCountersSnapshot {
        let i = &*self.inner;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ReplyCountersSnapshot {
            parts_sent: get(&i.parts_sent),
            errcodes: i.errcodes.lock().expect("counters lock").clone(),
            unanswered: get(&i.unanswered),
            token_fetches: get(&i.token_fetches),
            token_invalidations: get(&i.token_invalidations),
            stale_token_failures: get(&i.stale_token_failures),
            apologies: get(&i.apologies),
            rate_limited: get(&i.rate_limited),
            limit_notices: get(&i.limit_notices),
        }
    }

    pub(crate) fn part_sent(&self) {
        bump(&self.inner.parts_sent);
        metrics::counter!(names::WECHAT_SENDS).increment(1);
    }

    pub(crate) fn errcode(&self, errcode: i64) {
        metrics::counter!(names::WECHAT_SEND_ERRORS, "errcode" => errcode.to_string()).increment(1);
        *self
            .inner
            .errcodes
            .lock()
            .expect("counters lock")
            .entry(errcode)
            .or_default() += 1;
    }

    pub(crate) fn unanswered(&self) {
        bump(&self.inner.unanswered);
        metrics::counter!(names::WECHAT_SEND_ERRORS, "errcode" => "none").increment(1);
    }

    /// After a token refusal: whether the cached token was dropped (else
    /// another process had already replaced it).
    pub(crate) fn token_refused(&self, dropped: bool) {
        if dropped {
            metrics::counter!(names::WECHAT_TOKEN_INVALIDATIONS).increment(1);
        }
        bump(if dropped {
            &self.inner.token_invalidations
        } else {
            &self.inner.stale_token_failures
        });
    }

    pub(crate) fn apology(&self) {
        bump(&self.inner.apologies);
        metrics::counter!(names::WECHAT_APOLOGIES).increment(1);
    }

    pub(crate) fn rate_limited(&self) {
        bump(&self.inner.rate_limited);
        metrics::counter!(names::LIMITER_REJECTIONS, "limiter" => "user").increment(1);
    }

    pub(crate) fn limit_notice(&self) {
        bump(&self.inner.limit_notices);
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_count_into_one_snapshot() {
        let counters = ReplyCounters::new();
        let other = counters.clone();
        counters.part_sent();
        other.part_sent();
        counters.errcode(45015);
        other.errcode(45015);
        other.errcode(-1);
        counters.token_refused(true);
        other.token_refused(false);
        counters
            .token_fetch_counter()
            .fetch_add(1, Ordering::Relaxed);
        let s = other.snapshot();
        assert_eq!(s.parts_sent, 2);
        assert_eq!(s.errcodes, BTreeMap::from([(-1, 1), (45015, 2)]));
        assert_eq!(
            (
                s.token_fetches,
                s.token_invalidations,
                s.stale_token_failures
            ),
            (1, 1, 1)
        );
    }
}
