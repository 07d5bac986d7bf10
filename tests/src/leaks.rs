//! Looking for secrets where none may be (`tests/tests/no_secret_leaks.rs`):
//! the texts looked for ([`Needle`]), what they could have leaked into
//! ([`Exhibit`]) and the search ([`leaks`]); real `ferry` processes
//! ([`Processes`], [`spawn`]); every HTTP answer a test received
//! ([`Bodies`]); and the whole Redis keyspace ([`redis_keyspace`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{RedisServer, eventually, ferry_binary};

// ------------------------------------------------------------ the search

/// A text to search for: a secret (or one of its encodings) by name.
pub struct Needle {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl Needle {
    pub fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            bytes: bytes.into(),
        }
    }
}

/// Something a secret could have leaked into, and what it holds.
pub struct Exhibit {
    pub what: String,
    pub bytes: Vec<u8>,
}

impl Exhibit {
    pub fn new(what: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            what: what.into(),
            bytes: bytes.into(),
        }
    }
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Every (exhibit, needle) found, with some context, one per line.
pub fn leaks(exhibits: &[Exhibit], needles: &[Needle]) -> Vec<String> {
    let mut found = Vec::new();
    for exhibit in exhibits {
        for needle in needles {
            if let Some(at) = find(&exhibit.bytes, &needle.bytes) {
                let from = at.saturating_sub(120);
                let to = (at + needle.bytes.len() + 120).min(exhibit.bytes.len());
                found.push(format!(
                    "{} in {}: ...{}...",
                    needle.name,
                    exhibit.what,
                    String::from_utf8_lossy(&exhibit.bytes[from..to])
                ));
            }
        }
    }
    found
}

/// Every file under `dir`, recursively (none when `dir` does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                files_under(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

// ------------------------------------------------------------ the processes

/// `ferry` processes, by name, stopped with SIGTERM (so their logs are
/// flushed) or killed when dropped.
pub struct Processes(pub Vec<(String, Child)>);

impl Processes {
    /// SIGTERM to each, then waits for each to exit; panics after 30 s
    /// (and the drop kills what is left).
    pub async fn stop(&mut self) {
        for (_, child) in &self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for (name, child) in &mut self.0 {
            let what = format!("ferry {name} to stop on SIGTERM");
            eventually(&what, Duration::from_secs(30), async || {
                child.try_wait().unwrap().is_some()
            })
            .await;
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `ferry <command>` with `env` only, stdout and stderr to
/// `<dir>/<command>.out` / `.err`.
pub fn spawn(dir: &Path, command: &str, env: &[(String, String)]) -> Child {
    let out = File::create(dir.join(format!("{command}.out"))).unwrap();
    let err = File::create(dir.join(format!("{command}.err"))).unwrap();
    Command::new(ferry_binary())
        .arg(command)
        .env_clear()
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("the ferry binary is built before the tests (cargo build --workspace --bins)")
}

/// A local address nothing listens on (yet).
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", listener.local_addr().unwrap().port())
}

/// Waits until `base`'s `/readyz` answers 2xx; panics if `child` exits
/// first, or after `timeout`.
pub async fn wait_healthy(base: &str, what: &str, child: &mut Child, timeout: Duration) {
    let waiting = format!("ferry {what} to become ready");
    eventually(&waiting, timeout, async || {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status().is_success()
        {
            return true;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "ferry {what} exited at start-up"
        );
        false
    })
    .await;
}

// ------------------------------------------------------------ HTTP, recorded

/// Every response body (and its headers) a test received, for the scan.
#[derive(Default)]
pub struct Bodies(pub Vec<Exhibit>);

impl Bodies {
    /// Sends `request`, records the body and the headers, returns the
    /// status and the body.
    pub async fn send(&mut self, what: &str, request: reqwest::RequestBuilder) -> (u16, String) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let mut headers = String::new();
        for (name, value) in response.headers() {
            // The dashboard's session id travels there by design; it is
            // looked for everywhere else.
            if name != reqwest::header::SET_COOKIE {
                headers.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
            }
        }
        let body = response.text().await.unwrap();
        self.0.push(Exhibit::new(
            format!("the body of {what} ({status})"),
            body.clone(),
        ));
        self.0.push(Exhibit::new(
            format!("the headers of {what} ({status})"),
            headers,
        ));
        (status, body)
    }
}

/// A client that shows redirects instead of following them.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of a series in a Prometheus scrape (0 when absent).
pub fn series(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

// ------------------------------------------------------------ Redis, whole

/// Every key of every database, as (key name, everything the key holds).
pub type Keyspace = Vec<(String, Vec<u8>)>;

/// Flattens a reply into bytes (strings as they are, numbers as text).
fn flatten(value: &redis::Value, out: &mut Vec<u8>) {
    use redis::Value as V;
    match value {
        V::BulkString(b) => out.extend_from_slice(b),
        V::SimpleString(s) => out.extend_from_slice(s.as_bytes()),
        V::Array(items) | V::Set(items) => items.iter().for_each(|v| flatten(v, out)),
        V::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            flatten(k, out);
            flatten(v, out);
        }),
        V::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        V::Nil | V::Okay => {}
        other => out.extend_from_slice(format!("{other:?}").as_bytes()),
    }
    out.push(b'\n');
}

/// Every key name of `db 0` (asserted to be the only database in use).
fn key_names(conn: &mut redis::Connection) -> Vec<Vec<u8>> {
    let info: String = redis::cmd("INFO").arg("keyspace").query(conn).unwrap();
    let databases: Vec<&str> = info.lines().filter(|l| l.starts_with("db")).collect();
    assert!(
        databases.len() == 1 && databases[0].starts_with("db0:"),
        "Ferry keeps everything in db 0: {info}"
    );
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(conn)
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Every key of every database and everything each holds, read by type.
pub fn redis_keyspace(redis: &RedisServer) -> Keyspace {
    let mut conn = redis.conn();
    let mut dumped = Vec::new();
    for key in key_names(&mut conn) {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
        let mut query = |cmd: &mut redis::Cmd| -> redis::Value { cmd.query(&mut conn).unwrap() };
        let mut held = Vec::new();
        match kind.as_str() {
            "string" => flatten(&query(redis::cmd("GET").arg(&key)), &mut held),
            "hash" => flatten(&query(redis::cmd("HGETALL").arg(&key)), &mut held),
            "list" => flatten(
                &query(redis::cmd("LRANGE").arg(&key).arg(0).arg(-1)),
                &mut held,
            ),
            "set" => flatten(&query(redis::cmd("SMEMBERS").arg(&key)), &mut held),
            "zset" => flatten(
                &query(
                    redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES"),
                ),
                &mut held,
            ),
            "stream" => {
                // The entries, then groups, consumers and pending entries.
                flatten(
                    &query(redis::cmd("XRANGE").arg(&key).arg("-").arg("+")),
                    &mut held,
                );
                flatten(
                    &query(redis::cmd("XINFO").arg("STREAM").arg(&key).arg("FULL")),
                    &mut held,
                );
            }
            "none" => continue, // expired between SCAN and TYPE
            other => panic!(
                "key {} is a {other}: teach this scan to read it",
                String::from_utf8_lossy(&key)
            ),
        }
        dumped.push((String::from_utf8_lossy(&key).into_owned(), held));
    }
    dumped
}
