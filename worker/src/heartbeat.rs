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
use ferry_common::store::RedisError;

use crate::in_flight::InFlight;
use crate::outage::{AfterFailure, Pace, Pass, repeat};

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

/// Beats at once, then every [`BEAT_EVERY`]; after a failure never waits
/// longer than a beat, so the record is renewed as soon as Redis is back,
/// before it expires.
const PACE: Pace = Pace {
    every: BEAT_EVERY,
    after_failure: AfterFailure::Backoff { cap: BEAT_EVERY },
};

pub async fn run(
    registry: WorkerRegistry,
    info: WorkerInfo,
    in_flight: InFlight,
    reachability: Reachability,
    shutdown: CancellationToken,
) {
    let beat = Beat {
        registry,
        info,
        in_flight,
        reachability,
    };
    repeat("heartbeat", PACE, &shutdown, beat).await
}

struct Beat {
    registry: WorkerRegistry,
    info: WorkerInfo,
    in_flight: InFlight,
    reachability: Reachability,
}

impl Pass for Beat {
    type Error = RedisError;
    async fn pass(&mut self) -> Result<(), RedisError> {
        self.info.in_flight = self
            .info
            .queues
            .iter()
            .map(|q| (q.clone(), self.in_flight.count(q)))
            .collect();
        let beat = self.registry.beat(&self.info).await;
        match &beat {
            Ok(()) => self.reachability.reached(),
            Err(_) => self.reachability.failed(),
        }
        beat
    }
}
