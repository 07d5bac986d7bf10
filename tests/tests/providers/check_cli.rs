//! `ferry providers check`: one tiny call to each provider, no retries.

use super::*;

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
