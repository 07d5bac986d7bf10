//! Moves due retries from each queue's delayed set back to its stream. Every
//! worker runs one; the promote function is atomic, so a job moves once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use ferry_common::queue::JobQueue;

use crate::outage::Outage;

const EVERY: Duration = Duration::from_millis(250);
const MOST_PER_CALL: usize = 1000;

pub async fn run(queue: JobQueue, queues: Vec<&'static str>, shutdown: CancellationToken) {
    let mut outage = Outage::new("promoter");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(EVERY) => {}
        }
        for q in &queues {
            match queue.promote_due(q, MOST_PER_CALL).await {
                Ok(moved) => {
                    outage.ok();
                    if moved > 0 {
                        tracing::debug!(queue = q, moved, "promoted due retries");
                    }
                }
                Err(e) => {
                    outage.failed(&e);
                }
            }
        }
    }
}
