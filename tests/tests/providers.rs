//! The AI providers against fake providers speaking both wire formats:
//! what goes on the wire (settings from configuration included), the class
//! of every failure of PROVIDERS.md's table as a provider sends it, the
//! fallback order, which failures are retried, that waits honour the
//! providers' hints and never outlast the budget; then `wechat.reply` end to
//! end (what the job records, one budget per message) and `ferry providers
//! check`.
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
use ferry_tests::{FakeWeChat, Parts, RedisServer, TestFerry};
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

#[tokio::test]
async fn an_openai_compatible_call_sends_model_key_settings_and_the_conversation_in_order() {
    let fake = openai().await;
    fake.push(Reply::text("a boat").usage(21, 2));
    let config = ProviderConfig {
        temperature: Some(0.5),
        max_tokens: Some(256),
        ..fake.provider_config("deepseek")
    };
    let provider = Provider::new(&config, client(Duration::from_secs(10)));

    let answer = provider.chat(&conversation()).await.unwrap();

    let request = &fake.requests()[0];
    assert_eq!(request.problem, None);
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(
        request.key_header.as_deref(),
        Some("Bearer sk-test-key-123")
    );
    assert_eq!(request.messages, sent_conversation());
    assert_eq!(request.body["model"], "deepseek-chat");
    assert_eq!(request.body["stream"], false);
    assert_eq!(request.body["temperature"], 0.5);
    assert_eq!(request.body["max_tokens"], 256);
    assert_eq!(
        (
            answer.provider.as_str(),
            answer.model.as_str(),
            answer.text.as_str()
        ),
        ("deepseek", "deepseek-chat", "a boat")
    );
    let usage = Usage {
        prompt_tokens: 21,
        completion_tokens: 2,
        total_tokens: 23,
    };
    assert_eq!(answer.usage, usage);
}

#[tokio::test]
async fn a_gemini_call_puts_the_model_in_the_path_the_key_in_its_header_and_system_apart() {
    let fake = gemini().await;
    fake.push(Reply::text("a boat").usage(30, 3));
    let config = ProviderConfig {
        temperature: Some(0.25),
        max_tokens: Some(128),
        ..fake.provider_config("gemini")
    };
    let provider = Provider::new(&config, client(Duration::from_secs(10)));

    let answer = provider.chat(&conversation()).await.unwrap();

    let request = &fake.requests()[0];
    assert_eq!(request.problem, None);
    assert_eq!(
        request.path,
        "/v1beta/models/gemini-2.0-flash:generateContent"
    );
    assert_eq!(request.key_header.as_deref(), Some(KEY));
    assert_eq!(request.authorization, None);
    assert_eq!(request.messages, sent_conversation());
    assert_eq!(request.body["contents"][1]["role"], "model");
    assert_eq!(
        request.body["generationConfig"],
        json!({"temperature": 0.25, "maxOutputTokens": 128})
    );
    assert_eq!(
        (answer.provider.as_str(), answer.text.as_str()),
        ("gemini", "a boat")
    );
    assert_eq!(answer.usage.total_tokens, 33);
}

#[tokio::test]
async fn deepseek_blank_lines_before_the_json_are_tolerated() {
    let fake = openai().await;
    fake.push(
        Reply::text("still here")
            .leading_blank_lines(5)
            .stall(Duration::from_millis(50)),
    );

    let answer = chain(&[("deepseek", &fake)])
        .chat(&question(), BUDGET)
        .await
        .unwrap();

    assert_eq!(answer.text, "still here");
}

#[tokio::test]
async fn a_transient_failure_is_retried_on_the_same_provider() {
    let fake = openai().await;
    fake.push(Reply::openai_error(
        503,
        "server_error",
        "Server overloaded",
    ));

    let answer = chain(&[("deepseek", &fake)])
        .chat(&question(), BUDGET)
        .await
        .unwrap();

    assert_eq!(answer.text, "what is a ferry?");
    assert_eq!(fake.count(), 2);
}

#[tokio::test]
async fn providers_are_tried_in_chain_order_until_one_answers() {
    let (first, second, third) = (openai().await, openai().await, gemini().await);
    for _ in 0..3 {
        first.push(Reply::error(500, json!({"error": {"message": "internal"}})));
    }
    second.push(Reply::error(
        402,
        json!({"error": {"message": "Insufficient Balance", "type": "unknown_error"}}),
    ));
    let router = chain(&[("deepseek", &first), ("qwen", &second), ("gemini", &third)]);

    let answer = router.chat(&question(), BUDGET).await.unwrap();

    assert_eq!(answer.provider, "gemini");
    assert_eq!((first.count(), second.count(), third.count()), (3, 1, 1));
}

#[tokio::test]
async fn a_quota_failure_sent_as_429_is_not_retried_and_fails_over() {
    let (first, second) = (openai().await, gemini().await);
    first.push(
        Reply::openai_error(429, "insufficient_quota", "You exceeded your current quota")
            .header("retry-after-ms", "10"),
    );
    let router = chain(&[("chatgpt", &first), ("gemini", &second)]);

    let answer = router.chat(&question(), BUDGET).await.unwrap();

    assert_eq!(answer.provider, "gemini");
    assert_eq!(first.count(), 1);
}

#[tokio::test]
async fn a_zhipu_quota_code_is_not_retried_and_fails_over() {
    let (first, second) = (openai().await, openai().await);
    first.push(Reply::error(
        429,
        json!({"error": {"code": "1113", "message": "余额不足或无可用资源包"}}),
    ));
    let router = chain(&[("zhipu", &first), ("qwen", &second)]);

    let answer = router.chat(&question(), BUDGET).await.unwrap();

    assert_eq!(answer.provider, "qwen");
    assert_eq!(first.count(), 1);
}

#[tokio::test]
async fn a_wrong_key_is_not_retried_fails_over_and_is_never_shown() {
    for kind in [FakeKind::OpenAi, FakeKind::Gemini] {
        let (first, second) = (
            FakeProvider::start(kind, "the-right-key", "m").await,
            openai().await,
        );
        let wrong = ProviderConfig {
            api_key: Some("sk-wrong-key-456".into()),
            ..first.provider_config("first")
        };
        let configs = [wrong.clone(), second.provider_config("second")];
        let router = Router::from_configs(&configs, &client(Duration::from_secs(10)), policy());

        let answer = router.chat(&question(), BUDGET).await.unwrap();
        assert_eq!(answer.provider, "second", "{kind:?}");
        assert_eq!(first.count(), 1, "{kind:?}");

        let alone = Router::from_configs(&[wrong], &client(Duration::from_secs(10)), policy());
        let err = alone.chat(&question(), BUDGET).await.unwrap_err();
        assert_eq!(err.class(), FailureClass::Auth, "{kind:?}: {err}");
        assert!(!err.to_string().contains("sk-wrong-key-456"), "{err}");
        assert!(!format!("{err:?}").contains("sk-wrong-key-456"), "{err:?}");
    }
}

#[tokio::test]
async fn a_model_the_provider_does_not_serve_is_not_retried_and_fails_over() {
    let (first, second) = (openai().await, gemini().await);
    let unknown_model = ProviderConfig {
        model: "deepseek-nonesuch".into(),
        ..first.provider_config("deepseek")
    };
    let configs = [unknown_model, second.provider_config("gemini")];
    let router = Router::from_configs(&configs, &client(Duration::from_secs(10)), policy());

    let answer = router.chat(&question(), BUDGET).await.unwrap();

    assert_eq!(answer.provider, "gemini");
    assert_eq!(first.count(), 1);
    assert!(
        first.requests()[0]
            .problem
            .as_deref()
            .unwrap()
            .starts_with("404 model_not_found")
    );
}

#[tokio::test]
async fn a_bad_request_stops_the_chain_with_its_reason() {
    let (first, second) = (openai().await, openai().await);
    first.push(Reply::error(
        400,
        json!({"error": {"code": "1261", "message": "Prompt exceeds max length"}}),
    ));
    let router = chain(&[("zhipu", &first), ("qwen", &second)]);

    let err = router.chat(&question(), BUDGET).await.unwrap_err();

    assert_eq!(err.class(), FailureClass::BadRequest);
    assert_eq!(err.tried, ["zhipu"]);
    assert!(
        err.to_string().contains("Prompt exceeds max length"),
        "{err}"
    );
    assert_eq!((first.count(), second.count()), (1, 0));
}

#[tokio::test]
async fn filtered_content_stops_the_chain_in_both_formats() {
    let (zhipu, gem, next) = (openai().await, gemini().await, openai().await);
    zhipu.push(Reply::error(
        400,
        json!({"error": {"code": "1301", "message": "contentFilter"}}),
    ));
    gem.push(Reply::text("").finish_reason("SAFETY"));

    for (name, fake) in [("zhipu", &zhipu), ("gemini", &gem)] {
        let err = chain(&[(name, fake), ("next", &next)])
            .chat(&question(), BUDGET)
            .await
            .unwrap_err();
        assert_eq!(err.class(), FailureClass::ContentFiltered, "{err}");
        assert_eq!(fake.count(), 1);
    }
    assert_eq!(next.count(), 0);
}

#[tokio::test]
async fn a_retry_after_ms_hint_is_waited_out_before_the_retry() {
    let fake = openai().await;
    fake.push(
        Reply::openai_error(429, "rate_limit_exceeded", "Rate limit reached")
            .header("retry-after-ms", "200"),
    );

    let answer = chain(&[("chatgpt", &fake)])
        .chat(&question(), BUDGET)
        .await
        .unwrap();

    assert_eq!(answer.provider, "chatgpt");
    assert!(gap(&fake) >= Duration::from_millis(200), "{:?}", gap(&fake));
}

#[tokio::test]
async fn a_retry_after_seconds_hint_is_waited_out_before_the_retry() {
    let fake = openai().await;
    fake.push(
        Reply::error(
            429,
            json!({"code": "Throttling.RateQuota", "message": "Requests rate limit exceeded"}),
        )
        .header("Retry-After", "1"),
    );

    let answer = chain(&[("qwen", &fake)])
        .chat(&question(), BUDGET)
        .await
        .unwrap();

    assert_eq!(answer.provider, "qwen");
    assert!(gap(&fake) >= Duration::from_secs(1), "{:?}", gap(&fake));
}

#[tokio::test]
async fn a_gemini_retry_info_delay_is_waited_out_before_the_retry() {
    let fake = gemini().await;
    let retry_info =
        json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.2s"});
    fake.push(Reply::gemini_error(
        429,
        "RESOURCE_EXHAUSTED",
        "Resource has been exhausted",
        vec![retry_info],
    ));

    let answer = chain(&[("gemini", &fake)])
        .chat(&question(), BUDGET)
        .await
        .unwrap();

    assert_eq!(answer.provider, "gemini");
    assert!(gap(&fake) >= Duration::from_millis(200), "{:?}", gap(&fake));
}

#[tokio::test]
async fn a_gemini_per_day_quota_is_not_retried_and_fails_over() {
    let (gem, next) = (gemini().await, openai().await);
    let violation = json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]});
    let retry_info =
        json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.01s"});
    gem.push(Reply::gemini_error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota",
        vec![violation, retry_info],
    ));

    let answer = chain(&[("gemini", &gem), ("deepseek", &next)])
        .chat(&question(), BUDGET)
        .await
        .unwrap();

    assert_eq!(answer.provider, "deepseek");
    assert_eq!(gem.count(), 1);
}

#[tokio::test]
async fn a_hint_longer_than_the_budget_fails_over_instead_of_waiting() {
    let (first, second) = (openai().await, gemini().await);
    first.push(
        Reply::openai_error(429, "rate_limit_exceeded", "Rate limit reached")
            .header("retry-after-ms", "60000"),
    );
    let router = chain(&[("chatgpt", &first), ("gemini", &second)]);

    // Waiting the minute out would leave no budget to call gemini at all.
    let answer = router
        .chat(&question(), Duration::from_secs(5))
        .await
        .unwrap();

    assert_eq!(answer.provider, "gemini");
    assert_eq!(first.count(), 1);
}

#[tokio::test]
async fn when_no_provider_is_left_the_rate_limit_and_its_hint_are_returned() {
    let fake = openai().await;
    fake.push(
        Reply::openai_error(429, "rate_limit_exceeded", "Rate limit reached")
            .header("retry-after-ms", "60000"),
    );

    let err = chain(&[("chatgpt", &fake)])
        .chat(&question(), Duration::from_secs(5))
        .await
        .unwrap_err();

    assert_eq!(err.class(), FailureClass::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(60)));
    assert_eq!(err.tried, ["chatgpt"]);
    assert_eq!(fake.count(), 1);
}

#[tokio::test]
async fn a_stalled_attempt_times_out_and_is_retried() {
    let fake = openai().await;
    fake.push(Reply::text("too late").stall(Duration::from_secs(5)));
    let router = Router::from_configs(
        &[fake.provider_config("deepseek")],
        &client(Duration::from_millis(300)),
        policy(),
    );

    let answer = router.chat(&question(), BUDGET).await.unwrap();

    assert_eq!(answer.text, "what is a ferry?");
    assert_eq!(fake.count(), 2);
}

#[tokio::test]
async fn an_attempt_still_running_when_the_budget_ends_is_cut_and_nothing_else_is_called() {
    let (first, second) = (openai().await, openai().await);
    first.push(Reply::text("too late").stall(Duration::from_secs(5)));
    let router = chain(&[("deepseek", &first), ("qwen", &second)]);
    let started = Instant::now();

    let err = router
        .chat(&question(), Duration::from_millis(300))
        .await
        .unwrap_err();

    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(err.class(), FailureClass::Transient);
    assert_eq!(err.tried, ["deepseek"]);
    assert_eq!((first.count(), second.count()), (1, 0));
}

#[tokio::test]
async fn an_allowance_of_one_attempt_asks_each_provider_once() {
    let (first, second) = (openai().await, gemini().await);
    for _ in 0..3 {
        first.push(Reply::openai_error(
            503,
            "server_error",
            "Server overloaded",
        ));
        second.push(Reply::gemini_error(
            503,
            "UNAVAILABLE",
            "overloaded",
            vec![],
        ));
    }
    let once = Allowance {
        time: BUDGET,
        attempts_per_provider: 1,
    };

    let err = chain(&[("deepseek", &first), ("gemini", &second)])
        .chat_within(&question(), once)
        .await
        .unwrap_err();

    assert_eq!(err.class(), FailureClass::Transient);
    assert_eq!((first.count(), second.count()), (1, 1));
}

// ---------------------------------------------------------------------------
// Every example of PROVIDERS.md's failure table, as the provider sends it.

/// A row of the table: what a provider sends, and the class it must get.
struct Example {
    what: &'static str,
    kind: FakeKind,
    reply: Reply,
    class: FailureClass,
}

fn example(what: &'static str, kind: FakeKind, reply: Reply, class: FailureClass) -> Example {
    Example {
        what,
        kind,
        reply,
        class,
    }
}

fn code_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::error(status, json!({"error": {"code": code, "message": message}}))
}

fn retry_info(delay: &str) -> Value {
    json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
}

fn the_failure_table() -> Vec<Example> {
    use FailureClass::*;
    use FakeKind::{Gemini, OpenAi};
    let error =
        |status: u16, message: &str| Reply::error(status, json!({"error": {"message": message}}));
    vec![
        // transient
        example("500", OpenAi, error(500, "internal error"), Transient),
        example(
            "502",
            OpenAi,
            Reply::error(502, json!("<html>502 Bad Gateway</html>")),
            Transient,
        ),
        example("503", OpenAi, error(503, "unavailable"), Transient),
        example("504", OpenAi, error(504, "gateway timeout"), Transient),
        example(
            "Gemini 503",
            Gemini,
            Reply::gemini_error(503, "UNAVAILABLE", "The model is overloaded.", vec![]),
            Transient,
        ),
        example("connection reset", OpenAi, Reply::reset(), Transient),
        example(
            "timeout",
            OpenAi,
            Reply::text("too late").stall(Duration::from_secs(5)),
            Transient,
        ),
        example(
            "DeepSeek 503",
            OpenAi,
            Reply::openai_error(503, "server_error", "Server overloaded"),
            Transient,
        ),
        example(
            "Zhipu 1305",
            OpenAi,
            code_error(429, "1305", "当前API请求过多，请稍后重试。"),
            Transient,
        ),
        example(
            "Doubao ServerOverloaded",
            OpenAi,
            Reply::error(
                429,
                json!({"error": {"code": "ServerOverloaded", "message": "busy", "param": "", "type": "TooManyRequests"}}),
            ),
            Transient,
        ),
        // rate limited
        example(
            "429 rate_limit_exceeded",
            OpenAi,
            Reply::openai_error(
                429,
                "rate_limit_exceeded",
                "Rate limit reached for requests",
            ),
            RateLimited,
        ),
        example(
            "Zhipu 1302",
            OpenAi,
            code_error(429, "1302", "您当前使用该API的并发数过高"),
            RateLimited,
        ),
        example(
            "Zhipu 1303",
            OpenAi,
            code_error(429, "1303", "您当前使用该API的频率过高"),
            RateLimited,
        ),
        example(
            "Doubao ModelAccountRpmRateLimitExceeded",
            OpenAi,
            code_error(429, "ModelAccountRpmRateLimitExceeded", "RPM exceeded"),
            RateLimited,
        ),
        example(
            "Doubao RequestBurstTooFast",
            OpenAi,
            code_error(429, "RequestBurstTooFast", "burst"),
            RateLimited,
        ),
        example(
            "Qwen Throttling.RateQuota",
            OpenAi,
            Reply::openai_error(429, "Throttling.RateQuota", "Requests rate limit exceeded"),
            RateLimited,
        ),
        example(
            "Gemini RESOURCE_EXHAUSTED with RetryInfo",
            Gemini,
            Reply::gemini_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted",
                vec![retry_info("47s")],
            ),
            RateLimited,
        ),
        // quota / billing
        example(
            "OpenAI 429 insufficient_quota",
            OpenAi,
            Reply::openai_error(429, "insufficient_quota", "You exceeded your current quota"),
            Quota,
        ),
        example(
            "DeepSeek 402",
            OpenAi,
            Reply::error(
                402,
                json!({"error": {"message": "Insufficient Balance", "type": "unknown_error", "param": null, "code": "invalid_request_error"}}),
            ),
            Quota,
        ),
        example(
            "Zhipu 1113 sent as 429",
            OpenAi,
            code_error(429, "1113", "余额不足或无可用资源包,请充值。"),
            Quota,
        ),
        example(
            "Zhipu 1304",
            OpenAi,
            code_error(429, "1304", "该API今日调用次数已达上限"),
            Quota,
        ),
        example(
            "Zhipu 1308",
            OpenAi,
            code_error(429, "1308", "已达到使用上限"),
            Quota,
        ),
        example(
            "Zhipu 1310",
            OpenAi,
            code_error(429, "1310", "已达到周期使用上限"),
            Quota,
        ),
        example(
            "Doubao AccountOverdueError",
            OpenAi,
            code_error(403, "AccountOverdueError", "overdue"),
            Quota,
        ),
        example(
            "Doubao AccountQuotaExceeded",
            OpenAi,
            code_error(429, "AccountQuotaExceeded", "quota exceeded"),
            Quota,
        ),
        example(
            "Gemini per-day quota",
            Gemini,
            Reply::gemini_error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota",
                vec![
                    json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}),
                    retry_info("23s"),
                ],
            ),
            Quota,
        ),
        // auth
        example("401", OpenAi, error(401, "Unauthorized"), Auth),
        example("403", OpenAi, error(403, "Forbidden"), Auth),
        example(
            "invalid_api_key",
            OpenAi,
            Reply::openai_error(401, "invalid_api_key", "Incorrect API key provided"),
            Auth,
        ),
        example(
            "Doubao AuthenticationError",
            OpenAi,
            code_error(401, "AuthenticationError", "the API key is invalid"),
            Auth,
        ),
        example(
            "Gemini API_KEY_INVALID",
            Gemini,
            Reply::gemini_error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                vec![
                    json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}),
                ],
            ),
            Auth,
        ),
        // bad request
        example(
            "400",
            OpenAi,
            Reply::openai_error(400, "invalid_request_error", "messages: field required"),
            BadRequest,
        ),
        example(
            "422",
            OpenAi,
            Reply::openai_error(422, "invalid_request_error", "unprocessable"),
            BadRequest,
        ),
        example(
            "Zhipu 1261",
            OpenAi,
            code_error(400, "1261", "Prompt exceeds max length"),
            BadRequest,
        ),
        // content filtered
        example(
            "Zhipu 1301",
            OpenAi,
            code_error(
                400,
                "1301",
                "系统检测到输入或生成内容可能包含不安全或敏感内容",
            ),
            ContentFiltered,
        ),
        example(
            "OpenAI content_filter finish",
            OpenAi,
            Reply::text("partial").finish_reason("content_filter"),
            ContentFiltered,
        ),
        example(
            "Gemini SAFETY finish",
            Gemini,
            Reply::text("").finish_reason("SAFETY"),
            ContentFiltered,
        ),
    ]
}

#[tokio::test]
async fn every_example_of_the_failure_table_gets_its_class_over_the_wire() {
    let (openai_fake, gemini_fake) = (openai().await, gemini().await);
    // Short enough that the stalled example times out, long enough for
    // every other answer on a loaded machine.
    let http = client(Duration::from_secs(2));
    let openai_provider = Provider::new(&openai_fake.provider_config("p"), http.clone());
    let gemini_provider = Provider::new(&gemini_fake.provider_config("p"), http);

    let mut wrong = Vec::new();
    for e in the_failure_table() {
        let (fake, provider) = match e.kind {
            FakeKind::OpenAi => (&openai_fake, &openai_provider),
            FakeKind::Gemini => (&gemini_fake, &gemini_provider),
        };
        fake.push(e.reply);
        match provider.chat(&question()).await {
            Err(err) if err.class == e.class => {}
            Err(err) => wrong.push(format!("{}: expected {}, got {err}", e.what, e.class)),
            Ok(a) => wrong.push(format!(
                "{}: expected {}, got an answer {:?}",
                e.what, e.class, a.text
            )),
        }
        let problem = fake.requests().last().unwrap().problem.clone();
        assert_eq!(problem, None, "{}: the fake refused the request", e.what);
    }

    assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn temperature_and_max_tokens_from_configuration_reach_both_wire_formats() {
    let (deepseek, gem) = (openai().await, gemini().await);
    let local = FakeProvider::start(FakeKind::OpenAi, KEY, "qwen2.5-7b-instruct").await;
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("ferry.toml");
    std::fs::write(
        &toml,
        format!(
            "[providers.local]\nbase_url = \"{}\"\nmodel = \"qwen2.5-7b-instruct\"\ntemperature = 0.25\nmax_tokens = 300\n",
            local.base_url()
        ),
    )
    .unwrap();
    let (deepseek_url, gemini_url) = (deepseek.base_url(), gem.base_url());
    let config = Config::from_vars([
        ("FERRY_CONFIG", toml.to_str().unwrap()),
        ("FERRY_PROVIDERS", "deepseek,gemini,local"),
        ("DEEPSEEK_API_KEY", KEY),
        ("DEEPSEEK_BASE_URL", deepseek_url.as_str()),
        ("DEEPSEEK_TEMPERATURE", "0.5"),
        ("DEEPSEEK_MAX_TOKENS", "512"),
        ("GEMINI_API_KEY", KEY),
        ("GEMINI_BASE_URL", gemini_url.as_str()),
        ("GEMINI_TEMPERATURE", "0.75"),
        ("GEMINI_MAX_TOKENS", "256"),
        ("LOCAL_API_KEY", KEY),
    ])
    .unwrap();

    for provider_config in &config.providers {
        let provider = Provider::new(provider_config, client(Duration::from_secs(10)));
        provider.chat(&question()).await.unwrap();
    }

    let body = |fake: &FakeProvider| fake.requests()[0].body.clone();
    assert_eq!(
        (
            &body(&deepseek)["temperature"],
            &body(&deepseek)["max_tokens"]
        ),
        (&json!(0.5), &json!(512))
    );
    assert_eq!(
        body(&gem)["generationConfig"],
        json!({"temperature": 0.75, "maxOutputTokens": 256})
    );
    assert_eq!(
        (
            &body(&local)["temperature"],
            &body(&local)["max_tokens"],
            &body(&local)["model"]
        ),
        (&json!(0.25), &json!(300), &json!("qwen2.5-7b-instruct"))
    );
}

// ---------------------------------------------------------------------------
// `ferry providers check`: one tiny call to each provider, no retries.

#[tokio::test]
async fn providers_check_reports_each_provider_in_chain_order_and_fails_if_any_failed() {
    let (deepseek, qwen, gem) = (openai().await, openai().await, gemini().await);
    deepseek.push(Reply::text("ok").usage(12, 1));
    qwen.push(Reply::openai_error(
        429,
        "insufficient_quota",
        "You exceeded your current quota",
    ));
    let (deepseek_url, qwen_url, gemini_url) =
        (deepseek.base_url(), qwen.base_url(), gem.base_url());
    let config = Config::from_vars([
        ("FERRY_PROVIDERS", "deepseek,qwen,gemini"),
        ("DEEPSEEK_API_KEY", KEY),
        ("DEEPSEEK_BASE_URL", deepseek_url.as_str()),
        ("QWEN_API_KEY", KEY),
        ("QWEN_BASE_URL", qwen_url.as_str()),
        ("QWEN_MODEL", "deepseek-chat"),
        ("GEMINI_API_KEY", "sk-wrong-key-456"),
        ("GEMINI_BASE_URL", gemini_url.as_str()),
    ])
    .unwrap();
    let mut out = Vec::new();

    let result = providers_command::check(&config, &mut out).await;

    let out = String::from_utf8(out).unwrap();
    let err = result.unwrap_err().to_string();
    assert_eq!(err, "2 of 3 provider(s) failed the check: qwen, gemini");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(lines[0][..2], ["provider", "result"]);
    assert_eq!(lines[1][..2], ["deepseek", "ok"]);
    assert_eq!(lines[2][..2], ["qwen", "FAILED"]);
    assert_eq!(lines[3][..2], ["gemini", "FAILED"]);
    assert!(
        out.contains("quota (HTTP 429, insufficient_quota): You exceeded your current quota"),
        "{out}"
    );
    assert!(out.contains("auth (HTTP 400, API_KEY_INVALID)"), "{out}");
    assert!(!out.contains("sk-wrong-key-456") && !err.contains("sk-wrong-key-456"));
    // One call each, however it failed, and a tiny one.
    assert_eq!((deepseek.count(), qwen.count(), gem.count()), (1, 1, 1));
    let probe = &deepseek.requests()[0];
    assert_eq!(probe.problem, None);
    assert_eq!(probe.body["max_tokens"], 16);
    assert_eq!(probe.messages.len(), 1);
}

#[tokio::test]
async fn providers_check_succeeds_when_every_provider_answers() {
    let (deepseek, gem) = (openai().await, gemini().await);
    let (deepseek_url, gemini_url) = (deepseek.base_url(), gem.base_url());
    let config = Config::from_vars([
        ("FERRY_PROVIDERS", "deepseek,gemini,echo"),
        ("DEEPSEEK_API_KEY", KEY),
        ("DEEPSEEK_BASE_URL", deepseek_url.as_str()),
        ("GEMINI_API_KEY", KEY),
        ("GEMINI_BASE_URL", gemini_url.as_str()),
        ("GEMINI_MAX_TOKENS", "8"),
    ])
    .unwrap();
    let mut out = Vec::new();

    providers_command::check(&config, &mut out).await.unwrap();

    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        out.lines().filter(|l| l.contains("  ok  ")).count(),
        3,
        "{out}"
    );
    assert_eq!(
        gem.requests()[0].body["generationConfig"]["maxOutputTokens"],
        8
    );
}

#[tokio::test]
async fn providers_check_gives_each_call_the_configured_attempt_timeout() {
    let deepseek = openai().await;
    deepseek.push(Reply::text("ok").stall(Duration::from_secs(5)));
    let url = deepseek.base_url();
    let config = Config::from_vars([
        ("FERRY_PROVIDERS", "deepseek"),
        ("DEEPSEEK_API_KEY", KEY),
        ("DEEPSEEK_BASE_URL", url.as_str()),
        ("FERRY_PROVIDER_TIMEOUT", "0.3"),
    ])
    .unwrap();
    let mut out = Vec::new();

    let result = providers_command::check(&config, &mut out).await;

    assert!(result.is_err());
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("FAILED  -        transient: timed out"),
        "{out}"
    );
    assert_eq!(deepseek.count(), 1);
}

#[test]
fn an_unreadable_extra_ca_file_stops_start_up_naming_the_variable() {
    let config =
        Config::from_vars([("FERRY_EXTRA_CA_FILE", "/nonexistent/gateway-ca.pem")]).unwrap();

    let err = ferry_cli::app::provider_client(&config).unwrap_err();

    assert!(
        err.to_string().starts_with(
            "FERRY_EXTRA_CA_FILE: cannot read the CA file /nonexistent/gateway-ca.pem"
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// `wechat.reply` end to end: what the job records, one budget per message.

const APP_ID: &str = "wx_test_app";
const APP_SECRET: &str = "test-app-secret";

/// Redis, WeChat and Ferry (api + worker) with `chain` as its providers.
async fn ferry_with(
    chain: &[(&str, &FakeProvider)],
    extra: &[(&str, &str)],
) -> (RedisServer, FakeWeChat, TestFerry) {
    let redis = RedisServer::start();
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let names: Vec<&str> = chain.iter().map(|(name, _)| *name).collect();
    let mut vars: Vec<(String, String)> = vec![
        ("WECHAT_APP_ID".into(), APP_ID.into()),
        ("WECHAT_APP_SECRET".into(), APP_SECRET.into()),
        ("WECHAT_API_BASE".into(), wechat.base_url()),
        ("FERRY_PROVIDERS".into(), names.join(",")),
    ];
    for (name, fake) in chain {
        let c = fake.provider_config(name);
        let upper = name.to_ascii_uppercase();
        vars.push((format!("{upper}_API_KEY"), KEY.into()));
        vars.push((format!("{upper}_BASE_URL"), c.base_url));
        vars.push((format!("{upper}_MODEL"), c.model));
    }
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let parts = Parts {
        api: true,
        worker: true,
    };
    let ferry = TestFerry::start(&redis, &vars, parts).await;
    (redis, wechat, ferry)
}

async fn say(ferry: &TestFerry, openid: &str, content: &str, msg_id: i64) {
    let xml = wechat::text_message_xml(
        "gh_account",
        openid,
        chrono::Utc::now().timestamp(),
        content,
        msg_id,
    );
    let (status, body) = ferry.post_wechat(&xml).await;
    assert_eq!((status, body.as_str()), (200, "success"));
}

/// The record of the job made from WeChat message `msg_id`, once finished.
async fn finished_job(redis: &RedisServer, ferry: &TestFerry, msg_id: i64) -> JobRecord {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("{ferry:wechat}:job:*")
            .query(&mut redis.conn())
            .unwrap();
        for key in keys {
            let id: JobId = key.split_once(":job:").unwrap().1.parse().unwrap();
            if let Some(record) = ferry.queue.job(&id).await.unwrap()
                && record.payload["msg_id"] == msg_id
                && record.state.is_finished()
            {
                return record;
            }
        }
        assert!(
            Instant::now() < deadline,
            "job of message {msg_id} never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_result_names_the_provider_model_tokens_and_latency_of_the_answer() {
    let (deepseek, gem) = (openai().await, gemini().await);
    deepseek.push(Reply::error(
        402,
        json!({"error": {"message": "Insufficient Balance", "type": "unknown_error"}}),
    ));
    gem.push(Reply::text("渡轮是一种船。").usage(30, 7));
    let (redis, wechat, ferry) =
        ferry_with(&[("deepseek", &deepseek), ("gemini", &gem)], &[]).await;

    say(&ferry, "o_user_result", "什么是渡轮？", 5001).await;

    let sent = wechat.wait_for_sent(1, Duration::from_secs(10)).await;
    assert_eq!(sent[0].content, "渡轮是一种船。");
    let job = finished_job(&redis, &ferry, 5001).await;
    assert_eq!(job.state, JobState::Succeeded);
    let mut result = job.result.unwrap();
    let latency = result.as_object_mut().unwrap().remove("latency_ms");
    assert!(
        latency.is_some_and(|l| l.is_u64()),
        "latency_ms is a whole number of ms"
    );
    assert_eq!(
        result,
        json!({
            "provider": "gemini",
            "model": "gemini-2.0-flash",
            "prompt_tokens": 30,
            "completion_tokens": 7,
            "total_tokens": 37,
            "parts": 1,
        })
    );
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_budget_runs_out_gets_the_apology_and_no_further_calls() {
    let deepseek = openai().await;
    // Far longer than the budget (the per-attempt timeout is a minute): the
    // call is cut when the budget runs out, and nothing follows it.
    deepseek.push(Reply::text("far too late").stall(Duration::from_secs(20)));
    let (redis, wechat, ferry) = ferry_with(
        &[("deepseek", &deepseek)],
        &[("FERRY_AI_TOTAL_BUDGET", "3")],
    )
    .await;

    say(&ferry, "o_user_budget", "你好", 5002).await;

    let sent = wechat.wait_for_sent(1, Duration::from_secs(15)).await;
    assert_eq!(sent[0].content, DEFAULT_APOLOGY);
    let job = finished_job(&redis, &ferry, 5002).await;
    assert_eq!(job.state, JobState::Dead);
    assert!(
        job.last_error.as_deref().unwrap().contains("budget"),
        "{:?}",
        job.last_error
    );
    assert_eq!(deepseek.count(), 1);
    assert_eq!(wechat.sent().len(), 1);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_hint_longer_than_the_budget_left_gets_the_apology_at_once() {
    let deepseek = openai().await;
    deepseek.push(
        Reply::openai_error(429, "rate_limit_exceeded", "Rate limit reached")
            .header("retry-after-ms", "60000"),
    );
    let (redis, wechat, ferry) = ferry_with(
        &[("deepseek", &deepseek)],
        &[("FERRY_AI_TOTAL_BUDGET", "10")],
    )
    .await;

    say(&ferry, "o_user_hint", "你好", 5003).await;

    let sent = wechat.wait_for_sent(1, Duration::from_secs(15)).await;
    assert_eq!(sent[0].content, DEFAULT_APOLOGY);
    let job = finished_job(&redis, &ferry, 5003).await;
    assert_eq!(job.state, JobState::Dead, "not a retry a minute later");
    assert_eq!(job.attempts, 1);
    assert_eq!(deepseek.count(), 1);
    ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_job_asks_each_provider_once_instead_of_repeating_the_in_call_retries() {
    let deepseek = openai().await;
    for _ in 0..20 {
        deepseek.push(Reply::openai_error(
            503,
            "server_error",
            "Server overloaded",
        ));
    }
    let (redis, wechat, ferry) = ferry_with(
        &[("deepseek", &deepseek)],
        &[("FERRY_PROVIDER_ATTEMPTS", "3")],
    )
    .await;

    say(&ferry, "o_user_retry", "你好", 5004).await;

    let sent = wechat.wait_for_sent(1, Duration::from_secs(30)).await;
    assert_eq!(sent[0].content, DEFAULT_APOLOGY);
    let job = finished_job(&redis, &ferry, 5004).await;
    assert_eq!(
        (job.state, job.attempts, job.max_attempts),
        (JobState::Dead, 4, 4)
    );
    // Three calls on the first attempt, then one on each of the three job
    // retries: 3 + 1 + 1 + 1, not 3 × 4.
    assert_eq!(deepseek.count(), 6);
    ferry.stop().await;
}
