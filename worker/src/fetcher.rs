//! Gets work: reads new entries in batches, `wechat` before `batch`, only as
//! many as there are free slots, and starts them.
//!
//! Priority without starvation: WeChat entries are read first, but while
//! batch holds fewer than its reserved share of slots, that share is not
//! offered to WeChat. When both queues are empty the fetcher waits in one
//! blocking `XREADGROUP` over both streams on a connection of its own.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use ferry_common::Secret;
use ferry_common::connection;
use ferry_common::queue::{BATCH, Fetched, JobQueue, QueueError, WECHAT};

use crate::in_flight::InFlight;
use crate::outage::Outage;
use crate::processor::Processor;

pub struct Fetcher {
    pub queue: JobQueue,
    pub redis_url: Secret,
    pub worker_id: String,
    pub slots: Arc<Semaphore>,
    pub in_flight: InFlight,
    pub processor: Processor,
    pub batch_size: usize,
    pub block: Duration,
    /// Slots kept for batch while it has work.
    pub batch_reserved: usize,
    /// The queues this worker serves, in priority order.
    pub queues: Vec<&'static str>,
}

impl Fetcher {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut outage = Outage::new("fetcher");
        let mut conn = None;
        while !shutdown.is_cancelled() {
            // Wait for at least one free slot, then take what else is free.
            let permits = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = self.slots.clone().acquire_many_owned(1) => p.expect("slots are never closed"),
            };
            let permits = self.take_more(permits);
            if conn.is_none() {
                match connection::dedicated(&self.redis_url, self.block).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        drop(permits);
                        self.pause(&shutdown, outage.failed(&e)).await;
                        continue;
                    }
                }
            }
            let c = conn.as_mut().expect("connected above");
            match self.fetch_once(c, permits, &shutdown).await {
                Ok(()) => outage.ok(),
                Err(e) => {
                    conn = None;
                    self.pause(&shutdown, outage.failed(&e)).await;
                }
            }
        }
        tracing::info!("fetcher stopped");
    }

    fn take_more(&self, mut permits: OwnedSemaphorePermit) -> OwnedSemaphorePermit {
        let want = self
            .batch_size
            .saturating_sub(1)
            .min(self.slots.available_permits());
        if want > 0
            && let Ok(more) = self.slots.clone().try_acquire_many_owned(want as u32)
        {
            permits.merge(more);
        }
        permits
    }

    async fn pause(&self, shutdown: &CancellationToken, wait: Duration) {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }

    async fn fetch_once(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        mut permits: OwnedSemaphorePermit,
        shutdown: &CancellationToken,
    ) -> Result<(), QueueError> {
        let free = permits.num_permits();
        let serves = |q: &str| self.queues.contains(&q);
        let reserve = if serves(BATCH) {
            self.batch_reserved
                .saturating_sub(self.in_flight.count(BATCH))
                .min(free)
        } else {
            0
        };
        // The fast path: read and start in one call per queue, WeChat first.
        let mut deliveries = Vec::new();
        if serves(WECHAT) && free > reserve {
            deliveries = self
                .queue
                .fetch(conn, &self.worker_id, WECHAT, free - reserve)
                .await?;
        }
        if serves(BATCH) && deliveries.len() < free {
            let more = self
                .queue
                .fetch(conn, &self.worker_id, BATCH, free - deliveries.len())
                .await?;
            deliveries.extend(more);
        }
        if !deliveries.is_empty() {
            if permits.num_permits() > deliveries.len() {
                drop(permits.split(permits.num_permits() - deliveries.len()));
            }
            self.processor.dispatch(deliveries, permits);
            return Ok(());
        }
        // Nothing waiting: block until something arrives on any queue,
        // holding one slot only so the recoverer can use the others.
        if permits.num_permits() > 1 {
            drop(permits.split(permits.num_permits() - 1));
        }
        let fetched = self.read(conn, &self.queues, 1, Some(self.block)).await?;
        if fetched.is_empty() {
            return Ok(());
        }
        // A blocking read over several streams may return one per stream.
        while permits.num_permits() < fetched.len() {
            let more = tokio::select! {
                _ = shutdown.cancelled() => {
                    // Leave them pending: another worker takes them over.
                    return Ok(());
                }
                p = self.slots.clone().acquire_many_owned(1) => p.expect("slots are never closed"),
            };
            permits.merge(more);
        }
        if permits.num_permits() > fetched.len() {
            drop(permits.split(permits.num_permits() - fetched.len()));
        }
        let deliveries = self.queue.start(fetched, &self.worker_id).await?;
        // Stale entries were dropped by `start`: return their slots too.
        if permits.num_permits() > deliveries.len() {
            drop(permits.split(permits.num_permits() - deliveries.len()));
        }
        if !deliveries.is_empty() {
            self.processor.dispatch(deliveries, permits);
        }
        Ok(())
    }

    async fn read(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        queues: &[&str],
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Fetched>, QueueError> {
        self.queue
            .read_new(conn, &self.worker_id, queues, count, block)
            .await
    }
}
