//! Concurrent pushes share Redis round trips.
//!
//! Every push needs one `ferry_enqueue` call. Sent one by one, each costs a
//! pool checkout (whose health check is itself a round trip) and a round
//! trip of its own, and Redis reads and answers each call separately. Here
//! the pushes that arrive while earlier ones are on the wire wait in a
//! channel and leave together, as one pipeline of `ferry_enqueue` calls
//! (`JobQueue::enqueue_many`), so Redis and the api pay the round trip once
//! per batch. Under light load a batch is a single push: nothing waits for
//! company. Each call in a batch stays atomic on its own, dedup key included;
//! a failed batch fails each of its pushes, which are then spooled (and the
//! replay of any that did land finds its dedup key).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_common::job::NewJob;
use ferry_common::queue::JobQueue;
use ferry_common::queue::enqueue::Enqueued;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Most pushes in one pipeline.
const MAX_BATCH: usize = 128;
/// Batches on the wire at once (each on its own pooled connection).
const MAX_IN_FLIGHT: usize = 4;
/// Pushes waiting for a batch before senders wait too (they are bounded by
/// the acknowledgement budget, after which their push is spooled).
const QUEUE_DEPTH: usize = 8192;
/// A batch Redis has not answered in this long has failed.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);

struct Waiting {
    job: NewJob,
    done: oneshot::Sender<Result<Enqueued, String>>,
}

/// Sends enqueues to Redis in batches. The batching task starts with the
/// first enqueue (on that caller's runtime) and ends when the batcher is
/// dropped.
pub struct EnqueueBatcher {
    tx: mpsc::Sender<Waiting>,
    /// Taken by the first enqueue, which starts the batching task.
    idle: Mutex<Option<(mpsc::Receiver<Waiting>, JobQueue)>>,
}

impl EnqueueBatcher {
    pub fn new(queue: JobQueue) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        Self {
            tx,
            idle: Mutex::new(Some((rx, queue))),
        }
    }

    /// Enqueues `job` with whatever else is waiting; the error is Redis's,
    /// as text (the caller spools the job).
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued, String> {
        self.start_once();
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Waiting { job, done })
            .await
            .map_err(|_| "the enqueue batcher stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the enqueue batcher dropped the push".to_owned())?
    }

    fn start_once(&self) {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some((rx, queue)) = idle {
            tokio::spawn(run(rx, queue));
        }
    }
}

async fn run(mut rx: mpsc::Receiver<Waiting>, queue: JobQueue) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        // Wait for a free slot first: meanwhile pushes gather in the channel.
        let Ok(slot) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return; // every sender is gone
        };
        let mut batch = Vec::with_capacity(MAX_BATCH.min(rx.len() + 1));
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(waiting) => batch.push(waiting),
                Err(_) => break,
            }
        }
        let queue = queue.clone();
        tokio::spawn(async move {
            send(&queue, batch).await;
            drop(slot);
        });
    }
}

async fn send(queue: &JobQueue, batch: Vec<Waiting>) {
    let (jobs, done): (Vec<NewJob>, Vec<_>) = batch.into_iter().map(|w| (w.job, w.done)).unzip();
    let answers = match tokio::time::timeout(BATCH_TIMEOUT, queue.enqueue_many(&jobs)).await {
        Ok(Ok(answers)) if answers.len() == done.len() => answers.into_iter().map(Ok).collect(),
        Ok(Ok(answers)) => {
            let reason = format!("{} answers for {} enqueues", answers.len(), done.len());
            vec![Err(reason); done.len()]
        }
        Ok(Err(e)) => vec![Err(e.to_string()); done.len()],
        Err(_) => vec![Err("Redis did not answer the batch in time".to_owned()); done.len()],
    };
    for (done, answer) in done.into_iter().zip(answers) {
        // A push whose budget ran out is spooled already: nobody listens.
        let _ = done.send(answer);
    }
}
