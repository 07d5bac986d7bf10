//! Is this request from WeChat, fresh, and readable?
//!
//! - `signature` (sha1 over token, timestamp, nonce) proves the request
//!   comes from someone who knows the token; compared in constant time.
//! - `timestamp` must be within `FERRY_WECHAT_MAX_SKEW` of now, so a signed
//!   request captured once cannot be replayed later. (Within the window a
//!   replayed message is still caught by its dedup key.)
//! - In compatible and safe mode, `msg_signature` (over the `Encrypt` value
//!   too) is checked before decrypting: the scheme has no MAC, and a
//!   decryptor that answered unsigned ciphertexts would be a padding oracle.
//!
//! Forged signatures, replays and XML with declarations are security events
//! ([`crate::security`]); a missing or malformed field is a plain 400 that
//! names it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_common::wechat::{self, Incoming, MessageError};

use super::credentials::WeChatCredentials;
use crate::error::ApiError;
use crate::security::{SecurityCounters, SecurityEvent};

/// The query WeChat sends with every request, as received.
#[derive(Debug, Default)]
pub struct SignedQuery {
    signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    echostr: Option<String>,
    encrypt_type: Option<String>,
    msg_signature: Option<String>,
}

/// A request whose `signature` checked out.
pub struct Signed {
    /// The credentials it was signed with: its encrypted body is opened,
    /// and a passive reply signed, with the same ones.
    pub credentials: Arc<WeChatCredentials>,
    pub timestamp: String,
    pub nonce: String,
    /// `encrypt_type=aes`: compatible or safe mode.
    pub encrypted: bool,
    pub msg_signature: Option<String>,
    pub echostr: Option<String>,
}

/// Who is asking, and where refusals that look like attacks are reported.
pub struct Caller<'a> {
    pub security: &'a SecurityCounters,
    pub ip: Option<IpAddr>,
}

impl Caller<'_> {
    fn refuse(&self, event: SecurityEvent, reason: &str) {
        self.security.report(event, self.ip, reason);
    }
}

fn required(value: Option<String>, name: &str) -> Result<String, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("missing query parameter {name}")))
}

impl SignedQuery {
    /// Reads the parameters WeChat sends from a query string (percent-
    /// decoded; others ignored; of a repeated one the first counts).
    pub fn parse(query: Option<&str>) -> Self {
        let mut q = Self::default();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match &*name {
                "signature" => &mut q.signature,
                "timestamp" => &mut q.timestamp,
                "nonce" => &mut q.nonce,
                "echostr" => &mut q.echostr,
                "encrypt_type" => &mut q.encrypt_type,
                "msg_signature" => &mut q.msg_signature,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        q
    }

    /// Checks `signature` over the token, `timestamp` and `nonce`, with
    /// each of `candidates` in turn (current credentials first; the
    /// previous ones during a rotation).
    pub fn verify(
        self,
        candidates: &[Arc<WeChatCredentials>],
        caller: &Caller<'_>,
    ) -> Result<Signed, ApiError> {
        let signature = required(self.signature, "signature")?;
        let timestamp = required(self.timestamp, "timestamp")?;
        let nonce = required(self.nonce, "nonce")?;
        let Some(credentials) = candidates
            .iter()
            .find(|c| wechat::verify(&signature, &[c.token.expose(), &timestamp, &nonce]))
        else {
            caller.refuse(SecurityEvent::BadSignature, "signature does not match");
            return Err(ApiError::BadSignature);
        };
        Ok(Signed {
            credentials: Arc::clone(credentials),
            timestamp,
            nonce,
            encrypted: self
                .encrypt_type
                .is_some_and(|t| t.eq_ignore_ascii_case("aes")),
            msg_signature: self.msg_signature,
            echostr: self.echostr,
        })
    }
}

/// Refuses a signed request whose `timestamp` is more than `max_skew` away
/// from `now` (unix seconds), in either direction.
pub fn check_fresh(
    signed: &Signed,
    now: i64,
    max_skew: Duration,
    caller: &Caller<'_>,
) -> Result<(), ApiError> {
    let timestamp: i64 = signed
        .timestamp
        .trim()
        .parse()
        .map_err(|_| ApiError::BadRequest("timestamp is not a number of seconds".into()))?;
    let skew = now.abs_diff(timestamp);
    if skew > max_skew.as_secs() {
        caller.refuse(
            SecurityEvent::Replay,
            &format!(
                "signed request with a timestamp {skew} s from now (window {} s): a replay, or a clock far off",
                max_skew.as_secs()
            ),
        );
        return Err(ApiError::StaleTimestamp);
    }
    Ok(())
}

/// The message in `body`: plaintext, or decrypted from `<Encrypt>` after
/// checking `msg_signature`.
pub fn open(signed: &Signed, body: &[u8], caller: &Caller<'_>) -> Result<Incoming, ApiError> {
    if !signed.encrypted {
        return wechat::parse(body).map_err(|e| refused_body(e, caller));
    }
    let Some(crypt) = &signed.credentials.crypt else {
        // Compatible mode also carries the plaintext fields; safe mode
        // cannot be read without the key.
        return wechat::parse(body).map_err(|e| match e {
            MessageError::Forbidden => refused_body(e, caller),
            _ => ApiError::BadRequest(
                "encrypted message, but WECHAT_ENCODING_AES_KEY is not configured".into(),
            ),
        });
    };
    let envelope = wechat::parse_encrypted_envelope(body).map_err(|e| refused_body(e, caller))?;
    let msg_signature = required(signed.msg_signature.clone(), "msg_signature")?;
    if !wechat::verify(
        &msg_signature,
        &[
            signed.credentials.token.expose(),
            &signed.timestamp,
            &signed.nonce,
            &envelope.encrypt,
        ],
    ) {
        caller.refuse(SecurityEvent::BadSignature, "msg_signature does not match");
        return Err(ApiError::BadSignature);
    }
    let xml = crypt
        .decrypt(&envelope.encrypt)
        .map_err(|e| ApiError::BadRequest(format!("cannot decrypt: {e}")))?;
    wechat::parse(xml.as_bytes()).map_err(|e| refused_body(e, caller))
}

fn refused_body(e: MessageError, caller: &Caller<'_>) -> ApiError {
    if let MessageError::TooLarge(_) = e {
        return ApiError::TooLarge;
    }
    if e == MessageError::Forbidden {
        caller.refuse(
            SecurityEvent::ForbiddenXml,
            "signed body with a DOCTYPE or entity declaration",
        );
    }
    ApiError::BadRequest(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_common::Secret;

    const TOKEN: &str = "tok";

    fn signed_query(ts: &str) -> SignedQuery {
        SignedQuery {
            signature: Some(wechat::sign(&[TOKEN, ts, "n1"])),
            timestamp: Some(ts.into()),
            nonce: Some("n1".into()),
            ..SignedQuery::default()
        }
    }

    fn caller(security: &SecurityCounters) -> Caller<'_> {
        Caller { security, ip: None }
    }

    fn creds(token: &str) -> Vec<Arc<WeChatCredentials>> {
        vec![Arc::new(WeChatCredentials {
            token: Secret::new(token),
            crypt: None,
        })]
    }

    #[test]
    fn a_correct_signature_passes_and_a_wrong_one_is_a_security_event() {
        let security = SecurityCounters::default();
        assert!(
            signed_query("100")
                .verify(&creds(TOKEN), &caller(&security))
                .is_ok()
        );
        let forged = signed_query("100").verify(&creds("guess"), &caller(&security));
        assert!(matches!(forged, Err(ApiError::BadSignature)));
        assert_eq!(security.counts().bad_signature, 1);
    }

    #[test]
    fn during_a_rotation_either_token_verifies_and_the_match_is_kept() {
        let security = SecurityCounters::default();
        let mut both = creds("new");
        both.extend(creds(TOKEN));
        let signed = signed_query("100")
            .verify(&both, &caller(&security))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(signed.credentials.token.expose(), TOKEN);
        assert!(
            signed_query("100")
                .verify(&creds("new"), &caller(&security))
                .is_err()
        );
    }

    #[test]
    fn the_query_is_percent_decoded_and_unknown_parameters_ignored() {
        let q = SignedQuery::parse(Some(
            "signature=abc&timestamp=1&nonce=n%20o&openid=o1&echostr=a%2Bb&signature=second",
        ));
        assert_eq!(q.signature.as_deref(), Some("abc"));
        assert_eq!(q.nonce.as_deref(), Some("n o"));
        assert_eq!(q.echostr.as_deref(), Some("a+b"));
        assert_eq!(q.encrypt_type, None);
        assert!(SignedQuery::parse(None).signature.is_none());
    }

    #[test]
    fn a_missing_parameter_is_named() {
        let security = SecurityCounters::default();
        let mut q = signed_query("100");
        q.nonce = None;
        match q.verify(&creds(TOKEN), &caller(&security)) {
            Err(ApiError::BadRequest(reason)) => {
                assert_eq!(reason, "missing query parameter nonce")
            }
            Err(other) => panic!("unexpected {other:?}"),
            Ok(_) => panic!("verified without a nonce"),
        }
        assert_eq!(security.counts().bad_signature, 0);
    }

    #[test]
    fn timestamps_outside_the_window_are_replays_either_way() {
        let security = SecurityCounters::default();
        let c = caller(&security);
        let window = Duration::from_secs(300);
        let at = |ts: &str| {
            signed_query(ts)
                .verify(&creds(TOKEN), &c)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(check_fresh(&at("1000"), 1300, window, &c).is_ok());
        assert!(check_fresh(&at("1000"), 700, window, &c).is_ok());
        assert!(matches!(
            check_fresh(&at("1000"), 1301, window, &c),
            Err(ApiError::StaleTimestamp)
        ));
        assert!(matches!(
            check_fresh(&at("1000"), 699, window, &c),
            Err(ApiError::StaleTimestamp)
        ));
        assert!(matches!(
            check_fresh(&at("soon"), 1000, window, &c),
            Err(ApiError::BadRequest(_))
        ));
        assert_eq!(security.counts().replay, 2);
    }
}
