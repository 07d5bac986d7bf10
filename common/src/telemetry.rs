//! Logging and tracing set-up: `LOG_LEVEL`, `LOG_FILE`, `LOG_FORMAT`.
//!
//! One subscriber per process, installed by the `ferry` binary before
//! anything else runs. JSON lines when not on a terminal (what log shippers
//! want), readable text on a terminal. Fields that could hold secrets are
//! never recorded: secrets are [`crate::Secret`]s, which print redacted.

use std::io::IsTerminal;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

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

/// Installs the global subscriber. Keep the returned guard alive for the
/// life of the process: dropping it flushes and stops the log writer.
pub use tracing_appender::non_blocking::WorkerGuard as LogGuard;

pub fn init(config: &LogConfig) -> Result<WorkerGuard, String> {
    let filter = parse_level(&config.level)?;
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(terminal).try_init(),
    };
    result.map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(guard)
}
