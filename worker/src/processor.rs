//! Runs one job: finds its handler, runs it (a panic is a failed attempt,
//! not a dead worker), asks the retry policy what a failure means, and hands
//! the outcome to the acker together with the job's capacity slot.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::Instrument as _;

use ferry_common::job::Delivery;
use ferry_common::metrics as names;
use ferry_common::queue::Outcome;
use ferry_common::telemetry::traces;

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
    /// delivery (more are returned). `fetched`: when the fetch round that
    /// read them started and ended (traces on only), for their `fetch` spans.
    pub fn dispatch(
        &self,
        deliveries: Vec<Delivery>,
        mut permits: OwnedSemaphorePermit,
        fetched: Option<FetchRound>,
    ) {
        let jobs = deliveries.len();
        for delivery in deliveries {
            let Some(permit) = permits.split(1) else {
                tracing::error!("dispatch called with fewer slots than jobs; this is a bug");
                return;
            };
            self.inner.in_flight.add(&delivery.id, &delivery.entry_id);
            let this = self.clone();
            let span = job_span(&delivery, fetched, jobs);
            tokio::spawn(async move { this.run(delivery, permit).instrument(span).await });
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
            Some((_, handler)) => match AssertUnwindSafe(
                handler
                    .handle(&delivery, notes)
                    .instrument(attempt_span(&delivery)),
            )
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
        if traces::on() {
            tracing::Span::current().record("ferry.job.outcome", outcome_label(&outcome));
        }
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

/// When one fetch round started and ended.
pub type FetchRound = (SystemTime, SystemTime);

/// The job's span for this delivery (traces on only): a child of the
/// push's span through the job's traceparent, with the fetch round that
/// read it as a `fetch` child (one round reads many jobs: each job's trace
/// gets the shared round's timing and how many it brought).
fn job_span(delivery: &Delivery, fetched: Option<FetchRound>, jobs: usize) -> tracing::Span {
    let span = ferry_common::otel_span!(
        "job",
        ferry.job.id = %delivery.id,
        ferry.job.kind = %delivery.kind,
        ferry.job.attempt = delivery.attempt,
        ferry.job.outcome = tracing::field::Empty
    );
    if traces::on() {
        if let Some(tp) = delivery.traceparent() {
            traces::follow(&span, tp);
        }
        if let Some((from, to)) = fetched {
            traces::record_fetch(&span, from, to, jobs);
        }
    }
    span
}

/// The handler's run of this attempt; provider calls and sends are its
/// children.
fn attempt_span(delivery: &Delivery) -> tracing::Span {
    ferry_common::otel_span!(
        "attempt",
        ferry.job.attempt = delivery.attempt,
        ferry.job.max_attempts = delivery.max_attempts
    )
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded { .. } => "succeeded",
        Outcome::Retry { .. } => "retried",
        Outcome::Dead { .. } => "dead",
        Outcome::HandBack => "handed_back",
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
