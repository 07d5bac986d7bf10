//! A real `redis-server` of the test's own (free loopback port, its own
//! temporary directory, killed when dropped), so tests can stop, kill and
//! restart it and never share state. No mock of Redis anywhere.

use std::path::Path;

use ferry_common::embedded_redis::RedisProcess;

pub struct RedisServer {
    process: RedisProcess,
    // Dropped after the process: the directory outlives the server.
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// A server without persistence.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A server with AOF fsynced on every write, so a restart keeps
    /// everything Redis acknowledged.
    pub fn start_with_aof() -> Self {
        Self::start_with(true)
    }

    fn start_with(appendonly: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ferry-redis-")
            .tempdir()
            .expect("temp dir");
        let process = RedisProcess::start(dir.path(), appendonly).expect("start redis-server");
        Self { process, _dir: dir }
    }

    pub fn url(&self) -> String {
        self.process.url()
    }

    pub fn dir(&self) -> &Path {
        self.process.dir()
    }

    /// A synchronous connection for set-up and assertions.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }

    pub fn restart(&mut self) {
        self.process.restart().expect("restart redis-server");
    }
}
