//! Starts a worker's tasks and supervises its shutdown.
//!
//! On shutdown (SIGTERM/SIGINT, or the token passed in): stop fetching and
//! taking over, let in-flight jobs finish within the grace period while
//! their leases are still renewed, hand back whatever is left so another
//! worker starts it at once, leave the registry, and return.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use ferry_common::config::QueueConfig;
use ferry_common::fleet::{WorkerInfo, WorkerRegistry};
use ferry_common::host::hostname;
use ferry_common::queue::{BATCH, JobQueue, QUEUES};

use crate::fetcher::Fetcher;
use crate::handler::Handlers;
use crate::heartbeat::Reachability;
use crate::in_flight::InFlight;
use crate::job_notes::NoteBook;
use crate::job_retry::RetryPolicy;
use crate::processor::Processor;
use crate::recoverer::Recoverer;
use crate::{acker, heartbeat, lease, promoter};

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub fetch_batch: usize,
    pub fetch_block: Duration,
    pub visibility_timeout: Duration,
    pub max_deliveries: u32,
    pub shutdown_grace: Duration,
    pub batch_min_share: f64,
    /// Queues served, in priority order.
    pub queues: Vec<&'static str>,
    pub retry: RetryPolicy,
    /// With `FERRY_DURABLE_ACK=replica`: how long a note of a side effect
    /// (an answer obtained, a part sent) waits for one replica, so a
    /// failover does not lose it and repeat the side effect. `None`: the
    /// primary's word is enough.
    pub replica_wait: Option<Duration>,
}

impl WorkerSettings {
    pub fn from_config(q: &QueueConfig) -> Self {
        Self {
            concurrency: q.concurrency,
            fetch_batch: q.fetch_batch,
            fetch_block: q.fetch_block,
            visibility_timeout: q.visibility_timeout,
            max_deliveries: q.max_deliveries,
            shutdown_grace: q.shutdown_grace,
            batch_min_share: q.batch_min_share,
            queues: QUEUES.to_vec(),
            retry: RetryPolicy::default(),
            replica_wait: None,
        }
    }

    /// Slots batch keeps while it has work (at least one if its share > 0).
    fn batch_reserved(&self) -> usize {
        if self.batch_min_share <= 0.0 {
            return 0;
        }
        ((self.concurrency as f64 * self.batch_min_share).ceil() as usize)
            .clamp(1, self.concurrency)
    }
}

pub struct Worker {
    id: String,
    queue: JobQueue,
    handlers: Handlers,
    settings: WorkerSettings,
}

impl Worker {
    pub fn new(queue: JobQueue, handlers: Handlers, settings: WorkerSettings) -> Self {
        Self {
            id: new_worker_id(),
            queue,
            handlers,
            settings,
        }
    }

    /// This worker's consumer name in the groups and its registry id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs until `shutdown` is cancelled, then shuts down gracefully.
    pub async fn run(self, shutdown: CancellationToken) {
        let s = &self.settings;
        let slots = Arc::new(Semaphore::new(s.concurrency));
        let in_flight = InFlight::default();
        let (tx, rx) = mpsc::channel(s.concurrency + 1024);
        let notes = NoteBook::new(self.queue.clone(), self.id.clone(), s.replica_wait);
        let processor =
            Processor::new(self.handlers.clone(), s.retry, in_flight.clone(), notes, tx);
        // Leases, retries and heartbeats go on while in-flight jobs finish.
        let background = CancellationToken::new();

        let acker = tokio::spawn(acker::run(
            self.queue.clone(),
            self.queue.store().target().clone(),
            in_flight.clone(),
            rx,
        ));
        let registry = WorkerRegistry::new(self.queue.store().clone());
        let info = WorkerInfo {
            id: self.id.clone(),
            host: hostname(),
            pid: std::process::id(),
            queues: s.queues.iter().map(|q| q.to_string()).collect(),
            concurrency: s.concurrency,
            in_flight: Vec::new(),
            started_at: chrono::Utc::now().to_rfc3339(),
        };
        let reachability = Reachability::default();
        let tasks = vec![
            tokio::spawn(heartbeat::run(
                registry.clone(),
                info,
                in_flight.clone(),
                reachability.clone(),
                background.clone(),
            )),
            tokio::spawn(lease::run(
                self.queue.clone(),
                self.id.clone(),
                in_flight.clone(),
                s.visibility_timeout,
                background.clone(),
            )),
            tokio::spawn(promoter::run(
                self.queue.clone(),
                s.queues.clone(),
                background.clone(),
            )),
            // The fleet history's counts (outcomes, provider calls), added
            // to Redis every few seconds and once more at the end.
            tokio::spawn(Arc::clone(self.queue.store().history()).flush_every(
                self.queue.store().clone(),
                ferry_common::history::FLUSH_EVERY,
                background.clone().cancelled_owned(),
            )),
        ];
        let fetcher = Fetcher {
            queue: self.queue.clone(),
            worker_id: self.id.clone(),
            slots: slots.clone(),
            in_flight: in_flight.clone(),
            processor: processor.clone(),
            batch_size: s.fetch_batch,
            block: s.fetch_block,
            batch_reserved: if s.queues.contains(&BATCH) {
                s.batch_reserved()
            } else {
                0
            },
            queues: s.queues.clone(),
        };
        let recoverer = Recoverer {
            queue: self.queue.clone(),
            registry: registry.clone(),
            reachability,
            worker_id: self.id.clone(),
            slots,
            concurrency: s.concurrency,
            processor,
            in_flight: in_flight.clone(),
            visibility_timeout: s.visibility_timeout,
            max_deliveries: s.max_deliveries,
            queues: s.queues.clone(),
        };
        tracing::info!(worker = %self.id, concurrency = s.concurrency, queues = ?s.queues, "worker started");
        let fetching = tokio::spawn(fetcher.run(shutdown.clone()));
        let recovering = tokio::spawn(recoverer.run(shutdown.clone()));

        shutdown.cancelled().await;
        tracing::info!(
            in_flight = in_flight.total(),
            grace_secs = s.shutdown_grace.as_secs_f64(),
            "shutting down: no new work, finishing in-flight jobs"
        );
        let _ = fetching.await;
        let _ = recovering.await;
        let deadline = tokio::time::Instant::now() + s.shutdown_grace;
        while in_flight.total() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = in_flight.jobs();
        if !left.is_empty() {
            match self.queue.hand_back(&left).await {
                Ok(n) => tracing::warn!(
                    handed_back = n,
                    "grace period over: unfinished jobs handed back to the queue"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, held = left.len(), "could not hand jobs back; they will be taken over after the visibility timeout")
                }
            }
        }
        background.cancel();
        for t in tasks {
            let _ = t.await;
        }
        if let Err(e) = registry.remove(&self.id).await {
            tracing::debug!(error = %e, "could not remove this worker from the registry; it expires by itself");
        }
        acker.abort();
        tracing::info!(worker = %self.id, "worker stopped");
    }
}

fn new_worker_id() -> String {
    let suffix: u32 = rand::random();
    format!("{}-{}-{:08x}", hostname(), std::process::id(), suffix)
}
