//! `chat.completion`: one request of the jobs API or of a batch, answered
//! through the same provider router as WeChat replies (fleet gate, retries,
//! fallback), with the answer (or the error) stored on the job record.
//!
//! A batch's job first asks `ferry_batch_begin`: if its batch was cancelled
//! the job is recorded cancelled in that one call and no provider is asked;
//! otherwise the batch counts it running. A request that names its provider
//! is asked of that provider only (no fallback: the caller chose it).

use futures::future::BoxFuture;
use serde::Serialize;

use ferry_common::batch::{Batches, Begin};
use ferry_common::job::Delivery;
use ferry_common::job::kinds::ChatCompletion;

use crate::handler::{Handler, HandlerError, JobNotes};
use crate::providers::{
    Allowance, Answer, ChatMessage, ChatRequest, Overrides, Role, Router, Usage,
};

pub struct ChatCompletionHandler {
    pub batches: Batches,
    pub router: Router,
}

/// The job's result: what `GET /v1/jobs/{id}` and a batch's results show
/// (and what an OpenAI Batch API output line is made of).
#[derive(Debug, Serialize)]
struct Completed<'a> {
    answer: &'a str,
    provider: &'a str,
    model: &'a str,
    usage: Usage,
    latency_ms: u64,
    /// `stop`, `length`, ... when the provider said.
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'a str>,
    /// The provider's id of its answer, when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    response_id: Option<&'a str>,
}

impl Handler for ChatCompletionHandler {
    fn handle<'a>(
        &'a self,
        job: &'a Delivery,
        _notes: JobNotes<'a>,
    ) -> BoxFuture<'a, Result<serde_json::Value, HandlerError>> {
        Box::pin(self.complete(job))
    }
}

impl ChatCompletionHandler {
    async fn complete(&self, job: &Delivery) -> Result<serde_json::Value, HandlerError> {
        match self.batches.begin(job).await {
            Ok(Begin::Run) => {}
            // Already recorded (cancelled here, or ended by another
            // delivery): the outcome below finds the job finished and
            // changes nothing.
            Ok(Begin::Cancelled) => {
                return Err(HandlerError::Permanent("the batch was cancelled".into()));
            }
            Ok(Begin::Finished) => return Err(HandlerError::Permanent("already finished".into())),
            Err(e) => return Err(HandlerError::retry(format!("Redis: {e}"))),
        }
        let request: ChatCompletion = serde_json::from_value(job.payload.clone())
            .map_err(|e| HandlerError::Permanent(format!("bad chat.completion payload: {e}")))?;
        let router = match &request.provider {
            None => self.router.clone(),
            Some(name) => self.router.only(name).ok_or_else(|| {
                HandlerError::Permanent(format!(
                    "provider {name:?} is not configured on this worker"
                ))
            })?,
        };
        let chat = to_chat_request(request)?;
        let policy = router.policy();
        let allowance = Allowance {
            time: policy.total_budget,
            // A job retry is itself the retry: ask each provider once.
            attempts_per_provider: if job.attempt <= 1 {
                policy.max_attempts_per_provider
            } else {
                1
            },
        };
        match router.chat_within(&chat, allowance).await {
            Ok(answer) => Ok(result(&answer)),
            Err(e) if e.class().is_retryable() => Err(HandlerError::Retry {
                error: e.to_string(),
                after: e.retry_after(),
            }),
            Err(e) => Err(HandlerError::Permanent(e.to_string())),
        }
    }
}

fn to_chat_request(request: ChatCompletion) -> Result<ChatRequest, HandlerError> {
    let messages = request
        .messages
        .into_iter()
        .map(|m| {
            let role = match m.role.as_str() {
                "system" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(HandlerError::Permanent(format!("unknown role {other:?}")));
                }
            };
            Ok(ChatMessage {
                role,
                content: m.content,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ChatRequest::new(messages).with_overrides(Overrides {
        model: request.model,
        temperature: request.parameters.temperature,
        max_tokens: request.parameters.max_tokens,
        top_p: request.parameters.top_p,
        stop: request.parameters.stop,
        frequency_penalty: request.parameters.frequency_penalty,
        presence_penalty: request.parameters.presence_penalty,
    }))
}

fn result(answer: &Answer) -> serde_json::Value {
    serde_json::to_value(Completed {
        answer: &answer.text,
        provider: &answer.provider,
        model: &answer.model,
        usage: answer.usage,
        latency_ms: u64::try_from(answer.latency.as_millis()).unwrap_or(u64::MAX),
        finish_reason: answer.finish_reason.as_deref(),
        response_id: answer.response_id.as_deref(),
    })
    .expect("a completion serializes")
}
