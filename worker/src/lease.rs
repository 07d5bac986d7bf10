//! The lease keeper: renews every entry this worker still holds, so a slow
//! job of a live worker never looks abandoned. A pending entry's idle time is
//! its lease; `XCLAIM <self> 0 ... JUSTID` resets it without counting a
//! delivery. Renewing every third of the visibility timeout leaves two
//! renewals of slack before anyone may take the work over.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use ferry_common::queue::JobQueue;

use crate::in_flight::InFlight;
use crate::outage::Outage;

pub async fn run(
    queue: JobQueue,
    worker_id: String,
    in_flight: InFlight,
    visibility_timeout: Duration,
    shutdown: CancellationToken,
) {
    let every = visibility_timeout / 3;
    let mut outage = Outage::new("lease keeper");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        for (q, entries) in in_flight.entries() {
            match queue.renew_leases(&worker_id, &q, &entries).await {
                Ok(held) => {
                    outage.ok();
                    if held < entries.len() {
                        tracing::debug!(queue = %q, held, asked = entries.len(), "some entries finished or were taken over meanwhile");
                    }
                }
                Err(e) => {
                    outage.failed(&e);
                }
            }
        }
    }
}
