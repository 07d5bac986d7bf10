//! Which partitions of each queue are served: every partition new jobs go
//! to (`FERRY_QUEUE_PARTITIONS`) and every partition a larger count ever
//! wrote to, so lowering the count strands nothing: workers keep draining
//! the partitions no longer written to.
//!
//! The highest count each queue ever had is kept in Redis
//! (`Keys::partitions_seen`, raised with `ZADD GT` by every process that
//! starts with a larger count, and by `ferry migrate`).

use std::collections::HashMap;

use redis::aio::ConnectionLike;

use super::{JobQueue, QUEUES, QueueError};
use crate::keys::{Keys, MAX_PARTITIONS, Partition};

/// Records this process's partition counts (raising the fleet's high-water
/// marks only) and reads the marks back: queue -> most partitions ever.
pub async fn record_and_read<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
) -> Result<HashMap<String, u16>, redis::RedisError> {
    let key = keys.partitions_seen();
    let mut pipe = redis::pipe();
    for queue in QUEUES {
        pipe.cmd("ZADD")
            .arg(&key)
            .arg("GT")
            .arg(keys.partitions().count(queue))
            .arg(*queue)
            .ignore();
    }
    pipe.cmd("ZRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES");
    let (seen,): (Vec<(String, f64)>,) = pipe.query_async(conn).await?;
    Ok(seen
        .into_iter()
        .map(|(queue, n)| (queue, (n as u16).clamp(1, MAX_PARTITIONS)))
        .collect())
}

/// The partitions of `queue` to serve: up to the larger of the configured
/// count and the recorded high-water mark.
pub fn served(keys: &Keys, seen: &HashMap<String, u16>, queue: &str) -> Vec<Partition> {
    let n = keys
        .partitions()
        .count(queue)
        .max(seen.get(queue).copied().unwrap_or(1));
    (0..n).map(|i| Partition::new(queue, i)).collect()
}

impl JobQueue {
    /// Every partition of `queue` to drain, as last read from Redis
    /// ([`JobQueue::refresh_partitions`]); before the first read, the
    /// configured ones.
    pub fn served_partitions(&self, queue: &str) -> Vec<Partition> {
        let seen = self.seen.read().expect("partition marks lock");
        served(self.keys(), &seen, queue)
    }

    /// Every partition of every queue to drain, queues in priority order.
    pub fn all_served_partitions(&self) -> Vec<Partition> {
        QUEUES
            .iter()
            .flat_map(|q| self.served_partitions(q))
            .collect()
    }

    /// Records this process's counts and reads the fleet's high-water marks
    /// (workers call it at start and then every few seconds).
    pub async fn refresh_partitions(&self) -> Result<(), QueueError> {
        let mut conn = self.conn().await?;
        let seen = record_and_read(&mut conn, self.keys()).await?;
        *self.seen.write().expect("partition marks lock") = seen;
        Ok(())
    }
}
