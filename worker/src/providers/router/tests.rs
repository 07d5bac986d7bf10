//! The chain, end to end against the echo provider and a dead address.
//! (Echo reports the model it was asked, so the tests see which one.)

use std::time::Duration;

use ferry_common::Secret;
use ferry_common::config::{ProviderConfig, ProviderKind};

use super::*;
use crate::providers::{ChatMessage, FailureClass, Image, Overrides};

fn config(name: &str, kind: ProviderKind, base_url: &str, key: Option<&str>) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        kind,
        base_url: base_url.into(),
        api_key: key.map(Secret::from),
        model: "m".into(),
        vision_model: None,
        temperature: None,
        max_tokens: None,
    }
}

/// `config` with a vision model.
fn seeing(config: ProviderConfig, vision_model: &str) -> ProviderConfig {
    ProviderConfig {
        vision_model: Some(vision_model.into()),
        ..config
    }
}

fn echo(name: &str) -> ProviderConfig {
    config(name, ProviderKind::Echo, "", None)
}

fn photo() -> ChatRequest {
    hello().with_image(Image::new("image/jpeg", vec![0xff, 0xd8, 0xff]))
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

#[tokio::test]
async fn a_picture_skips_text_only_providers_and_asks_the_vision_model() {
    let r = router(&[echo("text"), seeing(echo("eyes"), "eyes-vl")], 1);
    assert!(r.has_vision());

    let answer = r.chat(&photo(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        (answer.provider.as_str(), answer.model.as_str()),
        ("eyes", "eyes-vl")
    );
    let text = r.chat(&hello(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        (text.provider.as_str(), text.model.as_str()),
        ("text", "m"),
        "text still goes to the chain's first provider and its text model"
    );
}

#[tokio::test]
async fn a_picture_fails_over_only_along_the_vision_providers_in_chain_order() {
    let r = router(
        &[
            seeing(
                config("dead", ProviderKind::OpenAi, DEAD, Some("k")),
                "dead-vl",
            ),
            echo("text"),
            seeing(echo("eyes"), "eyes-vl"),
        ],
        1,
    );
    let answer = r.chat(&photo(), Duration::from_secs(30)).await.unwrap();
    assert_eq!(answer.provider, "eyes");

    let gone = router(
        &[
            echo("text"),
            seeing(
                config("dead", ProviderKind::OpenAi, DEAD, Some("k")),
                "dead-vl",
            ),
        ],
        1,
    );
    let err = gone
        .chat(&photo(), Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(
        err.tried,
        ["dead"],
        "the text-only provider is never called"
    );
}

#[tokio::test]
async fn a_picture_with_its_own_model_keeps_it() {
    let r = router(&[echo("text"), seeing(echo("eyes"), "eyes-vl")], 1);
    let req = photo().with_overrides(Overrides {
        model: Some("custom-vl".into()),
        ..Overrides::default()
    });
    let answer = r.chat(&req, Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        (answer.provider.as_str(), answer.model.as_str()),
        ("eyes", "custom-vl")
    );
}

#[tokio::test]
async fn a_picture_without_any_vision_provider_is_a_bad_request_naming_why() {
    let r = router(&[echo("text"), echo("more")], 1);
    assert!(!r.has_vision());
    let err = r.chat(&photo(), Duration::from_secs(30)).await.unwrap_err();
    assert!(err.tried.is_empty());
    assert_eq!(err.class(), FailureClass::BadRequest);
    assert!(
        err.to_string()
            .contains("no provider of the chain (text, more) has a vision model"),
        "{err}"
    );
}
