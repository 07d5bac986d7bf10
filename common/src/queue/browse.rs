//! Lists for the dashboard: the retries waiting for their due time and the
//! jobs workers hold right now (a stream's pending entries), oldest first.

use chrono::{DateTime, Utc};
use redis::Pipeline;
use redis::streams::{StreamPendingCountReply, StreamRangeReply};
use serde::Serialize;

use super::{JobQueue, QueueError};
use crate::job::from_millis;
use crate::keys::{CONSUMER_GROUP, Partition};

/// A job waiting for a retry.
#[derive(Debug, Clone, Serialize)]
pub struct Waiting {
    pub job_id: String,
    pub due_at: DateTime<Utc>,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// A job a worker holds (read, not yet acknowledged).
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub job_id: String,
    /// The worker (its consumer name).
    pub worker: String,
    /// Since the worker last read or renewed it.
    pub idle_secs: f64,
    pub deliveries: u64,
}

impl JobQueue {
    /// The next `count` retries of `queue` over all its partitions, soonest
    /// first.
    pub async fn retries(&self, queue: &str, count: usize) -> Result<Vec<Waiting>, QueueError> {
        let mut all = Vec::new();
        for partition in self.served_partitions(queue) {
            all.extend(self.partition_retries(&partition, count).await?);
        }
        all.sort_by_key(|w| w.due_at);
        all.truncate(count);
        Ok(all)
    }

    /// The first `count` jobs workers hold on `queue`, over all its
    /// partitions, longest idle first.
    pub async fn held(&self, queue: &str, count: usize) -> Result<Vec<Held>, QueueError> {
        let mut all = Vec::new();
        for partition in self.served_partitions(queue) {
            all.extend(self.partition_held(&partition, count).await?);
        }
        all.sort_by(|a, b| b.idle_secs.total_cmp(&a.idle_secs));
        all.truncate(count);
        Ok(all)
    }

    async fn partition_retries(
        &self,
        partition: &Partition,
        count: usize,
    ) -> Result<Vec<Waiting>, QueueError> {
        let q = self.keys().partition(partition);
        let mut conn = self.conn().await?;
        let due: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(q.delayed())
            .arg(0)
            .arg(count.max(1) as i64 - 1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let mut pipe = Pipeline::new();
        for (id, _) in &due {
            pipe.cmd("HMGET")
                .arg(q.job(id))
                .arg("attempts")
                .arg("last_error");
        }
        let fields: Vec<(Option<u32>, Option<String>)> = if due.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn).await?
        };
        Ok(due
            .into_iter()
            .zip(fields)
            .map(|((job_id, due_ms), (attempts, last_error))| Waiting {
                job_id,
                due_at: from_millis(due_ms as i64),
                attempts: attempts.unwrap_or(0),
                last_error,
            })
            .collect())
    }

    async fn partition_held(
        &self,
        partition: &Partition,
        count: usize,
    ) -> Result<Vec<Held>, QueueError> {
        let stream = self.keys().partition(partition).stream();
        let mut conn = self.conn().await?;
        let pending: StreamPendingCountReply = match redis::cmd("XPENDING")
            .arg(&stream)
            .arg(CONSUMER_GROUP)
            .arg("-")
            .arg("+")
            .arg(count.max(1))
            .query_async(&mut conn)
            .await
        {
            Ok(p) => p,
            Err(e) if e.code() == Some("NOGROUP") => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        if pending.ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = Pipeline::new();
        for p in &pending.ids {
            pipe.cmd("XRANGE").arg(&stream).arg(&p.id).arg(&p.id);
        }
        let entries: Vec<StreamRangeReply> = pipe.query_async(&mut conn).await?;
        Ok(pending
            .ids
            .into_iter()
            .zip(entries)
            .map(|(p, entry)| Held {
                job_id: entry
                    .ids
                    .first()
                    .and_then(|e| e.get::<String>("job"))
                    .unwrap_or_default(),
                worker: p.consumer,
                idle_secs: p.last_delivered_ms as f64 / 1000.0,
                deliveries: p.times_delivered as u64,
            })
            .collect())
    }
}
