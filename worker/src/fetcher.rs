//! Gets work: reads new entries in batches, `wechat` before `batch`, only as
//! many as there are free slots, and starts them.
//!
//! Priority without starvation: WeChat entries are read first, but while
//! batch holds fewer than its reserved share of slots, that share is not
//! offered to WeChat. A queue split into partitions is read from a
//! different partition first on every round, so none starves; the
//! priority holds across partitions (every `wechat` partition is offered
//! the slots before any `batch` one).
//!
//! When nothing is waiting the fetcher waits for a new entry without
//! reading it ([`JobQueue::wait_for_new`]) on connections of its own: one
//! for every partition on a cluster (a blocking read names keys of one
//! slot only), one for all on one Redis. A wait cut short leaves nothing
//! pending, so the fetcher holds no slot while it waits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use ferry_common::connection::{self, Dedicated};
use ferry_common::job::Delivery;
use ferry_common::keys::Partition;
use ferry_common::queue::{BATCH, JobQueue, QueueError, WECHAT};

use crate::in_flight::InFlight;
use crate::outage::Outage;
use crate::processor::Processor;

pub struct Fetcher {
    pub queue: JobQueue,
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

/// The fetcher's waiting connections: one per partition on a cluster, one
/// for all on one Redis (the key `None`).
type Waiters = HashMap<Option<Partition>, Dedicated>;

impl Fetcher {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut outage = Outage::new("fetcher");
        let mut conn: Option<Dedicated> = None;
        let mut waiters = Waiters::new();
        // Which partition of each queue is offered the slots first.
        let mut round = 0usize;
        while !shutdown.is_cancelled() {
            // Wait for at least one free slot, then take what else is free.
            let permits = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = self.slots.clone().acquire_many_owned(1) => p.expect("slots are never closed"),
            };
            let permits = self.take_more(permits);
            if conn.is_none() {
                match connection::dedicated(self.queue.store().target(), Duration::ZERO).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        drop(permits);
                        self.pause(&shutdown, outage.failed(&e)).await;
                        continue;
                    }
                }
            }
            let c = conn.as_mut().expect("connected above");
            round = round.wrapping_add(1);
            match self.fetch_once(c, permits, round).await {
                Ok(true) => outage.ok(),
                Ok(false) => {
                    outage.ok();
                    if let Err(e) = self.wait(&mut waiters, &shutdown).await {
                        waiters.clear();
                        self.pause(&shutdown, outage.failed(&e)).await;
                    }
                }
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

    /// One round: reads and starts up to the free slots' worth of jobs,
    /// WeChat first. Answers whether it found any (the permits not used are
    /// returned).
    async fn fetch_once(
        &self,
        conn: &mut Dedicated,
        mut permits: OwnedSemaphorePermit,
        round: usize,
    ) -> Result<bool, QueueError> {
        let free = permits.num_permits();
        let serves = |q: &str| self.queues.contains(&q);
        let reserve = if serves(BATCH) {
            self.batch_reserved
                .saturating_sub(self.in_flight.count(BATCH))
                .min(free)
        } else {
            0
        };
        // Traces on only: the round's timing for each job's `fetch` span.
        let started = ferry_common::telemetry::traces::on().then(SystemTime::now);
        // The fast path: read and start in one call per partition.
        let mut deliveries = Vec::new();
        let offered = if serves(WECHAT) { free - reserve } else { 0 };
        if offered > 0 {
            self.fetch_queue(conn, WECHAT, offered, round, &mut deliveries)
                .await?;
        }
        // WeChat took all it was offered: it may have more.
        let wechat_has_more = offered > 0 && deliveries.len() == offered;
        if serves(BATCH) && deliveries.len() < free {
            self.fetch_queue(conn, BATCH, free, round, &mut deliveries)
                .await?;
        }
        // Batch left part of its share unused: offer it to WeChat, unless
        // WeChat already came back with less than it was offered (one
        // round trip saved on every round of a worker that is not full).
        if serves(WECHAT)
            && reserve > 0
            && deliveries.len() < free
            && (offered == 0 || wechat_has_more)
        {
            self.fetch_queue(conn, WECHAT, free, round, &mut deliveries)
                .await?;
        }
        if deliveries.is_empty() {
            return Ok(false);
        }
        if permits.num_permits() > deliveries.len() {
            drop(permits.split(permits.num_permits() - deliveries.len()));
        }
        let fetched = started.map(|from| (from, SystemTime::now()));
        self.processor.dispatch(deliveries, permits, fetched);
        Ok(true)
    }

    /// Fills `deliveries` up to `up_to` from `queue`'s partitions, starting
    /// at a different one each round.
    async fn fetch_queue(
        &self,
        conn: &mut Dedicated,
        queue: &str,
        up_to: usize,
        round: usize,
        deliveries: &mut Vec<Delivery>,
    ) -> Result<(), QueueError> {
        let partitions = self.queue.served_partitions(queue);
        let n = partitions.len();
        for i in 0..n {
            let want = up_to.saturating_sub(deliveries.len());
            if want == 0 {
                break;
            }
            let partition = &partitions[(round + i) % n];
            let got = self
                .queue
                .fetch(conn, &self.worker_id, partition, want)
                .await?;
            deliveries.extend(got);
        }
        Ok(())
    }

    /// Waits until a new entry arrives in any partition served, for at most
    /// the block time (or until shutdown).
    async fn wait(
        &self,
        waiters: &mut Waiters,
        shutdown: &CancellationToken,
    ) -> Result<(), QueueError> {
        let partitions: Vec<Partition> = self
            .queues
            .iter()
            .flat_map(|q| self.queue.served_partitions(q))
            .collect();
        let target = self.queue.store().target();
        let groups: Vec<(Option<Partition>, Vec<Partition>)> = if target.is_cluster() {
            partitions
                .into_iter()
                .map(|p| (Some(p.clone()), vec![p]))
                .collect()
        } else {
            vec![(None, partitions)]
        };
        for (key, _) in &groups {
            if !waiters.contains_key(key) {
                let c = connection::dedicated(target, self.block)
                    .await
                    .map_err(|e| QueueError::Redis(e.into_redis()))?;
                waiters.insert(key.clone(), c);
            }
        }
        let mut waits: FuturesUnordered<_> = groups
            .into_iter()
            .map(|(key, partitions)| {
                let mut conn = waiters[&key].clone();
                async move {
                    self.queue
                        .wait_for_new(&mut conn, &partitions, self.block)
                        .await
                }
            })
            .collect();
        tokio::select! {
            _ = shutdown.cancelled() => Ok(()),
            woke = async {
                while let Some(result) = waits.next().await {
                    if result? {
                        break;
                    }
                }
                Ok(())
            } => woke,
        }
    }
}
