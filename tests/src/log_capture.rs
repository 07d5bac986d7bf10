//! What Ferry logs, captured for tests that check log lines: a subscriber
//! writing JSON lines (the production format) into a buffer, read back as
//! text or as events.

use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;

/// The lines logged into one capture.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Everything logged in this test binary from the first call on, by any
    /// thread (tracing has one global subscriber per process, so this is
    /// installed once).
    pub fn global() -> Self {
        static GLOBAL: OnceLock<CapturedLogs> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let logs = CapturedLogs::default();
                tracing::subscriber::set_global_default(logs.subscriber())
                    .expect("one global subscriber per test binary");
                logs
            })
            .clone()
    }

    /// What `f` logs on this thread. Keep such a test alone in its test
    /// binary: tracing caches each callsite's interest process-wide, and
    /// another thread logging from the same callsites without a subscriber
    /// can leave that cache saying "never" while this one listens.
    pub fn during<R>(f: impl FnOnce() -> R) -> (R, Self) {
        let logs = CapturedLogs::default();
        let result = tracing::subscriber::with_default(logs.subscriber(), f);
        (result, logs)
    }

    /// The captured lines, as written.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The captured events (`level`, `target`, `fields`), in order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON log line"))
            .collect()
    }

    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(self.clone())
            .finish()
    }
}

impl<'a> MakeWriter<'a> for CapturedLogs {
    type Writer = Self;
    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
