//! The XML bodies WeChat pushes to us, and the XML we send back.
//!
//! Push bodies come from the internet, so parsing is defensive: bounded size,
//! no DOCTYPE or entity declarations (no XXE, no entity expansion), only the
//! predefined XML entities and character references, unknown elements
//! ignored, and every failure a typed [`MessageError`] rather than a panic.
//! The builders produce the passive reply, the encrypted (safe-mode) reply and,
//! for the simulator and tests, a text push exactly as WeChat formats it.

use quick_xml::Reader;
use quick_xml::events::Event;

/// Largest body [`parse`] and [`parse_encrypted_envelope`] accept. WeChat's
/// pushes are a few KiB; this leaves ample room.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why a pushed body was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The body contains a DOCTYPE or entity declaration.
    #[error("DOCTYPE and entity declarations are not allowed")]
    Forbidden,
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("body of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A required element is absent (names the element, e.g. `MsgId`).
    #[error("missing required element <{0}>")]
    MissingField(&'static str),
    /// A present element has an unusable value (e.g. a non-numeric `MsgId`).
    #[error("invalid value in <{0}>")]
    InvalidField(&'static str),
    /// Not well-formed XML, or not a `<xml>` document (short reason).
    #[error("malformed XML: {0}")]
    Malformed(String),
}

/// A pushed message or event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// `ToUserName`: the official account's id.
    pub to_user: String,
    /// `FromUserName`: the user's openid.
    pub from_user: String,
    /// `CreateTime`: unix seconds.
    pub create_time: i64,
    pub kind: IncomingKind,
}

/// The `MsgType`-specific part of a push. Optional fields that are present but
/// empty (`<EventKey><![CDATA[]]></EventKey>`) are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncomingKind {
    Text {
        content: String,
        msg_id: i64,
    },
    Voice {
        media_id: String,
        format: Option<String>,
        /// Speech-to-text, when enabled for the account.
        recognition: Option<String>,
        msg_id: i64,
    },
    Image {
        pic_url: Option<String>,
        media_id: Option<String>,
        msg_id: i64,
    },
    Event {
        /// As sent: `subscribe`, `unsubscribe`, `SCAN`, `CLICK`, `VIEW`, ...
        event: String,
        event_key: Option<String>,
    },
    /// Any other `MsgType` (video, location, link, ...).
    Other {
        msg_type: String,
        msg_id: Option<i64>,
    },
}

impl Incoming {
    /// The `MsgId` of this push, if it has one.
    pub fn msg_id(&self) -> Option<i64> {
        match &self.kind {
            IncomingKind::Text { msg_id, .. }
            | IncomingKind::Voice { msg_id, .. }
            | IncomingKind::Image { msg_id, .. } => Some(*msg_id),
            IncomingKind::Other { msg_id, .. } => *msg_id,
            IncomingKind::Event { .. } => None,
        }
    }

    /// Key identifying WeChat's retries of this push: `msg:<MsgId>` when there
    /// is a `MsgId`, else `evt:<FromUserName>:<CreateTime>:<Event>` (for an
    /// `Other` push without `MsgId`, its `MsgType` stands in for `Event`).
    pub fn dedup_key(&self) -> String {
        if let Some(id) = self.msg_id() {
            return format!("msg:{id}");
        }
        let what = match &self.kind {
            IncomingKind::Event { event, .. } => event.as_str(),
            IncomingKind::Other { msg_type, .. } => msg_type.as_str(),
            // These always carry a MsgId (handled above).
            IncomingKind::Text { .. } | IncomingKind::Voice { .. } | IncomingKind::Image { .. } => {
                ""
            }
        };
        format!("evt:{}:{}:{}", self.from_user, self.create_time, what)
    }
}

/// The outer body in safe/compatible mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `ToUserName`, when present.
    pub to_user: Option<String>,
    /// The base64 `Encrypt` value, to check with `msg_signature` and decrypt.
    pub encrypt: String,
}

/// Parses a plaintext push (or a decrypted one).
pub fn parse(xml: &[u8]) -> Result<Incoming, MessageError> {
    let fields = Fields::read(xml)?;
    let to_user = fields.required("ToUserName")?;
    let from_user = fields.required("FromUserName")?;
    let create_time = fields.required_i64("CreateTime")?;
    let msg_type = fields.required("MsgType")?;

    let kind = match msg_type.as_str() {
        "text" => IncomingKind::Text {
            content: fields.required("Content")?,
            msg_id: fields.required_i64("MsgId")?,
        },
        "voice" => IncomingKind::Voice {
            media_id: fields.required("MediaId")?,
            format: fields.optional("Format"),
            recognition: fields.optional("Recognition"),
            msg_id: fields.required_i64("MsgId")?,
        },
        "image" => IncomingKind::Image {
            pic_url: fields.optional("PicUrl"),
            media_id: fields.optional("MediaId"),
            msg_id: fields.required_i64("MsgId")?,
        },
        "event" => IncomingKind::Event {
            event: fields.required("Event")?,
            event_key: fields.optional("EventKey"),
        },
        _ => IncomingKind::Other {
            msg_id: fields.optional_i64("MsgId")?,
            msg_type,
        },
    };
    Ok(Incoming {
        to_user,
        from_user,
        create_time,
        kind,
    })
}

/// Parses the outer body of a safe/compatible-mode push.
pub fn parse_encrypted_envelope(xml: &[u8]) -> Result<Envelope, MessageError> {
    let fields = Fields::read(xml)?;
    Ok(Envelope {
        to_user: fields.optional("ToUserName"),
        encrypt: fields.required("Encrypt")?,
    })
}

/// A passive text reply (sent as the HTTP response body).
pub fn passive_text_reply(
    to_user: &str,
    from_user: &str,
    create_time: i64,
    content: &str,
) -> String {
    format!(
        "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName>\
         <CreateTime>{create_time}</CreateTime><MsgType><![CDATA[text]]></MsgType>\
         <Content>{}</Content></xml>",
        cdata(to_user),
        cdata(from_user),
        cdata(content),
    )
}

/// The safe-mode reply wrapping an encrypted passive reply.
pub fn encrypted_reply(encrypt: &str, msg_signature: &str, timestamp: &str, nonce: &str) -> String {
    format!(
        "<xml><Encrypt>{}</Encrypt><MsgSignature>{}</MsgSignature>\
         <TimeStamp>{}</TimeStamp><Nonce>{}</Nonce></xml>",
        cdata(encrypt),
        cdata(msg_signature),
        escape_text(timestamp),
        cdata(nonce),
    )
}

/// A text push formatted as WeChat sends it (for the simulator and tests).
pub fn text_message_xml(
    to_user: &str,
    from_user: &str,
    create_time: i64,
    content: &str,
    msg_id: i64,
) -> String {
    format!(
        "<xml><ToUserName>{}</ToUserName>\n\
         <FromUserName>{}</FromUserName>\n\
         <CreateTime>{create_time}</CreateTime>\n\
         <MsgType><![CDATA[text]]></MsgType>\n\
         <Content>{}</Content>\n\
         <MsgId>{msg_id}</MsgId>\n\
         </xml>",
        cdata(to_user),
        cdata(from_user),
        cdata(content),
    )
}

/// Wraps `s` in CDATA. A `]]>` inside is split across two sections
/// (`]]]]><![CDATA[>`), and characters XML 1.0 forbids everywhere (control
/// characters other than tab, LF, CR; U+FFFE; U+FFFF) are dropped, since no
/// parser would accept them.
fn cdata(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 12);
    out.push_str("<![CDATA[");
    let clean: String = s.chars().filter(|&c| is_xml_char(c)).collect();
    out.push_str(&clean.replace("]]>", "]]]]><![CDATA[>"));
    out.push_str("]]>");
    out
}

/// Escapes text content outside CDATA (same character filter as [`cdata`]).
fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().filter(|&c| is_xml_char(c)) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Refuses `<!DOCTYPE` and `<!ENTITY` (any case) outside CDATA sections, so a
/// user's text that happens to contain them is still accepted.
fn refuse_declarations(xml: &[u8]) -> Result<(), MessageError> {
    const CDATA_OPEN: &[u8] = b"<![CDATA[";
    let mut i = 0;
    while let Some(found) = find(&xml[i..], b"<!") {
        let start = i + found;
        let rest = &xml[start..];
        if rest.starts_with(CDATA_OPEN) {
            let body = start + CDATA_OPEN.len();
            match find(&xml[body..], b"]]>") {
                Some(end) => i = body + end + 3,
                // Unterminated: the parser reports it as malformed.
                None => return Ok(()),
            }
        } else if starts_with_ignore_case(&rest[2..], b"DOCTYPE")
            || starts_with_ignore_case(&rest[2..], b"ENTITY")
        {
            return Err(MessageError::Forbidden);
        } else {
            i = start + 2;
        }
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Names of the top-level elements we read; anything else is ignored.
const KNOWN: &[&str] = &[
    "ToUserName",
    "FromUserName",
    "CreateTime",
    "MsgType",
    "Content",
    "MsgId",
    "MediaId",
    "Format",
    "Recognition",
    "PicUrl",
    "Event",
    "EventKey",
    "Encrypt",
];

/// Text of each known child of the `<xml>` root.
struct Fields {
    values: Vec<(&'static str, String)>,
}

impl Fields {
    fn read(xml: &[u8]) -> Result<Self, MessageError> {
        if xml.len() > MAX_BODY_BYTES {
            return Err(MessageError::TooLarge(xml.len()));
        }
        refuse_declarations(xml)?;

        let mut reader = Reader::from_reader(xml);
        reader.config_mut().check_end_names = true;
        let mut collector = Collector::default();
        loop {
            let event = reader.read_event().map_err(|e| malformed(&e.to_string()))?;
            match event {
                Event::DocType(_) => return Err(MessageError::Forbidden),
                Event::Start(start) => collector.start(start.name().as_ref())?,
                Event::Empty(start) => {
                    collector.start(start.name().as_ref())?;
                    collector.end()?;
                }
                Event::End(_) => collector.end()?,
                Event::Text(text) => {
                    let s = text
                        .unescape()
                        .map_err(|e| malformed(&format!("bad text or reference: {e}")))?;
                    collector.text(&s)?;
                }
                Event::CData(data) => {
                    let s = std::str::from_utf8(data.as_ref())
                        .map_err(|_| malformed("CDATA is not UTF-8"))?;
                    collector.cdata(s)?;
                }
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
                Event::Eof => return collector.finish(),
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &'static str) -> Result<String, MessageError> {
        self.get(name)
            .map(str::to_owned)
            .ok_or(MessageError::MissingField(name))
    }

    fn optional(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty()).map(str::to_owned)
    }

    fn required_i64(&self, name: &'static str) -> Result<i64, MessageError> {
        let v = self.get(name).ok_or(MessageError::MissingField(name))?;
        v.trim()
            .parse()
            .map_err(|_| MessageError::InvalidField(name))
    }

    fn optional_i64(&self, name: &'static str) -> Result<Option<i64>, MessageError> {
        match self.get(name).map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| MessageError::InvalidField(name)),
        }
    }
}

/// Walks the event stream: checks there is exactly one `<xml>` root and keeps
/// the text of its known direct children.
#[derive(Default)]
struct Collector {
    values: Vec<(&'static str, String)>,
    depth: usize,
    seen_root: bool,
    /// The known direct child of the root being read, if any.
    current: Option<(&'static str, Field)>,
}

impl Collector {
    fn start(&mut self, name: &[u8]) -> Result<(), MessageError> {
        match self.depth {
            0 if self.seen_root => return Err(malformed("more than one root element")),
            0 if name != b"xml" => return Err(malformed("root element is not <xml>")),
            0 => self.seen_root = true,
            1 => self.current = known_name(name).map(|n| (n, Field::default())),
            _ => {}
        }
        self.depth += 1;
        Ok(())
    }

    fn end(&mut self) -> Result<(), MessageError> {
        self.depth = self
            .depth
            .checked_sub(1)
            .ok_or_else(|| malformed("unmatched end tag"))?;
        if self.depth == 1
            && let Some((name, field)) = self.current.take()
        {
            if self.values.iter().any(|(n, _)| *n == name) {
                return Err(malformed(&format!("duplicate <{name}>")));
            }
            self.values.push((name, field.finish()));
        }
        Ok(())
    }

    fn text(&mut self, s: &str) -> Result<(), MessageError> {
        if self.depth == 0 && !s.trim().is_empty() {
            return Err(malformed("text outside the root element"));
        }
        if let Some(field) = self.field() {
            field.push_text(s);
        }
        Ok(())
    }

    fn cdata(&mut self, s: &str) -> Result<(), MessageError> {
        if self.depth == 0 {
            return Err(malformed("CDATA outside the root element"));
        }
        if let Some(field) = self.field() {
            field.push_cdata(s);
        }
        Ok(())
    }

    /// The field collecting text now: only directly inside a known child.
    fn field(&mut self) -> Option<&mut Field> {
        match self.current.as_mut() {
            Some((_, field)) if self.depth == 2 => Some(field),
            _ => None,
        }
    }

    fn finish(self) -> Result<Fields, MessageError> {
        if self.depth != 0 {
            return Err(malformed("unexpected end of document"));
        }
        if !self.seen_root {
            return Err(malformed("no root element"));
        }
        Ok(Fields {
            values: self.values,
        })
    }
}

/// Text of one element. WeChat wraps strings in CDATA and puts whitespace
/// around it, so whitespace-only text is dropped once a CDATA section is seen;
/// plain text (numbers, or a body written without CDATA) is kept as is.
#[derive(Default)]
struct Field {
    text: String,
    /// Whitespace-only text not yet known to be content.
    pending_space: String,
    saw_cdata: bool,
}

impl Field {
    fn push_text(&mut self, s: &str) {
        if s.trim().is_empty() {
            if !self.saw_cdata {
                self.pending_space.push_str(s);
            }
        } else {
            self.text.push_str(&std::mem::take(&mut self.pending_space));
            self.text.push_str(s);
        }
    }

    fn push_cdata(&mut self, s: &str) {
        self.pending_space.clear();
        self.text.push_str(s);
        self.saw_cdata = true;
    }

    fn finish(mut self) -> String {
        if !self.saw_cdata {
            self.text.push_str(&self.pending_space);
        }
        self.text
    }
}

fn known_name(name: &[u8]) -> Option<&'static str> {
    KNOWN.iter().copied().find(|k| k.as_bytes() == name)
}

/// A short reason, capped so hostile input cannot make errors (or logs) large.
fn malformed(reason: &str) -> MessageError {
    const MAX: usize = 120;
    let mut s: String = reason.chars().take(MAX).collect();
    if reason.chars().nth(MAX).is_some() {
        s.push('…');
    }
    MessageError::Malformed(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn real_looking_text_message() {
        let xml = b"<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName>\n\
<FromUserName><![CDATA[oia2TjuEGTNoeX76QEjQNrcURxG8]]></FromUserName>\n\
<CreateTime>1395658920</CreateTime>\n\
<MsgType><![CDATA[text]]></MsgType>\n\
<Content><![CDATA[\xe4\xbd\xa0\xe5\xa5\xbd]]></Content>\n\
<MsgId>6000000000000000000</MsgId>\n\
<MsgDataId>xxxx</MsgDataId>\n\
<Idx>0</Idx>\n\
</xml>";
        let m = parse(xml).unwrap();
        assert_eq!(m.to_user, "gh_7f083739789a");
        assert_eq!(m.from_user, "oia2TjuEGTNoeX76QEjQNrcURxG8");
        assert_eq!(m.create_time, 1395658920);
        assert_eq!(
            m.kind,
            IncomingKind::Text {
                content: "你好".into(),
                msg_id: 6000000000000000000
            }
        );
        assert_eq!(m.dedup_key(), "msg:6000000000000000000");
    }

    #[test]
    fn voice_with_recognition() {
        let xml = r#"<xml><ToUserName><![CDATA[to]]></ToUserName><FromUserName><![CDATA[from]]></FromUserName><CreateTime>1357290913</CreateTime><MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[media_id]]></MediaId><Format><![CDATA[amr]]></Format><Recognition><![CDATA[腾讯微信团队]]></Recognition><MsgId>1234567890123456</MsgId></xml>"#.as_bytes();
        let m = parse(xml).unwrap();
        assert_eq!(
            m.kind,
            IncomingKind::Voice {
                media_id: "media_id".into(),
                format: Some("amr".into()),
                recognition: Some("腾讯微信团队".into()),
                msg_id: 1234567890123456
            }
        );
    }

    #[test]
    fn voice_without_recognition() {
        let xml = br#"<xml><ToUserName><![CDATA[to]]></ToUserName><FromUserName><![CDATA[from]]></FromUserName><CreateTime>1357290913</CreateTime><MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[media_id]]></MediaId><Format><![CDATA[amr]]></Format><MsgId>1234567890123456</MsgId></xml>"#;
        let m = parse(xml).unwrap();
        assert_eq!(
            m.kind,
            IncomingKind::Voice {
                media_id: "media_id".into(),
                format: Some("amr".into()),
                recognition: None,
                msg_id: 1234567890123456
            }
        );
        // Recognition enabled but empty is also None.
        let empty = String::from_utf8(xml.to_vec())
            .unwrap()
            .replace("<MsgId>", "<Recognition><![CDATA[]]></Recognition><MsgId>");
        match parse(empty.as_bytes()).unwrap().kind {
            IncomingKind::Voice { recognition, .. } => assert_eq!(recognition, None),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn image() {
        let xml = br#"<xml><ToUserName><![CDATA[to]]></ToUserName><FromUserName><![CDATA[from]]></FromUserName><CreateTime>1348831860</CreateTime><MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://mmbiz.qpic.cn/x?a=1&b=2]]></PicUrl><MediaId><![CDATA[media_id]]></MediaId><MsgId>1234567890123456</MsgId></xml>"#;
        let m = parse(xml).unwrap();
        assert_eq!(
            m.kind,
            IncomingKind::Image {
                pic_url: Some("http://mmbiz.qpic.cn/x?a=1&b=2".into()),
                media_id: Some("media_id".into()),
                msg_id: 1234567890123456
            }
        );
    }

    #[test]
    fn subscribe_event_with_event_key() {
        let xml = br#"<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[FromUser]]></FromUserName><CreateTime>123456789</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_123123]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket></xml>"#;
        let m = parse(xml).unwrap();
        assert_eq!(
            m.kind,
            IncomingKind::Event {
                event: "subscribe".into(),
                event_key: Some("qrscene_123123".into())
            }
        );
        assert_eq!(m.dedup_key(), "evt:FromUser:123456789:subscribe");
    }

    #[test]
    fn unsubscribe_with_empty_event_key() {
        let xml = br#"<xml><ToUserName><![CDATA[to]]></ToUserName><FromUserName><![CDATA[u]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[unsubscribe]]></Event><EventKey><![CDATA[]]></EventKey></xml>"#;
        let m = parse(xml).unwrap();
        assert_eq!(
            m.kind,
            IncomingKind::Event {
                event: "unsubscribe".into(),
                event_key: None
            }
        );
    }

    #[test]
    fn other_type_with_and_without_msg_id() {
        let xml = br#"<xml><ToUserName><![CDATA[to]]></ToUserName><FromUserName><![CDATA[u]]></FromUserName><CreateTime>5</CreateTime><MsgType><![CDATA[location]]></MsgType><Location_X>23.1</Location_X><MsgId>42</MsgId></xml>"#;
        let m = parse(xml).unwrap();
        assert_eq!(
            m.kind,
            IncomingKind::Other {
                msg_type: "location".into(),
                msg_id: Some(42)
            }
        );
        assert_eq!(m.dedup_key(), "msg:42");
        let xml = br#"<xml><ToUserName>to</ToUserName><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>mystery</MsgType></xml>"#;
        assert_eq!(parse(xml).unwrap().dedup_key(), "evt:u:5:mystery");
    }

    #[test]
    fn unknown_and_nested_elements_ignored() {
        let xml = br#"<xml><Foo attr="1"><Content>not this</Content><MsgId>9</MsgId></Foo><Bar/><ToUserName><![CDATA[to]]></ToUserName><FromUserName><![CDATA[u]]></FromUserName><CreateTime>7</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content><!-- a comment --><MsgId>1</MsgId></xml>"#;
        let m = parse(xml).unwrap();
        assert_eq!(
            m.kind,
            IncomingKind::Text {
                content: "hi".into(),
                msg_id: 1
            }
        );
    }

    #[test]
    fn doctype_and_entities_refused() {
        let xxe = br#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><ToUserName>&xxe;</ToUserName></xml>"#;
        assert_eq!(parse(xxe), Err(MessageError::Forbidden));
        assert_eq!(parse_encrypted_envelope(xxe), Err(MessageError::Forbidden));
        let lower = b"<!doctype xml><xml></xml>";
        assert_eq!(parse(lower), Err(MessageError::Forbidden));
        let bare_entity = b"<xml><!ENTITY a \"b\"></xml>";
        assert_eq!(parse(bare_entity), Err(MessageError::Forbidden));
        let billion =
            br#"<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><xml>&lol2;</xml>"#;
        assert_eq!(parse(billion), Err(MessageError::Forbidden));
    }

    #[test]
    fn doctype_text_inside_cdata_is_content() {
        let xml = text_message_xml("to", "u", 1, "<!DOCTYPE html><!ENTITY x>", 3);
        match parse(xml.as_bytes()).unwrap().kind {
            IncomingKind::Text { content, .. } => {
                assert_eq!(content, "<!DOCTYPE html><!ENTITY x>")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn undeclared_entity_is_malformed() {
        let xml = b"<xml><ToUserName>&foo;</ToUserName></xml>";
        assert!(matches!(parse(xml), Err(MessageError::Malformed(_))));
    }

    #[test]
    fn character_references_are_decoded() {
        let xml = b"<xml><ToUserName>a&amp;b&lt;&#20013;&#x6587;</ToUserName><FromUserName>u</FromUserName><CreateTime> 12 </CreateTime><MsgType>text</MsgType><Content>x &gt; y</Content><MsgId>5</MsgId></xml>";
        let m = parse(xml).unwrap();
        assert_eq!(m.to_user, "a&b<中文");
        assert_eq!(m.create_time, 12);
        assert_eq!(
            m.kind,
            IncomingKind::Text {
                content: "x > y".into(),
                msg_id: 5
            }
        );
    }

    #[test]
    fn missing_fields_are_named() {
        let no_msg_id = br#"<xml><ToUserName>to</ToUserName><FromUserName>u</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>hi</Content></xml>"#;
        assert_eq!(parse(no_msg_id), Err(MessageError::MissingField("MsgId")));
        let no_from = br#"<xml><ToUserName>to</ToUserName><CreateTime>1</CreateTime><MsgType>text</MsgType></xml>"#;
        assert_eq!(
            parse(no_from),
            Err(MessageError::MissingField("FromUserName"))
        );
        let no_event = br#"<xml><ToUserName>to</ToUserName><FromUserName>u</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType></xml>"#;
        assert_eq!(parse(no_event), Err(MessageError::MissingField("Event")));
        assert_eq!(
            parse_encrypted_envelope(b"<xml><ToUserName>to</ToUserName></xml>"),
            Err(MessageError::MissingField("Encrypt"))
        );
    }

    #[test]
    fn invalid_numbers_are_named() {
        let xml = br#"<xml><ToUserName>to</ToUserName><FromUserName>u</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>hi</Content><MsgId>99999999999999999999</MsgId></xml>"#;
        assert_eq!(parse(xml), Err(MessageError::InvalidField("MsgId")));
        let xml = br#"<xml><ToUserName>to</ToUserName><FromUserName>u</FromUserName><CreateTime>soon</CreateTime><MsgType>event</MsgType><Event>x</Event></xml>"#;
        assert_eq!(parse(xml), Err(MessageError::InvalidField("CreateTime")));
    }

    #[test]
    fn malformed_xml() {
        for bad in [
            &b""[..],
            b"   ",
            b"not xml at all",
            b"<xml><ToUserName>to</FromUserName></xml>",
            b"<xml><ToUserName>to",
            b"<xml><Content><![CDATA[unterminated</Content></xml>",
            b"<root><ToUserName>to</ToUserName></root>",
            b"<xml></xml><xml></xml>",
            b"<xml><ToUserName>a</ToUserName><ToUserName>b</ToUserName></xml>",
            b"<xml><ToUserName>\xff\xfe</ToUserName></xml>",
            b"</xml>",
        ] {
            assert!(
                matches!(parse(bad), Err(MessageError::Malformed(_))),
                "{:?} -> {:?}",
                String::from_utf8_lossy(bad),
                parse(bad)
            );
        }
    }

    #[test]
    fn too_large_refused() {
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(parse(&big), Err(MessageError::TooLarge(MAX_BODY_BYTES + 1)));
    }

    #[test]
    fn cdata_special_characters_and_chinese_round_trip() {
        for content in [
            "你好，世界！这是一条测试消息。",
            "a]]>b",
            "]]>",
            "]]]]>>]]>",
            "<tag attr=\"x\">&amp; &lt; 'quotes' </tag>",
            "line1\nline2\r\n\ttabbed  ",
            "emoji 😀 and ]] and > and ]>",
            "",
            "   ",
        ] {
            let xml = text_message_xml("gh_abc", "openid_1", 1700000000, content, 7);
            let m = parse(xml.as_bytes()).unwrap();
            assert_eq!(m.to_user, "gh_abc");
            assert_eq!(m.from_user, "openid_1");
            assert_eq!(m.create_time, 1700000000);
            assert_eq!(
                m.kind,
                IncomingKind::Text {
                    content: content.into(),
                    msg_id: 7
                },
                "{content:?}"
            );
        }
    }

    #[test]
    fn text_message_xml_matches_wechat_format() {
        assert_eq!(
            text_message_xml(
                "toUser",
                "fromUser",
                1348831860,
                "this is a test",
                1234567890123456
            ),
            "<xml><ToUserName><![CDATA[toUser]]></ToUserName>\n\
             <FromUserName><![CDATA[fromUser]]></FromUserName>\n\
             <CreateTime>1348831860</CreateTime>\n\
             <MsgType><![CDATA[text]]></MsgType>\n\
             <Content><![CDATA[this is a test]]></Content>\n\
             <MsgId>1234567890123456</MsgId>\n\
             </xml>"
        );
    }

    #[test]
    fn passive_reply_format_and_round_trip() {
        let xml = passive_text_reply("oUser", "gh_acct", 12345678, "你好 ]]> end");
        assert_eq!(
            xml,
            "<xml><ToUserName><![CDATA[oUser]]></ToUserName><FromUserName><![CDATA[gh_acct]]></FromUserName>\
             <CreateTime>12345678</CreateTime><MsgType><![CDATA[text]]></MsgType>\
             <Content><![CDATA[你好 ]]]]><![CDATA[> end]]></Content></xml>"
        );
        let fields = Fields::read(xml.as_bytes()).unwrap();
        assert_eq!(fields.get("Content"), Some("你好 ]]> end"));
        assert_eq!(fields.get("MsgType"), Some("text"));
    }

    #[test]
    fn encrypted_reply_format_and_envelope() {
        let xml = encrypted_reply("ENC+/=", "sig", "1409304348", "xxxxxx");
        assert_eq!(
            xml,
            "<xml><Encrypt><![CDATA[ENC+/=]]></Encrypt><MsgSignature><![CDATA[sig]]></MsgSignature>\
             <TimeStamp>1409304348</TimeStamp><Nonce><![CDATA[xxxxxx]]></Nonce></xml>"
        );
        let env = parse_encrypted_envelope(xml.as_bytes()).unwrap();
        assert_eq!(env.encrypt, "ENC+/=");
        assert_eq!(env.to_user, None);
        assert!(
            encrypted_reply("e", "s", "1<2&", "n").contains("<TimeStamp>1&lt;2&amp;</TimeStamp>")
        );
    }

    #[test]
    fn safe_mode_envelope() {
        let xml = b"<xml>\n<ToUserName><![CDATA[gh_b1eb3f8bd6c6]]></ToUserName>\n<Encrypt><![CDATA[DlCGq+lWQuyjNNK+vDaO0zUltpdUW3u4V00WCzsdNzmZGEhrU7TPxG52viOKCWYPwTMbCzgbCtakZHyNxr5hjoZJ7ORAUYoIAGQy/LDWtAnYgDO+ppKLp0rDq+67Dv3yt+vatMQTh99NII6x9SEGpY3O2h8RpG99+NYevQiOLVKqiQYzan21sX/jE4Q3wZaVudsptWbd8eaB1GmTWTyIPTtDi/f7WvnqmyYCUdK+Qtr5zFzatiA9RFzoDkVwFH1wXd0cCA3WVFVfENY/Bx9LV+dAVRbNWi+JaQSZBHkJ4mRfRvH8Dg7d6y8eY7xJVvcs3NEbMu4aysvOdt70WbNq0UY/GhcPmMKqYi0wjdFbvdcgU7m0vGHTpgX0ZoYIASo+T9BoWVi1UEXTAuVk/PqzpNs6gNLSXyX9R9S7s0O6nKw=]]></Encrypt>\n</xml>";
        let env = parse_encrypted_envelope(xml).unwrap();
        assert_eq!(env.to_user.as_deref(), Some("gh_b1eb3f8bd6c6"));
        assert!(env.encrypt.starts_with("DlCGq+lW"));
        assert!(env.encrypt.ends_with("nKw="));
    }

    #[test]
    fn control_characters_dropped_from_output() {
        let xml = text_message_xml("to", "u", 1, "a\u{0}b\u{1b}c\u{FFFF}d", 1);
        match parse(xml.as_bytes()).unwrap().kind {
            IncomingKind::Text { content, .. } => assert_eq!(content, "abcd"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn malformed_reason_is_bounded() {
        let long = "x".repeat(10_000);
        match malformed(&long) {
            MessageError::Malformed(s) => assert!(s.chars().count() <= 121),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn valid_content() -> impl Strategy<Value = String> {
        any::<String>().prop_map(|s| s.chars().filter(|&c| is_xml_char(c)).collect())
    }

    proptest! {
        #[test]
        fn parse_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
            let _ = parse_encrypted_envelope(&bytes);
        }

        #[test]
        fn parse_arbitrary_xmlish_never_panics(s in r"(<|>|/|!|\[|\]|CDATA|DOCTYPE|ENTITY|xml|MsgId|Content|MsgType|text|&|;|#|[0-9]| |[a-z]|中)*") {
            let _ = parse(s.as_bytes());
            let _ = parse_encrypted_envelope(s.as_bytes());
        }

        #[test]
        fn mutated_message_never_panics(content in "[a-z中<>&\\]]{0,20}", pos in any::<usize>(), byte in any::<u8>()) {
            let mut xml = text_message_xml("to", "u", 1, &content, 2).into_bytes();
            let i = pos % xml.len();
            xml[i] = byte;
            let _ = parse(&xml);
        }

        #[test]
        fn text_round_trip(content in valid_content(), to in "[a-zA-Z0-9_]{1,30}", from in valid_content(),
                           time in any::<i64>(), id in any::<i64>()) {
            let xml = text_message_xml(&to, &from, time, &content, id);
            let m = parse(xml.as_bytes()).unwrap();
            prop_assert_eq!(m.to_user, to);
            prop_assert_eq!(m.from_user, from);
            prop_assert_eq!(m.create_time, time);
            prop_assert_eq!(m.kind, IncomingKind::Text { content, msg_id: id });
        }
    }
}
