//! The alert log lines, captured with a subscriber of their own. Alone in
//! this test binary on purpose: tracing caches each callsite's interest
//! process-wide, and a test logging from the same callsites on another
//! thread without a subscriber can leave that cache saying "never" while
//! this one listens (seen as a missing `resolved` line in the lib tests).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_common::alerts::{AlertEvaluator, Clock};
use ferry_common::config::AlertThresholds;
use ferry_tests::log_capture::CapturedLogs;

struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One second at `ok` good requests and `errors` server errors, then an
/// evaluation, then the clock moves on.
fn second(e: &AlertEvaluator, clock: &ManualClock, ok: u32, errors: u32) {
    for _ in 0..ok {
        e.observe(Duration::from_millis(20), false);
    }
    for _ in 0..errors {
        e.observe(Duration::from_millis(20), true);
    }
    e.evaluate();
    clock.0.fetch_add(1000, Ordering::SeqCst);
}

/// The `alert`-target events one closure logs: (level, `alert`, `state`).
fn alert_lines(f: impl FnOnce()) -> Vec<(String, Option<bool>, String)> {
    let ((), logs) = CapturedLogs::during(f);
    logs.events()
        .into_iter()
        .filter(|e| e["target"] == "alert")
        .map(|e| {
            (
                e["level"].as_str().unwrap_or_default().to_owned(),
                e["fields"]["alert"].as_bool(),
                e["fields"]["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn firing_and_resolving_are_each_logged_once_under_the_alert_target() {
    let clock = Arc::new(ManualClock(AtomicU64::new(1_700_000_000_000)));
    let thresholds = AlertThresholds {
        error_rate: 0.05,
        response_time: Duration::from_secs(5),
        requests_per_minute: 100,
    };
    let e = AlertEvaluator::new(thresholds, clock.clone());
    let lines = alert_lines(|| {
        for _ in 0..30 {
            second(&e, &clock, 4, 0);
        }
        for _ in 0..120 {
            second(&e, &clock, 0, 0);
        }
    });
    assert_eq!(
        lines,
        vec![
            ("ERROR".to_owned(), Some(true), "firing".to_owned()),
            ("WARN".to_owned(), Some(true), "resolved".to_owned()),
        ]
    );
}
