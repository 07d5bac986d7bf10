//! Liveness: the process answers HTTP. (Readiness, which checks Redis and
//! the schema, is a separate route.)

pub async fn healthz() -> &'static str {
    "ok"
}
