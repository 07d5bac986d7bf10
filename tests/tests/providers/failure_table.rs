//! One example of PROVIDERS.md's failure table per class per wire format,
//! and the failures only the wire can show (a reset, a stall, a finish
//! reason), as the provider sends them, each classified over the wire.
//! Every example of the table is classified by
//! `worker/src/providers/failure.rs`'s unit test; over the wire one per
//! class and format is enough to show the classes reach the router.

use super::*;

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
async fn each_class_of_the_failure_table_is_recognised_over_both_wire_formats() {
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
