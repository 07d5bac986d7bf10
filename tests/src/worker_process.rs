//! Real `ferry worker` processes for the process-level tests (kill -9, a
//! fleet sharing limits and tokens), configured like production through the
//! environment, and killed when the test drops them.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::{FakeWeChat, RedisUnderTest, ferry_binary};

/// Worker processes, killed when dropped (so a failing test leaves none).
pub struct WorkerProcesses {
    pub workers: Vec<Child>,
}

impl WorkerProcesses {
    pub fn new(workers: Vec<Child>) -> Self {
        Self { workers }
    }
}

impl Drop for WorkerProcesses {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// Starts `ferry worker` against `redis` and the fake WeChat with this app
/// id and secret; `env` adds or overrides variables (providers, limits).
pub fn ferry_worker(
    redis: &dyn RedisUnderTest,
    wechat: &FakeWeChat,
    app_id: &str,
    app_secret: &str,
    env: &[(&str, &str)],
) -> Child {
    ferry_worker_from(&ferry_binary(), redis, wechat, app_id, app_secret, env)
}

/// [`ferry_worker`] with this `ferry` binary (e.g. a release build, for a
/// benchmark) instead of the tests' debug build.
pub fn ferry_worker_from(
    binary: &Path,
    redis: &dyn RedisUnderTest,
    wechat: &FakeWeChat,
    app_id: &str,
    app_secret: &str,
    env: &[(&str, &str)],
) -> Child {
    let mut cmd = Command::new(binary);
    cmd.arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(redis.env())
        .env("WECHAT_APP_ID", app_id)
        .env("WECHAT_APP_SECRET", app_secret)
        .env("WECHAT_API_BASE", wechat.base_url())
        .env("FERRY_FETCH_BLOCK_MS", "100")
        .env("FERRY_MEMORY_TURNS", "0")
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .expect("the ferry binary is built before the tests (scripts/test)")
}
