//! A batch's life after submission: cancel (the api) and begin (the
//! worker, before a job runs: a cancelled batch's job is recorded so there).

use redis::Pipeline;

use super::{Batches, Begin};
use crate::functions::{fcall, run};
use crate::job::Delivery;
use crate::keys::CONSUMER_GROUP;
use crate::queue::QueueError;

impl Batches {
    /// Asks a batch to stop: its queued jobs will not run, running ones
    /// finish. Returns the status after the call, `None` for an unknown
    /// batch.
    pub async fn cancel(&self, batch_id: &str) -> Result<Option<String>, QueueError> {
        let mut pipe = Pipeline::new();
        fcall(
            &mut pipe,
            "ferry_batch_cancel",
            &[&self.q_of(batch_id).batch(batch_id)],
        );
        let mut conn = self.conn().await?;
        let (status,): (String,) = run(&mut conn, &pipe).await?;
        Ok((!status.is_empty()).then_some(status))
    }

    /// Before a handler works on a started job: a job of a cancelled batch
    /// is recorded cancelled (entry acknowledged) in this one call; any
    /// other batch job is counted running.
    pub async fn begin(&self, job: &Delivery) -> Result<Begin, QueueError> {
        let q = self.store.keys().partition(&job.id.partition());
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
