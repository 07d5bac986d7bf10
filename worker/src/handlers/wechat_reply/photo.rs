//! Photos: a picture a user sends is answered by a vision model
//! (ARCHITECTURE.md, "Photos").
//!
//! The picture is downloaded from WeChat by the attempt that asks the model
//! (`crate::reply::media`) and held only for that call: it is never written
//! to Redis (not in job notes, memory or results) and never logged. The
//! model is asked `FERRY_IMAGE_PROMPT` about it, with the user's memory and
//! the system prompt as for text; the turn is remembered as text only.
//!
//! A photo that cannot be read (an unknown or expired media id, over 10 MB,
//! not an image) is answered with `FERRY_IMAGE_FAILED_TEXT`: it becomes the
//! job's answer (noted with the reason), so it is delivered like any answer,
//! once, and the job ends done instead of being retried or dead-lettered.

use ferry_common::job::Delivery;

use super::answer::AnsweredBy;
use super::{NOTE_ANSWER, NOTE_ANSWERED_BY, WeChatReplyHandler};
use crate::handler::{HandlerError, JobNotes};
use crate::providers::Image;
use crate::reply::{MediaError, WeChatMedia};

/// Why the photo could not be read (noted with the polite answer).
const NOTE_PHOTO_UNREADABLE: &str = "photo_unreadable";

/// [`AnsweredBy::provider`] of the polite answer to an unreadable photo:
/// no model was asked.
pub const UNREADABLE_PHOTO: &str = "unreadable_photo";

/// What the handler needs for photos.
#[derive(Clone)]
pub struct Photos {
    /// Downloads the pictures from WeChat.
    pub media: WeChatMedia,
    /// What the vision model is asked about every photo
    /// (`FERRY_IMAGE_PROMPT`).
    pub prompt: String,
    /// The answer to a photo that cannot be read (`FERRY_IMAGE_FAILED_TEXT`).
    pub failed_text: String,
}

/// What became of a message's photo.
pub(super) enum Photo {
    /// Downloaded: ask the vision model about it.
    Picture(Image),
    /// It cannot be read: this polite answer (already noted as the job's
    /// answer) goes to the user instead.
    Unreadable(String, AnsweredBy),
    /// Not now: WeChat busy, HTTP 5xx, network; the job may retry.
    Retry(String),
}

impl WeChatReplyHandler {
    /// Downloads the photo `media_id`; an unreadable one gets its polite
    /// answer noted.
    pub(super) async fn photo(
        &self,
        photos: &Photos,
        job: &Delivery,
        book: JobNotes<'_>,
        media_id: &str,
    ) -> Result<Photo, HandlerError> {
        let reason = match photos.media.download(media_id).await {
            Ok(image) => return Ok(Photo::Picture(image)),
            Err(MediaError::Retry(e)) => return Ok(Photo::Retry(e)),
            Err(MediaError::Unreadable { reason }) => reason,
        };
        tracing::info!(
            job = %job.id,
            reason = %reason,
            "the photo cannot be read; the user gets FERRY_IMAGE_FAILED_TEXT"
        );
        let by = unreadable_photo();
        let by_json = serde_json::to_string(&by).expect("AnsweredBy serializes");
        book.write(&[
            (NOTE_ANSWER, &photos.failed_text),
            (NOTE_ANSWERED_BY, &by_json),
            (NOTE_PHOTO_UNREADABLE, &reason),
        ])
        .await?;
        Ok(Photo::Unreadable(photos.failed_text.clone(), by))
    }
}

/// Who answered an unreadable photo: Ferry's polite text, no model.
fn unreadable_photo() -> AnsweredBy {
    AnsweredBy {
        provider: UNREADABLE_PHOTO.into(),
        model: String::new(),
        prompt_tokens: 0,
        completion_tokens: 0,
        total_tokens: 0,
        latency_ms: 0,
    }
}

/// The user's turn as memory keeps it: the picture is never stored, only
/// that there was one and what the model was asked about it.
pub(super) fn remembered_question(prompt: &str) -> String {
    format!("[图片] {prompt}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remembered_turn_says_a_picture_was_asked_about_without_it() {
        assert_eq!(remembered_question("这是什么？"), "[图片] 这是什么？");
    }

    #[test]
    fn the_unreadable_answer_names_no_model_and_costs_nothing() {
        let json = serde_json::to_value(unreadable_photo()).unwrap();
        assert_eq!(json["provider"], UNREADABLE_PHOTO);
        assert_eq!(
            (json["model"].as_str(), json["total_tokens"].as_u64()),
            (Some(""), Some(0))
        );
    }
}
