//! Ferry itself, in the test's process: the api on a free port and a worker,
//! built by exactly the code `ferry api` / `ferry worker` run
//! (`ferry_cli::app`), against the test's own Redis and fakes.

use std::time::Duration;

use ferry_cli::app;
use ferry_common::config::Config;
use ferry_common::queue::JobQueue;
use ferry_common::wechat;
use ferry_worker::WorkerSettings;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::RedisUnderTest;

/// The WeChat token the harness signs with.
pub const TEST_WECHAT_TOKEN: &str = "test-wechat-token";

pub struct TestFerry {
    pub config: Config,
    pub queue: JobQueue,
    pub api_url: String,
    /// The api's shared state (security counters, spool), when it runs.
    pub api: Option<ferry_api::AppState>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The spool directory, unless the test chose its own FERRY_SPOOL_DIR.
    _spool_dir: Option<tempfile::TempDir>,
}

/// What to run.
pub struct Parts {
    pub api: bool,
    pub worker: bool,
}

impl TestFerry {
    /// Migrates `redis` and starts the parts with these variables on top of
    /// where Redis is (one server or a cluster), WECHAT_TOKEN and a
    /// FERRY_SPOOL_DIR of its own.
    pub async fn start(redis: &dyn RedisUnderTest, vars: &[(&str, &str)], parts: Parts) -> Self {
        let mut all: Vec<(String, String)> = redis
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        all.extend([
            ("WECHAT_TOKEN".into(), TEST_WECHAT_TOKEN.into()),
            ("FERRY_FETCH_BLOCK_MS".into(), "200".into()),
        ]);
        let spool_dir = if vars.iter().any(|(k, _)| *k == "FERRY_SPOOL_DIR") {
            None
        } else {
            let dir = tempfile::Builder::new()
                .prefix("ferry-spool-")
                .tempdir()
                .expect("temp dir");
            all.push(("FERRY_SPOOL_DIR".into(), dir.path().display().to_string()));
            Some(dir)
        };
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_vars(all).expect("test configuration");
        let queue = app::job_queue(&config, 16).unwrap();
        let mut conn = queue.store().conn().await.expect("connect");
        ferry_common::schema::migrate(&mut conn, queue.keys(), "test")
            .await
            .expect("ferry migrate");
        app::require_schema(&queue, &config).await.unwrap();
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut api_url = String::new();
        let mut api = None;
        if parts.api {
            let state = app::api_state(&config, queue.clone(), false).unwrap();
            api = Some(state.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            api_url = format!("http://{}", listener.local_addr().unwrap());
            let token = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                ferry_api::serve(listener, state, token).await.unwrap();
            }));
        }
        if parts.worker {
            let worker = app::worker(
                &config,
                queue.clone(),
                app::Replies::WeChat,
                WorkerSettings::from_config(&config.queue),
            )
            .unwrap();
            tasks.push(tokio::spawn(worker.run(shutdown.clone())));
        }
        Self {
            config,
            queue,
            api_url,
            api,
            shutdown,
            tasks,
            _spool_dir: spool_dir,
        }
    }

    /// Posts a pushed message signed as WeChat signs it.
    pub async fn post_wechat(&self, xml: &str) -> (u16, String) {
        self.post_wechat_signed(xml, TEST_WECHAT_TOKEN).await
    }

    /// Posts a pushed message signed with `token` (a forger's guess).
    pub async fn post_wechat_signed(&self, xml: &str, token: &str) -> (u16, String) {
        let response = post_signed(&reqwest::Client::new(), &self.api_url, xml, token)
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Stops the worker and api gracefully and waits for them.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }
}

/// Posts a pushed message to the api at `api_url`, signed with `token` as
/// WeChat signs it (for tests that push from tasks of their own).
pub async fn post_signed(
    client: &reqwest::Client,
    api_url: &str,
    xml: &str,
    token: &str,
) -> reqwest::Result<reqwest::Response> {
    let (ts, nonce) = (
        chrono::Utc::now().timestamp().to_string(),
        rand::random::<u32>().to_string(),
    );
    let signature = wechat::sign(&[token, &ts, &nonce]);
    client
        .post(format!("{api_url}/wechat"))
        .query(&[
            ("signature", signature.as_str()),
            ("timestamp", &ts),
            ("nonce", &nonce),
        ])
        .header("content-type", "text/xml")
        .body(xml.to_owned())
        .timeout(Duration::from_secs(10))
        .send()
        .await
}
