//! Bearer tokens of the jobs, batch and admin APIs, held only as hashes.
//!
//! A token is 32 random bytes (`ferry tokens new` makes one); the server is
//! configured with its SHA-256, a name and scopes, never the token itself:
//!
//! ```text
//! FERRY_API_TOKENS=ci-bot:submit+read:<sha256 hex>,dashboard:read:<sha256 hex>
//! FERRY_ADMIN_TOKEN=<sha256 hex>            # name "admin", every scope
//! ```
//!
//! **Why SHA-256 and not Argon2:** a password KDF exists to slow down guesses
//! of low-entropy secrets. A 256-bit random token cannot be guessed, so one
//! fast hash gives the same protection (a leaked configuration reveals no
//! usable token) without spending 19 MiB and tens of milliseconds on every
//! request. Presented tokens are compared hash to hash in constant time.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Secret;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Submit jobs and batches.
    Submit,
    /// Read jobs, batches and their results.
    Read,
    /// The admin API and dashboard; implies every other scope.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Submit, Scope::Read, Scope::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Submit => 1,
            Scope::Read => 2,
            Scope::Admin => 4,
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown scope {s:?} (expected submit, read or admin)"))
    }
}

/// A set of [`Scope`]s.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub fn of(scopes: &[Scope]) -> Self {
        Scopes(scopes.iter().fold(0, |bits, s| bits | s.bit()))
    }

    /// Whether a holder of these scopes may act under `scope` (admin may do
    /// anything).
    pub fn allows(self, scope: Scope) -> bool {
        self.0 & (scope.bit() | Scope::Admin.bit()) != 0
    }

    /// Parses `submit+read` (also `,`-free `submit|read`).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let scopes: Vec<Scope> = raw
            .split(['+', '|'])
            .filter(|s| !s.trim().is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        if scopes.is_empty() {
            return Err("a token needs at least one scope".into());
        }
        Ok(Scopes::of(&scopes))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Scope::ALL
            .into_iter()
            .filter(|s| self.0 & s.bit() != 0)
            .map(Scope::name)
            .collect();
        f.write_str(&names.join("+"))
    }
}

/// Who presented a valid token: its configured name (used as the API key's
/// identity for quotas and audit) and its scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub scopes: Scopes,
}

/// One configured token: name, scopes and the SHA-256 of the token.
#[derive(Clone)]
struct Entry {
    name: String,
    scopes: Scopes,
    hash: [u8; 32],
}

/// Every configured token. Cheap to clone; replaced as a whole on reload.
#[derive(Clone, Default)]
pub struct ApiTokens {
    entries: Vec<Entry>,
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| (&e.name, e.scopes)))
            .finish()
    }
}

/// The name `FERRY_ADMIN_TOKEN` is known by.
pub const ADMIN_NAME: &str = "admin";

impl ApiTokens {
    /// From `FERRY_API_TOKENS` entries (`name:scopes:sha256hex`) and an
    /// optional `FERRY_ADMIN_TOKEN` hash. The error says which entry is wrong
    /// without repeating it (it could be a token pasted by mistake).
    pub fn parse(
        api_entries: &[String],
        admin_hash: Option<&str>,
    ) -> Result<Self, TokenConfigError> {
        let mut entries = Vec::with_capacity(api_entries.len() + 1);
        for (i, raw) in api_entries.iter().enumerate() {
            let at = |reason: String| TokenConfigError::Api {
                entry: i + 1,
                reason,
            };
            let mut parts = raw.splitn(3, ':');
            let (Some(name), Some(scopes), Some(hash)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(at(
                    "expected name:scopes:sha256hex (make one with `ferry tokens new`)".into(),
                ));
            };
            let name = name.trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(at("a name is letters, digits, '-', '_' or '.'".into()));
            }
            if entries.iter().any(|e: &Entry| e.name == name) || name == ADMIN_NAME {
                return Err(at(format!("the name {name:?} is used twice or reserved")));
            }
            entries.push(Entry {
                name: name.to_owned(),
                scopes: Scopes::parse(scopes).map_err(at)?,
                hash: parse_hash(hash).map_err(at)?,
            });
        }
        if let Some(raw) = admin_hash {
            entries.push(Entry {
                name: ADMIN_NAME.to_owned(),
                scopes: Scopes::of(&Scope::ALL),
                hash: parse_hash(raw).map_err(|reason| TokenConfigError::Admin { reason })?,
            });
        }
        Ok(ApiTokens { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names and scopes configured (for `ferry status` and start-up logs).
    pub fn names(&self) -> impl Iterator<Item = (&str, Scopes)> {
        self.entries.iter().map(|e| (e.name.as_str(), e.scopes))
    }

    /// A digest of every name, scope set and hash: equal fingerprints, same
    /// tokens (used to tell whether a reload changed anything).
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut digest = Sha256::new();
        for e in &self.entries {
            digest.update(e.name.as_bytes());
            digest.update([0, e.scopes.0]);
            digest.update(e.hash);
        }
        digest.finalize().into()
    }

    /// The principal whose token this is, if any. Every entry is compared,
    /// in constant time, whatever matched earlier.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        let hash = hash(presented);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some(entry);
            }
        }
        found.map(|e| Principal {
            name: e.name.clone(),
            scopes: e.scopes,
        })
    }
}

/// A wrong `FERRY_API_TOKENS` entry or `FERRY_ADMIN_TOKEN`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenConfigError {
    #[error("entry {entry}: {reason}")]
    Api { entry: usize, reason: String },
    #[error("{reason}")]
    Admin { reason: String },
}

fn parse_hash(raw: &str) -> Result<[u8; 32], String> {
    let raw = raw.trim();
    let raw = raw.strip_prefix("sha256:").unwrap_or(raw);
    let mut out = [0u8; 32];
    hex::decode_to_slice(raw, &mut out).map_err(|_| {
        "expected the token's SHA-256 as 64 hex digits, not the token itself (`ferry tokens new`)"
            .to_owned()
    })?;
    Ok(out)
}

/// SHA-256 of a token.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// SHA-256 of a token in hex: what `FERRY_API_TOKENS` and
/// `FERRY_ADMIN_TOKEN` hold.
pub fn hash_hex(token: &str) -> String {
    hex::encode(hash(token))
}

/// A new token (`fry_` and 32 random bytes, URL-safe base64) and the hex
/// SHA-256 to configure.
pub fn generate() -> (Secret, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("fry_{}", URL_SAFE_NO_PAD.encode(bytes));
    let hex = hash_hex(&token);
    (Secret::from(token), hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, scopes: &str, token: &str) -> String {
        format!("{name}:{scopes}:{}", hash_hex(token))
    }

    #[test]
    fn a_token_authenticates_as_its_name_with_its_scopes() {
        let tokens = ApiTokens::parse(
            &[
                entry("ci", "submit+read", "t-ci"),
                entry("viewer", "read", "t-view"),
            ],
            Some(&hash_hex("t-admin")),
        )
        .unwrap();
        let ci = tokens.authenticate("t-ci").unwrap();
        assert_eq!(ci.name, "ci");
        assert!(ci.scopes.allows(Scope::Submit) && ci.scopes.allows(Scope::Read));
        assert!(!ci.scopes.allows(Scope::Admin));
        let viewer = tokens.authenticate("t-view").unwrap();
        assert!(!viewer.scopes.allows(Scope::Submit));
        let admin = tokens.authenticate("t-admin").unwrap();
        assert_eq!(admin.name, ADMIN_NAME);
        assert!(Scope::ALL.iter().all(|s| admin.scopes.allows(*s)));
        assert_eq!(tokens.authenticate("t-ci "), None);
        assert_eq!(tokens.authenticate(""), None);
    }

    #[test]
    fn a_plain_token_in_the_configuration_is_refused_without_being_repeated() {
        let err = ApiTokens::parse(&["ci:submit:fry_not-a-hash".into()], None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("entry 1: expected the token's SHA-256")
        );
        assert!(!err.to_string().contains("fry_not-a-hash"));
        let err = ApiTokens::parse(&["fry_just-a-token".into()], None).unwrap_err();
        assert!(!err.to_string().contains("fry_just-a-token"));
        let err = ApiTokens::parse(&[], Some("admin-token-value")).unwrap_err();
        assert!(!err.to_string().contains("admin-token-value"));
    }

    #[test]
    fn bad_scopes_and_duplicate_names_are_refused() {
        let err = ApiTokens::parse(&[entry("ci", "write", "t")], None).unwrap_err();
        assert!(err.to_string().contains("unknown scope"), "{err}");
        let err = ApiTokens::parse(&[entry("ci", "read", "a"), entry("ci", "read", "b")], None)
            .unwrap_err();
        assert!(err.to_string().contains("entry 2"), "{err}");
        assert!(ApiTokens::parse(&[entry("admin", "read", "a")], None).is_err());
    }

    #[test]
    fn generated_tokens_are_distinct_and_match_their_hash() {
        let (a, hash_a) = generate();
        let (b, _) = generate();
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("fry_") && a.expose().len() > 40);
        let tokens = ApiTokens::parse(&[format!("x:read:{hash_a}")], None).unwrap();
        assert_eq!(tokens.authenticate(a.expose()).unwrap().name, "x");
        assert!(!format!("{tokens:?}").contains(&hash_a));
    }
}
