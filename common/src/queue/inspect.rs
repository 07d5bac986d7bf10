//! What operators look at: per-queue counts, job records, and the
//! dead-letter stream (list, show, replay, purge).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use redis::Pipeline;
use redis::streams::StreamRangeReply;
use serde::Serialize;

use super::{JobQueue, QUEUES, QueueError};
use crate::functions::{fcall, run};
use crate::job::{JobId, JobRecord, JobState, from_millis};
use crate::keys::{CONSUMER_GROUP, Partition};

/// One queue at a glance (`ferry queues`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueStats {
    /// The queue (a sum over its partitions) or one partition (`wechat:3`).
    pub queue: String,
    /// How many partitions the row covers.
    pub partitions: u16,
    /// Entries not yet read by any worker.
    pub depth: u64,
    /// Entries read and not yet acknowledged (in flight or abandoned).
    pub pending: u64,
    /// Jobs live workers report working on.
    pub in_flight: u64,
    /// Retries waiting for their due time.
    pub delayed: u64,
    /// Entries in the dead-letter stream.
    pub dead: u64,
    /// Age of the oldest entry still in the stream.
    pub oldest_age_secs: Option<f64>,
}

/// A queue's lifetime counters, kept by Redis itself (`XINFO`): two
/// readings a few seconds apart give fleet-wide rates (the dashboard).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
pub struct QueueTotals {
    /// Entries ever added to the stream (enqueues, promoted retries,
    /// hand-backs).
    pub added: u64,
    /// Entries the consumer group has read.
    pub delivered: u64,
}

/// One dead-letter entry.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The partition whose dead-letter stream holds it.
    #[serde(skip)]
    pub partition: Partition,
    /// The dead-letter stream's entry id (`<ms>-<seq>`).
    pub entry_id: String,
    pub job_id: String,
    pub reason: String,
    pub dead_at: DateTime<Utc>,
}

/// Milliseconds part of a stream entry id (`<ms>-<seq>`).
fn entry_millis(entry_id: &str) -> i64 {
    entry_id
        .split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

impl JobQueue {
    /// Counts for every queue, its partitions summed.
    pub async fn stats(&self) -> Result<Vec<QueueStats>, QueueError> {
        Ok(sum_partitions(&self.partition_stats().await?))
    }

    /// Counts for every partition of every queue, one row each (named
    /// `wechat`, `wechat:1`, ...). Jobs in flight are known per queue only
    /// (the workers' registry): each queue's count is on its partition 0.
    pub async fn partition_stats(&self) -> Result<Vec<QueueStats>, QueueError> {
        let mut conn = self.conn().await?;
        let in_flight = crate::fleet::WorkerRegistry::new(self.store.clone())
            .in_flight_by_queue()
            .await?;
        let (now_s, now_us): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let now_ms = now_s * 1000 + now_us / 1000;
        let mut out = Vec::new();
        for partition in self.all_served_partitions() {
            let q = self.keys().partition(&partition);
            let mut pipe = Pipeline::new();
            pipe.cmd("XLEN").arg(q.stream());
            pipe.cmd("XPENDING").arg(q.stream()).arg(CONSUMER_GROUP);
            pipe.cmd("ZCARD").arg(q.delayed());
            pipe.cmd("XLEN").arg(q.dead());
            pipe.cmd("XRANGE")
                .arg(q.stream())
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1);
            let (len, pending, delayed, dead, oldest): (
                u64,
                redis::Value,
                u64,
                u64,
                StreamRangeReply,
            ) = match pipe.query_async(&mut conn).await {
                Ok(v) => v,
                // No group yet: the schema was never applied here.
                Err(e) if e.code() == Some("NOGROUP") => {
                    (0, redis::Value::Nil, 0, 0, StreamRangeReply::default())
                }
                Err(e) => return Err(e.into()),
            };
            let pending = match pending {
                redis::Value::Array(items) => items
                    .first()
                    .and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok())
                    .unwrap_or(0),
                _ => 0,
            };
            let in_flight = match partition.index {
                0 => in_flight.get(&partition.queue).copied().unwrap_or(0),
                _ => 0,
            };
            out.push(QueueStats {
                queue: partition.name(),
                partitions: 1,
                depth: len.saturating_sub(pending),
                pending,
                in_flight,
                delayed,
                dead,
                oldest_age_secs: oldest
                    .ids
                    .first()
                    .map(|e| (now_ms - entry_millis(&e.id)).max(0) as f64 / 1000.0),
            });
        }
        Ok(out)
    }

    /// Lifetime counters of `queue`, its partitions summed (zero before
    /// the first enqueue).
    pub async fn totals(&self, queue: &str) -> Result<QueueTotals, QueueError> {
        let mut sum = QueueTotals::default();
        for partition in self.served_partitions(queue) {
            let t = self.partition_totals(&partition).await?;
            sum.added += t.added;
            sum.delivered += t.delivered;
        }
        Ok(sum)
    }

    async fn partition_totals(&self, partition: &Partition) -> Result<QueueTotals, QueueError> {
        let mut conn = self.conn().await?;
        let stream = self.keys().partition(partition).stream();
        let info: HashMap<String, redis::Value> = match redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&stream)
            .query_async(&mut conn)
            .await
        {
            Ok(info) => info,
            // "ERR no such key": nothing was ever enqueued here.
            Err(e) if e.code() == Some("ERR") => return Ok(QueueTotals::default()),
            Err(e) => return Err(e.into()),
        };
        let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&stream)
            .query_async(&mut conn)
            .await?;
        let number = |v: Option<&redis::Value>| {
            v.and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok())
                .unwrap_or(0)
        };
        let delivered = groups
            .iter()
            .find(|g| {
                g.get("name")
                    .and_then(|n| redis::from_redis_value::<String>(n.clone()).ok())
                    .as_deref()
                    == Some(CONSUMER_GROUP)
            })
            .map_or(0, |g| number(g.get("entries-read")));
        Ok(QueueTotals {
            added: number(info.get("entries-added")),
            delivered,
        })
    }

    /// One dead letter by its entry id in one of `queue`'s partitions, if
    /// it is still there.
    pub async fn dead_letter(
        &self,
        queue: &str,
        entry_id: &str,
    ) -> Result<Option<DeadLetter>, QueueError> {
        let mut conn = self.conn().await?;
        for partition in self.served_partitions(queue) {
            let range: StreamRangeReply = redis::cmd("XRANGE")
                .arg(self.keys().partition(&partition).dead())
                .arg(entry_id)
                .arg(entry_id)
                .query_async(&mut conn)
                .await?;
            if let Some(e) = range.ids.into_iter().next() {
                return Ok(Some(letter(&partition, e)));
            }
        }
        Ok(None)
    }

    /// A job's record, or `None` if it is gone (expired after retention).
    pub async fn job(&self, id: &JobId) -> Result<Option<JobRecord>, QueueError> {
        let mut conn = self.conn().await?;
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys_of(id).job(&id.to_string()))
            .query_async(&mut conn)
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse_record(id, &fields).map(Some)
    }

    /// The oldest `count` dead letters of a queue, over all its partitions.
    pub async fn dead_letters(
        &self,
        queue: &str,
        count: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let mut conn = self.conn().await?;
        let mut all = Vec::new();
        for partition in self.served_partitions(queue) {
            let range: StreamRangeReply = redis::cmd("XRANGE")
                .arg(self.keys().partition(&partition).dead())
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(count)
                .query_async(&mut conn)
                .await?;
            all.extend(range.ids.into_iter().map(|e| letter(&partition, e)));
        }
        all.sort_by_key(|l| (l.dead_at, l.entry_id.clone()));
        all.truncate(count);
        Ok(all)
    }

    /// Puts dead-lettered jobs back on their streams with fresh attempts.
    pub async fn replay(&self, letters: &[DeadLetter]) -> Result<usize, QueueError> {
        if letters.is_empty() {
            return Ok(0);
        }
        let mut pipe = Pipeline::new();
        for l in letters {
            let q = self.keys().partition(&l.partition);
            fcall(
                &mut pipe,
                "ferry_replay",
                &[&q.dead(), &q.stream(), &q.job(&l.job_id)],
            )
            .arg(&l.entry_id);
        }
        let mut conn = self.conn().await?;
        let replayed: Vec<i32> = run(&mut conn, &pipe).await?;
        Ok(replayed.into_iter().filter(|r| *r == 1).count())
    }

    /// Deletes dead letters and their job records for good.
    pub async fn purge(&self, letters: &[DeadLetter]) -> Result<usize, QueueError> {
        if letters.is_empty() {
            return Ok(0);
        }
        let mut pipe = Pipeline::new();
        for l in letters {
            let q = self.keys().partition(&l.partition);
            pipe.cmd("XDEL").arg(q.dead()).arg(&l.entry_id);
            pipe.cmd("DEL").arg(q.job(&l.job_id)).ignore();
        }
        let mut conn = self.conn().await?;
        let deleted: Vec<i32> = pipe.query_async(&mut conn).await?;
        Ok(deleted.into_iter().filter(|d| *d == 1).count())
    }
}

/// Per-queue sums of [`JobQueue::partition_stats`]' rows.
pub fn sum_partitions(rows: &[QueueStats]) -> Vec<QueueStats> {
    QUEUES
        .iter()
        .map(|queue| {
            let mut sum = QueueStats {
                queue: queue.to_string(),
                partitions: 0,
                depth: 0,
                pending: 0,
                in_flight: 0,
                delayed: 0,
                dead: 0,
                oldest_age_secs: None,
            };
            for row in rows.iter().filter(|r| queue_of(&r.queue) == *queue) {
                sum.partitions += 1;
                sum.depth += row.depth;
                sum.pending += row.pending;
                sum.in_flight += row.in_flight;
                sum.delayed += row.delayed;
                sum.dead += row.dead;
                sum.oldest_age_secs = match (sum.oldest_age_secs, row.oldest_age_secs) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            }
            sum
        })
        .collect()
}

/// A dead-letter stream entry of `partition`.
fn letter(partition: &Partition, e: redis::streams::StreamId) -> DeadLetter {
    DeadLetter {
        partition: partition.clone(),
        job_id: e.get("job").unwrap_or_default(),
        reason: e.get("reason").unwrap_or_default(),
        dead_at: from_millis(entry_millis(&e.id)),
        entry_id: e.id,
    }
}

/// The queue of a partition's name (`wechat:3` -> `wechat`).
fn queue_of(partition_name: &str) -> &str {
    partition_name.split(':').next().unwrap_or(partition_name)
}

pub(super) fn parse_record(
    id: &JobId,
    f: &HashMap<String, String>,
) -> Result<JobRecord, QueueError> {
    let corrupt = |reason: String| QueueError::Corrupt {
        id: id.to_string(),
        reason,
    };
    let num = |name: &str| f.get(name).and_then(|v| v.parse::<i64>().ok());
    let time = |name: &str| num(name).map(from_millis);
    let json = |name: &str| {
        f.get(name)
            .map(|v| serde_json::from_str(v).unwrap_or(serde_json::Value::String(v.clone())))
    };
    Ok(JobRecord {
        id: id.clone(),
        kind: f.get("kind").cloned().unwrap_or_default(),
        payload: json("payload").unwrap_or_default(),
        state: f
            .get("state")
            .map(|s| s.parse::<JobState>())
            .transpose()
            .map_err(corrupt)?
            .ok_or_else(|| corrupt("no state".into()))?,
        attempts: num("attempts").unwrap_or(0) as u32,
        max_attempts: num("max_attempts").unwrap_or(0) as u32,
        created_at: time("created_ms").unwrap_or_default(),
        // A queued job's record has no `updated_ms` yet: its creation.
        updated_at: time("updated_ms")
            .or_else(|| time("created_ms"))
            .unwrap_or_default(),
        started_at: time("started_ms"),
        finished_at: time("finished_ms"),
        due_at: time("due_ms"),
        last_error: f.get("last_error").cloned(),
        result: json("result"),
        worker: f.get("worker").cloned(),
    })
}
