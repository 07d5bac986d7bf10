//! The fleet at a glance, read from Redis: queues (counts and lifetime
//! totals), live workers, breakers with their limits, and recent alerts.
//! The dashboard (`/admin`) and `ferry status` show the same [`Overview`].
//! Queue counts are summed over each queue's partitions (its `partitions`
//! field says how many); [`partitions`] reads one queue's partitions one
//! by one (the dashboard's `/admin/queues/{queue}/partitions`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::alerts::{AlertLog, LoggedAlert};
use crate::config::Config;
use crate::fleet::{BreakerView, Breakers, GateSettings, WorkerRegistry};
use crate::queue::inspect::{QueueStats, QueueTotals, sum_partitions};
use crate::queue::{JobQueue, QUEUES, QueueError};

/// Alert events shown.
const RECENT_ALERTS: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub at: DateTime<Utc>,
    pub queues: Vec<QueueView>,
    pub workers: Vec<WorkerView>,
    pub providers: Vec<ProviderView>,
    /// Alerts whose latest event (per api process) is `firing`.
    pub firing: Vec<LoggedAlert>,
    /// The latest alert events, newest first.
    pub recent_alerts: Vec<LoggedAlert>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    #[serde(flatten)]
    pub stats: QueueStats,
    #[serde(flatten)]
    pub totals: QueueTotals,
}

/// One queue's partitions, one row each, and their sum.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionsView {
    pub at: DateTime<Utc>,
    /// The queue's counts summed over its partitions (as in [`Overview`]).
    pub total: QueueStats,
    /// One row per partition, partition 0 (named as the queue) first, then
    /// `wechat:1`, `wechat:2`, ... Jobs in flight are known per queue only:
    /// they are all on partition 0's row.
    pub partitions: Vec<QueueStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub id: String,
    pub host: String,
    pub pid: String,
    pub queues: String,
    pub concurrency: u64,
    pub in_flight: u64,
    pub started_at: String,
}

/// A provider's breaker and fleet limits.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderView {
    #[serde(flatten)]
    pub breaker: BreakerView,
    pub in_flight: u64,
    /// 0: no limit.
    pub requests_per_minute: u32,
    pub tokens_per_minute: u32,
    pub max_concurrency: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum OverviewError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Gate(#[from] crate::fleet::provider_gate::GateError),
    #[error(transparent)]
    Redis(#[from] crate::store::RedisError),
}

/// The providers whose breakers and limits are shown, with their fleet
/// limits: the chain without the built-in echo provider.
pub fn gated_providers(config: &Config) -> Vec<(String, GateSettings)> {
    config
        .providers
        .iter()
        .filter(|p| p.name != crate::config::ECHO_PROVIDER)
        .map(|p| (p.name.clone(), config.gate(&p.name)))
        .collect()
}

/// Reads the overview; `providers` from [`gated_providers`].
pub async fn read(
    queue: &JobQueue,
    providers: &[(String, GateSettings)],
) -> Result<Overview, OverviewError> {
    let stats = queue.stats().await?;
    let mut queues = Vec::new();
    for s in stats {
        let totals = queue.totals(&s.queue).await?;
        queues.push(QueueView { stats: s, totals });
    }
    debug_assert!(queues.len() == QUEUES.len());
    let registry = WorkerRegistry::new(queue.store().clone());
    let workers = registry
        .live()
        .await?
        .into_iter()
        .map(|(id, f)| worker_view(id, &f))
        .collect();
    let breakers = Breakers::new(queue.store().clone());
    let chain: Vec<&str> = providers.iter().map(|(name, _)| name.as_str()).collect();
    let mut views = Vec::new();
    for (b, (_, gate)) in breakers.list(&chain).await?.into_iter().zip(providers) {
        views.push(ProviderView {
            in_flight: breakers.calls_in_flight(&b.provider).await?,
            requests_per_minute: gate.requests_per_minute,
            tokens_per_minute: gate.tokens_per_minute,
            max_concurrency: gate.max_concurrency,
            breaker: b,
        });
    }
    let log = AlertLog::new(queue.store().clone());
    Ok(Overview {
        at: Utc::now(),
        queues,
        workers,
        providers: views,
        firing: log.firing().await?,
        recent_alerts: log.recent(RECENT_ALERTS).await?,
    })
}

/// Reads `name`'s partitions (one reading of every partition's counts);
/// `None` if Ferry has no such queue.
pub async fn partitions(
    queue: &JobQueue,
    name: &str,
) -> Result<Option<PartitionsView>, OverviewError> {
    if !QUEUES.contains(&name) {
        return Ok(None);
    }
    let rows = queue.partition_stats().await?;
    let Some(total) = sum_partitions(&rows).into_iter().find(|s| s.queue == name) else {
        return Ok(None);
    };
    let partitions = rows
        .into_iter()
        .filter(|r| queue_of(&r.queue) == name)
        .collect();
    Ok(Some(PartitionsView {
        at: Utc::now(),
        total,
        partitions,
    }))
}

/// The queue of a partition's name (`wechat:3` -> `wechat`).
fn queue_of(partition_name: &str) -> &str {
    partition_name.split(':').next().unwrap_or(partition_name)
}

fn worker_view(id: String, f: &HashMap<String, String>) -> WorkerView {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let in_flight = f
        .iter()
        .filter(|(k, _)| k.starts_with("in_flight:"))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    WorkerView {
        host: get("host"),
        pid: get("pid"),
        queues: get("queues"),
        concurrency: get("concurrency").parse().unwrap_or(0),
        in_flight,
        started_at: get("started_at"),
        id,
    }
}
