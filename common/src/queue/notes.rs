//! Notes a handler keeps on its job record between attempts: an answer
//! already obtained, how many parts of it WeChat already accepted. A retried
//! or taken-over job reads them and never redoes a side effect it recorded.

use std::collections::HashMap;

use super::{JobQueue, QueueError};
use crate::job::JobId;

/// Notes live in the record as `note:<name>` fields, apart from the engine's.
fn field(name: &str) -> String {
    format!("note:{name}")
}

impl JobQueue {
    /// Writes notes on a job's record (one round trip).
    pub async fn write_notes(&self, job: &JobId, notes: &[(&str, &str)]) -> Result<(), QueueError> {
        if notes.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.keys.queue(job.queue()).job(&job.to_string()));
        for (name, value) in notes {
            cmd.arg(field(name)).arg(*value);
        }
        let mut conn = self.conn().await?;
        cmd.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Every note on a job's record.
    pub async fn read_notes(&self, job: &JobId) -> Result<HashMap<String, String>, QueueError> {
        let mut conn = self.conn().await?;
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.queue(job.queue()).job(&job.to_string()))
            .query_async(&mut conn)
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("note:").map(|name| (name.to_owned(), v)))
            .collect())
    }
}
