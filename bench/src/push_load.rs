//! The WeChat push generator shared by `ingress_load` and `ingress_vs_floor`:
//! correctly signed pushes (distinct `MsgId`s, plaintext or safe mode) built
//! before the clock starts, sent over keep-alive connections in a closed
//! loop and timed from the first byte written to the last byte of the
//! answer; and Ferry's api started in-process exactly as `ferry api` builds
//! it (`ferry_cli::app`), on a runtime of its own.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use ferry_common::config::Config;
use ferry_common::wechat::{self, MessageCrypt};
use ferry_common::{Keys, schema};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "bench-token";
pub const APP_ID: &str = "wx_bench_app";
pub const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const ACCOUNT: &str = "gh_bench";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Plaintext,
    Safe,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Plaintext => "plaintext",
            Mode::Safe => "safe mode (AES)",
        }
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What a user might write: about 40 bytes of UTF-8.
pub fn content(n: i64) -> String {
    format!("你好，请问第 {n} 个问题的答案是什么？")
}

/// The raw HTTP requests (`Host: {host}`), dealt round-robin to
/// `connections` lists; every one a distinct `MsgId` from `next_msg_id` on.
pub fn build_pushes(
    mode: Mode,
    host: &str,
    count: usize,
    connections: usize,
    next_msg_id: &mut i64,
) -> Vec<Vec<Vec<u8>>> {
    let crypt = MessageCrypt::new(AES_KEY, APP_ID).expect("bench key");
    let mut lists: Vec<Vec<Vec<u8>>> = (0..connections)
        .map(|_| Vec::with_capacity(count / connections + 1))
        .collect();
    let timestamp = now().to_string();
    for i in 0..count {
        let msg_id = *next_msg_id;
        *next_msg_id += 1;
        let openid = format!("o_bench_user_{:015}", msg_id % 10_000);
        let xml = wechat::text_message_xml(ACCOUNT, &openid, now(), &content(msg_id), msg_id);
        let nonce = format!("{}", 100_000_000 + msg_id);
        let signature = wechat::sign(&[TOKEN, &timestamp, &nonce]);
        let mut query =
            format!("signature={signature}&timestamp={timestamp}&nonce={nonce}&openid={openid}");
        let body = match mode {
            Mode::Plaintext => xml,
            Mode::Safe => {
                let encrypt = crypt.encrypt(&xml).expect("encrypt");
                let msg_signature = wechat::sign(&[TOKEN, &timestamp, &nonce, &encrypt]);
                query.push_str(&format!("&encrypt_type=aes&msg_signature={msg_signature}"));
                format!(
                    "<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
                )
            }
        };
        let request = format!(
            "POST /wechat?{query} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/4.0\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        lists[i % connections].push(request.into_bytes());
    }
    lists
}

pub struct Run {
    pub acknowledged: usize,
    pub elapsed: Duration,
    /// Microseconds, sorted.
    pub latencies: Vec<u32>,
}

impl Run {
    /// Acknowledged pushes per second.
    pub fn rate(&self) -> f64 {
        self.acknowledged as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p` quantile of the latencies (0..=1), in milliseconds.
    pub fn percentile(&self, p: f64) -> f64 {
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        f64::from(self.latencies[i - 1]) / 1000.0
    }

    /// Prints the run and returns its rate (acknowledged pushes per second).
    pub fn report(&self, name: &str) -> f64 {
        let rate = self.rate();
        let pct = |p: f64| self.percentile(p);
        println!(
            "{name}: {} acknowledged in {:.2} s = {rate:.0} msgs/s; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.acknowledged,
            self.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            pct(0.999),
            pct(1.0),
        );
        rate
    }
}

/// Sends every list over its own keep-alive connection, all at once.
pub async fn drive(addr: SocketAddr, lists: Vec<Vec<Vec<u8>>>) -> anyhow::Result<Run> {
    let mut streams = Vec::with_capacity(lists.len());
    for _ in 0..lists.len() {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let started = Instant::now();
    let tasks: Vec<_> = streams
        .into_iter()
        .zip(lists)
        .map(|(stream, list)| tokio::spawn(connection(stream, list)))
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Run {
        acknowledged: latencies.len(),
        elapsed,
        latencies,
    })
}

/// One keep-alive connection: a request, its answer, the next request.
async fn connection(mut stream: TcpStream, requests: Vec<Vec<u8>>) -> anyhow::Result<Vec<u32>> {
    let mut latencies = Vec::with_capacity(requests.len());
    let mut buf = Vec::with_capacity(1024);
    for request in &requests {
        let sent = Instant::now();
        stream.write_all(request).await?;
        let (status, body) = read_response(&mut stream, &mut buf).await?;
        let micros = sent.elapsed().as_micros();
        ensure!(
            status == 200 && body == b"success",
            "push not acknowledged: HTTP {status} {:?}",
            String::from_utf8_lossy(&body)
        );
        latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
    }
    Ok(latencies)
}

/// Reads one HTTP/1.1 response with a Content-Length body.
async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?;
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .context("unreadable status line")?;
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .context("response without Content-Length")?;
            let total = end + 4 + length;
            while buf.len() < total {
                if stream.read_buf(buf).await? == 0 {
                    bail!("connection closed mid-response");
                }
            }
            let body = buf[end + 4..total].to_vec();
            buf.drain(..total);
            return Ok((status, body));
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("connection closed by the api");
        }
    }
}

/// A thread's or process's name and CPU time (user + system) from its
/// `stat` file.
pub fn cpu_of(stat: &str) -> anyhow::Result<(String, Duration)> {
    let text = std::fs::read_to_string(stat)?;
    let (open, close) = (
        text.find('(').context("stat")?,
        text.rfind(')').context("stat")?,
    );
    let name = text[open + 1..close].to_owned();
    // After the name: state is field 3; utime and stime are fields 14, 15.
    let fields: Vec<&str> = text[close + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // USER_HZ is 100 on Linux.
    Ok((name, Duration::from_millis(ticks * 10)))
}

/// CPU time of this process's live threads named `name` (a runtime's
/// `thread_name`: its workers and its blocking pool alike).
pub fn threads_cpu(name: &str) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task")? {
        // A thread may exit between the listing and the read.
        let Ok((comm, cpu)) = cpu_of(&task?.path().join("stat").display().to_string()) else {
            continue;
        };
        if comm == name {
            total += cpu;
        }
    }
    Ok(total)
}

/// Ferry's api, built by the same code as `ferry api` (`ferry_cli::app`)
/// from `vars` plus the bench's WeChat settings (token, app id, AES key, a
/// spool directory of its own, the per-IP limiter on with 127.0.0.1
/// allowlisted as WeChat's servers would be), schema migrated, serving on a
/// free loopback port from a runtime of its own.
pub struct FerryApi {
    pub addr: SocketAddr,
    pub state: ferry_api::AppState,
    pub keys: Keys,
    runtime: tokio::runtime::Runtime,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    _spool_dir: tempfile::TempDir,
}

impl FerryApi {
    /// Starts the api with `threads` runtime workers, threads named
    /// `thread_name`.
    pub fn start(
        vars: Vec<(&'static str, String)>,
        threads: usize,
        thread_name: &str,
    ) -> anyhow::Result<Self> {
        let spool_dir = tempfile::Builder::new()
            .prefix("ferry-bench-spool-")
            .tempdir()?;
        let mut all: Vec<(&str, String)> = vars;
        all.extend([
            ("WECHAT_TOKEN", TOKEN.into()),
            ("WECHAT_APP_ID", APP_ID.into()),
            ("WECHAT_ENCODING_AES_KEY", AES_KEY.into()),
            ("FERRY_SPOOL_DIR", spool_dir.path().display().to_string()),
            ("FERRY_IP_RATE_ALLOW", "127.0.0.1".into()),
        ]);
        let config = Config::from_vars(all)?;
        let keys = ferry_cli::app::keys(&config);

        // The api: the same parts `ferry api` builds, on a runtime of its own.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(thread_name)
            .enable_all()
            .build()?;
        let shutdown = CancellationToken::new();
        let (addr, state, served) = runtime.block_on(async {
            let queue = ferry_cli::app::job_queue(&config, 64)?;
            let mut conn = queue.store().conn().await?;
            schema::migrate(&mut conn, queue.keys(), "bench").await?;
            ferry_cli::app::require_schema(&queue, &config).await?;
            let state = ferry_cli::app::api_state(&config, queue, false)?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let served = tokio::spawn(ferry_api::serve(listener, state.clone(), shutdown.clone()));
            anyhow::Ok((addr, state, served))
        })?;
        Ok(Self {
            addr,
            state,
            keys,
            runtime,
            shutdown,
            served,
            _spool_dir: spool_dir,
        })
    }

    /// Stops serving (in-flight requests finish) and shuts the runtime down.
    pub fn stop(self) {
        self.shutdown.cancel();
        let served = self.served;
        self.runtime.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(10), served).await;
        });
        drop(self.state);
        self.runtime.shutdown_timeout(Duration::from_secs(5));
    }
}
