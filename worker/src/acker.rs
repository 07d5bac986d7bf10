//! Records outcomes: the acknowledgement of a job is the function call that
//! writes its outcome, and many of them travel in one pipeline, so a job
//! costs a fraction of a Redis round trip. An outcome is never dropped: if
//! Redis is down the batch is retried until it is back (the entries stay
//! leased meanwhile, so nobody takes them over).
//!
//! Why a connection of its own, and several pipelines at once: a pool
//! checkout costs a health-check round trip, and one pipeline at a time
//! leaves Redis idle while the answer travels back and the slots wait. On
//! one multiplexed connection, up to `PIPELINES_IN_FLIGHT` (4) batches are on
//! the wire together; each job's slot is freed as soon as its batch is
//! recorded.

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc;

use ferry_common::connection::{self, Dedicated, RedisTarget};
use ferry_common::history::JobEnd;
use ferry_common::job::Delivery;
use ferry_common::queue::{JobQueue, Outcome, QueueError};

use crate::in_flight::InFlight;
use crate::outage::Outage;

/// Most outcomes in one pipeline.
const MAX_BATCH: usize = 512;

/// Batches being recorded at once.
const PIPELINES_IN_FLIGHT: usize = 4;

/// An attempt that ended, with the capacity slot it held.
pub struct Finished {
    pub delivery: Delivery,
    pub outcome: Outcome,
    pub permit: OwnedSemaphorePermit,
}

type Recorded = (Vec<Finished>, Result<Vec<bool>, QueueError>);

/// Runs until every sender is gone (all processors finished) and every
/// outcome received is recorded.
pub async fn run(
    queue: JobQueue,
    redis: RedisTarget,
    in_flight: InFlight,
    mut rx: mpsc::Receiver<Finished>,
) {
    let mut outage = Outage::new("acker");
    let mut conn: Option<Dedicated> = None;
    let mut recording = FuturesUnordered::new();
    // Batches whose recording failed, sent again first once Redis is back.
    let mut again: VecDeque<Vec<Finished>> = VecDeque::new();
    let mut open = true;
    loop {
        if conn.is_none() && (open || !again.is_empty()) {
            match connection::dedicated(&redis, Duration::ZERO).await {
                Ok(c) => conn = Some(c),
                Err(e) if recording.is_empty() => {
                    tokio::time::sleep(outage.failed(&e)).await;
                    continue;
                }
                Err(_) => {} // finish what is on the wire first
            }
        }
        if let Some(c) = &conn {
            while recording.len() < PIPELINES_IN_FLIGHT
                && let Some(batch) = again.pop_front()
            {
                recording.push(record(queue.clone(), c.clone(), batch));
            }
        }
        if !open && recording.is_empty() && again.is_empty() {
            return;
        }
        let take = open && conn.is_some() && again.is_empty();
        let mut batch = Vec::new();
        tokio::select! {
            Some((batch, result)) = recording.next(), if !recording.is_empty() => match result {
                Ok(changed) => {
                    outage.ok();
                    for (f, changed) in batch.iter().zip(changed) {
                        log_outcome(&f.delivery, &f.outcome, changed);
                        count_outcome(&queue, &f.delivery, &f.outcome, changed);
                    }
                    for f in batch {
                        in_flight.remove(&f.delivery.id, &f.delivery.entry_id);
                        drop(f.permit);
                    }
                }
                Err(e) => {
                    let wait = outage.failed(&e);
                    conn = None;
                    again.push_back(batch);
                    tokio::time::sleep(wait).await;
                }
            },
            n = rx.recv_many(&mut batch, MAX_BATCH), if take && recording.len() < PIPELINES_IN_FLIGHT => {
                match &conn {
                    _ if n == 0 => open = false,
                    Some(c) => recording.push(record(queue.clone(), c.clone(), batch)),
                    None => again.push_back(batch),
                }
            }
            else => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn record(queue: JobQueue, mut conn: Dedicated, batch: Vec<Finished>) -> Recorded {
    let result = {
        let pairs: Vec<(&Delivery, &Outcome)> =
            batch.iter().map(|f| (&f.delivery, &f.outcome)).collect();
        queue.record_on(&mut conn, &pairs).await
    };
    (batch, result)
}

/// Counts a recorded outcome in the fleet's history (jobs out, failures).
fn count_outcome(queue: &JobQueue, job: &Delivery, outcome: &Outcome, changed: bool) {
    let end = match outcome {
        _ if !changed => return,
        Outcome::Succeeded { .. } => JobEnd::Completed,
        Outcome::Retry { .. } => JobEnd::Retried,
        Outcome::Dead { .. } => JobEnd::Dead,
        Outcome::HandBack => return,
    };
    queue.store().history().jobs_ended(job.id.queue(), end, 1);
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
