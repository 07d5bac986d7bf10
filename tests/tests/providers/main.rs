//! The AI providers against fake providers speaking both wire formats, in
//! modules: `wire_formats` (what goes on the wire, fallback, retries, hints,
//! the budget within a call), `failure_table` (each failure class over both
//! formats), `check_cli` (`ferry providers check`) and `budget`
//! (`wechat.reply` end to end: what the job records, one budget per
//! message). The shared fakes and helpers are here.
//!
//! Timing assertions only ever bound a wait from below: a loaded machine can
//! make anything slower, never faster.

use std::time::{Duration, Instant};

use ferry_cli::app::DEFAULT_APOLOGY;
use ferry_cli::commands::providers as providers_command;
use ferry_common::config::{Config, ProviderConfig};
use ferry_common::job::{JobId, JobRecord, JobState};
use ferry_common::wechat;
use ferry_tests::fake_provider::{FakeKind, FakeMessage, FakeProvider, Reply};
use ferry_tests::{FakeWeChat, Parts, RedisServer, TestFerry, eventually};
use ferry_worker::providers::{
    Allowance, CallPolicy, ChatMessage, ChatRequest, FailureClass, HttpSettings, Provider, Router,
    Usage, build_client,
};
use serde_json::{Value, json};

const KEY: &str = "sk-test-key-123";
const BUDGET: Duration = Duration::from_secs(30);

async fn openai() -> FakeProvider {
    FakeProvider::start(FakeKind::OpenAi, KEY, "deepseek-chat").await
}

async fn gemini() -> FakeProvider {
    FakeProvider::start(FakeKind::Gemini, KEY, "gemini-2.0-flash").await
}

fn client(request_timeout: Duration) -> reqwest::Client {
    build_client(&HttpSettings {
        request_timeout,
        ..HttpSettings::default()
    })
    .unwrap()
}

fn policy() -> CallPolicy {
    CallPolicy {
        max_attempts_per_provider: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        total_budget: BUDGET,
    }
}

/// A router over the fakes, in order, each named as given.
fn chain(fakes: &[(&str, &FakeProvider)]) -> Router {
    let configs: Vec<ProviderConfig> = fakes
        .iter()
        .map(|(name, fake)| fake.provider_config(name))
        .collect();
    Router::from_configs(&configs, &client(Duration::from_secs(10)), policy())
}

fn question() -> ChatRequest {
    ChatRequest::new(vec![ChatMessage::user("what is a ferry?")])
}

fn conversation() -> ChatRequest {
    ChatRequest::new(vec![
        ChatMessage::system("answer briefly"),
        ChatMessage::user("hello"),
        ChatMessage::assistant("hi, how can I help?"),
        ChatMessage::user("what is a ferry?"),
    ])
}

fn sent_conversation() -> Vec<FakeMessage> {
    vec![
        FakeMessage::new("system", "answer briefly"),
        FakeMessage::new("user", "hello"),
        FakeMessage::new("assistant", "hi, how can I help?"),
        FakeMessage::new("user", "what is a ferry?"),
    ]
}

/// Time between the arrivals of a fake's first and second requests.
fn gap(fake: &FakeProvider) -> Duration {
    let requests = fake.requests();
    assert!(
        requests.len() >= 2,
        "expected a retry, got {} request(s)",
        requests.len()
    );
    requests[1].at - requests[0].at
}

mod budget;
mod check_cli;
mod failure_table;
mod wire_formats;
