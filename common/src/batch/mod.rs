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

pub mod files;
mod lifecycle;
pub mod line;
pub mod openai;
pub mod signature;
mod status;
mod submission;
pub mod webhook_target;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::job::JobId;
use crate::keys::{Partition, QueueKeys};
use crate::queue::{BATCH, QueueError};
use crate::store::Store;

/// A batch still `validating` this long after it was opened was abandoned
/// by its submitter (an api that died, or Redis that failed, mid-way, with
/// the abort lost too): reading it fails it. A real submission takes
/// seconds.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(15 * 60);

/// A new batch's id in `partition` of the batch queue: `batch_<ULID>` in
/// partition 0, `batch_<n>_<ULID>` in partition n, so the id alone finds
/// the batch and its jobs.
pub fn new_batch_id(partition: &Partition) -> String {
    match partition.index {
        0 => format!("batch_{}", ulid::Ulid::new()),
        n => format!("batch_{n}_{}", ulid::Ulid::new()),
    }
}

/// The partition of the batch queue a batch id names, `None` when `id` is
/// not a batch id (it becomes part of a key: check it first).
pub fn batch_partition(id: &str) -> Option<Partition> {
    let rest = id.strip_prefix("batch_")?;
    let (index, ulid) = match rest.split_once('_') {
        None => (0, rest),
        Some((raw, ulid)) => {
            let n: u16 = raw.parse().ok()?;
            if n == 0 || n.to_string() != raw || n > crate::keys::MAX_PARTITIONS {
                return None;
            }
            (n, ulid)
        }
    };
    ulid.parse::<ulid::Ulid>().ok()?;
    Some(Partition::new(BATCH, index))
}

/// Whether `id` looks like a batch id (it becomes part of a key).
pub fn is_batch_id(id: &str) -> bool {
    batch_partition(id).is_some()
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
    /// What a batch of OpenAI's Batch API (`/openai/v1`) keeps besides;
    /// `None` for a batch of `/v1`.
    #[serde(skip)]
    pub openai: Option<openai::OpenAiBatch>,
    /// How long it is kept once finished.
    #[serde(skip)]
    pub retention: Option<Duration>,
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
    /// When it finished (succeeded, failed or cancelled).
    pub finished_at: Option<DateTime<Utc>>,
}

/// Batches and API jobs of one deployment.
#[derive(Clone)]
pub struct Batches {
    store: Store,
    /// How long finished batches and their jobs are kept.
    retention: Duration,
}

impl Batches {
    pub fn new(store: Store, retention: Duration) -> Self {
        Self { store, retention }
    }

    /// How long finished batches and their jobs are kept.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// The files uploaded for OpenAI's Batch API, kept as long as
    /// finished batches.
    pub fn files(&self) -> files::Files {
        files::Files::new(self.store.clone(), self.retention)
    }

    /// The partition an API key's jobs and batches live in: one per key,
    /// so its in-flight count is exact in the one call that enqueues or
    /// finishes a job (one partition's rate is far above any provider's).
    pub fn partition_of_owner(&self, owner: &str) -> Partition {
        self.store.keys().partitions().place(BATCH, owner)
    }

    /// The keys of the partition holding the batch `batch_id` (partition 0
    /// for an id that is not a batch's: such ids are refused before this).
    fn q_of(&self, batch_id: &str) -> QueueKeys {
        let partition = batch_partition(batch_id).unwrap_or_else(|| Partition::first(BATCH));
        self.store.keys().partition(&partition)
    }

    /// Where the dashboard's list of recent batches is kept (partition 0:
    /// it is written in a call of its own).
    fn recent_key(&self) -> String {
        self.store.keys().queue(BATCH).recent_batches()
    }

    fn retention_secs(&self) -> u64 {
        self.retention.as_secs().max(1)
    }

    async fn conn(&self) -> Result<crate::connection::Conn, QueueError> {
        Ok(self.store.conn().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_are_checked_before_they_become_keys() {
        assert!(is_batch_id(&new_batch_id(&Partition::first(BATCH))));
        let in_three = new_batch_id(&Partition::new(BATCH, 3));
        assert_eq!(batch_partition(&in_three), Some(Partition::new(BATCH, 3)));
        assert!(!is_batch_id("batch_03_01ARZ3NDEKTSV4RRFFQ69G5FAV"));
        assert!(!is_batch_id("batch_0_01ARZ3NDEKTSV4RRFFQ69G5FAV"));
        assert!(!is_batch_id("batch_nope"));
        assert!(!is_batch_id("x:batch_01ARZ3NDEKTSV4RRFFQ69G5FAV"));
    }
}
