//! One minute's counts, as a process keeps them and as Redis stores them
//! (one hash per minute, [`crate::keys::Keys::history_minute`]):
//!
//! | field | what |
//! | --- | --- |
//! | `wechat:requests`, `wechat:errors` | `/wechat` requests, of them 5xx |
//! | `wechat:le:<bound>` | `/wechat` latencies per bucket (`HTTP_LATENCY_BUCKETS`, `+Inf`) |
//! | `queue:<q>:in` / `out` / `retried` / `dead` | jobs enqueued, completed, retried, dead-lettered |
//! | `provider:<p>:<outcome>` | calls by outcome (`success` or a failure class) |
//! | `provider:<p>:le:<bound>` | call latencies per bucket (`SLOW_LATENCY_BUCKETS`) |
//! | `alert:<rule>` | times the rule started firing |

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::buckets::{self, Buckets};
use crate::metrics::{HTTP_LATENCY_BUCKETS, SLOW_LATENCY_BUCKETS};

/// How a job's attempt ended, as the history counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Completed,
    Retried,
    Dead,
}

/// A queue's counts in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub jobs_in: u64,
    pub completed: u64,
    pub retried: u64,
    pub dead: u64,
}

/// A provider's calls in one minute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderCounts {
    pub outcomes: BTreeMap<String, u64>,
    pub latency: Buckets,
}

/// Everything counted in one minute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Minute {
    pub wechat_requests: u64,
    pub wechat_errors: u64,
    pub wechat_latency: Buckets,
    pub queues: HashMap<String, QueueCounts>,
    pub providers: HashMap<String, ProviderCounts>,
    pub alerts: HashMap<String, u64>,
}

impl Minute {
    pub fn wechat_request(&mut self, latency: Duration, server_error: bool) {
        self.wechat_requests += 1;
        self.wechat_errors += u64::from(server_error);
        self.wechat_latency.record(HTTP_LATENCY_BUCKETS, latency);
    }

    fn queue(&mut self, queue: &str) -> &mut QueueCounts {
        // No allocation once the queue has been seen this minute.
        if !self.queues.contains_key(queue) {
            self.queues.insert(queue.to_owned(), QueueCounts::default());
        }
        self.queues.get_mut(queue).expect("inserted above")
    }

    pub fn jobs_in(&mut self, queue: &str, n: u64) {
        self.queue(queue).jobs_in += n;
    }

    pub fn jobs_ended(&mut self, queue: &str, end: JobEnd, n: u64) {
        let q = self.queue(queue);
        match end {
            JobEnd::Completed => q.completed += n,
            JobEnd::Retried => q.retried += n,
            JobEnd::Dead => q.dead += n,
        }
    }

    pub fn provider_call(&mut self, provider: &str, outcome: &str, latency: Duration) {
        if !self.providers.contains_key(provider) {
            self.providers
                .insert(provider.to_owned(), ProviderCounts::default());
        }
        let p = self.providers.get_mut(provider).expect("inserted above");
        *p.outcomes.entry(outcome.to_owned()).or_default() += 1;
        p.latency.record(SLOW_LATENCY_BUCKETS, latency);
    }

    pub fn alert_fired(&mut self, rule: &str) {
        *self.alerts.entry(rule.to_owned()).or_default() += 1;
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: Minute) {
        self.wechat_requests += other.wechat_requests;
        self.wechat_errors += other.wechat_errors;
        self.wechat_latency.merge(&other.wechat_latency);
        for (name, c) in other.queues {
            let q = self.queues.entry(name).or_default();
            q.jobs_in += c.jobs_in;
            q.completed += c.completed;
            q.retried += c.retried;
            q.dead += c.dead;
        }
        for (name, c) in other.providers {
            let p = self.providers.entry(name).or_default();
            for (outcome, n) in c.outcomes {
                *p.outcomes.entry(outcome).or_default() += n;
            }
            p.latency.merge(&c.latency);
        }
        for (rule, n) in other.alerts {
            *self.alerts.entry(rule).or_default() += n;
        }
    }

    /// The hash fields to add (`HINCRBY`), zero counts left out.
    pub fn fields(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut push = |field: String, n: u64| {
            if n > 0 {
                out.push((field, n));
            }
        };
        push("wechat:requests".into(), self.wechat_requests);
        push("wechat:errors".into(), self.wechat_errors);
        for (i, n) in self.wechat_latency.nonzero() {
            push(
                format!("wechat:le:{}", buckets::label(HTTP_LATENCY_BUCKETS, i)),
                n,
            );
        }
        for (q, c) in &self.queues {
            push(format!("queue:{q}:in"), c.jobs_in);
            push(format!("queue:{q}:out"), c.completed);
            push(format!("queue:{q}:retried"), c.retried);
            push(format!("queue:{q}:dead"), c.dead);
        }
        for (p, c) in &self.providers {
            for (outcome, n) in &c.outcomes {
                push(format!("provider:{p}:{outcome}"), *n);
            }
            for (i, n) in c.latency.nonzero() {
                push(
                    format!(
                        "provider:{p}:le:{}",
                        buckets::label(SLOW_LATENCY_BUCKETS, i)
                    ),
                    n,
                );
            }
        }
        for (rule, n) in &self.alerts {
            push(format!("alert:{rule}"), *n);
        }
        out
    }

    /// A minute read back from its hash. Fields it does not know (written
    /// by a newer Ferry, or a bucket bound no longer used) are skipped.
    pub fn from_fields(fields: impl IntoIterator<Item = (String, u64)>) -> Self {
        let mut m = Minute::default();
        for (field, n) in fields {
            m.add_field(&field, n);
        }
        m
    }

    fn add_field(&mut self, field: &str, n: u64) {
        if let Some(rest) = field.strip_prefix("wechat:") {
            match rest {
                "requests" => self.wechat_requests += n,
                "errors" => self.wechat_errors += n,
                _ => {
                    if let Some(i) = rest
                        .strip_prefix("le:")
                        .and_then(|l| buckets::index_of(HTTP_LATENCY_BUCKETS, l))
                    {
                        self.wechat_latency.add_at(HTTP_LATENCY_BUCKETS, i, n);
                    }
                }
            }
        } else if let Some(rest) = field.strip_prefix("queue:") {
            let Some((queue, what)) = rest.rsplit_once(':') else {
                return;
            };
            let end = match what {
                "in" => {
                    self.jobs_in(queue, n);
                    return;
                }
                "out" => JobEnd::Completed,
                "retried" => JobEnd::Retried,
                "dead" => JobEnd::Dead,
                _ => return,
            };
            self.jobs_ended(queue, end, n);
        } else if let Some(rest) = field.strip_prefix("provider:") {
            let Some((head, last)) = rest.rsplit_once(':') else {
                return;
            };
            if let Some(provider) = head.strip_suffix(":le") {
                if let Some(i) = buckets::index_of(SLOW_LATENCY_BUCKETS, last) {
                    self.providers
                        .entry(provider.to_owned())
                        .or_default()
                        .latency
                        .add_at(SLOW_LATENCY_BUCKETS, i, n);
                }
            } else {
                *self
                    .providers
                    .entry(head.to_owned())
                    .or_default()
                    .outcomes
                    .entry(last.to_owned())
                    .or_default() += n;
            }
        } else if let Some(rule) = field.strip_prefix("alert:") {
            *self.alerts.entry(rule.to_owned()).or_default() += n;
        }
    }
}
