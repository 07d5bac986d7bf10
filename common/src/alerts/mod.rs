//! Alerts at the checklist's thresholds, evaluated by Ferry itself, so a
//! deployment without Prometheus still hears about trouble.
//!
//! The api feeds every `/wechat` response into an [`AlertEvaluator`] (its
//! latency and whether it was a server error); once a second the evaluator
//! looks at the last minute ([`window`]) through the three [`rules`]. A rule
//! that starts to hold is logged once as firing, and once as resolved after
//! it has stopped holding for [`RESOLVE_AFTER`] (so a value hovering at the
//! threshold does not page every second), under the `alert` tracing target
//! with `alert = true`. `ferry_alerts_active{alert}` follows the same state,
//! and the last events are kept for the dashboard.
//!
//! Time comes from a [`Clock`], so tests drive it without sleeping.

pub mod log;
pub mod rules;
pub mod window;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use log::{AlertLog, LoggedAlert};
pub use rules::{Measure, Rule};
pub use window::{RollingWindow, Totals};

use crate::config::AlertThresholds;

/// The window the rules look at.
pub const WINDOW: Duration = Duration::from_secs(60);

/// How long a firing rule must have stopped holding before it resolves.
pub const RESOLVE_AFTER: Duration = Duration::from_secs(30);

/// Events kept for the dashboard.
const RECENT: usize = 50;

/// Milliseconds since the Unix epoch; injected so tests control time.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0)
    }
}

/// Whether an event starts or ends an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// A rule starting or stopping to fire.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    pub alert: Rule,
    pub state: AlertState,
    pub value: f64,
    pub threshold: f64,
    pub at: DateTime<Utc>,
}

/// A rule as it stands now (the dashboard, `/admin/api/overview`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleStatus {
    pub alert: Rule,
    pub summary: &'static str,
    pub firing: bool,
    pub since: Option<DateTime<Utc>>,
    /// The last reading, if the window held enough to judge.
    pub value: Option<f64>,
    pub threshold: f64,
}

#[derive(Default, Clone, Copy)]
struct RuleState {
    firing_since_ms: Option<u64>,
    clear_since_ms: Option<u64>,
    last: Option<Measure>,
}

struct Inner {
    window: RollingWindow,
    rules: [RuleState; 3],
    recent: VecDeque<AlertEvent>,
}

/// The api's own alerting: fed by the ingress, ticked once a second.
pub struct AlertEvaluator {
    thresholds: AlertThresholds,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

impl AlertEvaluator {
    pub fn new(thresholds: AlertThresholds, clock: Arc<dyn Clock>) -> Self {
        for rule in Rule::ALL {
            metrics::gauge!(crate::metrics::ALERTS_ACTIVE, "alert" => rule.name()).set(0.0);
        }
        Self {
            thresholds,
            clock,
            inner: Mutex::new(Inner {
                window: RollingWindow::new(WINDOW.as_secs() as usize),
                rules: [RuleState::default(); 3],
                recent: VecDeque::with_capacity(RECENT),
            }),
        }
    }

    pub fn thresholds(&self) -> &AlertThresholds {
        &self.thresholds
    }

    /// Counts one answered request.
    pub fn observe(&self, latency: Duration, server_error: bool) {
        let second = self.clock.now_ms() / 1000;
        let slow = latency > self.thresholds.response_time;
        self.lock().window.record(second, server_error, slow);
    }

    /// Looks at the window now; logs, and returns, what started or stopped
    /// firing.
    pub fn evaluate(&self) -> Vec<AlertEvent> {
        let now_ms = self.clock.now_ms();
        let mut inner = self.lock();
        let totals = inner.window.totals(now_ms / 1000);
        let mut events = Vec::new();
        for (i, rule) in Rule::ALL.into_iter().enumerate() {
            let measure = rule.measure(&totals, &self.thresholds, WINDOW);
            let state = &mut inner.rules[i];
            state.last = measure;
            let breached = measure.is_some_and(|m| m.breached);
            let event = |s: AlertState| AlertEvent {
                alert: rule,
                state: s,
                value: measure.map_or(0.0, |m| m.value),
                threshold: measure
                    .map_or_else(|| threshold(rule, &self.thresholds), |m| m.threshold),
                at: crate::job::from_millis(now_ms as i64),
            };
            match (state.firing_since_ms, breached) {
                (None, true) => {
                    state.firing_since_ms = Some(now_ms);
                    state.clear_since_ms = None;
                    events.push(event(AlertState::Firing));
                }
                (Some(_), true) => state.clear_since_ms = None,
                (Some(_), false) => {
                    let clear_since = *state.clear_since_ms.get_or_insert(now_ms);
                    if now_ms.saturating_sub(clear_since) >= RESOLVE_AFTER.as_millis() as u64 {
                        state.firing_since_ms = None;
                        state.clear_since_ms = None;
                        events.push(event(AlertState::Resolved));
                    }
                }
                (None, false) => {}
            }
        }
        for e in &events {
            report(e);
            if inner.recent.len() == RECENT {
                inner.recent.pop_front();
            }
            inner.recent.push_back(e.clone());
        }
        events
    }

    /// Every rule as it stands.
    pub fn status(&self) -> Vec<RuleStatus> {
        let inner = self.lock();
        Rule::ALL
            .into_iter()
            .zip(inner.rules.iter())
            .map(|(rule, s)| RuleStatus {
                alert: rule,
                summary: rule.summary(),
                firing: s.firing_since_ms.is_some(),
                since: s
                    .firing_since_ms
                    .map(|ms| crate::job::from_millis(ms as i64)),
                value: s.last.map(|m| m.value),
                threshold: s
                    .last
                    .map_or_else(|| threshold(rule, &self.thresholds), |m| m.threshold),
            })
            .collect()
    }

    /// The last events, newest first.
    pub fn recent(&self) -> Vec<AlertEvent> {
        self.lock().recent.iter().rev().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it cannot leave the counts inconsistent in a
        // way that matters for alerting: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn threshold(rule: Rule, th: &AlertThresholds) -> f64 {
    match rule {
        Rule::HighErrorRate => th.error_rate,
        Rule::SlowResponses => rules::SLOW_SHARE,
        Rule::HighRequestRate => f64::from(th.requests_per_minute),
    }
}

/// The log line and the gauge of one event: a firing alert is an error, a
/// resolved one a warning (tracing's level must be a constant, hence the
/// macro rather than a variable).
fn report(e: &AlertEvent) {
    let name = e.alert.name();
    macro_rules! line {
        ($level:expr, $state:literal) => {
            tracing::event!(
                target: "alert",
                $level,
                alert = true,
                name,
                state = $state,
                value = e.value,
                threshold = e.threshold,
                "alert {}: {} is {:.3} (threshold {})",
                $state,
                e.alert.summary(),
                e.value,
                e.threshold
            )
        };
    }
    let active = match e.state {
        AlertState::Firing => {
            line!(tracing::Level::ERROR, "firing");
            1.0
        }
        AlertState::Resolved => {
            line!(tracing::Level::WARN, "resolved");
            0.0
        }
    };
    metrics::gauge!(crate::metrics::ALERTS_ACTIVE, "alert" => name).set(active);
}

#[cfg(test)]
mod tests;
