//! WeChat's side of a push, as WeChat does it (WECHAT.md, "Messages pushed
//! to the server"): the text push signed (and in safe mode encrypted), each
//! try given 5 s, up to three tries of the same `MsgId` with a fresh
//! timestamp, nonce and signature, stopping at the first answer. What the
//! user sees is the passive reply of the answer, if it carries one
//! (decrypted and its `msg_signature` checked in safe mode).
//!
//! With a [`FakeWeChat`] to tell, each push is also the user's action that
//! resets WeChat's customer-service allowance ([`FakeWeChat::user_wrote`]).

use std::time::Duration;

use ferry_common::wechat::{self, MessageCrypt};

use crate::FakeWeChat;

/// WeChat's wait for each try.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(5);

/// How one try ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TryEnd {
    /// No answer within 5 s: WeChat tries again (if tries are left).
    TimedOut,
    /// `success` or an empty body: acknowledged, nothing shown.
    Acknowledged,
    /// A passive reply: this text is shown to the user.
    Reply(String),
    /// Anything else: WeChat shows "该公众号暂时无法提供服务".
    Failed(u16, String),
}

/// A push, from WeChat's side.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub msg_id: i64,
    /// How each try ended, in order.
    pub tries: Vec<TryEnd>,
}

impl Pushed {
    /// The passive reply the user saw, if any.
    pub fn shown(&self) -> Option<&str> {
        self.tries.iter().find_map(|t| match t {
            TryEnd::Reply(text) => Some(text.as_str()),
            _ => None,
        })
    }
}

pub struct WeChatPusher {
    client: reqwest::Client,
    api_url: String,
    token: String,
    account: String,
    crypt: Option<MessageCrypt>,
    fake: Option<FakeWeChat>,
}

impl WeChatPusher {
    /// Pushes to the api at `api_url` signed with `token`, in plaintext.
    pub fn new(api_url: &str, token: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            api_url: api_url.to_owned(),
            token: token.to_owned(),
            account: "gh_account".into(),
            crypt: None,
            fake: None,
        }
    }

    /// Safe mode: bodies encrypted with `crypt`, replies decrypted.
    pub fn safe(mut self, crypt: MessageCrypt) -> Self {
        self.crypt = Some(crypt);
        self
    }

    /// Tells `fake` of each push (the user's action, for its allowance).
    pub fn telling(mut self, fake: &FakeWeChat) -> Self {
        self.fake = Some(fake.clone());
        self
    }

    /// The user `openid` writes `content`: a new MsgId, tried as WeChat
    /// tries it.
    pub async fn text(&self, openid: &str, content: &str) -> Pushed {
        let msg_id = i64::from(rand::random::<u32>()) + 1;
        let created = chrono::Utc::now().timestamp();
        let xml = wechat::text_message_xml(&self.account, openid, created, content, msg_id);
        if let Some(fake) = &self.fake {
            fake.user_wrote(openid);
        }
        let mut tries = Vec::new();
        for _ in 0..3 {
            let end = self.try_once(&xml).await;
            let again = end == TryEnd::TimedOut;
            tries.push(end);
            if !again {
                break;
            }
        }
        Pushed { msg_id, tries }
    }

    /// The user `openid` triggers `event` (`CLICK` with a key, `SCAN`,
    /// `subscribe`): one try, as an event needs no retry here. A click, a
    /// scan or a follow resets the fake's allowance to 3 within a minute.
    pub async fn event(&self, openid: &str, event: &str, key: &str) -> TryEnd {
        let xml = format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event><EventKey><![CDATA[{key}]]></EventKey></xml>",
            self.account,
            chrono::Utc::now().timestamp()
        );
        if let Some(fake) = &self.fake
            && ["CLICK", "SCAN", "subscribe"].contains(&event)
        {
            fake.user_clicked(openid);
        }
        self.try_once(&xml).await
    }

    async fn try_once(&self, xml: &str) -> TryEnd {
        let (ts, nonce) = (
            chrono::Utc::now().timestamp().to_string(),
            rand::random::<u32>().to_string(),
        );
        let signature = wechat::sign(&[&self.token, &ts, &nonce]);
        let mut query = vec![
            ("signature", signature),
            ("timestamp", ts.clone()),
            ("nonce", nonce.clone()),
        ];
        let body = match &self.crypt {
            None => xml.to_owned(),
            Some(crypt) => {
                let encrypt = crypt.encrypt(xml).expect("encrypt");
                query.push(("encrypt_type", "aes".into()));
                query.push((
                    "msg_signature",
                    wechat::sign(&[&self.token, &ts, &nonce, &encrypt]),
                ));
                format!(
                    "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>",
                    self.account
                )
            }
        };
        let sent = self
            .client
            .post(format!("{}/wechat", self.api_url))
            .query(&query)
            .header("content-type", "text/xml")
            .body(body)
            .timeout(TRY_TIMEOUT)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return TryEnd::TimedOut,
            Err(e) => return TryEnd::Failed(0, e.to_string()),
        };
        let status = response.status().as_u16();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) if e.is_timeout() => return TryEnd::TimedOut,
            Err(e) => return TryEnd::Failed(status, e.to_string()),
        };
        if status != 200 {
            return TryEnd::Failed(status, text);
        }
        if text.is_empty() || text == "success" {
            return TryEnd::Acknowledged;
        }
        match self.reply_content(&text) {
            Some(content) => TryEnd::Reply(content),
            None => TryEnd::Failed(status, text),
        }
    }

    /// The `Content` of a passive reply (opened in safe mode).
    fn reply_content(&self, body: &str) -> Option<String> {
        let xml = match &self.crypt {
            None => body.to_owned(),
            Some(crypt) => {
                let encrypt = cdata_of(body, "Encrypt")?;
                let signature = cdata_of(body, "MsgSignature")?;
                let timestamp = between(body, "<TimeStamp>", "</TimeStamp>")?;
                let nonce = cdata_of(body, "Nonce")?;
                let expected = wechat::sign(&[&self.token, &timestamp, &nonce, &encrypt]);
                assert_eq!(signature, expected, "the reply's msg_signature");
                crypt.decrypt(&encrypt).ok()?
            }
        };
        cdata_of(&xml, "Content")
    }
}

fn between(s: &str, open: &str, close: &str) -> Option<String> {
    let start = s.find(open)? + open.len();
    let end = s[start..].find(close)? + start;
    Some(s[start..end].to_owned())
}

/// The text of `<tag><![CDATA[..]]></tag>`, with split `]]>` sections
/// joined again.
fn cdata_of(xml: &str, tag: &str) -> Option<String> {
    let raw = between(xml, &format!("<{tag}><![CDATA["), &format!("]]></{tag}>"))?;
    Some(raw.replace("]]]]><![CDATA[>", "]]>"))
}
