//! The evaluator driven by a clock the test moves: no sleeps.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

#[derive(Default)]
struct ManualClock(AtomicU64);

impl ManualClock {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn evaluator() -> (AlertEvaluator, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock(AtomicU64::new(1_700_000_000_000)));
    let thresholds = AlertThresholds {
        error_rate: 0.05,
        response_time: Duration::from_secs(5),
        requests_per_minute: 100,
    };
    (AlertEvaluator::new(thresholds, clock.clone()), clock)
}

const FAST: Duration = Duration::from_millis(20);

/// One second of traffic: `ok` good requests and `errors` server errors.
fn second(e: &AlertEvaluator, clock: &ManualClock, ok: u32, errors: u32) -> Vec<AlertEvent> {
    for _ in 0..ok {
        e.observe(FAST, false);
    }
    for _ in 0..errors {
        e.observe(FAST, true);
    }
    let events = e.evaluate();
    clock.advance(Duration::from_secs(1));
    events
}

fn states(events: &[AlertEvent]) -> Vec<(Rule, AlertState)> {
    events.iter().map(|e| (e.alert, e.state)).collect()
}

#[test]
fn an_error_rate_above_the_threshold_fires_once_and_resolves_once() {
    let (e, clock) = evaluator();
    let mut all = Vec::new();
    // A minute at 10 % errors, one request a second (60/min: no rate alert).
    for i in 0..60 {
        all.extend(second(
            &e,
            &clock,
            u32::from(i % 10 != 0),
            u32::from(i % 10 == 0),
        ));
    }
    assert_eq!(
        states(&all),
        vec![(Rule::HighErrorRate, AlertState::Firing)],
        "fires once, not every tick"
    );
    assert!(e.status()[0].firing);
    // Healthy again: the window drains, then RESOLVE_AFTER passes.
    let mut later = Vec::new();
    for _ in 0..120 {
        later.extend(second(&e, &clock, 1, 0));
    }
    assert_eq!(
        states(&later),
        vec![(Rule::HighErrorRate, AlertState::Resolved)]
    );
    assert_eq!(e.recent().len(), 2);
    assert_eq!(e.recent()[0].state, AlertState::Resolved, "newest first");
}

#[test]
fn too_few_requests_never_fire_the_error_rate() {
    let (e, clock) = evaluator();
    let mut all = Vec::new();
    for _ in 0..10 {
        all.extend(second(&e, &clock, 0, 1));
    }
    assert!(all.is_empty(), "{all:?}");
}

#[test]
fn slow_responses_fire_when_the_95th_percentile_is_over_the_threshold() {
    let (e, clock) = evaluator();
    for _ in 0..40 {
        e.observe(FAST, false);
    }
    for _ in 0..5 {
        e.observe(Duration::from_secs(6), false);
    }
    assert_eq!(
        states(&e.evaluate()),
        vec![(Rule::SlowResponses, AlertState::Firing)]
    );
    clock.advance(Duration::from_secs(1));
    assert!(e.evaluate().is_empty());
}

#[test]
fn more_requests_a_minute_than_the_threshold_fire_the_rate_alert() {
    let (e, clock) = evaluator();
    let mut all = Vec::new();
    for _ in 0..30 {
        all.extend(second(&e, &clock, 4, 0));
    }
    assert_eq!(
        states(&all),
        vec![(Rule::HighRequestRate, AlertState::Firing)],
        "120 a minute over 100"
    );
    let fired = &all[0];
    assert!(fired.value > 100.0 && fired.threshold == 100.0);
}

#[test]
fn a_value_dipping_under_the_threshold_briefly_does_not_resolve() {
    let (e, clock) = evaluator();
    for _ in 0..30 {
        second(&e, &clock, 4, 0);
    }
    assert!(e.status()[2].firing);
    // Ten quiet seconds: still over 100 in the last minute, then under it
    // for less than RESOLVE_AFTER.
    let mut events = Vec::new();
    for _ in 0..20 {
        events.extend(second(&e, &clock, 0, 0));
    }
    assert!(events.is_empty(), "{events:?}");
    assert!(e.status()[2].firing);
}
