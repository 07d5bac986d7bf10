//! The job model: what a job is, its identity and its lifecycle.
//!
//! A job's record lives in Redis under its queue's hash tag; the stream entry
//! carries only the job id. The id names the queue (`<queue>:<ulid>`), so any
//! process finds the record from the id alone.

pub mod kinds;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// `<queue>:<ULID>`: sortable by creation time, unique without coordination.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId {
    queue: String,
    ulid: ulid::Ulid,
}

impl JobId {
    pub fn new(queue: &str) -> Self {
        Self {
            queue: queue.to_owned(),
            ulid: ulid::Ulid::new(),
        }
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.queue, self.ulid)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a job id (expected <queue>:<ULID>): {0:?}")]
pub struct BadJobId(String);

impl FromStr for JobId {
    type Err = BadJobId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (queue, ulid) = s.rsplit_once(':').ok_or_else(|| BadJobId(s.into()))?;
        if !crate::queue::is_valid_queue_name(queue) {
            return Err(BadJobId(s.into()));
        }
        let ulid = ulid.parse().map_err(|_| BadJobId(s.into()))?;
        Ok(Self {
            queue: queue.to_owned(),
            ulid,
        })
    }
}

impl TryFrom<String> for JobId {
    type Error = BadJobId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> Self {
        id.to_string()
    }
}

/// queued -> running -> succeeded | retrying | dead; retrying -> running;
/// a job of a cancelled batch: running -> cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Retrying,
    Dead,
    /// Its batch was cancelled before it ran (`ferry_batch_begin`).
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Retrying => "retrying",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "retrying" => JobState::Retrying,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            other => return Err(format!("unknown job state {other:?}")),
        })
    }
}

/// A job as stored, read back for inspection (`ferry dlq show`, the API).
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    pub id: JobId,
    pub kind: String,
    pub payload: serde_json::Value,
    pub state: JobState,
    pub attempts: u32,
    pub max_attempts: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub due_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub result: Option<serde_json::Value>,
    pub worker: Option<String>,
}

/// Server-time milliseconds (Redis `TIME`) to a timestamp.
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub queue: String,
    pub payload: serde_json::Value,
    pub max_attempts: u32,
    /// The same key within its TTL returns the same job instead of a new one.
    pub idempotency: Option<Idempotency>,
}

#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub ttl: std::time::Duration,
}

/// A job handed to a worker: fetched, marked running, attempt counted.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: JobId,
    /// The stream entry to acknowledge when the outcome is recorded.
    pub entry_id: String,
    pub kind: String,
    pub payload: serde_json::Value,
    /// This attempt's number, from 1.
    pub attempt: u32,
    pub max_attempts: u32,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_and_name_their_queue() {
        let id = JobId::new("wechat");
        let parsed: JobId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
        assert_eq!(parsed.queue(), "wechat");
        assert!("nope".parse::<JobId>().is_err());
        assert!("wechat:notaulid".parse::<JobId>().is_err());
        assert!(
            "we chat:01ARZ3NDEKTSV4RRFFQ69G5FAV"
                .parse::<JobId>()
                .is_err()
        );
    }
}
