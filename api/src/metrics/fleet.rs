//! Gauges of the fleet, read from Redis when `/metrics` is scraped: queue
//! counts (`JobQueue::stats`, the numbers `ferry queues` shows), breaker
//! states and live workers. Reading on scrape keeps them as fresh as the
//! scrape and costs nothing between scrapes; a Redis that does not answer
//! within [`READ_TIMEOUT`] leaves the last values and sets
//! `ferry_redis_up 0`.

use std::time::Duration;

use ferry_common::fleet::{Breakers, WorkerRegistry};
use ferry_common::metrics as names;
use ferry_common::queue::JobQueue;
use ferry_common::queue::inspect::sum_partitions;

/// A scrape never waits longer than this for Redis.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Sets the fleet gauges from Redis.
pub async fn refresh(queue: &JobQueue, providers: &[String]) {
    let read = async {
        let rows = queue.partition_stats().await.map_err(|e| e.to_string())?;
        let chain: Vec<&str> = providers.iter().map(String::as_str).collect();
        let breakers = Breakers::new(queue.store().clone())
            .list(&chain)
            .await
            .map_err(|e| e.to_string())?;
        let workers = WorkerRegistry::new(queue.store().clone())
            .live()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((rows, breakers, workers.len()))
    };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok((rows, breakers, workers))) => {
            metrics::gauge!(names::REDIS_UP).set(1.0);
            for row in &rows {
                let (queue, partition) = match row.queue.split_once(':') {
                    Some((q, p)) => (q.to_owned(), p.to_owned()),
                    None => (row.queue.clone(), "0".to_owned()),
                };
                let labels = [("queue", queue), ("partition", partition)];
                metrics::gauge!(names::PARTITION_DEPTH, &labels).set(row.depth as f64);
                metrics::gauge!(names::PARTITION_PENDING, &labels).set(row.pending as f64);
            }
            for s in sum_partitions(&rows) {
                let q = s.queue;
                let set = |name: &'static str, v: f64| {
                    metrics::gauge!(name, "queue" => q.clone()).set(v);
                };
                set(names::QUEUE_DEPTH, s.depth as f64);
                set(names::QUEUE_PENDING, s.pending as f64);
                set(names::QUEUE_IN_FLIGHT, s.in_flight as f64);
                set(names::QUEUE_DELAYED, s.delayed as f64);
                set(names::QUEUE_DEAD, s.dead as f64);
                set(names::QUEUE_OLDEST_AGE, s.oldest_age_secs.unwrap_or(0.0));
            }
            for b in breakers {
                metrics::gauge!(names::BREAKER_STATE, "provider" => b.provider)
                    .set(names::breaker_state_value(&b.state));
            }
            metrics::gauge!(names::WORKERS_LIVE).set(workers as f64);
        }
        Ok(Err(e)) => {
            metrics::gauge!(names::REDIS_UP).set(0.0);
            tracing::debug!(error = %e, "metrics: could not read the fleet's state from Redis");
        }
        Err(_) => {
            metrics::gauge!(names::REDIS_UP).set(0.0);
            tracing::debug!("metrics: Redis did not answer in time");
        }
    }
}
