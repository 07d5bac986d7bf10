//! The two wire formats (OpenAI-compatible and Gemini) against the fakes:
//! what each call sends, retries and hints, failover, timeouts and the
//! budget within a call, and the configured settings in both formats.

use super::*;

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
