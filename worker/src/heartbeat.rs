//! Tells the fleet this worker is alive: its queues, concurrency and
//! in-flight count, every [`BEAT_EVERY`]. `ferry queues` and the dashboard
//! read it, and the recoverers of the other workers take over the jobs of a
//! worker whose beats stopped ([`ferry_common::fleet::WorkerRegistry`]).
//!
//! The beat also tells this worker's own recoverer how long Redis has
//! answered without a break ([`Reachability`]): a worker that was itself cut
//! off must not judge the others dead, whose beats failed for the same
//! reason.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use ferry_common::fleet::workers::BEAT_EVERY;
use ferry_common::fleet::{WorkerInfo, WorkerRegistry};

use crate::in_flight::InFlight;
use crate::outage::Outage;

/// Since when this process has reached Redis without a failed beat.
#[derive(Clone, Default)]
pub struct Reachability {
    since: Arc<Mutex<Option<Instant>>>,
}

impl Reachability {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call reached Redis.
    pub fn reached(&self) {
        self.lock().get_or_insert_with(Instant::now);
    }

    /// A call failed: the unbroken stretch starts again at the next success.
    pub fn failed(&self) {
        *self.lock() = None;
    }

    /// How long Redis has answered without a break (zero while it fails).
    pub fn unbroken_for(&self) -> Duration {
        self.lock().map_or(Duration::ZERO, |since| since.elapsed())
    }
}

pub async fn run(
    registry: WorkerRegistry,
    mut info: WorkerInfo,
    in_flight: InFlight,
    reachability: Reachability,
    shutdown: CancellationToken,
) {
    let mut outage = Outage::new("heartbeat");
    loop {
        info.in_flight = info
            .queues
            .iter()
            .map(|q| (q.clone(), in_flight.count(q)))
            .collect();
        let wait = match registry.beat(&info).await {
            Ok(()) => {
                outage.ok();
                reachability.reached();
                BEAT_EVERY
            }
            Err(e) => {
                reachability.failed();
                // Never longer than a beat: the record must be renewed as
                // soon as Redis is back, before it expires.
                outage.failed(&e).min(BEAT_EVERY)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
