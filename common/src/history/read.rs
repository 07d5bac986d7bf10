//! Reading a window of the fleet's history: one pipeline of `HGETALL`s (one
//! per minute, all in the `history` slot), merged into series of one point
//! per minute. A minute nobody wrote is zeros; p95s come from the summed
//! buckets of every process, error ratios from the summed counts.

use std::collections::{BTreeMap, HashMap};

use redis::Pipeline;
use serde::Serialize;

use super::Minute;
use crate::metrics::{HTTP_LATENCY_BUCKETS, SLOW_LATENCY_BUCKETS};
use crate::store::{RedisError, Store};

/// The windows the dashboard draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Window {
    Hour,
    Day,
}

impl Window {
    pub fn minutes(self) -> usize {
        match self {
            Window::Hour => 60,
            Window::Day => 1440,
        }
    }

    /// `1h` or `24h` (the `?window=` values).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "1h" => Some(Window::Hour),
            "24h" => Some(Window::Day),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "24h",
        }
    }
}

/// `/wechat` per minute.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WechatSeries {
    pub requests: Vec<u64>,
    pub errors: Vec<u64>,
    /// Server errors / requests (0 in a minute without requests).
    pub error_ratio: Vec<f64>,
    /// Seconds (0 in a minute without requests).
    pub p95_secs: Vec<f64>,
}

/// One queue per minute.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueSeries {
    pub jobs_in: Vec<u64>,
    pub completed: Vec<u64>,
    /// Retried + dead-lettered.
    pub failures: Vec<u64>,
    pub dead: Vec<u64>,
}

/// One provider per minute.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProviderSeries {
    /// Calls by outcome (`success`, failure classes).
    pub outcomes: BTreeMap<String, Vec<u64>>,
    /// Seconds (0 in a minute without calls).
    pub p95_secs: Vec<f64>,
}

/// A window of history, one point per minute, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Series {
    /// The first point's minute (minutes since the Unix epoch, UTC).
    pub first_minute: u64,
    pub minutes: usize,
    pub wechat: WechatSeries,
    pub queues: BTreeMap<String, QueueSeries>,
    pub providers: BTreeMap<String, ProviderSeries>,
    /// Times each rule started firing.
    pub alerts: BTreeMap<String, Vec<u64>>,
}

/// The `minutes` minutes up to and including `now_minute`.
pub async fn read(store: &Store, now_minute: u64, minutes: usize) -> Result<Series, RedisError> {
    let first = now_minute.saturating_sub(minutes.saturating_sub(1) as u64);
    let mut pipe = Pipeline::new();
    for m in first..=now_minute {
        pipe.cmd("HGETALL").arg(store.keys().history_minute(m));
    }
    let mut conn = store.conn().await?;
    let hashes: Vec<HashMap<String, u64>> = pipe.query_async(&mut conn).await?;
    let read: Vec<Minute> = hashes.into_iter().map(Minute::from_fields).collect();
    Ok(series(first, &read))
}

/// The series of consecutive minutes starting at `first_minute`.
pub fn series(first_minute: u64, minutes: &[Minute]) -> Series {
    let n = minutes.len();
    let mut s = Series {
        first_minute,
        minutes: n,
        ..Series::default()
    };
    let w = &mut s.wechat;
    for m in minutes {
        w.requests.push(m.wechat_requests);
        w.errors.push(m.wechat_errors);
        w.error_ratio.push(if m.wechat_requests == 0 {
            0.0
        } else {
            m.wechat_errors as f64 / m.wechat_requests as f64
        });
        w.p95_secs.push(
            m.wechat_latency
                .quantile(HTTP_LATENCY_BUCKETS, 0.95)
                .unwrap_or(0.0),
        );
    }
    for (i, m) in minutes.iter().enumerate() {
        for (name, c) in &m.queues {
            let q = s.queues.entry(name.clone()).or_insert_with(|| QueueSeries {
                jobs_in: vec![0; n],
                completed: vec![0; n],
                failures: vec![0; n],
                dead: vec![0; n],
            });
            q.jobs_in[i] += c.jobs_in;
            q.completed[i] += c.completed;
            q.failures[i] += c.retried + c.dead;
            q.dead[i] += c.dead;
        }
        for (name, c) in &m.providers {
            let p = s
                .providers
                .entry(name.clone())
                .or_insert_with(|| ProviderSeries {
                    outcomes: BTreeMap::new(),
                    p95_secs: vec![0.0; n],
                });
            for (outcome, count) in &c.outcomes {
                p.outcomes
                    .entry(outcome.clone())
                    .or_insert_with(|| vec![0; n])[i] += count;
            }
            p.p95_secs[i] = c
                .latency
                .quantile(SLOW_LATENCY_BUCKETS, 0.95)
                .unwrap_or(0.0);
        }
        for (rule, count) in &m.alerts {
            s.alerts.entry(rule.clone()).or_insert_with(|| vec![0; n])[i] += count;
        }
    }
    s
}
