//! `batch.webhook`: tells a batch's caller it finished, with one signed POST
//! of its summary (see `ferry_common::batch::signature`). Enqueued by the
//! call that finishes the batch, so exactly one webhook job per batch; the
//! queue's retries (backoff, a Retry-After honoured) carry it through a
//! receiver's outage. A 4xx other than 408/429 is the receiver refusing:
//! not retried; neither is a redirect (not followed) or a private address
//! (`ferry_common::batch::webhook_target`).

use std::time::Duration;

use futures::future::BoxFuture;

use ferry_common::Secret;
use ferry_common::batch::Batches;
use ferry_common::batch::signature::{DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use ferry_common::job::Delivery;
use ferry_common::job::kinds::BatchWebhook;

use super::webhook_client::{self, WebhookClient};
use crate::handler::{Handler, HandlerError, JobNotes};

pub struct BatchWebhookHandler {
    pub batches: Batches,
    /// Reaches only the targets `FERRY_WEBHOOK_ALLOW_NETWORKS` allows.
    pub client: WebhookClient,
    /// `FERRY_WEBHOOK_SECRET`.
    pub secret: Option<Secret>,
}

impl Handler for BatchWebhookHandler {
    fn handle<'a>(
        &'a self,
        job: &'a Delivery,
        _notes: JobNotes<'a>,
    ) -> BoxFuture<'a, Result<serde_json::Value, HandlerError>> {
        Box::pin(self.deliver(job))
    }
}

impl BatchWebhookHandler {
    async fn deliver(&self, job: &Delivery) -> Result<serde_json::Value, HandlerError> {
        let webhook: BatchWebhook = serde_json::from_value(job.payload.clone())
            .map_err(|e| HandlerError::Permanent(format!("bad batch.webhook payload: {e}")))?;
        let Some(secret) = &self.secret else {
            return Err(HandlerError::Permanent(
                "FERRY_WEBHOOK_SECRET is not set on this worker: the webhook cannot be signed"
                    .into(),
            ));
        };
        let redis = |e| HandlerError::retry(format!("Redis: {e}"));
        let (Some(batch), Some(url)) = (
            self.batches.get(&webhook.batch_id).await.map_err(redis)?,
            self.batches
                .webhook_url(&webhook.batch_id)
                .await
                .map_err(redis)?,
        ) else {
            return Err(HandlerError::Permanent(
                "the batch is gone (expired)".into(),
            ));
        };
        let body = serde_json::to_vec(&serde_json::json!({
            "type": "batch.finished",
            "batch": batch,
        }))
        .expect("a batch serializes");
        let timestamp = chrono::Utc::now().timestamp();
        let response = self
            .client
            .post(&url)
            .map_err(|refused| HandlerError::Permanent(refused.to_string()))?
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(
                SIGNATURE_HEADER,
                sign(secret.expose().as_bytes(), timestamp, &body),
            )
            .header(DELIVERY_HEADER, job.id.to_string())
            .body(body)
            .send()
            .await
            // The URL is the caller's and may carry a token: never log it.
            .map_err(|e| match webhook_client::refusal(&e) {
                Some(refused) => HandlerError::Permanent(refused.to_string()),
                None => HandlerError::retry(format!("webhook not delivered: {}", e.without_url())),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(serde_json::json!({ "status": status.as_u16() }));
        }
        let message = format!("the webhook receiver answered {}", status.as_u16());
        if status.is_redirection() {
            return Err(HandlerError::Permanent(format!(
                "{message}: redirects are not followed, give the final URL"
            )));
        }
        if status.is_client_error() && status != 408 && status != 429 {
            return Err(HandlerError::Permanent(message));
        }
        let after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        Err(HandlerError::Retry {
            error: message,
            after,
        })
    }
}
