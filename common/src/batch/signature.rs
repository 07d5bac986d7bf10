//! The signature on a batch's completion webhook, so its receiver can tell
//! Ferry's POST from a forgery and refuse an old one replayed.
//!
//! `Ferry-Signature: v1=<hex HMAC-SHA256(FERRY_WEBHOOK_SECRET, "<timestamp>.<body>")>`
//! with the timestamp (unix seconds) in `Ferry-Timestamp`: signing the time
//! with the body lets the receiver refuse a replay outside its window (the
//! scheme Stripe and others use).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the unix time the request was signed at.
pub const TIMESTAMP_HEADER: &str = "Ferry-Timestamp";
/// The header carrying `v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "Ferry-Signature";
/// The header naming the delivery (the webhook job's id): the same on every
/// retry, so a receiver can drop duplicates.
pub const DELIVERY_HEADER: &str = "Ferry-Webhook-Id";

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Ferry-Signature` value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Whether `header` is a valid signature of `body` at `timestamp`
/// (compared in constant time).
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(given) = header.strip_prefix("v1=").and_then(|h| hex::decode(h).ok()) else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_body_time_and_key() {
        let sig = sign(b"key-key-key-key!", 1_700_000_000, b"{\"a\":1}");
        assert!(verify(
            b"key-key-key-key!",
            1_700_000_000,
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify(
            b"key-key-key-key!",
            1_700_000_001,
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify(
            b"key-key-key-key!",
            1_700_000_000,
            b"{\"a\":2}",
            &sig
        ));
        assert!(!verify(
            b"other-key-other!",
            1_700_000_000,
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify(
            b"key-key-key-key!",
            1_700_000_000,
            b"{\"a\":1}",
            "v1=zz"
        ));
    }
}
