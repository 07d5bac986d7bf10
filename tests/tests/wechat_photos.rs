//! A photo a user sends, all the way through: signed image push -> api ->
//! Redis -> worker -> `media/get` -> a vision model -> customer-service
//! message, against a real Redis and fakes of WeChat and the providers
//! (OpenAI-compatible and Gemini). A photo that cannot be read gets the
//! polite FERRY_IMAGE_FAILED_TEXT once and ends its job; without a vision
//! model the push keeps its fixed unsupported reply. The picture is never
//! stored in Redis nor logged.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ferry_common::job::kinds;
use ferry_common::job::{JobId, JobRecord, JobState};
use ferry_tests::eventually;
use ferry_tests::fake_provider::{FakeImage, FakeKind, FakeProvider, Reply};
use ferry_tests::leaks::{Exhibit, Needle, leaks, redis_keyspace};
use ferry_tests::log_capture::CapturedLogs;
use ferry_tests::{FakeWeChat, Parts, RedisServer, TestFerry};
use ferry_worker::handlers::wechat_reply::photo::UNREADABLE_PHOTO;

const APP_ID: &str = "wx_photo_app";
const APP_SECRET: &str = "photo-app-secret";
const PROMPT: &str = "图里是什么？";
const FAILED: &str = "这张图片看不清，请换一张。";
const UNSUPPORTED: &str = "暂时只能回答文字消息。";
const WAIT: Duration = Duration::from_secs(10);

struct World {
    redis: RedisServer,
    wechat: FakeWeChat,
    ferry: TestFerry,
}

/// A fake provider of `kind` that expects `model` for text and also takes
/// `vision_model` (if any).
async fn provider(kind: FakeKind, model: &str, vision_model: Option<&str>) -> FakeProvider {
    let fake = FakeProvider::start(kind, "sk-photo", model).await;
    if let Some(vision) = vision_model {
        fake.accept_vision_model(vision);
    }
    fake
}

/// Ferry with the chain `providers` (name, fake), in order, each with its
/// text model; vision models are the configuration's defaults (qwen
/// `qwen-vl-max`, gemini `gemini-2.0-flash`, deepseek none).
async fn world(providers: &[(&str, &FakeProvider)]) -> World {
    CapturedLogs::global();
    let redis = RedisServer::start();
    let wechat = FakeWeChat::start(APP_ID, APP_SECRET).await;
    let names: Vec<&str> = providers.iter().map(|(name, _)| *name).collect();
    let mut owned: Vec<(String, String)> = vec![
        ("WECHAT_APP_ID".into(), APP_ID.into()),
        ("WECHAT_APP_SECRET".into(), APP_SECRET.into()),
        ("WECHAT_API_BASE".into(), wechat.base_url()),
        ("FERRY_PROVIDERS".into(), names.join(",")),
        ("FERRY_IMAGE_PROMPT".into(), PROMPT.into()),
        ("FERRY_IMAGE_FAILED_TEXT".into(), FAILED.into()),
        ("FERRY_WECHAT_UNSUPPORTED_REPLY".into(), UNSUPPORTED.into()),
    ];
    for (name, fake) in providers {
        let config = fake.provider_config(name);
        let var = |suffix: &str| format!("{}_{suffix}", name.to_ascii_uppercase());
        owned.extend([
            (var("API_KEY"), config.api_key.unwrap().expose().to_owned()),
            (var("BASE_URL"), config.base_url),
            (var("MODEL"), config.model),
        ]);
    }
    let vars: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
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
        wechat,
        ferry,
    }
}

/// An image push as WeChat sends it.
fn photo(openid: &str, media_id: &str, msg_id: i64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_account]]></ToUserName>\n\
         <FromUserName><![CDATA[{openid}]]></FromUserName>\n\
         <CreateTime>{}</CreateTime>\n\
         <MsgType><![CDATA[image]]></MsgType>\n\
         <PicUrl><![CDATA[http://mmbiz.qpic.cn/mmbiz/{media_id}/0]]></PicUrl>\n\
         <MediaId><![CDATA[{media_id}]]></MediaId>\n\
         <MsgId>{msg_id}</MsgId>\n\
         </xml>",
        chrono::Utc::now().timestamp()
    )
}

/// Bytes that look like a JPEG (its magic number), none of them text.
fn picture(len: usize, seed: u8) -> Vec<u8> {
    let mut bytes = vec![0xff, 0xd8, 0xff, 0xe0];
    bytes.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 0x80));
    bytes
}

impl World {
    /// Posts `xml` and expects WeChat's plain acknowledgement.
    async fn push(&self, xml: &str) {
        let (status, body) = self.ferry.post_wechat(xml).await;
        assert_eq!((status, body.as_str()), (200, "success"));
    }

    /// The job of the push `msg_id` once it has finished.
    async fn finished(&self, msg_id: i64) -> JobRecord {
        let (keys, dedup) = (self.ferry.queue.keys(), format!("msg:{msg_id}"));
        let partition = keys
            .partitions()
            .place(kinds::queue_of(kinds::WECHAT_REPLY), &dedup);
        let idem = keys.partition(&partition).idempotency(&dedup);
        let mut record = None;
        eventually("the photo's job to finish", WAIT, async || {
            let id: Option<String> = redis::cmd("GET")
                .arg(&idem)
                .query(&mut self.redis.conn())
                .unwrap();
            let Some(id) = id else { return false };
            let id: JobId = id.parse().unwrap();
            let job = self.ferry.queue.job(&id).await.unwrap().unwrap();
            let done = matches!(job.state, JobState::Succeeded | JobState::Dead);
            record = Some(job);
            done
        })
        .await;
        record.unwrap()
    }

    /// Neither Redis nor the logs hold the picture, raw or in base64.
    fn assert_picture_kept_nowhere(&self, bytes: &[u8]) {
        let encoded = BASE64.encode(bytes);
        let needles = [
            Needle::new("the picture", &bytes[..64]),
            Needle::new("the picture in base64", &encoded.as_bytes()[..64]),
        ];
        let mut exhibits: Vec<Exhibit> = redis_keyspace(&self.redis)
            .into_iter()
            .map(|(key, held)| Exhibit::new(format!("Redis key {key}"), held))
            .collect();
        exhibits.push(Exhibit::new("the logs", CapturedLogs::global().text()));
        let found = leaks(&exhibits, &needles);
        assert!(found.is_empty(), "{}", found.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_skips_deepseek_and_qwens_vision_model_gets_it_byte_for_byte() {
    let deepseek = provider(FakeKind::OpenAi, "deepseek-chat", None).await;
    let qwen = provider(FakeKind::OpenAi, "qwen-plus", Some("qwen-vl-max")).await;
    let w = world(&[("deepseek", &deepseek), ("qwen", &qwen)]).await;
    let jpeg = picture(30_000, 1);
    w.wechat.put_media("MEDIA_QWEN", "image/jpeg", &jpeg);
    qwen.push(Reply::text("图里是一只橘猫。"));

    w.push(&photo("o_photo_qwen", "MEDIA_QWEN", 7001)).await;

    let sent = w.wechat.wait_for_sent(1, WAIT).await;
    assert_eq!(sent[0].touser, "o_photo_qwen");
    assert_eq!(sent[0].content, "图里是一只橘猫。");
    assert_eq!(deepseek.count(), 0, "deepseek has no vision model");
    let asked = qwen.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].problem, None);
    assert_eq!(asked[0].model.as_deref(), Some("qwen-vl-max"));
    let last = asked[0].messages.len() - 1;
    assert_eq!(asked[0].messages[last].content, PROMPT);
    let expected = FakeImage {
        message: last,
        mime_type: "image/jpeg".into(),
        bytes: jpeg.clone(),
    };
    assert_eq!(asked[0].images, [expected]);
    let job = w.finished(7001).await;
    let result = job.result.unwrap();
    assert_eq!(
        (result["provider"].as_str(), result["model"].as_str()),
        (Some("qwen"), Some("qwen-vl-max"))
    );
    assert_eq!(job.payload["media_id"], "MEDIA_QWEN");
    assert_eq!(w.wechat.media_downloads("MEDIA_QWEN"), 1);
    w.assert_picture_kept_nowhere(&jpeg);
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_reaches_geminis_vision_model_as_inline_data() {
    let gemini = provider(
        FakeKind::Gemini,
        "gemini-1.5-flash",
        Some("gemini-2.0-flash"),
    )
    .await;
    let w = world(&[("gemini", &gemini)]).await;
    let png = picture(20_000, 2);
    w.wechat.put_media("MEDIA_GEMINI", "image/png", &png);
    gemini.push(Reply::text("这是一张风景照。"));

    w.push(&photo("o_photo_gemini", "MEDIA_GEMINI", 7002)).await;

    let sent = w.wechat.wait_for_sent(1, WAIT).await;
    assert_eq!(
        (sent[0].touser.as_str(), sent[0].content.as_str()),
        ("o_photo_gemini", "这是一张风景照。")
    );
    let asked = gemini.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].problem, None);
    assert_eq!(
        asked[0].path,
        "/v1beta/models/gemini-2.0-flash:generateContent"
    );
    let last = asked[0].messages.len() - 1;
    assert_eq!(asked[0].messages[last].content, PROMPT);
    let expected = FakeImage {
        message: last,
        mime_type: "image/png".into(),
        bytes: png.clone(),
    };
    assert_eq!(asked[0].images, [expected]);
    assert_eq!(w.finished(7002).await.state, JobState::Succeeded);
    w.assert_picture_kept_nowhere(&png);
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_downloaded_with_an_expired_token_refreshes_the_fleets_token_once() {
    let qwen = provider(FakeKind::OpenAi, "qwen-plus", Some("qwen-vl-max")).await;
    let w = world(&[("qwen", &qwen)]).await;
    w.wechat
        .put_media("MEDIA_FIRST", "image/jpeg", &picture(100, 5));
    w.wechat
        .put_media("MEDIA_LATER", "image/jpeg", &picture(100, 6));
    w.push(&photo("o_token", "MEDIA_FIRST", 7300)).await;
    w.wechat.wait_for_sent(1, WAIT).await;
    w.wechat.expire_tokens();

    w.push(&photo("o_token", "MEDIA_LATER", 7301)).await;

    w.wechat.wait_for_sent(2, WAIT).await;
    assert_eq!(
        w.wechat.media_downloads("MEDIA_LATER"),
        2,
        "refused (42001) once, then downloaded with the new token"
    );
    assert_eq!(w.wechat.token_fetches(), 2);
    assert_eq!(qwen.requests()[1].images.len(), 1);
    w.ferry.stop().await;
}

/// Pushes each (user, media id) as a photo and checks that each user got
/// the polite text exactly once, each job ended done, each picture was
/// asked of WeChat once and the model never.
async fn each_gets_the_failed_text_once(w: &World, qwen: &FakeProvider, photos: &[(&str, &str)]) {
    for (i, (openid, media_id)) in photos.iter().enumerate() {
        w.push(&photo(openid, media_id, 7100 + i as i64)).await;
    }
    for (i, (openid, media_id)) in photos.iter().enumerate() {
        let job = w.finished(7100 + i as i64).await;
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        assert_eq!(job.result.unwrap()["provider"], UNREADABLE_PHOTO);
        assert_eq!(w.wechat.sent_to(openid), [FAILED], "{openid}");
        assert_eq!(w.wechat.media_downloads(media_id), 1, "{media_id}");
    }
    assert_eq!(qwen.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_over_10_mb_gets_the_failed_text_once_and_its_job_ends() {
    let qwen = provider(FakeKind::OpenAi, "qwen-plus", Some("qwen-vl-max")).await;
    let w = world(&[("qwen", &qwen)]).await;
    let big = picture(10 * 1024 * 1024, 3);
    // Refused by its Content-Length, and (no length) while reading.
    w.wechat.put_media("MEDIA_BIG", "image/jpeg", &big);
    w.wechat
        .put_media_chunked("MEDIA_BIG_CHUNKED", "image/jpeg", &big);

    each_gets_the_failed_text_once(
        &w,
        &qwen,
        &[
            ("o_big", "MEDIA_BIG"),
            ("o_big_chunked", "MEDIA_BIG_CHUNKED"),
        ],
    )
    .await;
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_image_or_an_unknown_media_id_gets_the_failed_text_once_and_its_job_ends() {
    let qwen = provider(FakeKind::OpenAi, "qwen-plus", Some("qwen-vl-max")).await;
    let w = world(&[("qwen", &qwen)]).await;
    w.wechat.put_media(
        "MEDIA_HTML",
        "text/html; charset=utf-8",
        b"<html>login</html>",
    );

    // MEDIA_GONE was never uploaded: WeChat answers errcode 40007.
    each_gets_the_failed_text_once(
        &w,
        &qwen,
        &[("o_html", "MEDIA_HTML"), ("o_gone", "MEDIA_GONE")],
    )
    .await;
    w.ferry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_vision_model_a_photo_still_gets_the_unsupported_reply() {
    let deepseek = provider(FakeKind::OpenAi, "deepseek-chat", None).await;
    let w = world(&[("deepseek", &deepseek)]).await;
    w.wechat
        .put_media("MEDIA_TEXT_ONLY", "image/jpeg", &picture(100, 4));

    let (status, body) = w
        .ferry
        .post_wechat(&photo("o_text_only", "MEDIA_TEXT_ONLY", 7200))
        .await;

    assert_eq!(status, 200);
    assert!(body.contains(UNSUPPORTED), "{body}");
    let stream: i64 = redis::cmd("XLEN")
        .arg("{ferry:wechat}:stream")
        .query(&mut w.redis.conn())
        .unwrap();
    assert_eq!(stream, 0, "no job");
    assert_eq!(w.wechat.media_downloads("MEDIA_TEXT_ONLY"), 0);
    w.ferry.stop().await;
}
