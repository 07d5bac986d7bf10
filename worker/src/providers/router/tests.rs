//! The chain, end to end against the echo provider and a dead address.

use std::time::Duration;

use ferry_common::Secret;
use ferry_common::config::{ProviderConfig, ProviderKind};

use super::*;
use crate::providers::{ChatMessage, FailureClass};

fn config(name: &str, kind: ProviderKind, base_url: &str, key: Option<&str>) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        kind,
        base_url: base_url.into(),
        api_key: key.map(Secret::from),
        model: "m".into(),
        temperature: None,
        max_tokens: None,
    }
}

fn router(configs: &[ProviderConfig], max_attempts: u32) -> Router {
    let policy = CallPolicy {
        max_attempts_per_provider: max_attempts,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        total_budget: Duration::from_secs(30),
    };
    Router::from_configs(configs, &reqwest::Client::new(), policy)
}

fn hello() -> ChatRequest {
    ChatRequest::new(vec![ChatMessage::user("hello")])
}

/// Nothing listens on port 1: the connection is refused at once.
const DEAD: &str = "http://127.0.0.1:1/v1";

#[tokio::test]
async fn an_unreachable_provider_is_retried_then_the_next_one_answers() {
    let r = router(
        &[
            config("dead", ProviderKind::OpenAi, DEAD, Some("k")),
            config("echo", ProviderKind::Echo, "", None),
        ],
        2,
    );
    let answer = r.chat(&hello(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        (answer.provider.as_str(), answer.text.as_str()),
        ("echo", "hello")
    );
}

#[tokio::test]
async fn when_every_provider_fails_the_error_lists_them_and_keeps_the_last_class() {
    let r = router(
        &[
            config("nokey", ProviderKind::Gemini, DEAD, None),
            config("dead", ProviderKind::OpenAi, DEAD, Some("k")),
        ],
        2,
    );
    let err = r.chat(&hello(), Duration::from_secs(30)).await.unwrap_err();
    assert_eq!(err.tried, ["nokey", "dead"]);
    assert_eq!(err.class(), FailureClass::Transient);
    assert!(
        err.to_string()
            .starts_with("no provider answered (tried nokey, dead)"),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_request_stops_the_chain() {
    let r = router(
        &[
            config("echo", ProviderKind::Echo, "", None),
            config("other", ProviderKind::Echo, "", None),
        ],
        3,
    );
    let err = r
        .chat(&ChatRequest::default(), Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(err.tried, ["echo"]);
    assert_eq!(err.class(), FailureClass::BadRequest);
}

#[tokio::test]
async fn with_no_time_left_no_provider_is_called() {
    let r = router(&[config("echo", ProviderKind::Echo, "", None)], 3);
    let err = r.chat(&hello(), Duration::ZERO).await.unwrap_err();
    assert!(err.tried.is_empty() && err.last.is_none());
    assert_eq!(err.class(), FailureClass::Transient);
}

#[test]
fn the_call_can_run_on_any_worker_thread() {
    fn assert_send<T: Send>(_: &T) {}
    let r = router(&[], 1);
    let req = hello();
    assert_send(&r.chat(&req, Duration::ZERO));
}
