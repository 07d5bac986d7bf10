//! Notes a handler keeps on its job record between attempts: an answer
//! already obtained, how many parts of it WeChat already accepted. A retried
//! or taken-over job reads them and never redoes a side effect it recorded.
//!
//! A note is written only by the worker that still holds the job, in one
//! call (`ferry_note`) that also renews the job's lease: a worker that lost
//! its job (taken over while it was cut off from Redis) learns so from its
//! next note and writes nothing.

use std::collections::HashMap;

use redis::Pipeline;
use redis::aio::ConnectionLike;

use super::{JobQueue, QueueError};
use crate::functions::{fcall, run};
use crate::job::JobId;
use crate::keys::CONSUMER_GROUP;

/// What became of a note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noted {
    /// Written, and the job's lease renewed.
    Written,
    /// The job is no longer this worker's (taken over, finished or gone):
    /// nothing was written.
    NotHeld,
}

impl JobQueue {
    /// Writes notes on a job this `consumer` holds at `entry_id`, on the
    /// caller's connection (one round trip, no pool checkout).
    pub async fn note_on<C: ConnectionLike>(
        &self,
        conn: &mut C,
        consumer: &str,
        job: &JobId,
        entry_id: &str,
        notes: &[(&str, &str)],
    ) -> Result<Noted, QueueError> {
        let q = self.keys_of(job);
        let mut pipe = Pipeline::new();
        let call = fcall(
            &mut pipe,
            "ferry_note",
            &[&q.stream(), &q.job(&job.to_string())],
        )
        .arg(CONSUMER_GROUP)
        .arg(consumer)
        .arg(entry_id);
        for (name, value) in notes {
            call.arg(*name).arg(*value);
        }
        let (written,): (i64,) = run(conn, &pipe).await?;
        Ok(if written == 1 {
            Noted::Written
        } else {
            Noted::NotHeld
        })
    }

    /// Every note on a job's record.
    pub async fn read_notes(&self, job: &JobId) -> Result<HashMap<String, String>, QueueError> {
        let mut conn = self.conn().await?;
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys_of(job).job(&job.to_string()))
            .query_async(&mut conn)
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("note:").map(|name| (name.to_owned(), v)))
            .collect())
    }
}
