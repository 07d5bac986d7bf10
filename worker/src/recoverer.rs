//! Takes over work whose worker vanished: entries idle past the visibility
//! timeout (their lease was not renewed) are claimed with `XAUTOCLAIM` and
//! run here; entries delivered too often go to the dead-letter stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use ferry_common::queue::JobQueue;

use crate::outage::Outage;
use crate::processor::Processor;

pub struct Recoverer {
    pub queue: JobQueue,
    pub worker_id: String,
    pub slots: Arc<Semaphore>,
    pub processor: Processor,
    pub visibility_timeout: Duration,
    pub max_deliveries: u32,
    pub queues: Vec<&'static str>,
}

impl Recoverer {
    pub async fn run(self, shutdown: CancellationToken) {
        let every = (self.visibility_timeout / 2)
            .clamp(Duration::from_millis(200), Duration::from_secs(15));
        let mut outage = Outage::new("recoverer");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            for q in &self.queues {
                match self.recover(q).await {
                    Ok(()) => outage.ok(),
                    Err(e) => {
                        outage.failed(&e);
                    }
                }
            }
        }
    }

    async fn recover(&self, queue: &str) -> Result<(), ferry_common::queue::QueueError> {
        // Claim only what there is room for; the rest waits for the next pass.
        let free = self.slots.available_permits();
        if free == 0 {
            return Ok(());
        }
        let Ok(permits) = self
            .slots
            .clone()
            .try_acquire_many_owned(free.min(256) as u32)
        else {
            return Ok(());
        };
        let reclaimed = self
            .queue
            .reclaim(
                &self.worker_id,
                queue,
                self.visibility_timeout,
                self.max_deliveries,
                permits.num_permits(),
            )
            .await?;
        if reclaimed.fetched.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            queue,
            count = reclaimed.fetched.len(),
            "took over jobs abandoned by another worker"
        );
        let deliveries = self.queue.start(reclaimed.fetched, &self.worker_id).await?;
        let mut permits = permits;
        if permits.num_permits() > deliveries.len() {
            drop(permits.split(permits.num_permits() - deliveries.len()));
        }
        if !deliveries.is_empty() {
            self.processor.dispatch(deliveries, permits);
        }
        Ok(())
    }
}
