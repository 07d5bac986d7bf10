//! OpenTelemetry traces (issue 20): one WeChat message followed from the
//! push through the worker and the provider to the reply, across processes.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is
//! set. When off, [`on`] is false and every [`otel_span!`](crate::otel_span)
//! is [`tracing::Span::none`]: no span is created, no traceparent is
//! computed, and a job's payload is byte-identical to what it was before
//! traces existed. When on, the spans of the `ferry_span` target (and only
//! those: no log event becomes a span event) go to an OTLP/HTTP protobuf
//! exporter through a batch processor on a thread of its own, so the last
//! spans can be flushed at exit after the runtime has stopped.
//!
//! The trace travels on the job as a W3C `traceparent` in its payload JSON
//! ([`crate::job::TRACEPARENT`]): no Lua or record change, and a spooled
//! push keeps it because the spool keeps the payload.
//!
//! Span attributes never hold a secret, a token or an openid: the call
//! sites record kinds, names, counts and codes only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::vars;

/// The `tracing` target of every exported span ([`crate::otel_span!`]).
pub const SPAN_TARGET: &str = "ferry_span";

/// The name the exporter's tracer and the fetch spans are recorded under.
const TRACER: &str = "ferry";

/// W3C trace context's header (and payload key) name.
const TRACEPARENT_HEADER: &str = "traceparent";

static ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: the one check the hot paths make.
#[inline]
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// A span of [`SPAN_TARGET`] at info level when traces are on, else
/// [`tracing::Span::none`] (nothing is created or allocated). Takes what
/// `tracing::info_span!` takes after its target: `parent: &span,` a name,
/// fields.
#[macro_export]
macro_rules! otel_span {
    ($($args:tt)*) => {
        if $crate::telemetry::traces::on() {
            ::tracing::info_span!(target: "ferry_span", $($args)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// Whether an OTLP endpoint is configured (a blank value is unset).
pub(super) fn configured() -> bool {
    [
        vars::OTEL_EXPORTER_OTLP_ENDPOINT,
        vars::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// The service name: `OTEL_SERVICE_NAME`, else `ferry-<role>`.
pub fn service_name(role: &str) -> String {
    std::env::var(vars::OTEL_SERVICE_NAME)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| format!("ferry-{role}"))
}

/// Builds the exporting tracer provider, installs it globally and turns
/// [`on`] on. `None` when no endpoint is configured.
pub(super) fn start(role: &str) -> Result<Option<SdkTracerProvider>, String> {
    if !configured() {
        return Ok(None);
    }
    if let Ok(protocol) = std::env::var(vars::OTEL_EXPORTER_OTLP_PROTOCOL) {
        let protocol = protocol.trim();
        if !protocol.is_empty() && protocol != "http/protobuf" {
            return Err(format!(
                "{}: only http/protobuf is supported, got {protocol:?}",
                vars::OTEL_EXPORTER_OTLP_PROTOCOL
            ));
        }
    }
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| format!("{}: {e}", vars::OTEL_EXPORTER_OTLP_ENDPOINT))?;
    let resource = Resource::builder()
        .with_service_name(service_name(role))
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("host.name", crate::host::hostname()),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    global::set_tracer_provider(provider.clone());
    ON.store(true, Ordering::Relaxed);
    Ok(Some(provider))
}

/// The subscriber layer that turns [`SPAN_TARGET`] spans into OTel spans.
pub(super) fn layer<S>(
    provider: &SdkTracerProvider,
) -> impl tracing_subscriber::Layer<S> + Send + Sync + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    use tracing_subscriber::Layer as _;
    let only_ours =
        tracing_subscriber::filter::Targets::new().with_target(SPAN_TARGET, tracing::Level::TRACE);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(TRACER))
        .with_filter(only_ours)
}

/// Flushes and stops the exporter when dropped (the end of `main`'s
/// subcommand, after a graceful shutdown): the last spans are sent.
pub struct Flush(pub(super) Option<SdkTracerProvider>);

impl Drop for Flush {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            ON.store(false, Ordering::Relaxed);
            if let Err(e) = provider.shutdown() {
                // The log writer may already be gone: stderr, once.
                eprintln!("OpenTelemetry: the last spans may be lost: {e}");
            }
        }
    }
}

/// The W3C traceparent of `span`, to carry on a job; `None` when traces
/// are off or the span is not sampled.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if !on() || span.is_none() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove(TRACEPARENT_HEADER)
}

/// Makes `span` a child of the span a job's `traceparent` names (an
/// unreadable one is ignored: the span starts a trace of its own).
pub fn follow(span: &tracing::Span, traceparent: &str) {
    if !on() || span.is_none() {
        return;
    }
    let carrier = HashMap::from([(TRACEPARENT_HEADER.to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// Records a finished `fetch` span under `job`: one `ferry_fetch_flat` round
/// reads many jobs, so each job's trace gets its own copy of the shared
/// call's timing, with how many jobs it brought.
pub fn record_fetch(job: &tracing::Span, started: SystemTime, ended: SystemTime, jobs: usize) {
    if !on() || job.is_none() {
        return;
    }
    let tracer = global::tracer(TRACER);
    let mut span = tracer
        .span_builder("fetch")
        .with_start_time(started)
        .with_attributes([KeyValue::new(
            "ferry.fetch.jobs",
            i64::try_from(jobs).unwrap_or(i64::MAX),
        )])
        .start_with_context(&tracer, &job.context());
    span.end_with_timestamp(ended);
}
