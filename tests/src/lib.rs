//! Test support for Ferry's integration and end-to-end tests: a real
//! `redis-server` per test, and fakes of the outside services (WeChat's API,
//! the AI providers) speaking their exact wire formats.

pub mod backend;
pub mod counting;
pub mod eventually;
pub mod fake_otlp;
pub mod fake_provider;
pub mod fake_webhook;
pub mod fake_wechat;
pub mod ferry;
pub mod leaks;
pub mod log_capture;
pub mod lua_source;
pub mod redis_cluster;
pub mod redis_server;
pub mod staged_jobs;
pub mod tls_server;
pub mod wechat_push;
pub mod worker_process;

/// The `ferry` binary the process-level tests run (built before the tests by
/// `scripts/test`): under `CARGO_TARGET_DIR` when set, else the workspace's
/// `target/`.
pub fn ferry_binary() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let binary = target.join("debug/ferry");
    assert!(
        binary.exists(),
        "{} is missing: build it first (cargo build --workspace --bins)",
        binary.display()
    );
    binary
}

pub use backend::{Backend, RedisUnderTest};
pub use eventually::eventually;
pub use fake_wechat::FakeWeChat;
pub use ferry::{Parts, TestFerry};
pub use redis_server::RedisServer;
