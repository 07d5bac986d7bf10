//! WeChat message encryption (safe mode 安全模式 and compatible mode 兼容模式).
//!
//! In these modes WeChat sends the message inside `<Encrypt>` and expects
//! encrypted replies. The scheme is AES-256-CBC with the key from the account's
//! 43-character `EncodingAESKey`, IV = first 16 bytes of the key, PKCS#7
//! padding to a multiple of **32** bytes, and a plaintext of
//! `16 random bytes + u32 big-endian length + message + appid`.
//!
//! There is no MAC in this scheme: always check `msg_signature`
//! ([`crate::wechat::signature::verify`]) *before* calling
//! [`MessageCrypt::decrypt`], otherwise the distinct errors below could act as
//! a padding oracle.

use std::fmt;

use aes::Aes256;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use cbc::cipher::generic_array::GenericArray;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};

type Encryptor = cbc::Encryptor<Aes256>;
type Decryptor = cbc::Decryptor<Aes256>;

/// WeChat pads to a multiple of 32 bytes, not the AES block size.
const PAD_BLOCK: usize = 32;
const AES_BLOCK: usize = 16;
const RANDOM_LEN: usize = 16;
const LEN_FIELD: usize = 4;
const HEADER_LEN: usize = RANDOM_LEN + LEN_FIELD;

/// Lenient decoder for `EncodingAESKey`: real keys have non-zero trailing bits.
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Why a key could not be loaded or a message could not be encrypted or
/// decrypted. No variant ever contains key material or message content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The `EncodingAESKey` is unusable (the reason never includes the key).
    #[error("invalid EncodingAESKey: {0}")]
    InvalidKey(&'static str),
    /// `<Encrypt>` is not valid standard base64.
    #[error("ciphertext is not valid base64")]
    InvalidBase64,
    /// The ciphertext is empty or not a whole number of 32-byte blocks.
    #[error("ciphertext length {0} is not a non-zero multiple of 32 bytes")]
    InvalidCiphertextLength(usize),
    /// The PKCS#7 padding (1..=32) is missing or inconsistent.
    #[error("invalid padding")]
    InvalidPadding,
    /// The length field points outside the decrypted plaintext.
    #[error("message length field out of bounds")]
    LengthOutOfBounds,
    /// The decrypted message is not UTF-8.
    #[error("decrypted message is not valid UTF-8")]
    InvalidUtf8,
    /// The appid at the end of the plaintext is not ours.
    #[error("appid in the message does not match this account")]
    AppIdMismatch,
    /// The message is longer than the 4-byte length field can describe.
    #[error("message too long to encrypt ({0} bytes)")]
    MessageTooLong(usize),
}

/// Encrypts and decrypts WeChat messages for one account.
///
/// `Debug` is implemented by hand so the key never appears in logs.
#[derive(Clone)]
pub struct MessageCrypt {
    key: [u8; 32],
    app_id: String,
}

/// Same key (compared in constant time) and same appid: a reload that
/// changed neither keeps the running instance.
impl PartialEq for MessageCrypt {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.key.ct_eq(&other.key)) && self.app_id == other.app_id
    }
}

impl fmt::Debug for MessageCrypt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageCrypt")
            .field("key", &"<redacted>")
            .field("app_id", &self.app_id)
            .finish()
    }
}

impl MessageCrypt {
    /// Builds from the account's 43-character `EncodingAESKey` and its appid.
    ///
    /// The key is `base64_decode(encoding_aes_key + "=")` and must be exactly
    /// 32 bytes. Non-zero trailing bits are accepted, as WeChat generates them.
    pub fn new(encoding_aes_key: &str, app_id: &str) -> Result<Self, CryptoError> {
        if encoding_aes_key.len() != 43 {
            return Err(CryptoError::InvalidKey(
                "EncodingAESKey must be exactly 43 characters",
            ));
        }
        let mut padded = String::with_capacity(44);
        padded.push_str(encoding_aes_key);
        padded.push('=');
        // The base64 error names the offending character: do not propagate it.
        let decoded = KEY_ENGINE
            .decode(padded.as_bytes())
            .map_err(|_| CryptoError::InvalidKey("EncodingAESKey is not valid base64"))?;
        let key: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::InvalidKey("EncodingAESKey must decode to 32 bytes"))?;
        Ok(Self {
            key,
            app_id: app_id.to_owned(),
        })
    }

    /// The appid this instance encrypts for and accepts.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Encrypts `msg` with 16 fresh random bytes; returns the base64 `Encrypt`.
    ///
    /// Fails only for messages longer than `u32::MAX` bytes.
    pub fn encrypt(&self, msg: &str) -> Result<String, CryptoError> {
        let random: [u8; RANDOM_LEN] = rand::random();
        self.encrypt_with_random(msg, &random)
    }

    /// Like [`Self::encrypt`] with caller-chosen random bytes (for test vectors).
    pub fn encrypt_with_random(
        &self,
        msg: &str,
        random: &[u8; RANDOM_LEN],
    ) -> Result<String, CryptoError> {
        let len = u32::try_from(msg.len()).map_err(|_| CryptoError::MessageTooLong(msg.len()))?;
        let mut plain = Vec::with_capacity(HEADER_LEN + msg.len() + self.app_id.len() + PAD_BLOCK);
        plain.extend_from_slice(random);
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(msg.as_bytes());
        plain.extend_from_slice(self.app_id.as_bytes());
        Ok(self.encrypt_plaintext(plain))
    }

    /// Decrypts a base64 `Encrypt` value and returns the message, after
    /// checking padding, the length field and the appid.
    pub fn decrypt(&self, encrypt_b64: &str) -> Result<String, CryptoError> {
        let mut buf = STANDARD
            .decode(encrypt_b64.trim().as_bytes())
            .map_err(|_| CryptoError::InvalidBase64)?;
        if buf.is_empty() || buf.len() % PAD_BLOCK != 0 {
            return Err(CryptoError::InvalidCiphertextLength(buf.len()));
        }
        let mut dec = Decryptor::new(&self.key.into(), &self.iv().into());
        for block in buf.chunks_exact_mut(AES_BLOCK) {
            dec.decrypt_block_mut(GenericArray::from_mut_slice(block));
        }
        let plain = unpad(&buf)?;

        let len_bytes: [u8; LEN_FIELD] = plain
            .get(RANDOM_LEN..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(CryptoError::LengthOutOfBounds)?;
        let msg_len = usize::try_from(u32::from_be_bytes(len_bytes))
            .map_err(|_| CryptoError::LengthOutOfBounds)?;
        let msg_end = HEADER_LEN
            .checked_add(msg_len)
            .ok_or(CryptoError::LengthOutOfBounds)?;
        let msg = plain
            .get(HEADER_LEN..msg_end)
            .ok_or(CryptoError::LengthOutOfBounds)?;
        let app_id = plain.get(msg_end..).ok_or(CryptoError::LengthOutOfBounds)?;
        if app_id != self.app_id.as_bytes() {
            return Err(CryptoError::AppIdMismatch);
        }
        String::from_utf8(msg.to_vec()).map_err(|_| CryptoError::InvalidUtf8)
    }

    fn iv(&self) -> [u8; AES_BLOCK] {
        let mut iv = [0u8; AES_BLOCK];
        iv.copy_from_slice(&self.key[..AES_BLOCK]);
        iv
    }

    /// Pads `plain` to a multiple of 32 bytes, encrypts it and encodes base64.
    fn encrypt_plaintext(&self, mut plain: Vec<u8>) -> String {
        let pad = PAD_BLOCK - plain.len() % PAD_BLOCK; // 1..=32
        // `pad` is at most 32, so the cast is lossless.
        plain.resize(plain.len() + pad, pad as u8);
        let mut enc = Encryptor::new(&self.key.into(), &self.iv().into());
        for block in plain.chunks_exact_mut(AES_BLOCK) {
            enc.encrypt_block_mut(GenericArray::from_mut_slice(block));
        }
        STANDARD.encode(&plain)
    }
}

/// Strips WeChat's PKCS#7 padding (pad byte 1..=32, all pad bytes equal).
fn unpad(buf: &[u8]) -> Result<&[u8], CryptoError> {
    let &last = buf.last().ok_or(CryptoError::InvalidPadding)?;
    let pad = usize::from(last);
    if pad == 0 || pad > PAD_BLOCK || pad > buf.len() {
        return Err(CryptoError::InvalidPadding);
    }
    let (body, padding) = buf.split_at(buf.len() - pad);
    if padding.iter().any(|&b| b != last) {
        return Err(CryptoError::InvalidPadding);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const APP_ID: &str = "wxb11529c136998cb6";
    const VECTOR: &str =
        "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg==";

    fn crypt() -> MessageCrypt {
        MessageCrypt::new(KEY, APP_ID).expect("test key is valid")
    }

    /// A string of exactly `n` bytes mixing 1-, 2-, 3- and 4-byte characters.
    fn string_of_len(n: usize) -> String {
        let cycle = ['a', 'é', '中', '😀', 'Z', '文'];
        let mut s = String::new();
        for c in cycle.iter().cycle() {
            if s.len() + c.len_utf8() > n {
                break;
            }
            s.push(*c);
        }
        while s.len() < n {
            s.push('x');
        }
        s
    }

    #[test]
    fn known_vector_encrypts_exactly() {
        let out = crypt()
            .encrypt_with_random("我是中文abcd123", b"aaaabbbbccccdddd")
            .unwrap();
        assert_eq!(out, VECTOR);
    }

    #[test]
    fn known_vector_decrypts() {
        assert_eq!(crypt().decrypt(VECTOR).unwrap(), "我是中文abcd123");
    }

    #[test]
    fn random_encrypt_round_trips_and_varies() {
        let c = crypt();
        let a = c.encrypt("hello").unwrap();
        let b = c.encrypt("hello").unwrap();
        assert_ne!(a, b, "fresh random bytes each time");
        assert_eq!(c.decrypt(&a).unwrap(), "hello");
        assert_eq!(c.decrypt(&b).unwrap(), "hello");
    }

    #[test]
    fn every_length_up_to_2100_round_trips() {
        let c = crypt();
        for n in 0..=2100 {
            let msg = string_of_len(n);
            assert_eq!(msg.len(), n);
            let enc = c.encrypt_with_random(&msg, &[7u8; 16]).unwrap();
            let raw = STANDARD.decode(&enc).unwrap();
            assert_eq!(raw.len() % 32, 0);
            assert_eq!(c.decrypt(&enc).unwrap(), msg, "length {n}");
        }
    }

    #[test]
    fn accepts_pad_of_32() {
        // 16 + 4 + 12 + 0-byte appid = 32: a full block of padding (32 bytes).
        let c = MessageCrypt::new(KEY, "").unwrap();
        let enc = c.encrypt_with_random("twelve bytes", &[0u8; 16]).unwrap();
        assert_eq!(STANDARD.decode(&enc).unwrap().len(), 64);
        assert_eq!(c.decrypt(&enc).unwrap(), "twelve bytes");
    }

    #[test]
    fn wrong_appid_rejected() {
        let other = MessageCrypt::new(KEY, "wx0000000000000000").unwrap();
        assert_eq!(other.decrypt(VECTOR), Err(CryptoError::AppIdMismatch));
        let prefix = MessageCrypt::new(KEY, "wxb11529c136998cb").unwrap();
        assert_eq!(prefix.decrypt(VECTOR), Err(CryptoError::AppIdMismatch));
    }

    #[test]
    fn tampered_ciphertext_is_an_error() {
        let c = crypt();
        let raw = STANDARD.decode(VECTOR).unwrap();

        // Flipping byte 0 flips the top byte of the length field.
        let mut t = raw.clone();
        t[0] ^= 0x80;
        assert_eq!(
            c.decrypt(&STANDARD.encode(&t)),
            Err(CryptoError::LengthOutOfBounds)
        );

        // Garbling the last block destroys the padding or the appid.
        let mut t = raw.clone();
        let last = t.len() - 1;
        t[last] ^= 0x01;
        assert!(c.decrypt(&STANDARD.encode(&t)).is_err());

        // Truncation.
        assert_eq!(
            c.decrypt(&STANDARD.encode(&raw[..raw.len() - 16])),
            Err(CryptoError::InvalidCiphertextLength(48))
        );
        assert!(c.decrypt(&STANDARD.encode(&raw[..32])).is_err());
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let c = crypt();
        assert_eq!(c.decrypt(""), Err(CryptoError::InvalidCiphertextLength(0)));
        assert_eq!(c.decrypt("not base64!"), Err(CryptoError::InvalidBase64));
        assert_eq!(
            c.decrypt(&STANDARD.encode([0u8; 16])),
            Err(CryptoError::InvalidCiphertextLength(16))
        );
    }

    #[test]
    fn padding_rules() {
        assert_eq!(unpad(&[1, 2, 3, 1]), Ok(&[1u8, 2, 3][..]));
        assert_eq!(unpad(&[32u8; 32]), Ok(&[][..]));
        assert_eq!(unpad(&[0u8; 32]), Err(CryptoError::InvalidPadding));
        assert_eq!(unpad(&[33u8; 64]), Err(CryptoError::InvalidPadding));
        assert_eq!(unpad(&[9, 9, 9, 2, 2]), Ok(&[9u8, 9, 9][..]));
        assert_eq!(unpad(&[9, 9, 9, 2, 3, 3]), Err(CryptoError::InvalidPadding));
        assert_eq!(unpad(&[9, 9, 1, 3, 3]), Err(CryptoError::InvalidPadding));
        assert_eq!(unpad(&[4, 4, 4]), Err(CryptoError::InvalidPadding));
        assert_eq!(unpad(&[]), Err(CryptoError::InvalidPadding));
    }

    #[test]
    fn bad_keys_rejected_without_leaking_the_key() {
        for bad in [
            "",
            "short",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG=",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDE!G",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF中",
        ] {
            let err = MessageCrypt::new(bad, APP_ID).unwrap_err();
            assert!(matches!(err, CryptoError::InvalidKey(_)), "{bad:?}");
            let shown = format!("{err} {err:?}");
            if !bad.is_empty() {
                assert!(!shown.contains(bad), "error leaks key: {shown}");
            }
        }
    }

    #[test]
    fn key_with_nonzero_trailing_bits_accepted() {
        // 'H' has non-zero low bits at the end of a 43-character key; a strict
        // decoder rejects it.
        assert!(MessageCrypt::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFH", APP_ID).is_ok());
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let shown = format!("{:?}", crypt());
        assert!(shown.contains("<redacted>"));
        assert!(shown.contains(APP_ID));
        let key_bytes = KEY_ENGINE.decode(format!("{KEY}=")).unwrap();
        assert!(!shown.contains(&format!("{key_bytes:?}")));
        assert!(!shown.contains(&hex::encode(&key_bytes)));
        assert!(!shown.contains(KEY));
    }

    proptest! {
        #[test]
        fn round_trip_arbitrary_utf8(msg in any::<String>().prop_filter("≤ 2100 bytes", |s| s.len() <= 2100),
                                     random in any::<[u8; 16]>()) {
            let c = crypt();
            let enc = c.encrypt_with_random(&msg, &random).unwrap();
            prop_assert_eq!(c.decrypt(&enc).unwrap(), msg);
        }

        #[test]
        fn round_trip_multibyte(msg in "[a-z0-9中文字😀é ]{0,700}") {
            let c = crypt();
            let enc = c.encrypt(&msg).unwrap();
            prop_assert_eq!(c.decrypt(&enc).unwrap(), msg);
        }

        #[test]
        fn decrypt_arbitrary_string_never_panics(s in any::<String>()) {
            let _ = crypt().decrypt(&s);
        }

        #[test]
        fn decrypt_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = crypt().decrypt(&STANDARD.encode(&bytes));
        }

        #[test]
        fn decrypt_block_aligned_bytes_never_panics(blocks in proptest::collection::vec(any::<[u8; 32]>(), 1..8)) {
            let bytes: Vec<u8> = blocks.concat();
            let _ = crypt().decrypt(&STANDARD.encode(&bytes));
        }

        /// Validly padded plaintext with an arbitrary length field and tail:
        /// reaches the length and appid checks.
        #[test]
        fn decrypt_valid_padding_garbage_never_panics(plain in proptest::collection::vec(any::<u8>(), 0..200)) {
            let c = crypt();
            let enc = c.encrypt_plaintext(plain);
            let _ = c.decrypt(&enc);
        }

        #[test]
        fn single_byte_tamper_never_yields_original(msg in "[a-z中文]{0,100}", pos in any::<usize>(), flip in 1u8..=255) {
            let c = crypt();
            let enc = c.encrypt(&msg).unwrap();
            let mut raw = STANDARD.decode(&enc).unwrap();
            let i = pos % raw.len();
            raw[i] ^= flip;
            let out = c.decrypt(&STANDARD.encode(&raw));
            prop_assert_ne!(out, Ok(msg));
        }
    }
}
