//! Adding jobs: one `ferry_enqueue` call writes the record, the stream entry
//! and (optionally) the idempotency key together.

use redis::Pipeline;

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
    pub async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = Pipeline::new();
        for job in jobs {
            self.add_enqueue(&mut pipe, job)?;
        }
        let mut conn = self.conn().await?;
        let replies: Vec<(String, i32)> = run(&mut conn, &pipe).await?;
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

    fn add_enqueue(&self, pipe: &mut Pipeline, job: &NewJob) -> Result<(), QueueError> {
        if !is_valid_queue_name(&job.queue) {
            return Err(QueueError::UnknownQueue(job.queue.clone()));
        }
        let id = JobId::new(&job.queue).to_string();
        let q = self.keys().queue(&job.queue);
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
