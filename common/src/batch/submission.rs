//! Submitting: one API job, or a batch opened, written in chunks and
//! committed (or aborted), each step one call of `ferry_batch.lua`.

use redis::Pipeline;

use super::{Batches, NewBatch, OverQuota, Submitted, batch_partition};
use crate::functions::{fcall, run};
use crate::job::kinds::{BATCH_WEBHOOK, CHAT_COMPLETION, ChatCompletion, max_attempts_of};
use crate::job::{Idempotency, JobId};
use crate::keys::Partition;
use crate::queue::{BATCH, QueueError};

impl Batches {
    /// Enqueues one chat job for `owner`, within its in-flight limit (0: no
    /// limit); with an idempotency key, a repeat returns the first job.
    pub async fn submit_job(
        &self,
        owner: &str,
        payload: &ChatCompletion,
        idempotency: Option<&Idempotency>,
        in_flight_limit: u32,
    ) -> Result<Submitted, QueueError> {
        let partition = self.partition_of_owner(owner);
        let q = self.store.keys().partition(&partition);
        let id = JobId::new_in(&partition).to_string();
        let (stream, record, owner_key) = (q.stream(), q.job(&id), q.owner_in_flight(owner));
        // Scoped to the owner: another key's idempotency key is another job.
        let idem = idempotency.map(|i| q.idempotency(&format!("api:{owner}:{}", i.key)));
        let mut keys = vec![stream.as_str(), record.as_str(), owner_key.as_str()];
        if let Some(idem) = &idem {
            keys.push(idem);
        }
        let mut pipe = Pipeline::new();
        fcall(&mut pipe, "ferry_batch_submit_job", &keys)
            .arg(&id)
            .arg(CHAT_COMPLETION)
            .arg(BATCH)
            .arg(serde_json::to_string(payload)?)
            .arg(max_attempts_of(CHAT_COMPLETION))
            .arg(idempotency.map_or(0, |i| i.ttl.as_secs().max(1)))
            .arg(in_flight_limit);
        let mut conn = self.conn().await?;
        let (reply,): (Vec<redis::Value>,) = run(&mut conn, &pipe).await?;
        let mut it = reply.into_iter();
        let id: String = redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil))?;
        let code: i64 = redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil))?;
        if code < 0 {
            let in_flight: u64 = redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil))?;
            return Ok(Submitted::OverQuota(OverQuota { in_flight }));
        }
        let id: JobId = id
            .parse()
            .map_err(|e: crate::job::BadJobId| QueueError::Corrupt {
                id: id.clone(),
                reason: e.to_string(),
            })?;
        Ok(if code == 1 {
            self.store.history().jobs_in(BATCH, 1);
            Submitted::Created(id)
        } else {
            Submitted::Existing(id)
        })
    }

    /// Opens a batch in `validating`, reserving its jobs against the
    /// owner's in-flight limit in the same call.
    pub async fn create(&self, batch: &NewBatch) -> Result<Result<(), OverQuota>, QueueError> {
        self.create_with(batch, &[]).await
    }

    /// [`Self::create`], keeping `fields` on the batch's hash in the same
    /// call (an OpenAI Batch API batch's input file, metadata, errors:
    /// [`super::openai::OpenAiBatch::fields`]).
    pub async fn create_with(
        &self,
        batch: &NewBatch,
        fields: &[(&str, String)],
    ) -> Result<Result<(), OverQuota>, QueueError> {
        let q = self.q_of(&batch.id);
        let webhook_job =
            JobId::new_in(&batch_partition(&batch.id).unwrap_or_else(|| Partition::first(BATCH)))
                .to_string();
        let mut pipe = Pipeline::new();
        fcall(
            &mut pipe,
            "ferry_batch_create",
            &[&q.batch(&batch.id), &q.owner_in_flight(&batch.owner)],
        )
        .arg(&batch.id)
        .arg(&batch.owner)
        .arg(batch.jobs)
        .arg(batch.in_flight_limit)
        .arg(self.retention_secs())
        .arg(q.batch_running(&batch.id))
        .arg(q.batch_jobs(&batch.id))
        .arg(batch.skipped)
        .arg(batch.webhook_url.as_deref().unwrap_or(""))
        .arg(&webhook_job)
        .arg(q.job(&webhook_job))
        .arg(max_attempts_of(BATCH_WEBHOOK));
        for (name, value) in fields {
            pipe.arg(*name).arg(value);
        }
        let mut conn = self.conn().await?;
        let ((opened, in_flight),): ((i64, u64),) = run(&mut conn, &pipe).await?;
        if opened != 1 {
            return Ok(Err(OverQuota { in_flight }));
        }
        self.list_as_recent(&mut conn, &batch.id).await;
        Ok(Ok(()))
    }

    /// Writes one chunk of a batch's jobs (records, stream entries, ids on
    /// its list) in one call. Jobs may start as soon as they are written.
    pub async fn enqueue_chunk(
        &self,
        batch_id: &str,
        owner: &str,
        jobs: &[(String, ChatCompletion)],
    ) -> Result<(), QueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let q = self.q_of(batch_id);
        let partition = batch_partition(batch_id).unwrap_or_else(|| Partition::first(BATCH));
        let ids: Vec<String> = jobs
            .iter()
            .map(|_| JobId::new_in(&partition).to_string())
            .collect();
        let mut keys = vec![q.stream(), q.batch(batch_id), q.batch_jobs(batch_id)];
        keys.extend(ids.iter().map(|id| q.job(id)));
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut pipe = Pipeline::new();
        let call = fcall(&mut pipe, "ferry_batch_enqueue", &keys)
            .arg(batch_id)
            .arg(CHAT_COMPLETION)
            .arg(BATCH)
            .arg(max_attempts_of(CHAT_COMPLETION))
            .arg(q.batch_running(batch_id))
            .arg(q.owner_in_flight(owner));
        for (id, (custom_id, payload)) in ids.iter().zip(jobs) {
            call.arg(id)
                .arg(custom_id)
                .arg(serde_json::to_string(payload)?);
        }
        let mut conn = self.conn().await?;
        let (written,): (i64,) = run(&mut conn, &pipe).await?;
        if written < 0 {
            return Err(QueueError::Corrupt {
                id: batch_id.to_owned(),
                reason: "the batch is no longer being enqueued".into(),
            });
        }
        self.store.history().jobs_in(BATCH, jobs.len() as u64);
        Ok(())
    }

    /// Every job is in: the batch's total is final. Returns its status.
    pub async fn commit(&self, batch_id: &str) -> Result<String, QueueError> {
        let q = self.q_of(batch_id);
        let mut pipe = Pipeline::new();
        fcall(
            &mut pipe,
            "ferry_batch_commit",
            &[&q.stream(), &q.batch(batch_id)],
        );
        let mut conn = self.conn().await?;
        let (status,): (String,) = run(&mut conn, &pipe).await?;
        Ok(status)
    }

    /// Fails a submission cut short: unwritten reservations go back to the
    /// owner; written jobs are cancelled when a worker meets them.
    pub async fn abort(&self, batch_id: &str, reason: &str) -> Result<(), QueueError> {
        let mut pipe = Pipeline::new();
        fcall(
            &mut pipe,
            "ferry_batch_abort",
            &[&self.q_of(batch_id).batch(batch_id)],
        )
        .arg(reason);
        let mut conn = self.conn().await?;
        let (_,): (i64,) = run(&mut conn, &pipe).await?;
        Ok(())
    }
}
