//! A handler's notes on its job: an answer obtained, a part WeChat
//! accepted, an apology sent, a limit verdict. A retried or taken-over job
//! reads them and never redoes what they record (ARCHITECTURE.md, "The
//! duplicate window").
//!
//! A note is held and written again (with backoff) until Redis takes it, for
//! as long as the process lives and the job is its own: a Redis outage only
//! delays a job, it never makes the job's retry ask the provider again or
//! resend a part. The note goes on a connection of the worker's own (no pool
//! checkout between a side effect and its note), and the same call renews
//! the job's lease, so a worker back from an outage holds its job again the
//! moment its note lands. A note refused because the job is no longer this
//! worker's ([`NotHeld`]) ends the attempt: its new holder carries on.

use std::collections::HashMap;
use std::time::Duration;

use ferry_common::connection::OwnConnection;
use ferry_common::job::Delivery;
use ferry_common::queue::notes::Noted;
use ferry_common::queue::{JobQueue, QueueError};

/// The first wait before a note is tried again; it doubles up to
/// [`MAX_WAIT`], so a note lands within about a second of Redis's return.
const FIRST_WAIT: Duration = Duration::from_millis(50);
const MAX_WAIT: Duration = Duration::from_secs(1);

/// The worker's notes connection and its consumer name, shared by all jobs.
pub struct NoteBook {
    queue: JobQueue,
    conn: OwnConnection,
    consumer: String,
    /// How long a written note waits for one replica (`None`: not at all).
    replica_wait: Option<Duration>,
}

impl NoteBook {
    pub fn new(queue: JobQueue, consumer: String, replica_wait: Option<Duration>) -> Self {
        Self {
            conn: OwnConnection::new(queue.store().target().clone()),
            queue,
            consumer,
            replica_wait,
        }
    }

    /// The notes of one job this worker holds.
    pub fn of<'a>(&'a self, job: &'a Delivery) -> JobNotes<'a> {
        JobNotes { book: self, job }
    }
}

/// The job is no longer this worker's: another took it over (this worker
/// was cut off from Redis longer than its heartbeat lasts), or it finished
/// elsewhere. Nothing was written; the attempt ends without an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the job is no longer this worker's (taken over by another worker, or finished)")]
pub struct NotHeld;

/// Reads and writes one job's notes.
#[derive(Clone, Copy)]
pub struct JobNotes<'a> {
    book: &'a NoteBook,
    job: &'a Delivery,
}

impl JobNotes<'_> {
    /// Every note an earlier attempt left.
    pub async fn read(&self) -> Result<HashMap<String, String>, QueueError> {
        self.book.queue.read_notes(&self.job.id).await
    }

    /// Writes `notes`, trying again until Redis takes them; `Err(NotHeld)`
    /// when the job is no longer this worker's.
    pub async fn write(&self, notes: &[(&str, &str)]) -> Result<(), NotHeld> {
        let mut wait = FIRST_WAIT;
        let mut failures = 0u32;
        loop {
            match self.try_write(notes).await {
                Ok(Noted::Written) => {
                    if failures > 0 {
                        tracing::info!(job = %self.job.id, failures, "note written now that Redis answers again");
                    }
                    return Ok(());
                }
                Ok(Noted::NotHeld) => return Err(NotHeld),
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(job = %self.job.id, failures, error = %e, "cannot note what this job did yet; holding it and trying again");
                    }
                    self.book.conn.reset().await;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_WAIT);
                }
            }
        }
    }

    async fn try_write(&self, notes: &[(&str, &str)]) -> Result<Noted, String> {
        let mut conn = self.book.conn.get().await.map_err(|e| e.to_string())?;
        let noted = self
            .book
            .queue
            .note_on(
                &mut conn,
                &self.book.consumer,
                &self.job.id,
                &self.job.entry_id,
                notes,
            )
            .await
            .map_err(|e| e.to_string())?;
        if let (Noted::Written, Some(wait)) = (noted, self.book.replica_wait) {
            // Best effort: the side effect is done either way. A replica
            // that does not answer in time (none left after a failover)
            // leaves the note on the primary alone, as without the setting.
            let stream = self.book.queue.keys_of(&self.job.id).stream();
            match conn.wait_for_replicas(&[stream], 1, wait).await {
                Ok(0) => tracing::debug!(job = %self.job.id, "no replica took the note in time"),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(job = %self.job.id, error = %e, "cannot wait for a replica")
                }
            }
        }
        Ok(noted)
    }
}
