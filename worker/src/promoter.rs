//! Moves due retries from each queue's delayed set back to its stream. Every
//! worker runs one; the promote function is atomic, so a job moves once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use ferry_common::queue::{JobQueue, QueueError};

use crate::outage::{AfterFailure, MAX_BACKOFF, Pace, Pass, repeat};

const PACE: Pace = Pace {
    every: Duration::from_millis(250),
    after_failure: AfterFailure::Backoff { cap: MAX_BACKOFF },
};
const MOST_PER_CALL: usize = 1000;

pub async fn run(queue: JobQueue, queues: Vec<&'static str>, shutdown: CancellationToken) {
    repeat("promoter", PACE, &shutdown, Promote { queue, queues }).await
}

struct Promote {
    queue: JobQueue,
    queues: Vec<&'static str>,
}

impl Pass for Promote {
    type Error = QueueError;
    async fn pass(&mut self) -> Result<(), QueueError> {
        for q in &self.queues {
            for partition in self.queue.served_partitions(q) {
                let moved = self.queue.promote_due(&partition, MOST_PER_CALL).await?;
                if moved > 0 {
                    tracing::debug!(partition = %partition.name(), moved, "promoted due retries");
                }
            }
        }
        Ok(())
    }
}
