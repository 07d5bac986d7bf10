//! One line of the spool: what still has to reach Redis. The format is
//! JSON, one object per line, tagged by `op`, so a line can be read (and
//! replayed by hand, if it ever came to that) without Ferry.

use std::time::Duration;

use ferry_common::job::{Idempotency, NewJob};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SpoolRecord {
    /// A job to enqueue. Its idempotency key (the WeChat dedup key) makes the
    /// replay exactly-once: if the first attempt did reach Redis after all,
    /// or WeChat's retry got through directly, the replay creates nothing.
    Enqueue {
        kind: String,
        queue: String,
        payload: serde_json::Value,
        max_attempts: u32,
        idempotency_key: Option<String>,
        idempotency_ttl_secs: u64,
        /// When it was spooled (unix milliseconds), for the logs.
        spooled_at_ms: i64,
    },
    /// A user who unfollowed: forget them (idempotent).
    Forget { openid: String, spooled_at_ms: i64 },
}

impl SpoolRecord {
    pub fn enqueue(job: &NewJob) -> Self {
        SpoolRecord::Enqueue {
            kind: job.kind.clone(),
            queue: job.queue.clone(),
            payload: job.payload.clone(),
            max_attempts: job.max_attempts,
            idempotency_key: job.idempotency.as_ref().map(|i| i.key.clone()),
            idempotency_ttl_secs: job.idempotency.as_ref().map_or(0, |i| i.ttl.as_secs()),
            spooled_at_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    pub fn forget(openid: &str) -> Self {
        SpoolRecord::Forget {
            openid: openid.to_owned(),
            spooled_at_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    /// The job to enqueue, for an `Enqueue` record.
    pub fn job(&self) -> Option<NewJob> {
        match self {
            SpoolRecord::Enqueue {
                kind,
                queue,
                payload,
                max_attempts,
                idempotency_key,
                idempotency_ttl_secs,
                ..
            } => Some(NewJob {
                kind: kind.clone(),
                queue: queue.clone(),
                payload: payload.clone(),
                max_attempts: *max_attempts,
                idempotency: idempotency_key.as_ref().map(|key| Idempotency {
                    key: key.clone(),
                    ttl: Duration::from_secs(*idempotency_ttl_secs),
                }),
            }),
            SpoolRecord::Forget { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_survives_the_line_format_with_its_idempotency_key() {
        let job = NewJob {
            kind: "wechat.reply".into(),
            queue: "wechat".into(),
            payload: serde_json::json!({"openid": "o1", "content": "你好"}),
            max_attempts: 4,
            idempotency: Some(Idempotency {
                key: "msg:42".into(),
                ttl: Duration::from_secs(300),
            }),
        };
        let line = serde_json::to_string(&SpoolRecord::enqueue(&job)).unwrap();
        assert!(line.starts_with(r#"{"op":"enqueue""#), "{line}");
        assert!(!line.contains('\n'));
        let back: SpoolRecord = serde_json::from_str(&line).unwrap();
        let again = back.job().unwrap();
        assert_eq!(again.payload, job.payload);
        assert_eq!(again.max_attempts, 4);
        let idem = again.idempotency.unwrap();
        assert_eq!(
            (idem.key.as_str(), idem.ttl),
            ("msg:42", Duration::from_secs(300))
        );

        let forget = serde_json::to_string(&SpoolRecord::forget("o1")).unwrap();
        assert!(
            forget.starts_with(r#"{"op":"forget","openid":"o1""#),
            "{forget}"
        );
    }
}
