//! Batches and API jobs: ordinary `chat.completion` jobs on the `batch`
//! queue, with a batch record that counts them.
//!
//! Every change is one function call of `migrations/ferry_batch.lua`, and a
//! batch's counts move in the same call that records a job's outcome (see
//! [`crate::queue::delivery`], which records `batch` queue outcomes through
//! that library), so they are exact under at-least-once delivery. A
//! submission is opened ([`Batches::create`], reserving its jobs against the
//! owner's in-flight limit), written in chunks ([`Batches::enqueue_chunk`])
//! and committed ([`Batches::commit`]) only after the api validated every
//! line; a submission cut short is aborted ([`Batches::abort`]) and its
//! written jobs are cancelled when a worker meets them ([`Batches::begin`]).

pub mod line;
pub mod signature;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_redis::Pool;
use redis::Pipeline;
use serde::Serialize;

use crate::functions::{fcall, run};
use crate::job::kinds::{CHAT_COMPLETION, ChatCompletion, max_attempts_of};
use crate::job::{Delivery, Idempotency, JobId, from_millis};
use crate::keys::{CONSUMER_GROUP, Keys, QueueKeys};
use crate::queue::{BATCH, QueueError};

/// A batch still `validating` this long after it was opened was abandoned
/// by its submitter (an api that died, or Redis that failed, mid-way, with
/// the abort lost too): reading it fails it. A real submission takes
/// seconds.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(15 * 60);

/// A new batch's id: `batch_<ULID>`.
pub fn new_batch_id() -> String {
    format!("batch_{}", ulid::Ulid::new())
}

/// Whether `id` looks like a batch id (it becomes part of a key).
pub fn is_batch_id(id: &str) -> bool {
    id.strip_prefix("batch_")
        .is_some_and(|u| u.parse::<ulid::Ulid>().is_ok())
}

/// What to open.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub id: String,
    /// The API key (principal name) that submits it.
    pub owner: String,
    /// Valid lines, all of which will be enqueued.
    pub jobs: u64,
    /// Invalid lines left out (`skip_invalid`).
    pub skipped: u64,
    /// Most jobs the owner may have in flight (0: no limit).
    pub in_flight_limit: u32,
    /// Where to POST the summary when the batch finishes.
    pub webhook_url: Option<String>,
}

/// The answer to [`Batches::create`] and [`Batches::submit_job`] when the
/// owner's in-flight limit refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota {
    pub in_flight: u64,
}

/// The answer to [`Batches::submit_job`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    Created(JobId),
    /// The idempotency key named this job already.
    Existing(JobId),
    OverQuota(OverQuota),
}

/// What a worker should do with a job it just started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    Run,
    /// Its batch was cancelled: recorded so, nothing to do.
    Cancelled,
    /// Another delivery already ended it.
    Finished,
}

/// A batch as `GET /v1/batches/{id}` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchInfo {
    pub id: String,
    /// `validating` (being enqueued), `in_progress`, `cancelling`,
    /// `completed`, `cancelled` or `failed` (the submission was cut short).
    pub status: String,
    #[serde(skip)]
    pub owner: String,
    pub counts: BatchCounts,
    /// Invalid lines left out with `skip_invalid=true`.
    pub skipped: u64,
    pub created_at: DateTime<Utc>,
    /// When every job was enqueued.
    pub in_progress_at: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Whether a completion webhook is set.
    pub webhook: bool,
    /// Why a failed batch failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How many of a batch's jobs are where.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchCounts {
    pub total: u64,
    /// Waiting for a worker (retries included).
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl BatchCounts {
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }
}

/// One job of a batch, for its results.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutcome {
    pub job_id: String,
    pub custom_id: String,
    /// The job's state (`queued`, `running`, `retrying`, `succeeded`,
    /// `dead`, `cancelled`), or `expired` when its record is gone.
    pub state: String,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// Batches and API jobs of one deployment.
#[derive(Clone)]
pub struct Batches {
    pool: Pool,
    keys: Keys,
    /// How long finished batches and their jobs are kept.
    retention: Duration,
}

impl Batches {
    pub fn new(pool: Pool, keys: Keys, retention: Duration) -> Self {
        Self {
            pool,
            keys,
            retention,
        }
    }

    fn q(&self) -> QueueKeys {
        self.keys.queue(BATCH)
    }

    fn retention_secs(&self) -> u64 {
        self.retention.as_secs().max(1)
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, QueueError> {
        Ok(self.pool.get().await?)
    }

    /// Enqueues one chat job for `owner`, within its in-flight limit (0: no
    /// limit); with an idempotency key, a repeat returns the first job.
    pub async fn submit_job(
        &self,
        owner: &str,
        payload: &ChatCompletion,
        idempotency: Option<&Idempotency>,
        in_flight_limit: u32,
    ) -> Result<Submitted, QueueError> {
        let q = self.q();
        let id = JobId::new(BATCH).to_string();
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
            Submitted::Created(id)
        } else {
            Submitted::Existing(id)
        })
    }

    /// Opens a batch in `validating`, reserving its jobs against the
    /// owner's in-flight limit in the same call.
    pub async fn create(&self, batch: &NewBatch) -> Result<Result<(), OverQuota>, QueueError> {
        let q = self.q();
        let webhook_job = JobId::new(BATCH).to_string();
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
        .arg(max_attempts_of(crate::job::kinds::BATCH_WEBHOOK));
        let mut conn = self.conn().await?;
        let ((opened, in_flight),): ((i64, u64),) = run(&mut conn, &pipe).await?;
        Ok(if opened == 1 {
            Ok(())
        } else {
            Err(OverQuota { in_flight })
        })
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
        let q = self.q();
        let ids: Vec<String> = jobs.iter().map(|_| JobId::new(BATCH).to_string()).collect();
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
        Ok(())
    }

    /// Every job is in: the batch's total is final. Returns its status.
    pub async fn commit(&self, batch_id: &str) -> Result<String, QueueError> {
        let q = self.q();
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
        fcall(&mut pipe, "ferry_batch_abort", &[&self.q().batch(batch_id)]).arg(reason);
        let mut conn = self.conn().await?;
        let (_,): (i64,) = run(&mut conn, &pipe).await?;
        Ok(())
    }

    /// Asks a batch to stop: its queued jobs will not run, running ones
    /// finish. Returns the status after the call, `None` for an unknown
    /// batch.
    pub async fn cancel(&self, batch_id: &str) -> Result<Option<String>, QueueError> {
        let mut pipe = Pipeline::new();
        fcall(
            &mut pipe,
            "ferry_batch_cancel",
            &[&self.q().batch(batch_id)],
        );
        let mut conn = self.conn().await?;
        let (status,): (String,) = run(&mut conn, &pipe).await?;
        Ok((!status.is_empty()).then_some(status))
    }

    /// A batch's status and counts, `None` when unknown (or expired).
    pub async fn get(&self, batch_id: &str) -> Result<Option<BatchInfo>, QueueError> {
        let q = self.q();
        let mut pipe = Pipeline::new();
        pipe.cmd("HGETALL").arg(q.batch(batch_id));
        pipe.cmd("SCARD").arg(q.batch_running(batch_id));
        let mut conn = self.conn().await?;
        let (fields, running): (HashMap<String, String>, u64) = pipe.query_async(&mut conn).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let info = parse_batch(&fields, running);
        let abandoned = info.status == "validating"
            && info.in_progress_at.is_none()
            && (Utc::now() - info.created_at)
                .to_std()
                .is_ok_and(|age| age > ABANDONED_AFTER);
        if abandoned {
            tracing::warn!(batch = %batch_id, "batch abandoned while being enqueued: failing it");
            self.abort(batch_id, "the submission was interrupted; resubmit")
                .await?;
            return Box::pin(self.get(batch_id)).await;
        }
        Ok(Some(info))
    }

    /// Up to `count` of a batch's jobs from position `start`, in line order.
    pub async fn outcomes(
        &self,
        batch_id: &str,
        start: usize,
        count: usize,
    ) -> Result<Vec<JobOutcome>, QueueError> {
        let q = self.q();
        let mut conn = self.conn().await?;
        let ids: Vec<String> = redis::cmd("LRANGE")
            .arg(q.batch_jobs(batch_id))
            .arg(start)
            .arg(start + count.max(1) - 1)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = Pipeline::new();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(q.job(id))
                .arg("custom_id")
                .arg("state")
                .arg("result")
                .arg("last_error");
        }
        type Fields = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let records: Vec<Fields> = pipe.query_async(&mut conn).await?;
        Ok(ids
            .into_iter()
            .zip(records)
            .map(|(job_id, (custom_id, state, result, error))| JobOutcome {
                job_id,
                custom_id: custom_id.unwrap_or_default(),
                state: state.unwrap_or_else(|| "expired".into()),
                result: result
                    .map(|r| serde_json::from_str(&r).unwrap_or(serde_json::Value::String(r))),
                error,
            })
            .collect())
    }

    /// The in-flight counter key a job counts against (the owner's, as
    /// `Keys` builds it), `None` for a job of no API key.
    pub async fn owner_key_of(&self, job: &JobId) -> Result<Option<String>, QueueError> {
        let mut conn = self.conn().await?;
        Ok(redis::cmd("HGET")
            .arg(self.keys.queue(job.queue()).job(&job.to_string()))
            .arg("owner_key")
            .query_async(&mut conn)
            .await?)
    }

    /// A batch's webhook target, for the webhook handler (the api never
    /// shows it).
    pub async fn webhook_url(&self, batch_id: &str) -> Result<Option<String>, QueueError> {
        let mut conn = self.conn().await?;
        Ok(redis::cmd("HGET")
            .arg(self.q().batch(batch_id))
            .arg("webhook_url")
            .query_async(&mut conn)
            .await?)
    }

    /// Before a handler works on a started job: a job of a cancelled batch
    /// is recorded cancelled (entry acknowledged) in this one call; any
    /// other batch job is counted running.
    pub async fn begin(&self, job: &Delivery) -> Result<Begin, QueueError> {
        let q = self.keys.queue(job.id.queue());
        let mut pipe = Pipeline::new();
        fcall(
            &mut pipe,
            "ferry_batch_begin",
            &[&q.stream(), &q.job(&job.id.to_string())],
        )
        .arg(CONSUMER_GROUP)
        .arg(&job.entry_id)
        .arg(self.retention_secs());
        let mut conn = self.conn().await?;
        let (answer,): (String,) = run(&mut conn, &pipe).await?;
        Ok(match answer.as_str() {
            "cancelled" => Begin::Cancelled,
            "finished" => Begin::Finished,
            _ => Begin::Run,
        })
    }
}

fn parse_batch(f: &HashMap<String, String>, running: u64) -> BatchInfo {
    let num = |name: &str| f.get(name).and_then(|v| v.parse::<u64>().ok());
    let time = |name: &str| num(name).map(|ms| from_millis(ms as i64));
    let mut counts = BatchCounts {
        total: num("total").unwrap_or(0),
        queued: 0,
        running,
        succeeded: num("succeeded").unwrap_or(0),
        failed: num("failed").unwrap_or(0),
        cancelled: num("cancelled").unwrap_or(0),
    };
    counts.queued = counts
        .total
        .saturating_sub(counts.finished())
        .saturating_sub(running);
    BatchInfo {
        id: f.get("id").cloned().unwrap_or_default(),
        status: f.get("status").cloned().unwrap_or_default(),
        owner: f.get("owner").cloned().unwrap_or_default(),
        counts,
        skipped: num("skipped").unwrap_or(0),
        created_at: time("created_ms").unwrap_or_default(),
        in_progress_at: time("committed_ms"),
        cancel_requested_at: time("cancel_requested_ms"),
        finished_at: time("finished_ms"),
        webhook: f.contains_key("webhook_url"),
        error: f.get("error").cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_are_checked_before_they_become_keys() {
        assert!(is_batch_id(&new_batch_id()));
        assert!(!is_batch_id("batch_nope"));
        assert!(!is_batch_id("x:batch_01ARZ3NDEKTSV4RRFFQ69G5FAV"));
    }

    #[test]
    fn queued_is_what_is_neither_finished_nor_running() {
        let f: HashMap<String, String> = [
            ("id", "batch_x"),
            ("status", "in_progress"),
            ("total", "10"),
            ("succeeded", "3"),
            ("failed", "1"),
            ("cancelled", "0"),
            ("created_ms", "1000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let info = parse_batch(&f, 2);
        assert_eq!(info.counts.queued, 4);
        assert_eq!(info.counts.finished(), 4);
    }
}
