//! A webhook receiver for batch completion webhooks: records every POST
//! (headers and body) and answers each with the next scripted status (200
//! once the script is empty), so tests can make it fail and see the retry.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

/// One POST as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub timestamp: Option<String>,
    pub signature: Option<String>,
    pub delivery_id: Option<String>,
    pub body: Bytes,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<u16>,
    received: Vec<Delivery>,
}

pub struct FakeWebhook {
    url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeWebhook {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(receive).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/ferry", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self { url, inner }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers the next POST with `status`.
    pub fn push_status(&self, status: u16) {
        self.inner.lock().unwrap().script.push_back(status);
    }

    pub fn received(&self) -> Vec<Delivery> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Waits until `n` POSTs arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {n} webhook deliveries (got {})",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut inner = inner.lock().unwrap();
    inner.received.push(Delivery {
        timestamp: header("ferry-timestamp"),
        signature: header("ferry-signature"),
        delivery_id: header("ferry-webhook-id"),
        body,
    });
    let status = inner.script.pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}
