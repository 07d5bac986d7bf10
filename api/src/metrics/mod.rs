//! `/metrics`: Ferry's metrics in Prometheus's text format.
//!
//! Counters and histograms are recorded through the `metrics` facade where
//! things happen (names in `ferry_common::metrics`); this module installs
//! the one process-wide Prometheus recorder ([`install`]) and renders it from
//! its handle inside our own routes, so no second HTTP server runs. Gauges
//! that describe the fleet rather than this process (queues, breakers, live
//! workers) are read from Redis on each scrape ([`fleet`]).

pub mod fleet;
pub mod http;

use std::sync::OnceLock;

use ferry_common::metrics as names;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds. 5 is a boundary on purpose: the
/// slow-responses rule (`RESPONSE_TIME_THRESHOLD`, default 5 s) reads the
/// share of requests above it from the `le="5"` bucket.
/// The fleet history's p95 uses the same bounds.
const HTTP_BUCKETS: &[f64] = names::HTTP_LATENCY_BUCKETS;
/// AI calls and jobs take seconds to minutes.
const SLOW_BUCKETS: &[f64] = names::SLOW_LATENCY_BUCKETS;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder for this process (once; later calls, as
/// when `ferry dev` or a test builds an api and a worker port in one
/// process, return the same handle).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(names::HTTP_DURATION.into()), HTTP_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::PROVIDER_LATENCY.into()),
                        SLOW_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(names::JOB_DURATION.into()), SLOW_BUCKETS)
                })
                .expect("bucket lists are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            spawn_upkeep(handle.clone());
            if let Err(e) = metrics::set_global_recorder(recorder) {
                // Another recorder owns the facade (an embedding program's):
                // our handle then renders only what we set on it directly.
                tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics will be sparse");
            }
            handle
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The recorder keeps every histogram sample until an upkeep folds it into
/// the buckets; rendering does one, but a deployment that never scrapes
/// (alerts come from the logs too) would grow by every request's sample.
/// So one thread does it every few seconds, whatever the runtime.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("ferry-metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms are folded only when /metrics is read");
    }
}

/// What the process's allocator holds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorBytes {
    /// Handed out and not had back.
    pub allocated: u64,
    /// In the allocator's resident pages.
    pub resident: u64,
}

/// Reads the allocator's figures; `None` when they cannot be read.
pub type AllocatorReader = fn() -> Option<AllocatorBytes>;

static ALLOCATOR: OnceLock<AllocatorReader> = OnceLock::new();

/// Set by the binary that chose the global allocator (`ferry`'s main, for
/// jemalloc): /metrics then reports its figures. The libraries never pick
/// an allocator, so they cannot read one.
pub fn report_allocator(reader: AllocatorReader) {
    let _ = ALLOCATOR.set(reader);
}

/// The current metrics, rendered.
pub fn render(handle: &PrometheusHandle) -> String {
    if let Some(bytes) = ALLOCATOR.get().and_then(|read| read()) {
        ::metrics::gauge!(names::ALLOCATOR_ALLOCATED).set(bytes.allocated as f64);
        ::metrics::gauge!(names::ALLOCATOR_RESIDENT).set(bytes.resident as f64);
    }
    handle.run_upkeep();
    handle.render()
}
