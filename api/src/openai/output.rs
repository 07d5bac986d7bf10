//! A batch's output and error files, made from its job results when they
//! are read (nothing is written when a batch finishes): one line per
//! request in input order, OpenAI's `{"id","custom_id","response","error"}`.
//! Their ids follow from the batch's (`file-<batch id>-output`,
//! `file-<batch id>-errors`), so they are stable, and they are kept as
//! long as the batch is (its job records carry the results).

use axum::body::Bytes;
use ferry_common::batch::{Batches, JobOutcome};
use ferry_common::queue::QueueError;
use futures::Stream;
use serde::{Deserialize, Serialize};

/// Jobs read per Redis round trip.
const PAGE: usize = 500;

/// Which file of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The requests that succeeded, with their chat completion.
    Output,
    /// The requests that failed, were cancelled or expired.
    Errors,
}

/// One line of either file.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OutputLine {
    /// `batch_req_<ULID>`, the ULID of the request's Ferry job.
    pub id: String,
    pub custom_id: String,
    pub response: Option<LineResponse>,
    pub error: Option<LineFailure>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LineResponse {
    pub status_code: u16,
    /// The Ferry job that answered (`GET /v1/jobs/{id}` shows it).
    pub request_id: String,
    pub body: ChatCompletionObject,
}

/// OpenAI's `chat.completion` object.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChatCompletionObject {
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    /// Unix seconds (when the request finished).
    pub created: i64,
    /// The model that answered, as its provider reported it.
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: CompletionUsage,
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Choice {
    pub index: u32,
    pub message: ChoiceMessage,
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<()>,
    pub finish_reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChoiceMessage {
    /// Always `assistant`.
    pub role: &'static str,
    pub content: String,
    pub refusal: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CompletionUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

/// Why a request has no response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LineFailure {
    /// `request_failed` (every attempt failed: the message says why),
    /// `batch_cancelled`, `batch_expired` (not run: the batch was
    /// cancelled, or its 24 h window closed), `result_expired`.
    pub code: &'static str,
    pub message: String,
}

/// What the `chat.completion` handler records on a job.
#[derive(Debug, Default, Deserialize)]
struct JobResult {
    #[serde(default)]
    answer: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: CompletionUsage,
    finish_reason: Option<String>,
    response_id: Option<String>,
}

/// The ULID of a job id (`batch:<ULID>`, `batch:3:<ULID>`).
fn ulid_of(job_id: &str) -> &str {
    job_id.rsplit(':').next().unwrap_or(job_id)
}

/// `o`'s line in file `which`, if it belongs there. `expired`: the batch
/// was stopped by its window, not by a cancel.
pub fn line(o: &JobOutcome, which: Which, expired: bool) -> Option<OutputLine> {
    let id = format!("batch_req_{}", ulid_of(&o.job_id));
    let failure = |code, message: String| OutputLine {
        id: id.clone(),
        custom_id: o.custom_id.clone(),
        response: None,
        error: Some(LineFailure { code, message }),
    };
    match (which, o.state.as_str()) {
        (Which::Output, "succeeded") => {
            let result: JobResult = o
                .result
                .clone()
                .and_then(|r| serde_json::from_value(r).ok())
                .unwrap_or_default();
            let body_id = match result.response_id {
                Some(rid) if rid.starts_with("chatcmpl") => rid,
                Some(rid) => format!("chatcmpl-{rid}"),
                None => format!("chatcmpl-{}", ulid_of(&o.job_id)),
            };
            Some(OutputLine {
                id,
                custom_id: o.custom_id.clone(),
                response: Some(LineResponse {
                    status_code: 200,
                    request_id: o.job_id.clone(),
                    body: ChatCompletionObject {
                        id: body_id,
                        object: "chat.completion",
                        created: o.finished_at.map_or(0, |t| t.timestamp()),
                        model: result.model,
                        choices: vec![Choice {
                            index: 0,
                            message: ChoiceMessage {
                                role: "assistant",
                                content: result.answer,
                                refusal: None,
                            },
                            logprobs: None,
                            finish_reason: result.finish_reason.unwrap_or_else(|| "stop".into()),
                        }],
                        usage: result.usage,
                        system_fingerprint: None,
                    },
                }),
                error: None,
            })
        }
        (Which::Errors, "dead") => Some(failure(
            "request_failed",
            o.error
                .clone()
                .unwrap_or_else(|| "the request failed".into()),
        )),
        (Which::Errors, "cancelled") if expired => Some(failure(
            "batch_expired",
            "This request could not be executed before the completion window expired.".into(),
        )),
        (Which::Errors, "cancelled") => Some(failure(
            "batch_cancelled",
            "This request was not executed: the batch was cancelled.".into(),
        )),
        (Which::Errors, "expired") => Some(failure(
            "result_expired",
            "This request's result is no longer kept.".into(),
        )),
        _ => None,
    }
}

/// One page of file `which` from job `start`: its bytes and how many jobs
/// it read (0 at the end).
async fn page(
    batches: &Batches,
    batch_id: &str,
    which: Which,
    expired: bool,
    start: usize,
) -> Result<(Vec<u8>, usize), QueueError> {
    let outcomes = batches.outcomes(batch_id, start, PAGE).await?;
    let mut out = Vec::new();
    for o in &outcomes {
        if let Some(l) = line(o, which, expired) {
            serde_json::to_writer(&mut out, &l).expect("an output line serializes");
            out.push(b'\n');
        }
    }
    Ok((out, outcomes.len()))
}

/// File `which` of a batch, a page at a time (never the whole batch in
/// memory).
pub fn stream(
    batches: Batches,
    batch_id: String,
    which: Which,
    expired: bool,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::unfold(Some(0usize), move |next| {
        let batches = batches.clone();
        let id = batch_id.clone();
        async move {
            let start = next?;
            Some(match page(&batches, &id, which, expired, start).await {
                Ok((bytes, 0)) => (Ok(Bytes::from(bytes)), None),
                Ok((bytes, count)) => (Ok(Bytes::from(bytes)), Some(start + count)),
                // The response is already under way: cut it, so the caller
                // sees a failed transfer rather than a short file.
                Err(e) => (Err(std::io::Error::other(e.to_string())), None),
            })
        }
    })
}

/// The size of file `which`, made to be measured.
pub async fn size(
    batches: &Batches,
    batch_id: &str,
    which: Which,
    expired: bool,
) -> Result<u64, QueueError> {
    let (mut total, mut start) = (0u64, 0usize);
    loop {
        let (bytes, count) = page(batches, batch_id, which, expired, start).await?;
        total += bytes.len() as u64;
        if count == 0 {
            return Ok(total);
        }
        start += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outcome(state: &str, result: Option<serde_json::Value>, error: Option<&str>) -> JobOutcome {
        JobOutcome {
            job_id: "batch:2:01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            custom_id: "r-1".into(),
            state: state.into(),
            result,
            error: error.map(str::to_owned),
            finished_at: Some(ferry_common::job::from_millis(1_700_000_000_000)),
        }
    }

    #[test]
    fn a_success_is_an_openai_output_line_with_a_chat_completion() {
        let result = json!({"answer": "hi", "provider": "deepseek", "model": "deepseek-chat",
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            "latency_ms": 5, "finish_reason": "length", "response_id": "chatcmpl-9"});
        let l = line(
            &outcome("succeeded", Some(result), None),
            Which::Output,
            false,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            concat!(
                r#"{"id":"batch_req_01ARZ3NDEKTSV4RRFFQ69G5FAV","custom_id":"r-1","response":{"status_code":200,"#,
                r#""request_id":"batch:2:01ARZ3NDEKTSV4RRFFQ69G5FAV","body":{"id":"chatcmpl-9","object":"chat.completion","#,
                r#""created":1700000000,"model":"deepseek-chat","choices":[{"index":0,"message":{"role":"assistant","#,
                r#""content":"hi","refusal":null},"logprobs":null,"finish_reason":"length"}],"#,
                r#""usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4},"system_fingerprint":null}},"error":null}"#
            )
        );
        assert!(line(&outcome("succeeded", None, None), Which::Errors, false).is_none());
    }

    #[test]
    fn failures_go_to_the_error_file_with_a_code() {
        let dead = line(
            &outcome("dead", None, Some("deepseek: bad request")),
            Which::Errors,
            false,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&dead).unwrap(),
            r#"{"id":"batch_req_01ARZ3NDEKTSV4RRFFQ69G5FAV","custom_id":"r-1","response":null,"error":{"code":"request_failed","message":"deepseek: bad request"}}"#
        );
        let code = |state, expired| {
            line(&outcome(state, None, None), Which::Errors, expired)
                .unwrap()
                .error
                .unwrap()
                .code
        };
        assert_eq!(code("cancelled", false), "batch_cancelled");
        assert_eq!(code("cancelled", true), "batch_expired");
        assert!(line(&outcome("dead", None, None), Which::Output, false).is_none());
        assert!(line(&outcome("running", None, None), Which::Errors, false).is_none());
    }
}
