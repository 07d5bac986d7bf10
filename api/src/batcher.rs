//! Concurrent pushes share Redis round trips.
//!
//! Every push needs one `ferry_enqueue` call. Sent one by one over pooled
//! connections, each costs a pool checkout (whose health check is itself a
//! round trip) and a round trip of its own.
//!
//! With the default acknowledgement (the primary has it), each push sends
//! its call from its own request task on one multiplexed connection: the
//! calls of concurrent pushes leave in one socket write and Redis reads and
//! answers them together, so the round trip is shared without any hand-off
//! between tasks. (An earlier design queued pushes for a batching task that
//! sent them as one pipeline: two task hand-offs per push, which perf
//! showed as 12% of the api's time in the scheduler and futexes.) Each call
//! stays atomic on its own, dedup key included; a failed call is spooled
//! (and the replay of one that did land finds its dedup key).
//!
//! With a durable acknowledgement (`FERRY_DURABLE_ACK=replica`) a batch is
//! answered only once one replica has it too: `WAIT 1` after the pipeline,
//! on the same connection (WAIT counts that connection's writes). Here the
//! pushes that arrive while earlier ones are on the wire wait in a channel
//! and leave together, as one pipeline of `ferry_enqueue` calls, and each of
//! the batches on the wire has a connection of its own for its WAIT, so a
//! WAIT never holds up the process's other commands.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_common::connection::OwnConnection;
use ferry_common::job::NewJob;
use ferry_common::queue::enqueue::Enqueued;
use ferry_common::queue::{JobQueue, QueueError};
use ferry_common::store::RedisError;
use redis::ErrorKind;
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
    job: Arc<NewJob>,
    done: oneshot::Sender<Result<Enqueued, String>>,
}

/// How a batch is acknowledged.
#[derive(Clone, Copy, Debug)]
pub enum Durability {
    /// Once the primary has it.
    Primary,
    /// Once one replica has it too, waiting at most this long.
    Replica { wait: Duration },
}

/// Sends enqueues to Redis in batches. The batching task starts with the
/// first enqueue (on that caller's runtime) and ends when the batcher is
/// dropped.
pub struct EnqueueBatcher {
    how: How,
}

enum How {
    /// Each push's call on the shared multiplexed connection.
    Direct {
        queue: JobQueue,
        conn: OwnConnection,
        /// A call went unanswered (its push ran out of budget first): the
        /// connection may be silently dead, so the next push makes a new
        /// one. (A pool checked each connection on checkout; this is the
        /// multiplexed connection's equivalent.)
        suspect: AtomicBool,
    },
    /// Through the batching task (pipelines followed by `WAIT`).
    Batched {
        tx: mpsc::Sender<Waiting>,
        /// Taken by the first enqueue, which starts the batching task.
        idle: Mutex<Option<(mpsc::Receiver<Waiting>, JobQueue, Durability)>>,
    },
}

impl EnqueueBatcher {
    pub fn new(queue: JobQueue) -> Self {
        Self::with_durability(queue, Durability::Primary)
    }

    pub fn with_durability(queue: JobQueue, durability: Durability) -> Self {
        let how = match durability {
            Durability::Primary => How::Direct {
                conn: OwnConnection::new(queue.store().target().clone()),
                queue,
                suspect: AtomicBool::new(false),
            },
            Durability::Replica { .. } => {
                let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
                How::Batched {
                    tx,
                    idle: Mutex::new(Some((rx, queue, durability))),
                }
            }
        };
        Self { how }
    }

    /// Enqueues `job` with whatever else is on the wire; the error is
    /// Redis's, as text (the caller spools the job).
    /// The job is shared, not copied: the caller keeps it to spool.
    pub async fn enqueue(&self, job: Arc<NewJob>) -> Result<Enqueued, String> {
        match &self.how {
            How::Direct {
                queue,
                conn,
                suspect,
            } => {
                match tokio::time::timeout(BATCH_TIMEOUT, direct(queue, conn, suspect, &job)).await
                {
                    Ok(answer) => answer,
                    Err(_) => Err("Redis did not answer the push in time".to_owned()),
                }
            }
            How::Batched { tx, idle } => {
                start_once(idle);
                let (done, answer) = oneshot::channel();
                tx.send(Waiting { job, done })
                    .await
                    .map_err(|_| "the enqueue batcher stopped".to_owned())?;
                answer
                    .await
                    .map_err(|_| "the enqueue batcher dropped the push".to_owned())?
            }
        }
    }
}

/// One push's call on the shared multiplexed connection, which is made again
/// after it broke or after a call went unanswered.
async fn direct(
    queue: &JobQueue,
    own: &OwnConnection,
    suspect: &AtomicBool,
    job: &NewJob,
) -> Result<Enqueued, String> {
    if suspect.swap(false, Ordering::Relaxed) {
        own.reset().await;
    }
    let mut conn = own.get().await.map_err(|e| e.to_string())?;
    let unanswered = Unanswered(Some(suspect));
    let answer = queue
        .enqueue_many_on(&mut conn, std::slice::from_ref(job))
        .await;
    unanswered.answered();
    match answer {
        Ok(mut answers) if answers.len() == 1 => Ok(answers.pop().expect("one answer")),
        Ok(answers) => Err(format!("{} answers for 1 enqueue", answers.len())),
        Err(e) => {
            // A broken multiplexed connection stays broken: the next push
            // connects again. A refusal (a script error, OOM) keeps it.
            let refused = matches!(
                &e,
                QueueError::Redis(RedisError::Command(c)) if matches!(c.kind(), ErrorKind::Server(_))
            );
            if !refused {
                own.reset().await;
            }
            Err(e.to_string())
        }
    }
}

/// Marks the connection suspect when dropped before [`Self::answered`]: the
/// push's future was dropped mid-call (its budget ran out) or timed out.
struct Unanswered<'a>(Option<&'a AtomicBool>);

impl Unanswered<'_> {
    fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(suspect) = self.0 {
            suspect.store(true, Ordering::Relaxed);
        }
    }
}

fn start_once(idle: &Mutex<Option<(mpsc::Receiver<Waiting>, JobQueue, Durability)>>) {
    if let Some((rx, queue, durability)) = lock(idle).take() {
        tokio::spawn(run(rx, queue, durability));
    }
}

async fn run(mut rx: mpsc::Receiver<Waiting>, queue: JobQueue, durability: Durability) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // The connections of the batches on the wire, for WAIT (one each).
    let own: Arc<Vec<OwnConnection>> = Arc::new(
        (0..MAX_IN_FLIGHT)
            .map(|_| OwnConnection::new(queue.store().target().clone()))
            .collect(),
    );
    let free_own = Arc::new(Mutex::new((0..MAX_IN_FLIGHT).collect::<Vec<usize>>()));
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
        let (own, free_own) = (Arc::clone(&own), Arc::clone(&free_own));
        tokio::spawn(async move {
            match durability {
                Durability::Primary => send(&queue, batch, None).await,
                Durability::Replica { wait } => {
                    let index = lock(&free_own).pop().expect("one connection per slot");
                    send(&queue, batch, Some((&own[index], wait))).await;
                    lock(&free_own).push(index);
                }
            }
            drop(slot);
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Enqueues a batch and answers each push; with `durable`, only once one
/// replica has the batch (else each push fails, and is spooled).
async fn send(queue: &JobQueue, batch: Vec<Waiting>, durable: Option<(&OwnConnection, Duration)>) {
    let (jobs, done): (Vec<Arc<NewJob>>, Vec<_>) =
        batch.into_iter().map(|w| (w.job, w.done)).unzip();
    let attempt = async {
        let Some((own, wait)) = durable else {
            return queue.enqueue_many(&jobs).await.map_err(|e| e.to_string());
        };
        let mut conn = own.get().await.map_err(|e| e.to_string())?;
        let answers = match queue.enqueue_many_on(&mut conn, &jobs).await {
            Ok(answers) => answers,
            Err(e) => {
                own.reset().await;
                return Err(e.to_string());
            }
        };
        match queue.wait_for_replicas(&mut conn, &answers, 1, wait).await {
            Ok(n) if n >= 1 => Ok(answers),
            Ok(_) => Err("no replica took the push in time (FERRY_DURABLE_ACK=replica)".to_owned()),
            Err(e) => {
                own.reset().await;
                Err(e.to_string())
            }
        }
    };
    let answers = match tokio::time::timeout(BATCH_TIMEOUT, attempt).await {
        Ok(Ok(answers)) if answers.len() == done.len() => answers.into_iter().map(Ok).collect(),
        Ok(Ok(answers)) => {
            let reason = format!("{} answers for {} enqueues", answers.len(), done.len());
            vec![Err(reason); done.len()]
        }
        Ok(Err(e)) => vec![Err(e); done.len()],
        Err(_) => vec![Err("Redis did not answer the batch in time".to_owned()); done.len()],
    };
    for (done, answer) in done.into_iter().zip(answers) {
        // A push whose budget ran out is spooled already: nobody listens.
        let _ = done.send(answer);
    }
}
