//! OpenAI's Batch API on Ferry (`/openai/v1`), against a real Redis, with
//! workers answering through two fake providers of the two wire formats
//! (DeepSeek's OpenAI shape, Gemini's own).
//!
//! - The routes driven the way the official clients drive them: multipart
//!   uploads as httpx sends them, JSON bodies, cursor pagination (`limit`,
//!   `after`), and every object's shape (its keys in order, each value's
//!   type) compared with OpenAI's documented object.
//! - The real openai Python client from PyPI (installed by
//!   `scripts/install-deps`) running `tests/python/openai_batch.py`: 400
//!   requests over two providers, polled to completed, every custom_id
//!   matched; list, cancel, a bad line, a read-only token, another key.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use ferry_common::api_tokens::hash_hex;
use ferry_tests::fake_provider::{FakeKind, FakeProvider, Reply};
use ferry_tests::{Parts, RedisServer, TestFerry};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};

const DEEPSEEK_KEY: &str = "sk-test-deepseek";
const DEEPSEEK_MODEL: &str = "deepseek-chat";
const GEMINI_KEY: &str = "gm-test-gemini";
const GEMINI_MODEL: &str = "gemini-2.0-flash";
const QWEN_KEY: &str = "sk-test-qwen";
const QWEN_MODEL: &str = "qwen-plus";
const SUBMIT_TOKEN: &str = "t-submit-and-read";
const READ_TOKEN: &str = "t-read-only";
const OTHER_TOKEN: &str = "t-other-team";

struct World {
    redis: RedisServer,
    deepseek: FakeProvider,
    gemini: FakeProvider,
    qwen: FakeProvider,
    ferry: TestFerry,
}

async fn world() -> World {
    let redis = RedisServer::start();
    let deepseek = FakeProvider::start(FakeKind::OpenAi, DEEPSEEK_KEY, DEEPSEEK_MODEL).await;
    let gemini = FakeProvider::start(FakeKind::Gemini, GEMINI_KEY, GEMINI_MODEL).await;
    let qwen = FakeProvider::start(FakeKind::OpenAi, QWEN_KEY, QWEN_MODEL).await;
    let tokens = [
        format!("ci:submit+read:{}", hash_hex(SUBMIT_TOKEN)),
        format!("viewer:read:{}", hash_hex(READ_TOKEN)),
        format!("other:submit+read:{}", hash_hex(OTHER_TOKEN)),
    ]
    .join(",");
    let (d, g, q) = (deepseek.base_url(), gemini.base_url(), qwen.base_url());
    let vars = [
        ("WECHAT_APP_ID", "wx_unused"),
        ("WECHAT_APP_SECRET", "unused-secret"),
        ("WECHAT_API_BASE", "http://127.0.0.1:1"),
        ("FERRY_PROVIDERS", "deepseek,gemini,qwen"),
        ("DEEPSEEK_API_KEY", DEEPSEEK_KEY),
        ("DEEPSEEK_BASE_URL", &d),
        ("DEEPSEEK_MODEL", DEEPSEEK_MODEL),
        ("GEMINI_API_KEY", GEMINI_KEY),
        ("GEMINI_BASE_URL", &g),
        ("GEMINI_MODEL", GEMINI_MODEL),
        ("QWEN_API_KEY", QWEN_KEY),
        ("QWEN_BASE_URL", &q),
        ("QWEN_MODEL", QWEN_MODEL),
        ("QWEN_VISION_MODEL", ""),
        ("FERRY_API_TOKENS", &tokens),
        ("FERRY_API_SUBMISSIONS_PER_MINUTE", "0"),
        ("LOG_LEVEL", "warn"),
    ];
    let ferry = TestFerry::start(
        &redis,
        &vars,
        Parts {
            api: true,
            worker: true,
        },
    )
    .await;
    World {
        redis,
        deepseek,
        gemini,
        qwen,
        ferry,
    }
}

/// A response: status, its body as sent, and as JSON.
struct Answer {
    status: u16,
    text: String,
    json: Value,
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("{}/openai/v1{path}", self.ferry.api_url)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, text, json }
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(
            reqwest::Client::new()
                .get(self.url(path))
                .bearer_auth(token),
        )
        .await
    }

    async fn post_json(&self, path: &str, token: &str, body: &Value) -> Answer {
        // As the clients send it: a JSON body, application/json.
        self.send(
            reqwest::Client::new()
                .post(self.url(path))
                .bearer_auth(token)
                .json(body),
        )
        .await
    }

    /// Uploads as httpx does: `purpose` first, then the file part.
    async fn upload(&self, token: &str, filename: &str, content: &[u8]) -> Answer {
        let boundary = "d41d8cd98f00b204e9800998ecf8427e";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        self.send(
            reqwest::Client::new()
                .post(self.url("/files"))
                .bearer_auth(token)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body),
        )
        .await
    }

    /// `metadata` as JSON text: sent as written, in its key order.
    async fn create_batch(&self, file_id: &str, metadata: &str) -> Answer {
        let body = format!(
            r#"{{"input_file_id":{file_id:?},"endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{metadata}}}"#
        );
        self.send(
            reqwest::Client::new()
                .post(self.url("/batches"))
                .bearer_auth(SUBMIT_TOKEN)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    async fn wait_until_final(&self, id: &str) -> Answer {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let b = self.get(&format!("/batches/{id}"), SUBMIT_TOKEN).await;
            assert_eq!(b.status, 200, "{}", b.text);
            let status = b.json["status"].as_str().unwrap();
            if ["completed", "failed", "expired", "cancelled"].contains(&status) {
                return b;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "batch never finished: {}",
                b.text
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stream_len(&self) -> i64 {
        redis::cmd("XLEN")
            .arg("{ferry:batch}:stream")
            .query(&mut self.redis.conn())
            .unwrap()
    }
}

fn line(custom_id: &str, model: &str, question: &str, params: Value) -> String {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": question}],
    });
    body.as_object_mut()
        .unwrap()
        .extend(params.as_object().cloned().unwrap_or_default());
    json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})
        .to_string()
}

fn jsonl(lines: &[String]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

/// A JSON text's shape: every key in the order sent, each value's type
/// (`object` values kept, they name the object).
enum Shape {
    Object(Vec<(String, Shape)>),
    Array(Vec<Shape>),
    Str(String),
    Number,
    Bool,
    Null,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
                Ok(Shape::Bool)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
                Ok(Shape::Number)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
                Ok(Shape::Number)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
                Ok(Shape::Number)
            }
            fn visit_str<E>(self, s: &str) -> Result<Shape, E> {
                Ok(Shape::Str(s.to_owned()))
            }
            fn visit_unit<E>(self) -> Result<Shape, E> {
                Ok(Shape::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Shape::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Shape>()? {
                    entries.push((k, v));
                }
                Ok(Shape::Object(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl Shape {
    fn render(&self, key: &str, out: &mut String) {
        match self {
            Shape::Object(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&format!("{k:?}:"));
                    v.render(k, out);
                }
                out.push('}');
            }
            Shape::Array(items) => {
                out.push('[');
                // The first item stands for all.
                if let Some(first) = items.first() {
                    first.render("", out);
                }
                out.push(']');
            }
            Shape::Str(s) if key == "object" => out.push_str(&format!("{s:?}")),
            Shape::Str(_) => out.push_str("string"),
            Shape::Number => out.push_str("number"),
            Shape::Bool => out.push_str("bool"),
            Shape::Null => out.push_str("null"),
        }
    }
}

fn shape(text: &str) -> String {
    let parsed: Shape = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let mut out = String::new();
    parsed.render("", &mut out);
    out
}

/// OpenAI's documented objects (API reference, "The file object", "The
/// batch object", "The request output object", "The chat completion
/// object", "List files", "Delete file", and the error object), in a
/// state Ferry's answer is in: the key order and the value types are
/// what the test compares. (`system_fingerprint` and `refusal` are
/// nullable: Ferry sends null.)
mod documented {
    pub const FILE: &str = r#"{"id":"file-abc123","object":"file","bytes":120000,"created_at":1677610602,
        "expires_at":1680202602,"filename":"mydata.jsonl","purpose":"batch","status":"processed","status_details":null}"#;
    pub const OUTPUT_FILE: &str = r#"{"id":"file-cvaTdG","object":"file","bytes":1200,"created_at":1711493163,
        "expires_at":1714085163,"filename":"batch_abc123_output.jsonl","purpose":"batch_output","status":"processed","status_details":null}"#;
    pub const DELETED: &str = r#"{"id":"file-abc123","object":"file","deleted":true}"#;
    pub const FILE_LIST: &str = r#"{"object":"list","data":[FILE],"first_id":"file-abc123","last_id":"file-abc456","has_more":true}"#;
    pub const BATCH: &str = r#"{"id":"batch_abc123","object":"batch","endpoint":"/v1/chat/completions","errors":null,
        "input_file_id":"file-abc123","completion_window":"24h","status":"completed","output_file_id":"file-cvaTdG",
        "error_file_id":"file-HOWS94","created_at":1711471533,"in_progress_at":1711471538,"expires_at":1711557933,
        "finalizing_at":1711493133,"completed_at":1711493163,"failed_at":null,"expired_at":null,"cancelling_at":null,
        "cancelled_at":null,"request_counts":{"total":100,"completed":95,"failed":5},
        "metadata":{"customer_id":"user_123456789","batch_description":"Nightly eval job"}}"#;
    pub const FAILED_BATCH: &str = r#"{"id":"batch_abc123","object":"batch","endpoint":"/v1/chat/completions",
        "errors":{"object":"list","data":[{"code":"invalid_url","line":2,"message":"...","param":"url"}]},
        "input_file_id":"file-abc123","completion_window":"24h","status":"failed","output_file_id":null,
        "error_file_id":null,"created_at":1711471533,"in_progress_at":null,"expires_at":1711557933,
        "finalizing_at":null,"completed_at":null,"failed_at":1711471540,"expired_at":null,"cancelling_at":null,
        "cancelled_at":null,"request_counts":{"total":0,"completed":0,"failed":0},"metadata":null}"#;
    pub const OUTPUT_LINE: &str = r#"{"id":"batch_req_123","custom_id":"request-2","response":{"status_code":200,
        "request_id":"req_123","body":{"id":"chatcmpl-123","object":"chat.completion","created":1711652795,
        "model":"gpt-3.5-turbo-0125","choices":[{"index":0,"message":{"role":"assistant","content":"Hello.","refusal":null},
        "logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":22,"completion_tokens":2,"total_tokens":24},
        "system_fingerprint":null}},"error":null}"#;
    pub const ERROR_LINE: &str = r#"{"id":"batch_req_456","custom_id":"request-3","response":null,
        "error":{"code":"batch_expired","message":"This request could not be executed before the completion window expired."}}"#;
    pub const ERROR: &str = r#"{"error":{"message":"No such File object: file-abc","type":"invalid_request_error","param":null,"code":"not_found"}}"#;
}

fn documented(text: &str) -> String {
    shape(&text.replace("[FILE]", &format!("[{}]", documented::FILE)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_answer_as_the_openai_client_expects_byte_for_byte() {
    let w = world().await;
    let stop = json!({"top_p": 0.5, "stop": ["END"], "max_completion_tokens": 32});
    let lines = [
        line("d-1", DEEPSEEK_MODEL, "one", stop.clone()),
        line(
            "d-2",
            "deepseek/deepseek-reasoner",
            "two",
            json!({"frequency_penalty": 0.5}),
        ),
        line("g-1", GEMINI_MODEL, "three", stop),
        line("g-2", GEMINI_MODEL, "four", json!({"temperature": 0.3})),
        line("d-3", DEEPSEEK_MODEL, "five", json!({})),
    ];
    let content = jsonl(&lines);
    // The fakes check each request as the provider would (a field it does
    // not know is a 400); the first DeepSeek request gets a 400 anyway,
    // so one line fails for good (a bad request is not retried).
    w.deepseek.push(Reply::openai_error(
        400,
        "invalid_request_error",
        "refused by the test",
    ));
    w.deepseek.accept_vision_model("deepseek-reasoner");

    // Upload: the file object.
    let file = w.upload(SUBMIT_TOKEN, "nightly.jsonl", &content).await;
    assert_eq!(file.status, 200, "{}", file.text);
    assert_eq!(
        shape(&file.text),
        documented(documented::FILE),
        "{}",
        file.text
    );
    let file_id = file.json["id"].as_str().unwrap().to_owned();
    assert!(file_id.starts_with("file-"));
    assert_eq!(
        (
            file.json["bytes"].as_u64(),
            &file.json["filename"],
            &file.json["purpose"]
        ),
        (
            Some(content.len() as u64),
            &json!("nightly.jsonl"),
            &json!("batch")
        )
    );
    let again = w.get(&format!("/files/{file_id}"), SUBMIT_TOKEN).await;
    assert_eq!(again.json, file.json);
    let raw = reqwest::Client::new()
        .get(w.url(&format!("/files/{file_id}/content")))
        .bearer_auth(SUBMIT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    assert_eq!(
        raw.bytes().await.unwrap(),
        content,
        "the content as uploaded"
    );

    // Create, poll to completed: the batch object.
    let created = w
        .create_batch(
            &file_id,
            r#"{"customer_id":"user_123456789","batch_description":"Nightly eval job"}"#,
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("batch_"));
    let done = w.wait_until_final(&id).await;
    assert_eq!(done.json["status"], "completed", "{}", done.text);
    assert_eq!(
        shape(&done.text),
        documented(documented::BATCH),
        "{}",
        done.text
    );
    assert_eq!(
        done.json["request_counts"],
        json!({"total": 5, "completed": 4, "failed": 1})
    );
    // It is a Ferry batch too.
    let ferry = reqwest::Client::new()
        .get(format!("{}/v1/batches/{id}", w.ferry.api_url))
        .bearer_auth(SUBMIT_TOKEN)
        .send()
        .await
        .unwrap();
    let ferry: Value = ferry.json().await.unwrap();
    assert_eq!(
        (
            ferry["status"].as_str(),
            ferry["counts"]["succeeded"].as_u64()
        ),
        (Some("completed"), Some(4))
    );

    // The output and error files: their objects and their lines.
    let output_id = done.json["output_file_id"].as_str().unwrap().to_owned();
    let error_id = done.json["error_file_id"].as_str().unwrap().to_owned();
    let output = w
        .get(&format!("/files/{output_id}/content"), SUBMIT_TOKEN)
        .await;
    let errors = w
        .get(&format!("/files/{error_id}/content"), SUBMIT_TOKEN)
        .await;
    let out_lines: Vec<&str> = output.text.lines().collect();
    let err_lines: Vec<&str> = errors.text.lines().collect();
    assert_eq!(
        (out_lines.len(), err_lines.len()),
        (4, 1),
        "{}{}",
        output.text,
        errors.text
    );
    for l in &out_lines {
        assert_eq!(shape(l), documented(documented::OUTPUT_LINE), "{l}");
    }
    assert_eq!(
        shape(err_lines[0]).replace("batch_expired", "x"),
        documented(documented::ERROR_LINE).replace("batch_expired", "x")
    );
    let failed: Value = serde_json::from_str(err_lines[0]).unwrap();
    assert_eq!(failed["error"]["code"], "request_failed");
    let answers: Vec<Value> = out_lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = answers
        .iter()
        .map(|a| a["custom_id"].as_str().unwrap())
        .collect();
    let mut every: Vec<&str> = ids.clone();
    every.push(failed["custom_id"].as_str().unwrap());
    every.sort();
    assert_eq!(every, ["d-1", "d-2", "d-3", "g-1", "g-2"]);
    for a in &answers {
        let body = &a["response"]["body"];
        let expected_model = match a["custom_id"].as_str().unwrap() {
            "g-1" | "g-2" => GEMINI_MODEL,
            "d-2" => "deepseek-reasoner",
            _ => DEEPSEEK_MODEL,
        };
        assert_eq!(
            body["model"], expected_model,
            "the model picked the provider: {a}"
        );
        assert!(
            a["response"]["request_id"]
                .as_str()
                .unwrap()
                .starts_with("batch:")
        );
    }
    let output_file = w.get(&format!("/files/{output_id}"), SUBMIT_TOKEN).await;
    assert_eq!(
        shape(&output_file.text),
        documented(documented::OUTPUT_FILE),
        "{}",
        output_file.text
    );
    assert_eq!(
        output_file.json["bytes"].as_u64(),
        Some(output.text.len() as u64)
    );

    // top_p and stop went through to both wire formats; the other fields
    // as named.
    let sent_to_deepseek: Vec<Value> = w.deepseek.requests().into_iter().map(|r| r.body).collect();
    assert!(sent_to_deepseek.iter().all(|b| b["stream"] == false));
    let d1 = sent_to_deepseek
        .iter()
        .find(|b| b["messages"][1]["content"] == "one")
        .unwrap();
    assert_eq!(
        (&d1["top_p"], &d1["stop"], &d1["max_tokens"]),
        (&json!(0.5), &json!(["END"]), &json!(32))
    );
    let d2 = sent_to_deepseek
        .iter()
        .find(|b| b["messages"][1]["content"] == "two")
        .unwrap();
    assert_eq!(
        (&d2["model"], &d2["frequency_penalty"]),
        (&json!("deepseek-reasoner"), &json!(0.5))
    );
    let g1 = w
        .gemini
        .requests()
        .into_iter()
        .find(|r| r.messages.last().unwrap().content == "three")
        .unwrap();
    assert_eq!(
        g1.body["generationConfig"],
        json!({"topP": 0.5, "stopSequences": ["END"], "maxOutputTokens": 32})
    );

    // A file of bad lines fails the batch at validation, nothing run.
    let asked = w.deepseek.count() + w.gemini.count();
    let stream_before = w.stream_len();
    let bad = [
        line("b-1", DEEPSEEK_MODEL, "fine", json!({})),
        line("b-2", DEEPSEEK_MODEL, "x", json!({})).replace("/v1/chat/completions", "/v1/embeddings"),
        line("b-1", DEEPSEEK_MODEL, "again", json!({})),
        json!({"custom_id": "b-4", "method": "POST", "url": "/v1/chat/completions", "body": {"prompt": "not a chat"}}).to_string(),
        line("b-5", "gpt-4o", "x", json!({})),
        line("b-6", GEMINI_MODEL, "x", json!({"presence_penalty": 1})),
        line("b-7", DEEPSEEK_MODEL, "x", json!({"tools": []})),
    ];
    let bad_file = w.upload(SUBMIT_TOKEN, "bad.jsonl", &jsonl(&bad)).await;
    let bad_id = bad_file.json["id"].as_str().unwrap().to_owned();
    let refused = w.create_batch(&bad_id, "null").await;
    assert_eq!(refused.status, 200, "{}", refused.text);
    assert_eq!(refused.json["status"], "failed", "{}", refused.text);
    let errors: Vec<(u64, &str, &str)> = refused.json["errors"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["code"].as_str().unwrap(),
                e["param"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (2, "invalid_url", "url"),
            (3, "duplicate_custom_id", "custom_id"),
            (4, "invalid_body", "body.messages"),
            (5, "model_not_found", "body.model"),
            (6, "unsupported_parameter", "body.presence_penalty"),
            (7, "unsupported_parameter", "body.tools"),
        ]
    );
    let failed_batch = w
        .get(
            &format!("/batches/{}", refused.json["id"].as_str().unwrap()),
            SUBMIT_TOKEN,
        )
        .await;
    assert_eq!(
        shape(&failed_batch.text),
        documented(documented::FAILED_BATCH),
        "{}",
        failed_batch.text
    );
    assert_eq!(w.stream_len(), stream_before, "nothing was enqueued");
    assert_eq!(
        w.deepseek.count() + w.gemini.count(),
        asked,
        "nothing was asked"
    );

    // Pagination as the clients page: newest first, `after` the last id.
    let first = w.get("/files?limit=1", SUBMIT_TOKEN).await;
    assert_eq!(
        shape(&first.text),
        documented(documented::FILE_LIST),
        "{}",
        first.text
    );
    assert_eq!(
        (
            first.json["data"][0]["id"].as_str(),
            first.json["has_more"].as_bool()
        ),
        (Some(bad_id.as_str()), Some(true))
    );
    let after = first.json["last_id"].as_str().unwrap();
    let second = w
        .get(&format!("/files?limit=1&after={after}"), SUBMIT_TOKEN)
        .await;
    assert_eq!(
        (
            second.json["data"][0]["id"].as_str(),
            second.json["has_more"].as_bool()
        ),
        (Some(file_id.as_str()), Some(false))
    );
    let oldest = w.get("/files?order=asc&limit=5", SUBMIT_TOKEN).await;
    assert_eq!(oldest.json["first_id"].as_str(), Some(file_id.as_str()));
    let batches = w.get("/batches?limit=1", SUBMIT_TOKEN).await;
    assert_eq!(
        (
            batches.json["first_id"].as_str(),
            batches.json["has_more"].as_bool()
        ),
        (refused.json["id"].as_str(), Some(true))
    );
    let rest = w
        .get(
            &format!(
                "/batches?limit=1&after={}",
                batches.json["last_id"].as_str().unwrap()
            ),
            SUBMIT_TOKEN,
        )
        .await;
    assert_eq!(
        (
            rest.json["data"][0]["id"].as_str(),
            rest.json["has_more"].as_bool()
        ),
        (Some(id.as_str()), Some(false))
    );
    assert_eq!(w.get("/batches?limit=0", SUBMIT_TOKEN).await.status, 400);

    // Cancel: queued lines never run, running ones finish.
    w.qwen
        .set_default(Some(Reply::echo().stall(Duration::from_secs(1))));
    let slow: Vec<String> = (0..60)
        .map(|i| line(&format!("s-{i}"), QWEN_MODEL, "slow", json!({})))
        .collect();
    let slow_file = w.upload(SUBMIT_TOKEN, "slow.jsonl", &jsonl(&slow)).await;
    let slow_batch = w
        .create_batch(slow_file.json["id"].as_str().unwrap(), "null")
        .await;
    let slow_id = slow_batch.json["id"].as_str().unwrap().to_owned();
    let cancelling = w
        .post_json(
            &format!("/batches/{slow_id}/cancel"),
            SUBMIT_TOKEN,
            &json!({}),
        )
        .await;
    assert_eq!(cancelling.status, 200, "{}", cancelling.text);
    assert!(
        cancelling.json["cancelling_at"].is_number(),
        "{}",
        cancelling.text
    );
    let cancelled = w.wait_until_final(&slow_id).await;
    assert_eq!(cancelled.json["status"], "cancelled", "{}", cancelled.text);
    assert!(cancelled.json["cancelled_at"].is_number());
    let completed = cancelled.json["request_counts"]["completed"]
        .as_u64()
        .unwrap();
    let not_run = w
        .get(
            &format!(
                "/files/{}/content",
                cancelled.json["error_file_id"].as_str().unwrap()
            ),
            SUBMIT_TOKEN,
        )
        .await;
    let not_run = not_run
        .text
        .lines()
        .filter(|l| l.contains("\"batch_cancelled\""))
        .count() as u64;
    assert_eq!(completed + not_run, 60);
    assert!(not_run > 0);
    assert_eq!(
        w.qwen.count() as u64,
        completed,
        "a cancelled line never reached the provider"
    );

    // Scopes and ownership, in OpenAI's error shape.
    let read_only = w.upload(READ_TOKEN, "x.jsonl", b"{}\n").await;
    assert_eq!(read_only.status, 403, "{}", read_only.text);
    assert_eq!(
        shape(&read_only.text),
        documented(documented::ERROR),
        "{}",
        read_only.text
    );
    let none = w.send(reqwest::Client::new().get(w.url("/batches"))).await;
    assert_eq!(none.status, 401);
    for path in [
        format!("/batches/{id}"),
        format!("/files/{file_id}"),
        format!("/files/{file_id}/content"),
        format!("/files/{output_id}"),
        format!("/files/{output_id}/content"),
    ] {
        let other = w.get(&path, OTHER_TOKEN).await;
        assert_eq!(other.status, 404, "{path}: {}", other.text);
        assert_eq!(
            shape(&other.text),
            documented(documented::ERROR),
            "{}",
            other.text
        );
    }
    let other_create = w
        .post_json(
            "/batches",
            OTHER_TOKEN,
            &json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
        )
        .await;
    assert_eq!(other_create.status, 404, "another key's file");
    assert_eq!(w.get("/batches", OTHER_TOKEN).await.json["data"], json!([]));
    let unknown = w.get("/embeddings", SUBMIT_TOKEN).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(
        shape(&unknown.text),
        documented(documented::ERROR),
        "{}",
        unknown.text
    );
    let wrong_endpoint = w
        .post_json(
            "/batches",
            SUBMIT_TOKEN,
            &json!({"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"}),
        )
        .await;
    assert_eq!(
        (
            wrong_endpoint.status,
            wrong_endpoint.json["error"]["param"].as_str()
        ),
        (400, Some("endpoint"))
    );

    // Delete: gone, and a generated file cannot be deleted on its own.
    let deleted = w
        .send(
            reqwest::Client::new()
                .delete(w.url(&format!("/files/{bad_id}")))
                .bearer_auth(SUBMIT_TOKEN),
        )
        .await;
    assert_eq!(
        shape(&deleted.text),
        documented(documented::DELETED),
        "{}",
        deleted.text
    );
    assert_eq!(
        w.get(&format!("/files/{bad_id}"), SUBMIT_TOKEN)
            .await
            .status,
        404
    );
    let keep = w
        .send(
            reqwest::Client::new()
                .delete(w.url(&format!("/files/{output_id}")))
                .bearer_auth(SUBMIT_TOKEN),
        )
        .await;
    assert_eq!(keep.status, 400);

    // The OpenAPI document has the routes.
    let doc: Value = reqwest::get(format!("{}/v1/openapi.json", w.ferry.api_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/openai/v1/files",
        "/openai/v1/files/{file_id}",
        "/openai/v1/files/{file_id}/content",
        "/openai/v1/batches",
        "/openai/v1/batches/{batch_id}",
        "/openai/v1/batches/{batch_id}/cancel",
        "/v1/batches",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert!(doc["components"]["schemas"]["BatchObject"].is_object());
    let list = &doc["paths"]["/openai/v1/batches"]["get"]["parameters"];
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "after" && p["in"] == "query" && p["required"] == false),
        "{list}"
    );
    w.ferry.stop().await;
}

/// Whether the real openai client is here: CI installs it
/// (`scripts/install-deps`), so there it must be; a developer's machine
/// without it skips the test, saying how to get it.
fn openai_client_present() -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with the openai package is missing: run scripts/install-deps first"
        );
        eprintln!(
            "SKIPPED: python3 with the openai package is missing (scripts/install-deps installs it)"
        );
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_python_client_runs_a_nightly_batch_on_two_providers() {
    if !openai_client_present() {
        return;
    }
    let w = world().await;
    w.qwen
        .set_default(Some(Reply::echo().stall(Duration::from_secs(1))));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/openai_batch.py");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .env(
            "FERRY_OPENAI_BASE_URL",
            format!("{}/openai/v1", w.ferry.api_url),
        )
        .env("FERRY_SUBMIT_TOKEN", SUBMIT_TOKEN)
        .env("FERRY_READ_TOKEN", READ_TOKEN)
        .env("FERRY_OTHER_TOKEN", OTHER_TOKEN)
        .env("FERRY_MODELS", format!("{DEEPSEEK_MODEL},{GEMINI_MODEL}"))
        .env("FERRY_SLOW_MODEL", QWEN_MODEL)
        // The client must not go anywhere else (no proxy from the machine).
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), output)
        .await
        .expect("the Python script finished within 5 minutes")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "openai_batch.py failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("every check passed"), "{stdout}");
    // Each provider answered its half once; the failed batch's good line
    // never ran.
    assert_eq!((w.deepseek.count(), w.gemini.count()), (200, 200));
    w.ferry.stop().await;
}
