//! The checklist's three alert rules, as pure functions of a window's
//! totals. `deploy/prometheus/ferry-alerts.yml` states the same rules in
//! PromQL; keep the two in step.

use std::time::Duration;

use serde::Serialize;

use super::window::Totals;
use crate::config::AlertThresholds;

/// Fewer requests than this in the window say nothing about a ratio (one
/// failure in two requests is not a 50 % error rate worth waking someone).
pub const MIN_REQUESTS: u64 = 20;

/// Share of requests allowed above the response-time threshold: the rule
/// is "the 95th percentile is above the threshold".
pub const SLOW_SHARE: f64 = 0.05;

/// One of the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// `API_ERROR_RATE_THRESHOLD`: server errors / requests.
    HighErrorRate,
    /// `RESPONSE_TIME_THRESHOLD`: p95 latency above it.
    SlowResponses,
    /// `RATE_LIMIT_THRESHOLD`: requests per minute above it.
    HighRequestRate,
}

impl Rule {
    pub const ALL: [Rule; 3] = [
        Rule::HighErrorRate,
        Rule::SlowResponses,
        Rule::HighRequestRate,
    ];

    /// The `alert` label and log field.
    pub fn name(self) -> &'static str {
        match self {
            Rule::HighErrorRate => "high_error_rate",
            Rule::SlowResponses => "slow_responses",
            Rule::HighRequestRate => "high_request_rate",
        }
    }

    /// What it means, for the log line and the dashboard.
    pub fn summary(self) -> &'static str {
        match self {
            Rule::HighErrorRate => "share of requests answered with a server error",
            Rule::SlowResponses => {
                "share of responses slower than RESPONSE_TIME_THRESHOLD (over 5 %: p95 above it)"
            }
            Rule::HighRequestRate => "requests per minute",
        }
    }

    /// The measured value and the threshold, when the window holds enough
    /// to judge; `None` when it does not (the rule cannot fire).
    pub fn measure(self, t: &Totals, th: &AlertThresholds, window: Duration) -> Option<Measure> {
        match self {
            Rule::HighErrorRate => (t.requests >= MIN_REQUESTS).then(|| {
                let value = t.errors as f64 / t.requests as f64;
                Measure {
                    value,
                    threshold: th.error_rate,
                    breached: value > th.error_rate,
                }
            }),
            // The value shown is the share of slow requests compared with
            // 5 %: exactly "p95 > threshold", without storing latencies.
            Rule::SlowResponses => (t.requests >= MIN_REQUESTS).then(|| {
                let value = t.slow as f64 / t.requests as f64;
                Measure {
                    value,
                    threshold: SLOW_SHARE,
                    breached: value > SLOW_SHARE,
                }
            }),
            Rule::HighRequestRate => (th.requests_per_minute > 0).then(|| {
                let per_minute = t.requests as f64 * 60.0 / window.as_secs_f64().max(1.0);
                Measure {
                    value: per_minute,
                    threshold: f64::from(th.requests_per_minute),
                    breached: per_minute > f64::from(th.requests_per_minute),
                }
            }),
        }
    }
}

/// A rule's reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measure {
    pub value: f64,
    pub threshold: f64,
    pub breached: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th() -> AlertThresholds {
        AlertThresholds {
            error_rate: 0.05,
            response_time: Duration::from_secs(5),
            requests_per_minute: 100,
        }
    }

    fn totals(requests: u64, errors: u64, slow: u64) -> Totals {
        Totals {
            requests,
            errors,
            slow,
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn error_rate_needs_enough_requests_and_a_ratio_above_the_threshold() {
        let r = Rule::HighErrorRate;
        assert_eq!(r.measure(&totals(10, 10, 0), &th(), MINUTE), None);
        assert!(
            !r.measure(&totals(100, 5, 0), &th(), MINUTE)
                .unwrap()
                .breached
        );
        assert!(
            r.measure(&totals(100, 6, 0), &th(), MINUTE)
                .unwrap()
                .breached
        );
    }

    #[test]
    fn slow_responses_fire_when_more_than_five_percent_are_slow() {
        let r = Rule::SlowResponses;
        assert!(
            !r.measure(&totals(100, 0, 5), &th(), MINUTE)
                .unwrap()
                .breached
        );
        assert!(
            r.measure(&totals(100, 0, 6), &th(), MINUTE)
                .unwrap()
                .breached
        );
    }

    #[test]
    fn request_rate_compares_requests_per_minute_and_zero_turns_it_off() {
        let r = Rule::HighRequestRate;
        assert!(
            !r.measure(&totals(100, 0, 0), &th(), MINUTE)
                .unwrap()
                .breached
        );
        assert!(
            r.measure(&totals(101, 0, 0), &th(), MINUTE)
                .unwrap()
                .breached
        );
        let off = AlertThresholds {
            requests_per_minute: 0,
            ..th()
        };
        assert_eq!(r.measure(&totals(1000, 0, 0), &off, MINUTE), None);
    }
}
