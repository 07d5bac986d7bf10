//! A rolling window of per-second buckets: what the alert rules look at.
//!
//! Fixed memory (one bucket per second of the window), O(window) to total,
//! and no timers: a bucket is reused when its second comes round again, so
//! old seconds fall out of the totals by themselves.

/// Counts of one second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    second: u64,
    counts: Totals,
}

/// What the window holds, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with a server error.
    pub errors: u64,
    /// Requests slower than the response-time threshold.
    pub slow: u64,
}

/// The last `seconds` seconds of traffic.
#[derive(Debug, Clone)]
pub struct RollingWindow {
    buckets: Vec<Bucket>,
}

impl RollingWindow {
    /// A window of `seconds` one-second buckets (at least one).
    pub fn new(seconds: usize) -> Self {
        Self {
            buckets: vec![Bucket::default(); seconds.max(1)],
        }
    }

    /// Its length in seconds.
    pub fn seconds(&self) -> u64 {
        self.buckets.len() as u64
    }

    /// Counts one request answered at `second` (any monotonic second count).
    pub fn record(&mut self, second: u64, error: bool, slow: bool) {
        let len = self.buckets.len();
        let bucket = &mut self.buckets[(second % len as u64) as usize];
        if bucket.second != second {
            *bucket = Bucket {
                second,
                counts: Totals::default(),
            };
        }
        bucket.counts.requests += 1;
        bucket.counts.errors += u64::from(error);
        bucket.counts.slow += u64::from(slow);
    }

    /// The totals of the window ending at `now` (its last `seconds` seconds,
    /// `now` included).
    pub fn totals(&self, now: u64) -> Totals {
        let oldest = now.saturating_sub(self.seconds() - 1);
        self.buckets
            .iter()
            .filter(|b| b.second >= oldest && b.second <= now && b.counts.requests > 0)
            .fold(Totals::default(), |t, b| Totals {
                requests: t.requests + b.counts.requests,
                errors: t.errors + b.counts.errors,
                slow: t.slow + b.counts.slow,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_older_than_the_window_no_longer_count() {
        let mut w = RollingWindow::new(60);
        w.record(100, true, false);
        w.record(130, false, true);
        w.record(159, false, false);
        assert_eq!(
            w.totals(159),
            Totals {
                requests: 3,
                errors: 1,
                slow: 1
            }
        );
        assert_eq!(w.totals(160).requests, 2, "second 100 left the window");
        assert_eq!(w.totals(190).requests, 1);
        assert_eq!(w.totals(219).requests, 0);
    }

    #[test]
    fn a_bucket_is_reset_when_its_second_comes_round_again() {
        let mut w = RollingWindow::new(10);
        w.record(5, true, true);
        w.record(15, false, false);
        assert_eq!(
            w.totals(15),
            Totals {
                requests: 1,
                errors: 0,
                slow: 0
            }
        );
    }
}
