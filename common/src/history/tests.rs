use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::*;

struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn at_minute(m: u64) -> (Arc<ManualClock>, History) {
    let clock = Arc::new(ManualClock(AtomicU64::new(m * 60_000)));
    let history = History::new(clock.clone());
    (clock, history)
}

#[test]
fn counts_go_to_the_minute_of_the_clock_and_read_back_from_their_fields() {
    let (clock, h) = at_minute(100);
    h.wechat_request(Duration::from_millis(30), false);
    h.wechat_request(Duration::from_secs(7), true);
    h.jobs_in("wechat", 2);
    h.jobs_ended("wechat", JobEnd::Completed, 1);
    h.jobs_ended("wechat", JobEnd::Dead, 1);
    h.provider_call("deepseek", "success", Duration::from_millis(800));
    clock.0.store(101 * 60_000 + 5, Ordering::SeqCst);
    h.alert_fired("high_error_rate");
    h.jobs_ended("batch", JobEnd::Retried, 3);

    let taken = h.take();
    assert!(h.is_empty());
    assert_eq!(taken.keys().copied().collect::<Vec<_>>(), vec![100, 101]);
    for m in taken.values() {
        assert_eq!(&Minute::from_fields(m.fields()), m, "round trip");
    }
    let first = &taken[&100];
    assert_eq!((first.wechat_requests, first.wechat_errors), (2, 1));
    assert_eq!(first.queues["wechat"].jobs_in, 2);
    assert_eq!(first.providers["deepseek"].outcomes["success"], 1);
    assert_eq!(taken[&101].alerts["high_error_rate"], 1);
    let mut fields = taken[&100].fields();
    fields.sort();
    assert!(fields.contains(&("wechat:le:0.05".into(), 1)), "{fields:?}");
    assert!(fields.contains(&("wechat:le:10".into(), 1)), "{fields:?}");
    assert!(fields.contains(&("provider:deepseek:le:1".into(), 1)));
    assert!(fields.contains(&("queue:wechat:dead".into(), 1)));
}

#[test]
fn a_failed_flush_is_added_to_what_came_since_and_only_the_newest_minutes_are_kept() {
    let (clock, h) = at_minute(0);
    h.jobs_in("wechat", 1);
    let failed = h.take();
    h.jobs_in("wechat", 2);
    assert_eq!(h.restore(failed), 0);
    assert_eq!(h.take()[&0].queues["wechat"].jobs_in, 3);

    // Redis away for 15 minutes: the oldest 5 are dropped.
    let mut kept = std::collections::BTreeMap::new();
    for m in 0..15 {
        clock.0.store(m * 60_000, Ordering::SeqCst);
        h.wechat_request(Duration::from_millis(1), false);
        let mut taken = h.take();
        kept.append(&mut taken);
        let failed = std::mem::take(&mut kept);
        h.restore(failed);
        kept = h.take();
    }
    assert_eq!(kept.len(), KEEP_PENDING_MINUTES);
    assert_eq!(kept.keys().next(), Some(&5));
}

#[test]
fn missing_minutes_are_zeros_and_the_ratio_and_p95_are_computed_per_minute() {
    let mut busy = Minute::default();
    for i in 0..100 {
        busy.wechat_request(Duration::from_millis(80), i < 10);
    }
    let minutes = vec![Minute::default(), busy, Minute::default()];
    let s = read::series(7, &minutes);
    assert_eq!(s.first_minute, 7);
    assert_eq!(s.wechat.requests, vec![0, 100, 0]);
    assert_eq!(s.wechat.error_ratio, vec![0.0, 0.1, 0.0]);
    // All in (0.05, 0.1]: the 95th of 100 is 95 % into it.
    assert!(
        (s.wechat.p95_secs[1] - 0.0975).abs() < 1e-9,
        "{:?}",
        s.wechat.p95_secs
    );
    assert_eq!(s.wechat.p95_secs[0], 0.0);
}
