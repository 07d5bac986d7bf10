//! The fleet's per-minute history in Redis: what the dashboard's charts
//! draw (issue 20). Every process counts what it sees in its own memory
//! ([`History`], one per [`crate::store::Store`]): the api `/wechat`
//! requests (latency, server errors) and the jobs it enqueues, the worker
//! the outcomes it records and the provider calls it makes, the api the
//! alerts its evaluator fires. A background task adds those counts to one
//! Redis hash per minute every few seconds ([`flush`]), with one pipelined
//! round trip of `HINCRBY`s, so recording costs a lock and an add, never a
//! Redis call. [`read`] merges the minutes of a window back into series.
//!
//! Latencies are counted in fixed buckets ([`buckets`]): several processes
//! add to the same minute, and percentiles cannot be averaged, but bucket
//! counts can be summed; the p95 is computed from the merged buckets when
//! reading.
//!
//! Time comes from a [`Clock`] (the alert evaluator's), so tests record
//! into chosen minutes without waiting.

pub mod buckets;
pub mod flush;
pub mod minute;
pub mod read;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::alerts::{Clock, SystemClock};
pub use minute::{JobEnd, Minute};
pub use read::{ProviderSeries, QueueSeries, Series, WechatSeries, Window};

/// Minutes a process keeps while Redis is away; older ones are dropped
/// (and counted in `ferry_history_dropped_minutes_total`) so an outage
/// cannot grow a process's memory.
pub const KEEP_PENDING_MINUTES: usize = 10;

/// How long a minute's hash lives in Redis: the 24 h window and an hour
/// more, so the oldest minute of a day's chart is still there.
pub const RETENTION: Duration = Duration::from_secs(25 * 3600);

/// How often a process adds its counts to Redis.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// One process's counts not yet added to Redis, by minute.
pub struct History {
    clock: Arc<dyn Clock>,
    pending: Mutex<BTreeMap<u64, Minute>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("pending_minutes", &self.lock().len())
            .finish()
    }
}

impl History {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            pending: Mutex::new(BTreeMap::new()),
        }
    }

    /// Minutes since the Unix epoch, now.
    pub fn now_minute(&self) -> u64 {
        self.clock.now_ms() / 60_000
    }

    /// One `/wechat` request answered after `latency` (Ferry's own part),
    /// `server_error` if it was a 5xx.
    pub fn wechat_request(&self, latency: Duration, server_error: bool) {
        self.with_minute(|m| m.wechat_request(latency, server_error));
    }

    /// `n` jobs newly enqueued on `queue`.
    pub fn jobs_in(&self, queue: &str, n: u64) {
        if n > 0 {
            self.with_minute(|m| m.jobs_in(queue, n));
        }
    }

    /// Outcomes recorded for jobs of `queue`.
    pub fn jobs_ended(&self, queue: &str, end: JobEnd, n: u64) {
        if n > 0 {
            self.with_minute(|m| m.jobs_ended(queue, end, n));
        }
    }

    /// One provider call that ended with `outcome` (`success` or a failure
    /// class) after `latency`.
    pub fn provider_call(&self, provider: &str, outcome: &str, latency: Duration) {
        self.with_minute(|m| m.provider_call(provider, outcome, latency));
    }

    /// An alert rule started to fire.
    pub fn alert_fired(&self, rule: &str) {
        self.with_minute(|m| m.alert_fired(rule));
    }

    fn with_minute(&self, f: impl FnOnce(&mut Minute)) {
        let minute = self.now_minute();
        let mut pending = self.lock();
        if !pending.contains_key(&minute) {
            // A new minute (once a minute at most): keep the map bounded
            // even in a process whose counts are never flushed.
            trim(&mut pending, KEEP_PENDING_MINUTES.saturating_sub(1));
        }
        f(pending.entry(minute).or_default());
    }

    /// Takes every pending minute (to be added to Redis).
    pub fn take(&self) -> BTreeMap<u64, Minute> {
        std::mem::take(&mut *self.lock())
    }

    /// Puts back minutes whose flush failed, adding them to what was
    /// counted meanwhile; beyond [`KEEP_PENDING_MINUTES`] the oldest are
    /// dropped and counted. Returns how many were dropped.
    pub fn restore(&self, taken: BTreeMap<u64, Minute>) -> usize {
        let mut pending = self.lock();
        for (minute, counts) in taken {
            pending.entry(minute).or_default().add(counts);
        }
        trim(&mut pending, KEEP_PENDING_MINUTES)
    }

    /// Whether nothing waits to be flushed.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Minute>> {
        // Counts stay usable after a panic elsewhere: keep going.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Drops the oldest minutes beyond `keep`; returns how many.
fn trim(pending: &mut BTreeMap<u64, Minute>, keep: usize) -> usize {
    let mut dropped = 0;
    while pending.len() > keep {
        pending.pop_first();
        dropped += 1;
    }
    if dropped > 0 {
        metrics::counter!(crate::metrics::HISTORY_DROPPED).increment(dropped as u64);
        tracing::warn!(
            dropped,
            "fleet history: Redis was away too long, dropped the oldest minutes of counts"
        );
    }
    dropped
}

#[cfg(test)]
mod tests;
