//! TLS to the AI providers: rustls, certificates always verified. A private
//! upstream (a gateway with its own CA) is refused until its CA is
//! configured (`FERRY_EXTRA_CA_FILE`), and configuring it never excuses a
//! certificate for another name.

use std::sync::Arc;

use ferry_cli::app;
use ferry_common::config::Config;
use ferry_worker::providers::{
    CallPolicy, ChatMessage, ChatRequest, FailureClass, HttpSettings, Router, build_client,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

/// An HTTPS server on 127.0.0.1 whose certificate is issued by a CA of its
/// own; it answers every request with one OpenAI-shaped chat completion.
struct PrivateUpstream {
    url: String,
    /// The CA's certificate, PEM, in a file of its own.
    ca_file: tempfile::NamedTempFile,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PrivateUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const ANSWER: &str = r#"{"id":"c1","object":"chat.completion","model":"private-model","choices":[{"index":0,"message":{"role":"assistant","content":"hello over TLS"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}}"#;

/// `names`: what the server's certificate is valid for.
async fn private_upstream(names: &[&str]) -> PrivateUpstream {
    let (mut config, ca_pem) = ferry_tests::tls_server::server_config(names);
    // The upstream below speaks HTTP/1.1 only.
    config.alpn_protocols.clear();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake.
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    answer_one_request(&mut tls).await;
                }
            });
        }
    });
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), ca_pem).unwrap();
    PrivateUpstream { url, ca_file, task }
}

/// Reads one HTTP/1.1 request (headers and a Content-Length body) and
/// answers it with [`ANSWER`].
async fn answer_one_request(stream: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin)) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let header_end = loop {
        let Ok(n) = stream.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        seen.extend_from_slice(&buf[..n]);
        if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&seen[..header_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while seen.len() < header_end + length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{ANSWER}",
        ANSWER.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn settings(extra_ca: Option<&std::path::Path>) -> HttpSettings {
    HttpSettings {
        extra_ca_pem: extra_ca.map(std::path::Path::to_path_buf),
        ..HttpSettings::default()
    }
}

/// The error and every cause, as one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn a_private_upstream_is_refused_without_its_ca() {
    let upstream = private_upstream(&["127.0.0.1", "localhost"]).await;
    let client = build_client(&settings(None)).unwrap();

    let err = client.get(&upstream.url).send().await.unwrap_err();

    let text = chain(&err);
    assert!(
        text.contains("certificate") && text.contains("UnknownIssuer"),
        "{text}"
    );
}

#[tokio::test]
async fn a_private_upstream_is_trusted_once_its_ca_is_configured() {
    let upstream = private_upstream(&["127.0.0.1", "localhost"]).await;
    let client = build_client(&settings(Some(upstream.ca_file.path()))).unwrap();

    let response = client.get(&upstream.url).send().await.unwrap();

    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("hello over TLS"));
}

#[tokio::test]
async fn the_configured_ca_does_not_excuse_a_certificate_for_another_name() {
    let upstream = private_upstream(&["gateway.internal"]).await;
    let client = build_client(&settings(Some(upstream.ca_file.path()))).unwrap();

    let err = client.get(&upstream.url).send().await.unwrap_err();

    let text = chain(&err);
    assert!(text.contains("certificate not valid for name"), "{text}");
}

/// The whole path a worker takes: configuration, the provider client, the
/// router's call.
#[tokio::test]
async fn a_provider_behind_a_private_ca_answers_only_with_ferry_extra_ca_file() {
    let upstream = private_upstream(&["127.0.0.1"]).await;
    let ca = upstream.ca_file.path().to_str().unwrap().to_owned();
    let base = format!("{}/v1", upstream.url);
    let vars = |with_ca: bool| {
        let mut vars = vec![
            ("FERRY_PROVIDERS", "deepseek"),
            ("DEEPSEEK_API_KEY", "sk-test"),
            ("DEEPSEEK_BASE_URL", base.as_str()),
            ("FERRY_PROVIDER_ATTEMPTS", "1"),
        ];
        if with_ca {
            vars.push(("FERRY_EXTRA_CA_FILE", ca.as_str()));
        }
        Config::from_vars(vars).unwrap()
    };
    let request = ChatRequest::new(vec![ChatMessage::user("hi")]);
    let router = |config: &Config| {
        let client = app::provider_client(config).unwrap();
        Router::from_configs(&config.providers, &client, CallPolicy::default())
    };

    let refused = router(&vars(false))
        .chat(&request, std::time::Duration::from_secs(30))
        .await
        .unwrap_err();
    let answered = router(&vars(true))
        .chat(&request, std::time::Duration::from_secs(30))
        .await
        .unwrap();

    assert_eq!(refused.class(), FailureClass::Transient, "{refused}");
    assert!(!refused.to_string().contains("sk-test"));
    assert_eq!(answered.text, "hello over TLS");
    assert_eq!(answered.model, "private-model");
}

/// The TLS fake provider (the test support's, used by `worker_memory
/// --tls`) speaks HTTP/2 to Ferry's provider client, as the real providers
/// do: once a connection is up, calls made at once share it. (Calls made
/// before any connection is up each open one: the client cannot know the
/// server speaks HTTP/2 until a handshake has said so.)
#[tokio::test]
async fn the_tls_fake_provider_carries_concurrent_calls_on_one_http2_connection() {
    use ferry_tests::fake_provider::{FakeKind, FakeProvider, Reply};
    let fake = FakeProvider::start_tls(FakeKind::OpenAi, "sk-tls", "m", 100).await;
    fake.set_default(Some(Reply::text("over h2")));
    let client = build_client(&settings(fake.ca_file())).unwrap();
    let url = format!("{}/chat/completions", fake.base_url());
    let call = || {
        client
            .post(&url)
            .bearer_auth("sk-tls")
            .json(&serde_json::json!({
                "model": "m",
                "stream": false,
                "messages": [{"role": "user", "content": "hi"}]
            }))
            .send()
    };
    let first = call().await.unwrap();
    assert_eq!(first.version(), reqwest::Version::HTTP_2);
    first.text().await.unwrap();
    for response in futures::future::join_all((0..20).map(|_| call())).await {
        let response = response.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        assert!(response.text().await.unwrap().contains("over h2"));
    }
    assert_eq!(fake.answered(), 21);
    assert_eq!(fake.tls_connections(), Some(1));
}
