//! A `redis-server` child process on a free loopback port with a directory
//! of its own, stopped when dropped.
//!
//! `ferry dev` uses it when no Redis is reachable, so a newcomer needs only
//! `redis-server` on PATH; the test support uses it so every test has a real
//! Redis it can kill and restart without sharing state with another test.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedRedisError {
    #[error(
        "redis-server is not installed (on Debian/Ubuntu: sudo apt-get install -y redis-server)"
    )]
    NotInstalled,
    #[error("cannot start redis-server: {0}")]
    Io(#[from] std::io::Error),
    #[error("redis-server did not become ready; see {0}")]
    NotReady(PathBuf),
}

pub struct RedisProcess {
    port: u16,
    dir: PathBuf,
    appendonly: bool,
    child: Option<Child>,
}

impl RedisProcess {
    /// Starts `redis-server` with its data in `dir`; with `appendonly`, every
    /// write is fsynced to the AOF before Redis answers (`appendfsync always`).
    pub fn start(dir: &Path, appendonly: bool) -> Result<Self, EmbeddedRedisError> {
        let mut process = Self {
            port: free_port()?,
            dir: dir.to_path_buf(),
            appendonly,
            child: None,
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> Result<(), EmbeddedRedisError> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("")
            .arg("--logfile")
            .arg(self.log_file())
            // Its own process group: a Ctrl-C meant for `ferry dev` must not
            // kill Redis before the worker has handed its jobs back.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.appendonly {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => EmbeddedRedisError::NotInstalled,
            _ => EmbeddedRedisError::Io(e),
        })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&self) -> Result<(), EmbeddedRedisError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url())
            .map_err(|_| EmbeddedRedisError::NotReady(self.log_file()))?;
        while Instant::now() < deadline {
            if let Ok(mut conn) = client.get_connection()
                && let Ok(info) = redis::cmd("INFO")
                    .arg("persistence")
                    .query::<String>(&mut conn)
                // `loading:0` exactly: `async_loading:0` is another line.
                && info.lines().any(|line| line.trim() == "loading:0")
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(EmbeddedRedisError::NotReady(self.log_file()))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// SIGKILL: Redis loses whatever it had not persisted.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (an AOF is replayed).
    pub fn restart(&mut self) -> Result<(), EmbeddedRedisError> {
        self.kill();
        self.spawn()
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port (bind to port 0, read it, release it).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
