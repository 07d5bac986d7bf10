//! The job model: what a job is, its identity and its lifecycle.
//!
//! A job's record lives in Redis under its queue's hash tag; the stream entry
//! carries only the job id. The id names the queue and its partition
//! (`<queue>:<ulid>` in partition 0, `<queue>:<n>:<ulid>` in partition n),
//! so any process finds the record from the id alone.

pub mod kinds;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::keys::Partition;

/// `<queue>:<ULID>` (or `<queue>:<n>:<ULID>` in partition n): sortable by
/// creation time, unique without coordination.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId {
    queue: String,
    partition: u16,
    ulid: ulid::Ulid,
}

impl JobId {
    /// A new id in partition 0 of `queue`.
    pub fn new(queue: &str) -> Self {
        Self::new_in(&Partition::first(queue))
    }

    /// A new id in `partition`.
    pub fn new_in(partition: &Partition) -> Self {
        Self {
            queue: partition.queue.clone(),
            partition: partition.index,
            ulid: ulid::Ulid::new(),
        }
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The partition holding the job's record and entry.
    pub fn partition(&self) -> Partition {
        Partition::new(&self.queue, self.partition)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.partition {
            0 => write!(f, "{}:{}", self.queue, self.ulid),
            n => write!(f, "{}:{n}:{}", self.queue, self.ulid),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a job id (expected <queue>:<ULID>): {0:?}")]
pub struct BadJobId(String);

impl FromStr for JobId {
    type Err = BadJobId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadJobId(s.into());
        let (head, ulid) = s.rsplit_once(':').ok_or_else(bad)?;
        let (queue, partition) = match head.split_once(':') {
            None => (head, 0),
            Some((queue, raw)) => {
                let n: u16 = raw.parse().map_err(|_| bad())?;
                // One spelling per partition: `wechat:3`, never `wechat:03` or `wechat:0`.
                if n == 0 || n.to_string() != raw || n > crate::keys::MAX_PARTITIONS {
                    return Err(bad());
                }
                (queue, n)
            }
        };
        if !crate::queue::is_valid_queue_name(queue) {
            return Err(bad());
        }
        let ulid = ulid.parse().map_err(|_| bad())?;
        Ok(Self {
            queue: queue.to_owned(),
            partition,
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

/// The payload key of the W3C traceparent a job carries when traces are on
/// ([`crate::telemetry::traces`]): in the payload JSON, so no Lua or record
/// change, and the spool keeps it. Absent when traces are off.
pub const TRACEPARENT: &str = "traceparent";

impl NewJob {
    /// Puts the producer's span context on the job (nothing for `None` or
    /// a payload that is not an object).
    pub fn carry_trace(&mut self, traceparent: Option<String>) {
        if let (Some(tp), Some(payload)) = (traceparent, self.payload.as_object_mut()) {
            payload.insert(TRACEPARENT.to_owned(), tp.into());
        }
    }
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

impl Delivery {
    /// The traceparent the producer put on the job, if any.
    pub fn traceparent(&self) -> Option<&str> {
        self.payload.get(TRACEPARENT)?.as_str()
    }
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

    #[test]
    fn job_ids_name_their_partition() {
        let id = JobId::new_in(&Partition::new("wechat", 3));
        let text = id.to_string();
        assert!(text.starts_with("wechat:3:"), "{text}");
        let parsed: JobId = text.parse().unwrap();
        assert_eq!(parsed.partition(), Partition::new("wechat", 3));
        assert_eq!(JobId::new("batch").partition(), Partition::first("batch"));
        for bad in [
            "wechat:0:01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "wechat:03:01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "wechat:x:01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "a:1:2:01ARZ3NDEKTSV4RRFFQ69G5FAV",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
    }
}
