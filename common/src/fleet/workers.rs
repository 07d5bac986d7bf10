//! The registry of live workers: each worker beats every [`BEAT_EVERY`]; a
//! worker that stops beating disappears by itself (its record expires
//! [`WORKER_TTL`] after its last beat, by Redis's clock, and the next beat of
//! any worker prunes it from the index). A consumer of a queue whose record
//! has expired is a dead worker: its jobs are taken over (see
//! `worker/src/recoverer.rs`).

use std::collections::HashMap;
use std::time::Duration;

use redis::Pipeline;
use serde::Serialize;

use crate::store::{RedisError, Store};

/// How often a worker beats.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a worker counts as alive after its last beat: five beats, so a
/// beat delayed by a busy host or lost in a Redis blip never makes a live
/// worker look dead; a dead worker's jobs are taken over this long after
/// its last beat.
pub const WORKER_TTL: Duration = Duration::from_secs(5);

/// What a worker says about itself.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub queues: Vec<String>,
    pub concurrency: usize,
    /// Jobs in flight per queue.
    pub in_flight: Vec<(String, usize)>,
    pub started_at: String,
}

#[derive(Clone)]
pub struct WorkerRegistry {
    store: Store,
}

impl WorkerRegistry {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Records a heartbeat and prunes workers that stopped beating.
    pub async fn beat(&self, info: &WorkerInfo) -> Result<(), RedisError> {
        let mut conn = self.store.conn().await?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let key = self.store.keys().worker(&info.id);
        let mut pipe = Pipeline::new();
        pipe.atomic();
        pipe.cmd("DEL").arg(&key).ignore();
        let cmd = pipe.cmd("HSET").arg(&key);
        cmd.arg("host").arg(&info.host).arg("pid").arg(info.pid);
        cmd.arg("queues").arg(info.queues.join(","));
        cmd.arg("concurrency")
            .arg(info.concurrency)
            .arg("started_at")
            .arg(&info.started_at);
        for (queue, n) in &info.in_flight {
            cmd.arg(in_flight_field(queue)).arg(*n);
        }
        pipe.ignore();
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(WORKER_TTL.as_millis() as u64)
            .ignore();
        pipe.cmd("ZADD")
            .arg(self.store.keys().workers())
            .arg(now_ms)
            .arg(&info.id)
            .ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(self.store.keys().workers())
            .arg("-inf")
            .arg(now_ms - WORKER_TTL.as_millis() as i64)
            .ignore();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Removes a worker at shutdown.
    pub async fn remove(&self, id: &str) -> Result<(), RedisError> {
        let mut conn = self.store.conn().await?;
        let mut pipe = Pipeline::new();
        pipe.cmd("DEL").arg(self.store.keys().worker(id)).ignore();
        pipe.cmd("ZREM")
            .arg(self.store.keys().workers())
            .arg(id)
            .ignore();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Whether each of `ids` has beaten within [`WORKER_TTL`] (its record
    /// still exists), in order.
    pub async fn alive(&self, ids: &[&str]) -> Result<Vec<bool>, RedisError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.store.conn().await?;
        let mut pipe = Pipeline::new();
        for id in ids {
            pipe.cmd("EXISTS").arg(self.store.keys().worker(id));
        }
        let found: Vec<i64> = pipe.query_async(&mut conn).await?;
        Ok(found.into_iter().map(|n| n == 1).collect())
    }

    /// Jobs in flight per queue, summed over the live workers.
    pub async fn in_flight_by_queue(&self) -> Result<HashMap<String, u64>, RedisError> {
        let mut totals = HashMap::new();
        for (_, fields) in self.live().await? {
            for queue in crate::queue::QUEUES {
                if let Some(n) = fields
                    .get(&in_flight_field(queue))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    *totals.entry(queue.to_string()).or_default() += n;
                }
            }
        }
        Ok(totals)
    }

    /// Live workers' records (id -> fields).
    pub async fn live(&self) -> Result<Vec<(String, HashMap<String, String>)>, RedisError> {
        let mut conn = self.store.conn().await?;
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.store.keys().workers())
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::new();
        for id in ids {
            let fields: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(self.store.keys().worker(&id))
                .query_async(&mut conn)
                .await?;
            if !fields.is_empty() {
                out.push((id, fields));
            }
        }
        Ok(out)
    }
}

/// The registry field holding a worker's in-flight count for `queue`.
fn in_flight_field(queue: &str) -> String {
    format!("in_flight:{queue}")
}
