//! Tells the fleet this worker is alive: its queues, concurrency and
//! in-flight count, every few seconds. `ferry queues` and the dashboard read
//! it; a worker that dies simply stops beating and disappears.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use ferry_common::fleet::{WorkerInfo, WorkerRegistry};

use crate::in_flight::InFlight;
use crate::outage::Outage;

const EVERY: Duration = Duration::from_secs(3);

pub async fn run(
    registry: WorkerRegistry,
    mut info: WorkerInfo,
    in_flight: InFlight,
    shutdown: CancellationToken,
) {
    let mut outage = Outage::new("heartbeat");
    loop {
        info.in_flight = info
            .queues
            .iter()
            .map(|q| (q.clone(), in_flight.count(q)))
            .collect();
        match registry.beat(&info).await {
            Ok(()) => outage.ok(),
            Err(e) => {
                outage.failed(&e);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}
