//! WeChat request signatures.
//!
//! Every push (and the URL-verification GET) carries `signature`, and in
//! safe/compatible mode also `msg_signature`. Both are the lowercase hex SHA-1
//! of their parts sorted lexicographically and concatenated:
//! `[token, timestamp, nonce]` for `signature`, `[token, timestamp, nonce,
//! Encrypt]` for `msg_signature`. This module computes them and checks them in
//! constant time, so a forged request cannot learn the expected value byte by
//! byte from response timing.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// Lowercase hex SHA-1 of `parts`, sorted lexicographically (byte order) and
/// concatenated without separator.
pub fn sign(parts: &[&str]) -> String {
    let mut sorted: Vec<&str> = parts.to_vec();
    sorted.sort_unstable();
    let mut hasher = Sha1::new();
    for part in sorted {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Whether `provided` equals [`sign`]`(parts)`, compared in constant time.
///
/// The comparison is exact: WeChat sends lowercase hex, anything else fails.
pub fn verify(provided: &str, parts: &[&str]) -> bool {
    let expected = sign(parts);
    expected.as_bytes().ct_eq(provided.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_example_one() {
        let parts = ["AAAAA", "1714036504", "1514711492"];
        assert_eq!(sign(&parts), "f464b24fc39322e44b38aa78f5edd27bd1441696");
        assert!(verify("f464b24fc39322e44b38aa78f5edd27bd1441696", &parts));
    }

    #[test]
    fn official_example_two() {
        let parts = ["AAAAA", "1714037059", "486452656"];
        assert_eq!(sign(&parts), "899cf89e464efb63f54ddac96b0a0a235f53aa78");
        assert!(verify("899cf89e464efb63f54ddac96b0a0a235f53aa78", &parts));
    }

    #[test]
    fn order_of_parts_does_not_matter() {
        assert_eq!(
            sign(&["1514711492", "AAAAA", "1714036504"]),
            sign(&["AAAAA", "1714036504", "1514711492"])
        );
    }

    #[test]
    fn rejects_wrong_truncated_uppercase_and_empty() {
        let parts = ["AAAAA", "1714036504", "1514711492"];
        assert!(!verify("f464b24fc39322e44b38aa78f5edd27bd1441697", &parts));
        assert!(!verify("f464b24fc39322e44b38aa78f5edd27bd144169", &parts));
        assert!(!verify("F464B24FC39322E44B38AA78F5EDD27BD1441696", &parts));
        assert!(!verify("", &parts));
        // a different nonce gives a different signature
        assert!(!verify(
            "f464b24fc39322e44b38aa78f5edd27bd1441696",
            &["AAAAA", "1714036504", "1514711493"]
        ));
    }

    #[test]
    fn msg_signature_includes_encrypt() {
        let plain = sign(&["tok", "1", "n"]);
        let with_encrypt = sign(&["tok", "1", "n", "ciphertext"]);
        assert_ne!(plain, with_encrypt);
        assert!(verify(&with_encrypt, &["tok", "1", "n", "ciphertext"]));
    }
}
