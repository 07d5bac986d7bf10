//! Records outcomes: the acknowledgement of a job is the function call that
//! writes its outcome, and many of them travel in one pipeline, so a job
//! costs a fraction of a Redis round trip. An outcome is never dropped: if
//! Redis is down the batch is retried until it is back (the entries stay
//! leased meanwhile, so nobody takes them over).

use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc;

use ferry_common::job::Delivery;
use ferry_common::queue::{JobQueue, Outcome};

use crate::in_flight::InFlight;
use crate::outage::Outage;

/// Most outcomes in one pipeline.
const MAX_BATCH: usize = 512;

/// An attempt that ended, with the capacity slot it held.
pub struct Finished {
    pub delivery: Delivery,
    pub outcome: Outcome,
    pub permit: OwnedSemaphorePermit,
}

/// Runs until every sender is gone (all processors finished).
pub async fn run(queue: JobQueue, in_flight: InFlight, mut rx: mpsc::Receiver<Finished>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut outage = Outage::new("acker");
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let pairs: Vec<(&Delivery, &Outcome)> =
            batch.iter().map(|f| (&f.delivery, &f.outcome)).collect();
        loop {
            match queue.record(&pairs).await {
                Ok(changed) => {
                    outage.ok();
                    for (f, changed) in batch.iter().zip(changed) {
                        log_outcome(&f.delivery, &f.outcome, changed);
                    }
                    break;
                }
                Err(e) => tokio::time::sleep(outage.failed(&e)).await,
            }
        }
        for f in batch.drain(..) {
            in_flight.remove(f.delivery.id.queue(), &f.delivery.entry_id);
            drop(f.permit);
        }
    }
}

fn log_outcome(job: &Delivery, outcome: &Outcome, changed: bool) {
    if !changed {
        tracing::info!(job = %job.id, "outcome not recorded: the job had already finished elsewhere");
        return;
    }
    match outcome {
        Outcome::Succeeded { .. } => {
            tracing::debug!(job = %job.id, kind = %job.kind, attempt = job.attempt, "job succeeded")
        }
        Outcome::Retry { error, delay } => {
            tracing::warn!(job = %job.id, kind = %job.kind, attempt = job.attempt, retry_in_ms = delay.as_millis() as u64, error = %error, "job will be retried")
        }
        Outcome::Dead { reason } => {
            tracing::error!(job = %job.id, kind = %job.kind, attempt = job.attempt, reason = %reason, "job dead-lettered")
        }
        Outcome::HandBack => tracing::info!(job = %job.id, "job handed back to the queue"),
    }
}
