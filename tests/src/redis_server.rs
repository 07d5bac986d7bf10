//! A real `redis-server` of the test's own (free loopback port, its own
//! temporary directory, killed when dropped), so tests can stop, kill and
//! restart it and never share state. No mock of Redis anywhere.

use std::path::Path;
use std::time::Duration;

use ferry_common::embedded_redis::RedisProcess;
use ferry_common::queue::JobQueue;
use ferry_common::{Keys, Secret, connection, schema};

/// The key prefix every test's Ferry uses.
pub const PREFIX: &str = "ferry";

pub struct RedisServer {
    process: RedisProcess,
    /// The `requirepass` password, when the server was started with one.
    password: Option<String>,
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
        Self {
            process,
            password: None,
            _dir: dir,
        }
    }

    /// A server without persistence that refuses every client without
    /// `password` (`requirepass`); [`Self::url`] carries the password. It
    /// goes into a URL as it is: letters, digits and `-` only.
    pub fn start_with_password(password: &str) -> Self {
        assert!(
            password
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "a password that needs no URL encoding"
        );
        let mut server = Self::start_with(false);
        server.password = Some(password.to_owned());
        server.require_password();
        server
    }

    /// Sets `requirepass` on a server that has none yet (started or
    /// restarted: the setting is not persisted).
    fn require_password(&self) {
        let Some(password) = &self.password else {
            return;
        };
        let mut conn = redis::Client::open(self.process.url())
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg(password)
            .exec(&mut conn)
            .expect("CONFIG SET requirepass");
    }

    /// The URL clients use (with the password, when there is one).
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.process.port()),
            None => self.process.url(),
        }
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
        self.require_password();
    }

    /// Loads Ferry's function libraries and consumer groups, as `ferry
    /// migrate` does.
    pub async fn migrate(&self) {
        let client = redis::Client::open(self.url()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test's redis-server");
        schema::migrate(&mut conn, &Keys::new(PREFIX), "test")
            .await
            .expect("ferry migrate");
    }

    /// A Redis handle on this server as one process would have it (its own
    /// pool of `pool_size`), keys under [`PREFIX`].
    pub fn store(&self, pool_size: usize) -> ferry_common::store::Store {
        let target = connection::RedisTarget::Single(Secret::new(self.url()));
        ferry_common::store::Store::new(&target, pool_size, Keys::new(PREFIX)).expect("store")
    }

    /// The queue engine on this server, migrated first: what a test that
    /// drives the engine's own calls needs (finished records kept an hour).
    pub async fn job_queue(&self) -> JobQueue {
        self.migrate().await;
        JobQueue::new(self.store(8), Duration::from_secs(3600))
    }
}
