//! PROVIDERS.md's failure table over the wire: for each wire format
//! (OpenAI-compatible and Gemini), exactly one row per failure class a
//! provider's answer can carry, as the provider sends it. Where the class
//! can come from something only the wire shows (a connection reset, a
//! finish reason in a 200), that is the row; every status and body example
//! of the table is classified by `worker/src/providers/failure.rs`'s unit
//! table. The seventh class, `Unavailable`, is Ferry's own verdict (the
//! fleet's breaker is open and no call is made: `worker/src/providers/gate.rs`),
//! so no answer carries it and it has no row here.

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

fn retry_info(delay: &str) -> Value {
    json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
}

/// The classes a provider's answer can carry: all but `Unavailable`.
const WIRE_CLASSES: [FailureClass; 6] = [
    FailureClass::Transient,
    FailureClass::RateLimited,
    FailureClass::Quota,
    FailureClass::Auth,
    FailureClass::BadRequest,
    FailureClass::ContentFiltered,
];

fn the_failure_table() -> Vec<Example> {
    use FailureClass::*;
    use FakeKind::{Gemini, OpenAi};
    vec![
        // transient
        example("connection reset", OpenAi, Reply::reset(), Transient),
        example(
            "Gemini 503",
            Gemini,
            Reply::gemini_error(503, "UNAVAILABLE", "The model is overloaded.", vec![]),
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
        example(
            "401",
            OpenAi,
            Reply::error(401, json!({"error": {"message": "Unauthorized"}})),
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
            "Gemini 400 INVALID_ARGUMENT",
            Gemini,
            Reply::gemini_error(
                400,
                "INVALID_ARGUMENT",
                "Request contains an invalid argument.",
                vec![],
            ),
            BadRequest,
        ),
        // content filtered
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

#[test]
fn the_table_has_one_row_per_class_per_wire_format() {
    let table = the_failure_table();
    for kind in [FakeKind::OpenAi, FakeKind::Gemini] {
        for class in WIRE_CLASSES {
            let rows: Vec<&str> = table
                .iter()
                .filter(|e| e.kind == kind && e.class == class)
                .map(|e| e.what)
                .collect();
            assert_eq!(rows.len(), 1, "{kind:?} {class}: {rows:?}");
        }
    }
    assert_eq!(table.len(), 2 * WIRE_CLASSES.len());
}

#[tokio::test]
async fn each_class_of_the_failure_table_is_recognised_over_both_wire_formats() {
    let (openai_fake, gemini_fake) = (openai().await, gemini().await);
    let http = client(Duration::from_secs(10));
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
