//! Runs one job: finds its handler, runs it (a panic is a failed attempt,
//! not a dead worker), asks the retry policy what a failure means, and hands
//! the outcome to the acker together with the job's capacity slot.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use ferry_common::job::Delivery;
use ferry_common::metrics as names;
use ferry_common::queue::Outcome;

use crate::acker::Finished;
use crate::handler::{HandlerError, Handlers};
use crate::in_flight::InFlight;
use crate::job_notes::NoteBook;
use crate::job_retry::RetryPolicy;

#[derive(Clone)]
pub struct Processor {
    inner: Arc<Inner>,
}

struct Inner {
    handlers: Handlers,
    policy: RetryPolicy,
    in_flight: InFlight,
    notes: NoteBook,
    acker: mpsc::Sender<Finished>,
}

impl Processor {
    pub fn new(
        handlers: Handlers,
        policy: RetryPolicy,
        in_flight: InFlight,
        notes: NoteBook,
        acker: mpsc::Sender<Finished>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                handlers,
                policy,
                in_flight,
                notes,
                acker,
            }),
        }
    }

    /// Starts every delivery on its own task; `permits` holds one slot per
    /// delivery (more are returned).
    pub fn dispatch(&self, deliveries: Vec<Delivery>, mut permits: OwnedSemaphorePermit) {
        for delivery in deliveries {
            let Some(permit) = permits.split(1) else {
                tracing::error!("dispatch called with fewer slots than jobs; this is a bug");
                return;
            };
            self.inner.in_flight.add(&delivery.id, &delivery.entry_id);
            let this = self.clone();
            tokio::spawn(async move { this.run(delivery, permit).await });
        }
    }

    async fn run(&self, delivery: Delivery, permit: OwnedSemaphorePermit) {
        let started = std::time::Instant::now();
        let found = self.inner.handlers.lookup(&delivery.kind);
        // A kind no handler knows is labelled `unknown`, so an enqueuer
        // cannot grow the metrics' label set.
        let kind = found.map_or("unknown", |(kind, _)| kind);
        let notes = self.inner.notes.of(&delivery);
        let outcome = match found {
            None => Some(Outcome::Dead {
                reason: format!("no handler for job kind {:?} in this worker", delivery.kind),
            }),
            Some((_, handler)) => match AssertUnwindSafe(handler.handle(&delivery, notes))
                .catch_unwind()
                .await
            {
                Ok(Ok(result)) => Some(Outcome::Succeeded { result }),
                Ok(Err(error)) => self.inner.policy.decide(&delivery, error),
                Err(_) => self
                    .inner
                    .policy
                    .decide(&delivery, HandlerError::retry("the handler panicked")),
            },
        };
        let Some(outcome) = outcome else {
            // Another worker holds the job now and records its outcome.
            tracing::warn!(job = %delivery.id, "the job was taken over while this worker was cut off from Redis; this attempt ends here");
            self.inner
                .in_flight
                .remove(&delivery.id, &delivery.entry_id);
            return;
        };
        record(&delivery, kind, &outcome, started.elapsed());
        let finished = Finished {
            delivery,
            outcome,
            permit,
        };
        if self.inner.acker.send(finished).await.is_err() {
            tracing::error!(
                "the acker is gone; the job will be taken over after the visibility timeout"
            );
        }
    }
}

/// Counts the attempt for `/metrics`. Every label is a `'static` string (the
/// registered kind, a known queue name): nothing is allocated per job.
fn record(delivery: &Delivery, kind: &'static str, outcome: &Outcome, elapsed: Duration) {
    let result = match outcome {
        Outcome::Succeeded { .. } => "succeeded",
        Outcome::Retry { .. } => "retried",
        Outcome::Dead { .. } => "dead",
        Outcome::HandBack => "handed_back",
    };
    let queue = ferry_common::queue::label(delivery.id.queue());
    metrics::counter!(names::JOBS, "queue" => queue, "kind" => kind, "outcome" => result)
        .increment(1);
    metrics::histogram!(names::JOB_DURATION, "queue" => queue, "kind" => kind)
        .record(elapsed.as_secs_f64());
}
