//! What a push asks of Ferry. Only text (and voice that WeChat already
//! turned into text) and photos a vision model can see need an AI, so only
//! they become jobs; the rest is answered at once in the response, or only
//! acknowledged.
//!
//! | push | action |
//! | --- | --- |
//! | text; voice with `Recognition` | enqueue a `wechat.reply` job, deduplicated by `MsgId` |
//! | voice without `Recognition` | fixed passive reply (`FERRY_WECHAT_VOICE_UNRECOGNIZED_REPLY`) |
//! | image with `MediaId`, when a provider has a vision model (`<NAME>_VISION_MODEL`) | enqueue a `wechat.reply` job with `media_id` and empty `content`, deduplicated by `MsgId` (the worker downloads the picture) |
//! | image without vision or `MediaId`; video, location, link, ... | fixed passive reply (`FERRY_WECHAT_UNSUPPORTED_REPLY`) |
//! | event `subscribe` | welcome as a passive reply (`FERRY_WECHAT_WELCOME`) |
//! | event `unsubscribe` | forget what Ferry keeps about the user |
//! | any other event | acknowledge |

use std::time::Duration;

use ferry_common::job::kinds::{self, WeChatReply};
use ferry_common::job::{Idempotency, NewJob};
use ferry_common::wechat::{Incoming, IncomingKind};

use crate::state::WeChatIngress;

#[derive(Debug)]
pub enum Action {
    /// An AI answer: enqueue this job (its idempotency key is the dedup key).
    Answer(NewJob),
    /// A fixed answer in the HTTP response: no AI, no Redis.
    Reply(String),
    /// The user unfollowed: forget what Ferry keeps about them.
    Forget { openid: String },
    /// Nothing to do but acknowledge.
    Acknowledge,
}

pub fn dispatch(message: &Incoming, ingress: &WeChatIngress) -> Action {
    let texts = &ingress.texts;
    match &message.kind {
        IncomingKind::Text { content, .. } if content.trim().is_empty() => Action::Acknowledge,
        IncomingKind::Text { content, .. } => answer(message, content, None, ingress.dedup_ttl),
        IncomingKind::Voice {
            recognition: Some(heard),
            ..
        } if !heard.trim().is_empty() => answer(message, heard, None, ingress.dedup_ttl),
        IncomingKind::Image {
            media_id: Some(media_id),
            ..
        } if ingress.vision && !media_id.trim().is_empty() => {
            answer(message, "", Some(media_id), ingress.dedup_ttl)
        }
        IncomingKind::Voice { .. } => Action::Reply(texts.voice_unrecognized.clone()),
        IncomingKind::Image { .. } | IncomingKind::Other { .. } => {
            Action::Reply(texts.unsupported.clone())
        }
        IncomingKind::Event { event, .. } if event.eq_ignore_ascii_case("subscribe") => {
            Action::Reply(texts.welcome.clone())
        }
        IncomingKind::Event { event, .. } if event.eq_ignore_ascii_case("unsubscribe") => {
            Action::Forget {
                openid: message.from_user.clone(),
            }
        }
        IncomingKind::Event { .. } => Action::Acknowledge,
    }
}

/// A `wechat.reply` job for `content`, or for the photo `media_id` (with
/// empty `content`).
fn answer(
    message: &Incoming,
    content: &str,
    media_id: Option<&str>,
    dedup_ttl: Duration,
) -> Action {
    let payload = WeChatReply {
        openid: message.from_user.clone(),
        account: message.to_user.clone(),
        content: content.to_owned(),
        msg_id: message.msg_id(),
        create_time: message.create_time,
        media_id: media_id.map(str::to_owned),
        passive: false,
    };
    Action::Answer(NewJob {
        kind: kinds::WECHAT_REPLY.into(),
        queue: kinds::queue_of(kinds::WECHAT_REPLY).into(),
        // A struct of strings and integers always serializes.
        payload: serde_json::to_value(&payload).unwrap_or_default(),
        max_attempts: kinds::max_attempts_of(kinds::WECHAT_REPLY),
        idempotency: Some(Idempotency {
            key: message.dedup_key(),
            ttl: dedup_ttl,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ReplyTexts;
    use crate::wechat::credentials::{CredentialStore, WeChatCredentials};
    use ferry_common::Secret;

    fn ingress() -> WeChatIngress {
        ingress_seeing(false)
    }

    /// An ingress whose providers can see photos when `vision`.
    fn ingress_seeing(vision: bool) -> WeChatIngress {
        WeChatIngress {
            credentials: CredentialStore::new(WeChatCredentials {
                token: Secret::new("t"),
                crypt: None,
            }),
            dedup_ttl: Duration::from_secs(300),
            ack_budget: Duration::from_millis(1500),
            max_skew: Duration::from_secs(300),
            vision,
            texts: ReplyTexts {
                welcome: "welcome".into(),
                unsupported: "text only".into(),
                voice_unrecognized: "say again".into(),
            },
        }
    }

    fn push(kind: IncomingKind) -> Incoming {
        Incoming {
            to_user: "gh_acct".into(),
            from_user: "o_user".into(),
            create_time: 1_700_000_000,
            kind,
        }
    }

    fn event(name: &str) -> Incoming {
        push(IncomingKind::Event {
            event: name.into(),
            event_key: None,
        })
    }

    fn answered(action: Action) -> (String, String) {
        match action {
            Action::Answer(job) => (
                job.payload["content"].as_str().unwrap().to_owned(),
                job.idempotency.unwrap().key,
            ),
            other => panic!("expected a job, got {other:?}"),
        }
    }

    fn replied(action: Action) -> String {
        match action {
            Action::Reply(text) => text,
            other => panic!("expected a passive reply, got {other:?}"),
        }
    }

    #[test]
    fn text_becomes_a_reply_job_deduplicated_by_msg_id() {
        let text = push(IncomingKind::Text {
            content: "你好".into(),
            msg_id: 42,
        });
        let (content, key) = answered(dispatch(&text, &ingress()));
        assert_eq!((content.as_str(), key.as_str()), ("你好", "msg:42"));
    }

    #[test]
    fn voice_is_answered_from_its_recognition_or_politely_declined() {
        let voice = |recognition: Option<&str>| {
            push(IncomingKind::Voice {
                media_id: "m".into(),
                format: Some("amr".into()),
                recognition: recognition.map(str::to_owned),
                msg_id: 7,
            })
        };
        assert_eq!(
            answered(dispatch(&voice(Some("明天天气")), &ingress())).0,
            "明天天气"
        );
        assert_eq!(replied(dispatch(&voice(None), &ingress())), "say again");
        assert_eq!(
            replied(dispatch(&voice(Some("  ")), &ingress())),
            "say again"
        );
    }

    fn image(media_id: Option<&str>) -> Incoming {
        push(IncomingKind::Image {
            pic_url: Some("http://mmbiz.qpic.cn/x".into()),
            media_id: media_id.map(str::to_owned),
            msg_id: 1,
        })
    }

    #[test]
    fn without_vision_images_and_other_types_get_the_unsupported_answer() {
        let video = push(IncomingKind::Other {
            msg_type: "video".into(),
            msg_id: Some(2),
        });
        assert_eq!(
            replied(dispatch(&image(Some("m1")), &ingress())),
            "text only"
        );
        assert_eq!(replied(dispatch(&image(None), &ingress())), "text only");
        assert_eq!(replied(dispatch(&video, &ingress())), "text only");
    }

    #[test]
    fn with_vision_a_photo_becomes_a_reply_job_with_its_media_id_deduplicated_by_msg_id() {
        let seeing = ingress_seeing(true);
        let job = match dispatch(&image(Some("MEDIA_1")), &seeing) {
            Action::Answer(job) => job,
            other => panic!("expected a job, got {other:?}"),
        };
        let payload: WeChatReply = serde_json::from_value(job.payload).unwrap();
        assert_eq!(payload.media_id.as_deref(), Some("MEDIA_1"));
        assert_eq!(payload.content, "");
        assert_eq!(
            (payload.openid.as_str(), payload.msg_id),
            ("o_user", Some(1))
        );
        assert_eq!(job.kind, kinds::WECHAT_REPLY);
        assert_eq!(job.idempotency.unwrap().key, "msg:1");
    }

    #[test]
    fn with_vision_an_image_without_media_id_still_gets_the_unsupported_answer() {
        let seeing = ingress_seeing(true);
        assert_eq!(replied(dispatch(&image(None), &seeing)), "text only");
        assert_eq!(replied(dispatch(&image(Some(" ")), &seeing)), "text only");
        let video = push(IncomingKind::Other {
            msg_type: "video".into(),
            msg_id: Some(2),
        });
        assert_eq!(replied(dispatch(&video, &seeing)), "text only");
    }

    #[test]
    fn text_jobs_carry_no_media_id() {
        let text = push(IncomingKind::Text {
            content: "你好".into(),
            msg_id: 42,
        });
        let Action::Answer(job) = dispatch(&text, &ingress_seeing(true)) else {
            panic!("expected a job");
        };
        assert!(job.payload.get("media_id").is_none(), "{}", job.payload);
    }

    #[test]
    fn events_welcome_forget_or_acknowledge() {
        assert_eq!(
            replied(dispatch(&event("subscribe"), &ingress())),
            "welcome"
        );
        assert!(matches!(
            dispatch(&event("unsubscribe"), &ingress()),
            Action::Forget { openid } if openid == "o_user"
        ));
        for other in ["SCAN", "CLICK", "VIEW", "LOCATION", "TEMPLATESENDJOBFINISH"] {
            assert!(matches!(
                dispatch(&event(other), &ingress()),
                Action::Acknowledge
            ));
        }
    }
}
