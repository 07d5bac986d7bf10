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
fn alert_lines(f: impl FnOnce()) -> Vec<(tracing::Level, Option<bool>, String)> {
    use std::sync::Mutex;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    type Seen = Arc<Mutex<Vec<(tracing::Level, Option<bool>, String)>>>;
    struct Capture(Seen);
    #[derive(Default)]
    struct Fields(Option<bool>, String);
    impl Visit for Fields {
        fn record_bool(&mut self, field: &Field, value: bool) {
            if field.name() == "alert" {
                self.0 = Some(value);
            }
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "state" {
                self.1 = value.to_owned();
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }
    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            if event.metadata().target() == "alert" {
                let mut fields = Fields::default();
                event.record(&mut fields);
                let level = *event.metadata().level();
                self.0.lock().unwrap().push((level, fields.0, fields.1));
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
    let seen = Seen::default();
    tracing::subscriber::with_default(Capture(seen.clone()), f);
    seen.lock().unwrap().clone()
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
            (tracing::Level::ERROR, Some(true), "firing".to_owned()),
            (tracing::Level::WARN, Some(true), "resolved".to_owned()),
        ]
    );
}
