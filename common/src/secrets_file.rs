//! The encrypted secrets file (`FERRY_SECRETS_FILE`).
//!
//! Provider keys, the WeChat secret and token and the API tokens should not
//! sit in plain text in an `.env` file or a unit file. Ferry keeps them in
//! one file encrypted with a password (`SECURE_CONFIG_PASSWORD`):
//!
//! ```text
//! ferry-secrets v1 argon2id m=19456 t=2 p=1 salt=<base64> nonce=<base64>
//! <base64 of the AES-256-GCM ciphertext and tag, wrapped at 64 columns>
//! ```
//!
//! The key is Argon2id of the password with the header's parameters and
//! salt; the header line, byte for byte, is the AEAD's associated data, so
//! changing any parameter, the salt or the nonce is detected like a change to
//! the ciphertext. Every write draws a fresh salt and nonce. The plaintext is
//! TOML with the environment's variable names (`DEEPSEEK_API_KEY = "..."`,
//! or an array for several keys used in turn).
//!
//! Decryption is all or nothing: a wrong password and a tampered file give
//! the same one error, and no value is returned. Writes go to a temporary
//! file in the same directory (mode 0600), are synced, then renamed over the
//! target, so a failed write leaves the previous file as it was.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::secret::Secret;

/// The first word of every secrets file.
pub const MAGIC: &str = "ferry-secrets";
/// The format version this binary writes and reads.
pub const VERSION: &str = "v1";
const KDF: &str = "argon2id";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;
const LINE_WIDTH: usize = 64;

/// Argon2id's cost, stored in the header so it can be raised later without
/// breaking files written before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB (`m`).
    pub memory_kib: u32,
    /// Passes over the memory (`t`).
    pub iterations: u32,
    /// Lanes (`p`).
    pub parallelism: u32,
}

impl KdfParams {
    /// OWASP's minimum for Argon2id: 19 MiB, 2 iterations, 1 lane.
    pub const OWASP_MIN: Self = Self {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    /// The most a header may ask for: a forged header must not make Ferry
    /// allocate gigabytes or spin for minutes before the tag check fails.
    const CEILING: Self = Self {
        memory_kib: 1024 * 1024,
        iterations: 64,
        parallelism: 16,
    };

    fn check(self) -> Result<Self, SecretsFileError> {
        let (min, max) = (Self::OWASP_MIN, Self::CEILING);
        let in_range = (min.memory_kib..=max.memory_kib).contains(&self.memory_kib)
            && (min.iterations..=max.iterations).contains(&self.iterations)
            && (min.parallelism..=max.parallelism).contains(&self.parallelism);
        if !in_range {
            return Err(SecretsFileError::Damaged(format!(
                "Argon2id parameters m={} t={} p={} are outside m={}..={} t={}..={} p={}..={}",
                self.memory_kib,
                self.iterations,
                self.parallelism,
                min.memory_kib,
                max.memory_kib,
                min.iterations,
                max.iterations,
                min.parallelism,
                max.parallelism
            )));
        }
        Ok(self)
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::OWASP_MIN
    }
}

/// Why a secrets file could not be read, decrypted or written. Never holds
/// a secret value: TOML errors give a position, not the offending text.
#[derive(Debug, thiserror::Error)]
pub enum SecretsFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a Ferry secrets file (the first line must start with `{MAGIC} {VERSION}`)")]
    NotASecretsFile,
    #[error("secrets file format {0:?} is newer than this binary, which reads {VERSION}")]
    UnsupportedVersion(String),
    #[error("the secrets file is damaged: {0}; restore it from a backup")]
    Damaged(String),
    #[error(
        "cannot decrypt: the password (SECURE_CONFIG_PASSWORD) is wrong or the file was altered; nothing was loaded"
    )]
    Decrypt,
    #[error("the password is empty")]
    EmptyPassword,
    #[error("the secrets are not valid TOML (line {line}, column {column})")]
    Toml { line: usize, column: usize },
    #[error("{name}: expected a string or an array of strings")]
    BadValue { name: String },
    #[error("{name}: a key in a list may not contain a comma")]
    CommaInList { name: String },
    #[error("{name}: set twice (names are case-insensitive)")]
    Duplicate { name: String },
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// The decrypted secrets: variable name (upper case) to its values, one for
/// a string, several for an array. `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    values: BTreeMap<String, Vec<Secret>>,
}

impl Secrets {
    /// Reads the plaintext TOML: top-level `NAME = "value"` or
    /// `NAME = ["value", ...]`. Empty strings and arrays count as unset.
    pub fn parse(text: &str) -> Result<Self, SecretsFileError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            SecretsFileError::Toml { line, column }
        })?;
        let mut values = BTreeMap::new();
        for (key, value) in table {
            let name = key.to_ascii_uppercase();
            let list = match value {
                toml::Value::String(s) => vec![Secret::from(s)],
                toml::Value::Array(items) => items
                    .into_iter()
                    .map(|item| match item {
                        toml::Value::String(s) if s.contains(',') => {
                            Err(SecretsFileError::CommaInList { name: name.clone() })
                        }
                        toml::Value::String(s) => Ok(Secret::from(s)),
                        _ => Err(SecretsFileError::BadValue { name: name.clone() }),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(SecretsFileError::BadValue { name }),
            };
            let list: Vec<Secret> = list
                .into_iter()
                .filter(|s| !s.expose().trim().is_empty())
                .collect();
            if values.insert(name.clone(), list).is_some() {
                return Err(SecretsFileError::Duplicate { name });
            }
        }
        Ok(Self { values })
    }

    /// Every name in the file, set or empty, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// The values of `name`; `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&[Secret]> {
        self.values
            .get(name)
            .map(Vec::as_slice)
            .filter(|v| !v.is_empty())
    }

    /// The value as the environment would carry it: a list joined by commas.
    pub fn joined(&self, name: &str) -> Option<String> {
        let values = self.get(name)?;
        let parts: Vec<&str> = values.iter().map(|s| s.expose().trim()).collect();
        Some(parts.join(","))
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A decrypted file: its plaintext TOML (wiped from memory when dropped) and
/// the cost it was written with. `Debug` hides the text.
pub struct Opened {
    pub params: KdfParams,
    pub text: Zeroizing<String>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("params", &self.params)
            .field("text", &"[redacted]")
            .finish()
    }
}

/// The header line: everything needed to derive the key, authenticated.
struct Header {
    params: KdfParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
}

impl Header {
    fn fresh(params: KdfParams) -> Self {
        let mut salt = [0u8; SALT_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        Self {
            params,
            salt,
            nonce,
        }
    }

    fn line(&self) -> String {
        let p = self.params;
        format!(
            "{MAGIC} {VERSION} {KDF} m={} t={} p={} salt={} nonce={}",
            p.memory_kib,
            p.iterations,
            p.parallelism,
            B64.encode(self.salt),
            B64.encode(self.nonce)
        )
    }

    fn parse(line: &str) -> Result<Self, SecretsFileError> {
        let mut words = line.split(' ');
        if words.next() != Some(MAGIC) {
            return Err(SecretsFileError::NotASecretsFile);
        }
        match words.next() {
            Some(VERSION) => {}
            Some(other) => return Err(SecretsFileError::UnsupportedVersion(other.into())),
            None => return Err(SecretsFileError::NotASecretsFile),
        }
        let damaged = |what: &str| SecretsFileError::Damaged(format!("bad header ({what})"));
        if words.next() != Some(KDF) {
            return Err(damaged("expected argon2id"));
        }
        let mut field = |key: &str| -> Result<&str, SecretsFileError> {
            words
                .next()
                .and_then(|w| w.strip_prefix(key)?.strip_prefix('='))
                .ok_or_else(|| damaged(key))
        };
        let number = |raw: &str, key: &str| raw.parse::<u32>().map_err(|_| damaged(key));
        let memory_kib = number(field("m")?, "m")?;
        let iterations = number(field("t")?, "t")?;
        let parallelism = number(field("p")?, "p")?;
        let salt = decode_exact::<SALT_LEN>(field("salt")?).ok_or_else(|| damaged("salt"))?;
        let nonce = decode_exact::<NONCE_LEN>(field("nonce")?).ok_or_else(|| damaged("nonce"))?;
        if words.next().is_some() {
            return Err(damaged("unexpected words at the end"));
        }
        let params = KdfParams {
            memory_kib,
            iterations,
            parallelism,
        }
        .check()?;
        Ok(Self {
            params,
            salt,
            nonce,
        })
    }
}

fn decode_exact<const N: usize>(b64: &str) -> Option<[u8; N]> {
    B64.decode(b64).ok()?.try_into().ok()
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn cipher(password: &Secret, header: &Header) -> Result<Aes256Gcm, SecretsFileError> {
    if password.expose().is_empty() {
        return Err(SecretsFileError::EmptyPassword);
    }
    let p = header.params;
    let params = Params::new(p.memory_kib, p.iterations, p.parallelism, Some(KEY_LEN))
        .map_err(|e| SecretsFileError::Kdf(e.to_string()))?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password.expose().as_bytes(), &header.salt, key.as_mut())
        .map_err(|e| SecretsFileError::Kdf(e.to_string()))?;
    Aes256Gcm::new_from_slice(key.as_ref()).map_err(|e| SecretsFileError::Kdf(e.to_string()))
}

/// Encrypts `plaintext` (TOML, checked first: Ferry never writes a file it
/// could not load) into the file's text, with a fresh salt and nonce.
pub fn seal(
    plaintext: &str,
    password: &Secret,
    params: KdfParams,
) -> Result<String, SecretsFileError> {
    Secrets::parse(plaintext)?;
    let header = Header::fresh(params.check()?);
    let line = header.line();
    let ciphertext = cipher(password, &header)?
        .encrypt(
            Nonce::from_slice(&header.nonce),
            Payload {
                msg: plaintext.as_bytes(),
                aad: line.as_bytes(),
            },
        )
        .map_err(|_| SecretsFileError::Kdf("encryption failed".into()))?;
    let body = B64.encode(ciphertext);
    let mut out = String::with_capacity(line.len() + body.len() + body.len() / LINE_WIDTH + 2);
    out.push_str(&line);
    out.push('\n');
    for chunk in body.as_bytes().chunks(LINE_WIDTH) {
        // Base64 is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    Ok(out)
}

/// Decrypts a file's text. All or nothing: any change to the header or the
/// ciphertext, like a wrong password, is [`SecretsFileError::Decrypt`].
pub fn open(file_text: &str, password: &Secret) -> Result<Opened, SecretsFileError> {
    let (line, body) = file_text
        .split_once('\n')
        .ok_or(SecretsFileError::NotASecretsFile)?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let header = Header::parse(line)?;
    let body: String = body.split_ascii_whitespace().collect();
    let ciphertext = B64
        .decode(body)
        .map_err(|_| SecretsFileError::Damaged("the body is not base64".into()))?;
    let plain = cipher(password, &header)?
        .decrypt(
            Nonce::from_slice(&header.nonce),
            Payload {
                msg: &ciphertext,
                aad: line.as_bytes(),
            },
        )
        .map_err(|_| SecretsFileError::Decrypt)?;
    let mut plain = Zeroizing::new(plain);
    if std::str::from_utf8(&plain).is_err() {
        return Err(SecretsFileError::Damaged(
            "the secrets are not UTF-8".into(),
        ));
    }
    let text = String::from_utf8(std::mem::take(&mut *plain)).unwrap_or_default();
    Ok(Opened {
        params: header.params,
        text: Zeroizing::new(text),
    })
}

/// Reads and decrypts the file at `path`.
pub fn decrypt_file(path: &Path, password: &Secret) -> Result<Opened, SecretsFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretsFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    open(&text, password)
}

/// Reads, decrypts and parses the file at `path`.
pub fn load(path: &Path, password: &Secret) -> Result<Secrets, SecretsFileError> {
    Secrets::parse(&decrypt_file(path, password)?.text)
}

/// Encrypts `plaintext` and writes it to `path` atomically (mode 0600).
pub fn encrypt_to_file(
    path: &Path,
    plaintext: &str,
    password: &Secret,
    params: KdfParams,
) -> Result<(), SecretsFileError> {
    let sealed = seal(plaintext, password, params)?;
    write_atomic(path, sealed.as_bytes()).map_err(|source| SecretsFileError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `contents` to `path` through a temporary file in the same
/// directory (mode 0600), synced, then renamed over `path`, and the
/// directory synced: readers see the old file or the new one, never half of
/// one, and an error leaves the old file untouched.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".ferry-secrets-")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Whether a file's mode lets anyone but its owner read it.
pub fn readable_by_others(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o077 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str =
        "DEEPSEEK_API_KEY = [\"sk-one\", \"sk-two\"]\nwechat_app_secret = \"wx-secret\"\n";

    fn password() -> Secret {
        Secret::new("correct horse battery staple")
    }

    #[test]
    fn a_sealed_file_opens_with_the_same_password() {
        let sealed = seal(PLAIN, &password(), KdfParams::default()).unwrap();
        assert!(sealed.starts_with("ferry-secrets v1 argon2id m=19456 t=2 p=1 salt="));
        assert!(!sealed.contains("sk-one") && !sealed.contains("wx-secret"));
        let opened = open(&sealed, &password()).unwrap();
        assert_eq!(opened.text.as_str(), PLAIN);
        assert_eq!(opened.params, KdfParams::OWASP_MIN);
        let secrets = Secrets::parse(&opened.text).unwrap();
        assert_eq!(secrets.joined("DEEPSEEK_API_KEY").unwrap(), "sk-one,sk-two");
        assert_eq!(
            secrets.get("WECHAT_APP_SECRET").unwrap()[0].expose(),
            "wx-secret"
        );
    }

    #[test]
    fn every_write_has_a_fresh_salt_and_nonce() {
        let a = seal(PLAIN, &password(), KdfParams::default()).unwrap();
        let b = seal(PLAIN, &password(), KdfParams::default()).unwrap();
        assert_ne!(a.lines().next(), b.lines().next());
        assert_ne!(a, b);
    }

    #[test]
    fn a_wrong_password_is_one_clear_error() {
        let sealed = seal(PLAIN, &password(), KdfParams::default()).unwrap();
        let err = open(&sealed, &Secret::new("wrong")).unwrap_err();
        assert!(matches!(err, SecretsFileError::Decrypt), "{err}");
        assert!(err.to_string().contains("SECURE_CONFIG_PASSWORD"));
    }

    #[test]
    fn the_header_is_authenticated() {
        let sealed = seal(PLAIN, &password(), KdfParams::default()).unwrap();
        let (line, body) = sealed.split_once('\n').unwrap();
        // Same salt and nonce, one more pass: parses, but the tag fails.
        let forged = line.replace(" t=2 ", " t=3 ");
        let err = open(&format!("{forged}\n{body}"), &password()).unwrap_err();
        assert!(matches!(err, SecretsFileError::Decrypt), "{err}");
    }

    #[test]
    fn a_header_outside_the_accepted_cost_is_refused_before_deriving() {
        let sealed = seal(PLAIN, &password(), KdfParams::default()).unwrap();
        for (from, to) in [(" m=19456 ", " m=4194304 "), (" m=19456 ", " m=8 ")] {
            let forged = sealed.replacen(from, to, 1);
            let err = open(&forged, &password()).unwrap_err();
            assert!(matches!(err, SecretsFileError::Damaged(_)), "{err}");
        }
        let err = open("ferry-secrets v2 whatever\nAAAA\n", &password()).unwrap_err();
        assert!(
            matches!(err, SecretsFileError::UnsupportedVersion(_)),
            "{err}"
        );
        let err = open("DEEPSEEK_API_KEY = \"x\"\n", &password()).unwrap_err();
        assert!(matches!(err, SecretsFileError::NotASecretsFile), "{err}");
    }

    #[test]
    fn plaintext_errors_give_a_position_never_the_text() {
        let err = Secrets::parse("A = \"fine\"\nB = sk-leaked-value\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the secrets are not valid TOML (line 2, column 5)"
        );
        let err = Secrets::parse("A = 3\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "A: expected a string or an array of strings"
        );
        let err = Secrets::parse("A = [\"x,y\"]\n").unwrap_err();
        assert!(!err.to_string().contains("x,y"));
        let err = Secrets::parse("a = \"1\"\nA = \"2\"\n").unwrap_err();
        assert!(matches!(err, SecretsFileError::Duplicate { .. }), "{err}");
        let err = seal("B = sk-leaked\n", &password(), KdfParams::default()).unwrap_err();
        assert!(!err.to_string().contains("sk-leaked"));
    }

    #[test]
    fn debug_shows_names_never_values() {
        let secrets = Secrets::parse(PLAIN).unwrap();
        let dbg = format!("{secrets:?}");
        assert!(dbg.contains("DEEPSEEK_API_KEY"), "{dbg}");
        assert!(
            !dbg.contains("sk-one") && !dbg.contains("wx-secret"),
            "{dbg}"
        );
        let opened = open(
            &seal(PLAIN, &password(), KdfParams::default()).unwrap(),
            &password(),
        )
        .unwrap();
        assert!(!format!("{opened:?}").contains("sk-one"));
    }

    #[test]
    fn empty_values_count_as_unset_and_an_empty_password_is_refused() {
        let secrets = Secrets::parse("A = \"\"\nB = []\nC = [\"k\", \" \"]\n").unwrap();
        assert_eq!(secrets.get("A"), None);
        assert_eq!(secrets.get("B"), None);
        assert_eq!(secrets.joined("C").unwrap(), "k");
        assert_eq!(secrets.names().count(), 3);
        let err = seal("A = \"x\"\n", &Secret::new(""), KdfParams::default()).unwrap_err();
        assert!(matches!(err, SecretsFileError::EmptyPassword));
    }

    #[test]
    fn atomic_writes_are_0600_and_replace_the_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.enc");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!readable_by_others(&path).unwrap());
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }
}
