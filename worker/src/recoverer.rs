//! Takes over work whose worker vanished, two ways:
//!
//! - A dead worker, told from a slow one by the heartbeat registry: every
//!   second, the consumers of each group that have not read or
//!   claimed for [`WORKER_TTL`] and whose registry record has expired (no
//!   beat for [`WORKER_TTL`]) have their entries claimed here, and are then
//!   removed from the group, so it does not grow with every restart. A live
//!   worker beats however slow its jobs are, so its work is never taken.
//!   This worker judges others only after reaching Redis for [`WORKER_TTL`]
//!   without a break: after an outage everyone's beats have lapsed, and
//!   every live worker beats again well within that time.
//! - The backstop: entries idle past the visibility timeout (their lease was
//!   not renewed, e.g. a live worker cut off from Redis, or a consumer the
//!   registry does not know) are claimed with `XAUTOCLAIM`.
//!
//! Either way entries delivered too often go to the dead-letter stream, and
//! only as many are claimed as this worker has free slots.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use ferry_common::fleet::WorkerRegistry;
use ferry_common::fleet::workers::{BEAT_EVERY, WORKER_TTL};
use ferry_common::keys::Partition;
use ferry_common::metrics as names;
use ferry_common::queue::recovery::Reclaimed;
use ferry_common::queue::{self, JobQueue, QueueError};

use crate::heartbeat::Reachability;
use crate::in_flight::InFlight;
use crate::outage::{AfterFailure, MAX_BACKOFF, Pace, Pass, repeat};
use crate::processor::Processor;

/// How often the consumers are checked for dead workers.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A dead worker's entry is claimed only once idle this long, so two
/// workers taking over at once never both get it (a claim resets it).
const MIN_IDLE: Duration = BEAT_EVERY.saturating_mul(2);
/// How long a take-over waits for slots on a busy worker before it takes
/// what is free: a dead worker's jobs are the oldest messages, so they go
/// before new ones (the slots are handed out in order).
const SLOT_WAIT: Duration = Duration::from_secs(2);

pub struct Recoverer {
    pub queue: JobQueue,
    pub registry: WorkerRegistry,
    pub reachability: Reachability,
    pub worker_id: String,
    pub slots: Arc<Semaphore>,
    /// The number of slots (the worker's concurrency).
    pub concurrency: usize,
    pub processor: Processor,
    /// What this worker holds, to tell its own lost entries from its work.
    pub in_flight: InFlight,
    pub visibility_timeout: Duration,
    pub max_deliveries: u32,
    pub queues: Vec<&'static str>,
}

/// The recoverer with the time its backstop is next due.
struct Passes {
    recoverer: Recoverer,
    backstop_due: tokio::time::Instant,
    backstop_every: Duration,
}

impl Pass for Passes {
    type Error = QueueError;
    /// Dead workers' jobs (once Redis has answered this worker for a
    /// heartbeat's lifetime), and the backstop when it is due.
    async fn pass(&mut self) -> Result<(), QueueError> {
        let r = &self.recoverer;
        let passed = async {
            // Partitions a larger count once wrote to stay served (the
            // fetcher and the promoter read the same marks).
            r.queue.refresh_partitions().await?;
            let partitions: Vec<Partition> = r
                .queues
                .iter()
                .flat_map(|q| r.queue.served_partitions(q))
                .collect();
            if r.reachability.unbroken_for() >= WORKER_TTL {
                for p in &partitions {
                    r.take_over_dead(p).await?;
                }
            }
            if tokio::time::Instant::now() >= self.backstop_due {
                self.backstop_due = tokio::time::Instant::now() + self.backstop_every;
                for p in &partitions {
                    r.reclaim_expired(p).await?;
                }
            }
            Ok(())
        }
        .await;
        if passed.is_err() {
            r.reachability.failed();
        }
        passed
    }
}

/// Why a job changed hands, for `ferry_jobs_taken_over_total`.
#[derive(Clone, Copy)]
enum Why {
    WorkerGone,
    LeaseExpired,
    LostFetch,
}

impl Why {
    fn label(self) -> &'static str {
        match self {
            Why::WorkerGone => "worker_gone",
            Why::LeaseExpired => "lease_expired",
            Why::LostFetch => "lost_fetch",
        }
    }
}

impl Recoverer {
    pub async fn run(self, shutdown: CancellationToken) {
        let backstop_every = (self.visibility_timeout / 2)
            .clamp(Duration::from_millis(200), Duration::from_secs(15));
        let pace = Pace {
            every: CHECK_EVERY.min(backstop_every),
            after_failure: AfterFailure::Backoff { cap: MAX_BACKOFF },
        };
        let passes = Passes {
            backstop_due: tokio::time::Instant::now() + backstop_every,
            backstop_every,
            recoverer: self,
        };
        repeat("recoverer", pace, &shutdown, passes).await
    }

    /// Claims the entries of a partition's consumers whose worker is gone,
    /// and removes those consumers from the group once they hold nothing.
    async fn take_over_dead(&self, partition: &Partition) -> Result<(), QueueError> {
        let queue = queue::label(&partition.queue);
        let consumers = self.queue.consumers(partition).await?;
        if consumers
            .iter()
            .any(|c| c.name == self.worker_id && c.pending > self.in_flight.count_in(partition))
        {
            self.take_back_orphans(partition).await?;
        }
        let silent: Vec<_> = consumers
            .into_iter()
            .filter(|c| c.name != self.worker_id && c.idle >= WORKER_TTL)
            .collect();
        if silent.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = silent.iter().map(|c| c.name.as_str()).collect();
        let alive = self
            .registry
            .alive(&names)
            .await
            .map_err(QueueError::Redis)?;
        for (consumer, alive) in silent.iter().zip(alive) {
            if alive {
                continue;
            }
            let mut left = consumer.pending;
            if left > 0 {
                let Some(permits) = self.slots_first(left).await else {
                    return Ok(());
                };
                let reclaimed = self
                    .queue
                    .take_over(
                        &self.worker_id,
                        &consumer.name,
                        partition,
                        MIN_IDLE,
                        self.max_deliveries,
                        permits.num_permits(),
                    )
                    .await?;
                left = left.saturating_sub(reclaimed.fetched.len() + reclaimed.dead_lettered);
                if !reclaimed.fetched.is_empty() {
                    tracing::warn!(partition = %partition.name(), dead_worker = %consumer.name, count = reclaimed.fetched.len(), "took over the jobs of a worker that stopped beating");
                }
                self.run_claimed(queue, Why::WorkerGone, reclaimed, permits)
                    .await?;
            }
            if left == 0
                && self
                    .queue
                    .forget_consumer(partition, &consumer.name)
                    .await?
            {
                tracing::debug!(partition = %partition.name(), consumer = %consumer.name, "removed a dead worker from the consumer group");
            }
        }
        Ok(())
    }

    /// Entries pending under this worker that it does not hold (a fetch
    /// whose reply was lost), back to work now rather than at the visibility
    /// timeout.
    async fn take_back_orphans(&self, partition: &Partition) -> Result<(), QueueError> {
        let Some(permits) = self.free_slots(256) else {
            return Ok(());
        };
        let reclaimed = self
            .queue
            .take_back_orphans(
                &self.worker_id,
                partition,
                MIN_IDLE,
                self.max_deliveries,
                permits.num_permits(),
                |entry| self.in_flight.holds(partition, entry),
            )
            .await?;
        if !reclaimed.fetched.is_empty() {
            tracing::warn!(partition = %partition.name(), count = reclaimed.fetched.len(), "took back entries read for this worker whose fetch reply was lost");
        }
        self.run_claimed(
            queue::label(&partition.queue),
            Why::LostFetch,
            reclaimed,
            permits,
        )
        .await
    }

    /// The backstop: entries idle past the visibility timeout.
    async fn reclaim_expired(&self, partition: &Partition) -> Result<(), QueueError> {
        let queue = queue::label(&partition.queue);
        let Some(permits) = self.free_slots(256) else {
            return Ok(());
        };
        let reclaimed = self
            .queue
            .reclaim(
                &self.worker_id,
                partition,
                self.visibility_timeout,
                self.max_deliveries,
                permits.num_permits(),
            )
            .await?;
        if !reclaimed.fetched.is_empty() {
            tracing::warn!(
                partition = %partition.name(),
                count = reclaimed.fetched.len(),
                "took over jobs whose lease expired"
            );
        }
        self.run_claimed(queue, Why::LeaseExpired, reclaimed, permits)
            .await
    }

    /// Up to `most` slots, waiting a moment for them ahead of the fetcher;
    /// else what is free (`None` when the worker stays full).
    async fn slots_first(&self, most: usize) -> Option<OwnedSemaphorePermit> {
        let want = most.min(self.concurrency).max(1) as u32;
        match tokio::time::timeout(SLOT_WAIT, self.slots.clone().acquire_many_owned(want)).await {
            Ok(Ok(permits)) => Some(permits),
            _ => self.free_slots(most),
        }
    }

    /// Up to `most` of this worker's free slots; `None` when it is full.
    fn free_slots(&self, most: usize) -> Option<OwnedSemaphorePermit> {
        let free = self.slots.available_permits().min(most);
        if free == 0 {
            return None;
        }
        self.slots.clone().try_acquire_many_owned(free as u32).ok()
    }

    /// Starts what was claimed on the slots taken for it (the rest freed).
    async fn run_claimed(
        &self,
        queue: &'static str,
        why: Why,
        reclaimed: Reclaimed,
        mut permits: OwnedSemaphorePermit,
    ) -> Result<(), QueueError> {
        if reclaimed.fetched.is_empty() {
            return Ok(());
        }
        metrics::counter!(names::JOBS_TAKEN_OVER, "queue" => queue, "reason" => why.label())
            .increment(reclaimed.fetched.len() as u64);
        let deliveries = self.queue.start(reclaimed.fetched, &self.worker_id).await?;
        if permits.num_permits() > deliveries.len() {
            drop(permits.split(permits.num_permits() - deliveries.len()));
        }
        if !deliveries.is_empty() {
            self.processor.dispatch(deliveries, permits, None);
        }
        Ok(())
    }
}
