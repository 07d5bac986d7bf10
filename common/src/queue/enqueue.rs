//! Adding jobs: one `ferry_enqueue` call writes the record, the stream entry
//! and (optionally) the idempotency key together.

use std::borrow::Borrow;

use redis::Pipeline;
use redis::aio::ConnectionLike;

use super::{JobQueue, QueueError, is_valid_queue_name};
use crate::functions::{fcall, run};
use crate::job::{JobId, NewJob};

/// The answer to an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: JobId,
    /// False when the idempotency key already named a job: `id` is that job.
    pub created: bool,
}

impl JobQueue {
    /// Enqueues one job. With an idempotency key, a repeat within the key's
    /// TTL returns the first job and enqueues nothing.
    pub async fn enqueue(&self, job: &NewJob) -> Result<Enqueued, QueueError> {
        let mut answers = self.enqueue_many(std::slice::from_ref(job)).await?;
        answers.pop().ok_or_else(|| QueueError::Corrupt {
            id: String::new(),
            reason: "no answer from ferry_enqueue".into(),
        })
    }

    /// Enqueues many jobs in one pipeline (one round trip); each answer in
    /// the order of `jobs`.
    pub async fn enqueue_many<J: Borrow<NewJob>>(
        &self,
        jobs: &[J],
    ) -> Result<Vec<Enqueued>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        self.enqueue_many_on(&mut conn, jobs).await
    }

    /// [`enqueue_many`](Self::enqueue_many) on a connection the caller
    /// holds (to `WAIT` for replicas on it afterwards).
    pub async fn enqueue_many_on<C: ConnectionLike, J: Borrow<NewJob>>(
        &self,
        conn: &mut C,
        jobs: &[J],
    ) -> Result<Vec<Enqueued>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = Pipeline::new();
        for job in jobs {
            self.add_enqueue(&mut pipe, job.borrow())?;
        }
        let replies: Vec<(String, i32)> = run(conn, &pipe).await?;
        for (job, (_, created)) in jobs.iter().zip(&replies) {
            if *created == 1 {
                self.store().history().jobs_in(&job.borrow().queue, 1);
            }
        }
        replies
            .into_iter()
            .map(|(id, created)| {
                let id = id
                    .parse()
                    .map_err(|e: crate::job::BadJobId| QueueError::Corrupt {
                        id: id.clone(),
                        reason: e.to_string(),
                    })?;
                Ok(Enqueued {
                    id,
                    created: created == 1,
                })
            })
            .collect()
    }

    /// Waits up to `timeout` until `replicas` replicas have the jobs of
    /// `written`, enqueued on `conn` (`WAIT` on the primaries holding their
    /// partitions). Returns the least count that did.
    pub async fn wait_for_replicas(
        &self,
        conn: &mut crate::connection::Dedicated,
        written: &[Enqueued],
        replicas: u32,
        timeout: std::time::Duration,
    ) -> Result<u32, QueueError> {
        let keys: Vec<String> = written
            .iter()
            .map(|e| self.keys_of(&e.id).stream())
            .collect();
        Ok(conn.wait_for_replicas(&keys, replicas, timeout).await?)
    }

    fn add_enqueue(&self, pipe: &mut Pipeline, job: &NewJob) -> Result<(), QueueError> {
        if !is_valid_queue_name(&job.queue) {
            return Err(QueueError::UnknownQueue(job.queue.clone()));
        }
        // A job with a dedup key always goes to the partition of that key,
        // so a repeat finds the first job there; the others are spread at
        // random (by the id's random bits).
        let partition = match &job.idempotency {
            Some(i) => self.keys().partitions().place(&job.queue, &i.key),
            None => self
                .keys()
                .partitions()
                .place(&job.queue, &ulid::Ulid::new().to_string()),
        };
        let id = JobId::new_in(&partition).to_string();
        let q = self.keys().partition(&partition);
        let stream = q.stream();
        let record = q.job(&id);
        let idem = job.idempotency.as_ref().map(|i| q.idempotency(&i.key));
        let mut keys = vec![stream.as_str(), record.as_str()];
        if let Some(idem) = &idem {
            keys.push(idem.as_str());
        }
        let ttl = job
            .idempotency
            .as_ref()
            .map_or(0, |i| i.ttl.as_secs().max(1));
        fcall(pipe, "ferry_enqueue", &keys)
            .arg(&id)
            .arg(&job.kind)
            .arg(&job.queue)
            .arg(serde_json::to_string(&job.payload)?)
            .arg(job.max_attempts)
            .arg(ttl);
        Ok(())
    }
}
