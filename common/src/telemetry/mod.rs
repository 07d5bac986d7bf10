//! Logging and tracing set-up: `LOG_LEVEL`, `LOG_FILE`, `LOG_FORMAT`, and
//! OpenTelemetry traces when an OTLP endpoint is set ([`traces`]).
//!
//! One subscriber per process, installed by the `ferry` binary before
//! anything else runs. JSON lines when not on a terminal (what log shippers
//! want), readable text on a terminal. Fields that could hold secrets are
//! never recorded: secrets are [`crate::Secret`]s, which print redacted.

pub mod traces;

use std::io::IsTerminal;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{LogConfig, LogFormat};

/// Checks a `LOG_LEVEL` value: a level name (any case) or an
/// `EnvFilter` directive such as `info,ferry_worker=debug`.
pub fn parse_level(level: &str) -> Result<EnvFilter, String> {
    let directive = match level.to_ascii_lowercase().as_str() {
        l @ ("trace" | "debug" | "info" | "warn" | "error" | "off") => l.to_owned(),
        "warning" => "warn".into(),
        "critical" => "error".into(),
        _ if level.contains('=') => level.to_owned(),
        _ => {
            return Err(format!(
                "expected trace, debug, info, warn or error, got {level:?}"
            ));
        }
    };
    EnvFilter::try_new(&directive).map_err(|e| format!("invalid filter {level:?}: {e}"))
}

/// Keep it alive for the life of the process: dropping it flushes and
/// stops the log writer, and the trace exporter (its last spans sent).
pub struct LogGuard {
    // Dropped first: the exporter may still log through the writer.
    _traces: traces::Flush,
    _log: WorkerGuard,
}

/// Installs the global subscriber for the `ferry <role>` process (`role`
/// names the service in traces: `ferry-api`, `ferry-worker`).
pub fn init(config: &LogConfig, role: &str) -> Result<LogGuard, String> {
    // The exported spans stay out of the log lines.
    let filter = parse_level(&config.level)?.add_directive(
        format!("{}=off", traces::SPAN_TARGET)
            .parse()
            .map_err(|e| format!("{e}"))?,
    );
    let (writer, guard, terminal) = match &config.file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("LOG_FILE: cannot open {}: {e}", path.display()))?;
            let (w, g) = tracing_appender::non_blocking(file);
            (BoxMakeWriter::new(w), g, false)
        }
        None => {
            let terminal = std::io::stderr().is_terminal();
            let (w, g) = tracing_appender::non_blocking(std::io::stderr());
            (BoxMakeWriter::new(w), g, terminal)
        }
    };
    let format = config.format.unwrap_or(if terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let log = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(writer)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(terminal)
            .with_writer(writer)
            .boxed(),
    };
    let provider = traces::start(role)?;
    let otel = provider.as_ref().map(traces::layer);
    tracing_subscriber::registry()
        .with(log.with_filter(filter))
        .with(otel)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(LogGuard {
        _traces: traces::Flush(provider),
        _log: guard,
    })
}
