//! The lease keeper: renews every entry this worker still holds, so a slow
//! job of a live worker never looks abandoned. A pending entry's idle time is
//! its lease; `ferry_renew` resets it (`XCLAIM <self> 0 ... JUSTID`, no
//! delivery counted) for the entries still this worker's, and leaves alone
//! one another worker took over. Renewing every third of the visibility
//! timeout leaves two renewals of slack before anyone may take the work over.
//!
//! Unlike the other background loops it does not back off while Redis
//! fails: the visibility timeout keeps running through an outage, so the
//! leases are renewed again within a quarter of a second of Redis's return.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use ferry_common::queue::{JobQueue, QueueError};

use crate::in_flight::InFlight;
use crate::outage::{AfterFailure, Pace, Pass, repeat};

/// The wait before renewing again after a failed renewal.
const AFTER_FAILURE: Duration = Duration::from_millis(250);

pub async fn run(
    queue: JobQueue,
    worker_id: String,
    in_flight: InFlight,
    visibility_timeout: Duration,
    shutdown: CancellationToken,
) {
    let pace = Pace {
        every: visibility_timeout / 3,
        after_failure: AfterFailure::Fixed(AFTER_FAILURE),
    };
    let renew = Renew {
        queue,
        worker_id,
        in_flight,
    };
    repeat("lease keeper", pace, &shutdown, renew).await
}

struct Renew {
    queue: JobQueue,
    worker_id: String,
    in_flight: InFlight,
}

impl Pass for Renew {
    type Error = QueueError;
    async fn pass(&mut self) -> Result<(), QueueError> {
        for (partition, entries) in self.in_flight.entries() {
            let held = self
                .queue
                .renew_leases(&self.worker_id, &partition, &entries)
                .await?;
            if held.len() < entries.len() {
                tracing::debug!(partition = %partition.name(), held = held.len(), asked = entries.len(), "some entries finished or were taken over meanwhile");
            }
        }
        Ok(())
    }
}
