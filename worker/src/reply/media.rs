//! Downloading the pictures users send (WECHAT.md, "Media"):
//! `GET /cgi-bin/media/get?access_token=..&media_id=..` answers the file
//! itself, or a JSON error body.
//!
//! The picture is held in memory only as long as the vision call needs it:
//! it is never written to Redis nor logged, and no error text carries its
//! bytes or the request's URL (which carries the access token).
//!
//! What can go wrong, and what it means for the job:
//! - WeChat busy (-1), HTTP 5xx, a network error, a cut-off download: worth
//!   a retry ([`MediaError::Retry`]).
//! - 40001/40014/42001 (token): the fleet's token is dropped if it is still
//!   the one that failed, and the download is tried once more, as
//!   `customer_service` does; a second refusal in a row is left to a retry.
//! - 40007 (invalid or expired media id), a file over [`MAX_MEDIA_BYTES`],
//!   an answer that is not an image, any other errcode: no retry can help
//!   ([`MediaError::Unreadable`]); the user is told the photo cannot be read.

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;

use ferry_common::fleet::{TokenCache, TokenError};

use crate::providers::Image;

/// Images a user sends are at most 10 MB (WECHAT.md); anything larger is
/// refused without reading the rest.
pub const MAX_MEDIA_BYTES: usize = 10 * 1024 * 1024;

/// The most of a non-image answer read to look for WeChat's error JSON.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Why a picture was not downloaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// Worth retrying later (WeChat busy, HTTP 5xx, network, token trouble).
    #[error("{0}")]
    Retry(String),
    /// The photo cannot be read, now or later: `reason` says why (for the
    /// job's result and logs, not for the user).
    #[error("the photo cannot be read: {reason}")]
    Unreadable { reason: String },
}

impl MediaError {
    fn unreadable(reason: impl Into<String>) -> Self {
        Self::Unreadable {
            reason: reason.into(),
        }
    }
}

/// WeChat's media API, with the fleet's one access token.
#[derive(Clone)]
pub struct WeChatMedia {
    http: reqwest::Client,
    api_base: String,
    tokens: TokenCache,
}

/// What one `media/get` call answered.
enum Answered {
    Picture(Image),
    Refused { errcode: i64, errmsg: String },
}

#[derive(Deserialize)]
struct WeChatError {
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

impl WeChatMedia {
    pub fn new(http: reqwest::Client, api_base: String, tokens: TokenCache) -> Self {
        Self {
            http,
            api_base,
            tokens,
        }
    }

    /// The picture `media_id` names, with its mime type (`image/*`).
    pub async fn download(&self, media_id: &str) -> Result<Image, MediaError> {
        let mut refused_once = false;
        loop {
            let token = self.tokens.get().await.map_err(token_error)?;
            let (errcode, errmsg) = match self.get(&token, media_id).await? {
                Answered::Picture(image) => {
                    tracing::debug!(
                        media_id,
                        bytes = image.len(),
                        mime_type = %image.mime_type,
                        "photo downloaded"
                    );
                    return Ok(image);
                }
                Answered::Refused { errcode, errmsg } => (errcode, errmsg),
            };
            if !is_token_error(errcode) {
                let error = classify(errcode, &errmsg);
                tracing::info!(media_id, errcode, error = %error, "WeChat refused the photo's download");
                return Err(error);
            }
            if refused_once {
                return Err(MediaError::Retry(format!(
                    "WeChat refused the fleet's new access token too (errcode {errcode}: {errmsg})"
                )));
            }
            refused_once = true;
            let dropped = self.tokens.invalidate(&token).await.map_err(token_error)?;
            tracing::info!(
                errcode,
                dropped,
                "WeChat refused the access token; downloading once more with the fleet's current one"
            );
        }
    }

    /// One `media/get` call.
    async fn get(&self, token: &str, media_id: &str) -> Result<Answered, MediaError> {
        // Errors go through `without_url`: the URL carries the access token.
        let mut response = self
            .http
            .get(format!("{}/cgi-bin/media/get", self.api_base))
            .query(&[("access_token", token), ("media_id", media_id)])
            .send()
            .await
            .map_err(|e| MediaError::Retry(format!("cannot reach WeChat: {}", e.without_url())))?;
        let status = response.status();
        if status.is_server_error()
            || matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT
            )
        {
            return Err(MediaError::Retry(format!("WeChat answered HTTP {status}")));
        }
        if !status.is_success() {
            return Err(MediaError::unreadable(format!(
                "WeChat answered HTTP {status}"
            )));
        }
        let mime_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(essence)
            .unwrap_or_default();
        let is_image = mime_type.starts_with("image/") && mime_type.len() > "image/".len();
        let cap = if is_image {
            MAX_MEDIA_BYTES
        } else {
            MAX_ERROR_BODY_BYTES
        };
        if let Some(declared) = response.content_length()
            && is_image
            && declared > MAX_MEDIA_BYTES as u64
        {
            return Err(too_large(declared));
        }
        let body = read_capped(&mut response, cap).await?;
        if !is_image {
            return match body.and_then(|b| serde_json::from_slice::<WeChatError>(&b).ok()) {
                Some(WeChatError { errcode, errmsg }) if errcode != 0 => {
                    Ok(Answered::Refused { errcode, errmsg })
                }
                _ => Err(MediaError::unreadable(format!(
                    "the answer is not an image (Content-Type {:?})",
                    if mime_type.is_empty() {
                        "none"
                    } else {
                        &mime_type
                    }
                ))),
            };
        }
        match body {
            None => Err(MediaError::unreadable(format!(
                "the photo is larger than {} MB",
                MAX_MEDIA_BYTES / (1024 * 1024)
            ))),
            Some(bytes) if bytes.is_empty() => Err(MediaError::unreadable("the photo is empty")),
            Some(bytes) => Ok(Answered::Picture(Image::new(mime_type, bytes))),
        }
    }
}

/// Reads the body in chunks, stopping as soon as it passes `cap` bytes
/// (`None` then).
async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<Option<Vec<u8>>, MediaError> {
    let expected = response.content_length().unwrap_or(0) as usize;
    let mut body = Vec::with_capacity(expected.min(cap));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| MediaError::Retry(format!("the download was cut off: {}", e.without_url())))?
    {
        if body.len() + chunk.len() > cap {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

fn too_large(declared: u64) -> MediaError {
    MediaError::unreadable(format!(
        "the photo is larger than {} MB ({declared} bytes)",
        MAX_MEDIA_BYTES / (1024 * 1024)
    ))
}

/// `image/jpeg` of `Image/JPEG; charset=..`: the mime type without its
/// parameters, in lower case.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_token_error(errcode: i64) -> bool {
    matches!(errcode, 40001 | 40014 | 42001)
}

/// What a (non-token) errcode means for the photo.
fn classify(errcode: i64, errmsg: &str) -> MediaError {
    match errcode {
        -1 => MediaError::Retry(format!("WeChat system busy (errcode -1): {errmsg}")),
        40007 => MediaError::unreadable(format!(
            "WeChat does not know the media id, or it expired (errcode 40007: {errmsg})"
        )),
        _ => MediaError::unreadable(format!("WeChat errcode {errcode}: {errmsg}")),
    }
}

/// A failed token fetch: the account's token trouble, not the photo's, so
/// worth a retry (a refusal that lasts ends in the job's dead letter).
fn token_error(e: TokenError) -> MediaError {
    MediaError::Retry(format!("no access token for the download: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errcodes_are_classified_per_the_table() {
        assert!(matches!(classify(-1, "busy"), MediaError::Retry(_)));
        for code in [40007, 45009, 48001] {
            assert!(
                matches!(classify(code, "x"), MediaError::Unreadable { .. }),
                "{code}"
            );
        }
        assert!(
            classify(40007, "invalid media_id")
                .to_string()
                .contains("40007")
        );
        assert!(is_token_error(40001) && is_token_error(40014) && is_token_error(42001));
        assert!(!is_token_error(40007) && !is_token_error(-1));
    }

    #[test]
    fn the_mime_type_is_the_content_types_essence() {
        assert_eq!(essence("image/jpeg"), "image/jpeg");
        assert_eq!(essence("Image/PNG; charset=binary"), "image/png");
        assert_eq!(essence("text/html;charset=utf-8"), "text/html");
        assert_eq!(essence(""), "");
    }

    #[test]
    fn an_oversize_photo_is_unreadable_and_says_so() {
        let err = too_large(11 * 1024 * 1024);
        assert_eq!(
            err.to_string(),
            "the photo cannot be read: the photo is larger than 10 MB (11534336 bytes)"
        );
    }
}
