//! Reading batches: status and counts, results in pages, a job's owner,
//! the webhook target.

use std::collections::HashMap;

use chrono::Utc;
use redis::Pipeline;

use super::{ABANDONED_AFTER, BatchCounts, BatchInfo, Batches, JobOutcome};

/// How many batches the list of recent ones keeps.
pub const RECENT_KEPT: usize = 1000;
use crate::job::{JobId, from_millis};
use crate::queue::QueueError;

impl Batches {
    /// A batch's status and counts, `None` when unknown (or expired).
    pub async fn get(&self, batch_id: &str) -> Result<Option<BatchInfo>, QueueError> {
        let q = self.q_of(batch_id);
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

    /// Puts a new batch on the dashboard's list of recent batches (the
    /// newest [`RECENT_KEPT`]). Best effort: a batch missing from the list
    /// still runs and answers by id, so a failure here is only logged.
    pub(super) async fn list_as_recent<C: redis::aio::ConnectionLike>(
        &self,
        conn: &mut C,
        batch_id: &str,
    ) {
        let key = self.recent_key();
        let mut pipe = Pipeline::new();
        pipe.cmd("ZADD")
            .arg(&key)
            .arg(Utc::now().timestamp_millis())
            .arg(batch_id)
            .ignore();
        pipe.cmd("ZREMRANGEBYRANK")
            .arg(&key)
            .arg(0)
            .arg(-(RECENT_KEPT as i64) - 1)
            .ignore();
        if let Err(e) = pipe.query_async::<()>(conn).await {
            tracing::warn!(batch = %batch_id, error = %e, "cannot list the batch as recent; it runs all the same");
        }
    }

    /// The newest `count` batches, newest first, for the dashboard. Batches
    /// expired since they were listed are dropped from the list here.
    pub async fn recent(&self, count: usize) -> Result<Vec<BatchInfo>, QueueError> {
        let key = self.recent_key();
        let ids: Vec<String> = {
            let mut conn = self.conn().await?;
            redis::cmd("ZREVRANGE")
                .arg(&key)
                .arg(0)
                .arg(count.max(1) - 1)
                .query_async(&mut conn)
                .await?
        };
        let mut found = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for id in ids {
            match self.get(&id).await? {
                Some(info) => found.push(info),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            let mut conn = self.conn().await?;
            redis::cmd("ZREM")
                .arg(&key)
                .arg(&gone)
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(found)
    }

    /// Lists an OpenAI Batch API batch in its owner's index, for
    /// `GET /openai/v1/batches` (newest first; capped, expired ids dropped
    /// as it is read).
    pub async fn list_as_openai(&self, owner: &str, batch_id: &str) -> Result<(), QueueError> {
        let mut conn = self.conn().await?;
        super::files::Index::batches(&self.store, owner)
            .add(&mut conn, batch_id)
            .await
    }

    /// `owner`'s OpenAI Batch API batches after `after` (a batch id),
    /// newest first, at most `limit`; and whether more follow.
    pub async fn openai_batches(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<BatchInfo>, bool), super::files::ListError> {
        if after.is_some_and(|a| !super::is_batch_id(a)) {
            return Err(super::files::ListError::BadCursor);
        }
        super::files::Index::batches(&self.store, owner)
            .page(&self.store, after, limit, true, |id| async move {
                self.get(&id).await
            })
            .await
    }

    /// Up to `count` of a batch's jobs from position `start`, in line order.
    pub async fn outcomes(
        &self,
        batch_id: &str,
        start: usize,
        count: usize,
    ) -> Result<Vec<JobOutcome>, QueueError> {
        let q = self.q_of(batch_id);
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
                .arg("last_error")
                .arg("finished_ms");
        }
        type Fields = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
        );
        let records: Vec<Fields> = pipe.query_async(&mut conn).await?;
        Ok(ids
            .into_iter()
            .zip(records)
            .map(
                |(job_id, (custom_id, state, result, error, finished))| JobOutcome {
                    job_id,
                    custom_id: custom_id.unwrap_or_default(),
                    state: state.unwrap_or_else(|| "expired".into()),
                    result: result
                        .map(|r| serde_json::from_str(&r).unwrap_or(serde_json::Value::String(r))),
                    error,
                    finished_at: finished.map(from_millis),
                },
            )
            .collect())
    }

    /// The in-flight counter key a job counts against (the owner's, as
    /// `Keys` builds it), `None` for a job of no API key.
    pub async fn owner_key_of(&self, job: &JobId) -> Result<Option<String>, QueueError> {
        let mut conn = self.conn().await?;
        Ok(redis::cmd("HGET")
            .arg(
                self.store
                    .keys()
                    .partition(&job.partition())
                    .job(&job.to_string()),
            )
            .arg("owner_key")
            .query_async(&mut conn)
            .await?)
    }

    /// A batch's webhook target, for the webhook handler (the api never
    /// shows it).
    pub async fn webhook_url(&self, batch_id: &str) -> Result<Option<String>, QueueError> {
        let mut conn = self.conn().await?;
        Ok(redis::cmd("HGET")
            .arg(self.q_of(batch_id).batch(batch_id))
            .arg("webhook_url")
            .query_async(&mut conn)
            .await?)
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
        openai: super::openai::OpenAiBatch::from_fields(f),
        retention: num("retention").map(std::time::Duration::from_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
