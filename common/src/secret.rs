//! A value that must never be printed.
//!
//! Provider keys, the WeChat secret and token, passwords inside a Redis URL:
//! they travel through configuration, errors and `tracing` fields, and any
//! `{:?}` on a struct that holds one would leak it. `Secret` makes the safe
//! thing the default: `Debug` and `Display` print `[redacted]`, and reading
//! the value needs an explicit, greppable `expose()`. Several keys for one
//! provider, used in turn, are a [`crate::KeyRing`].

use std::fmt;

/// A secret string. Compare with [`Secret::expose`] only where the value is
/// actually needed (an HTTP header, a signature input).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value. Every call site is a place where the secret leaves
    /// Ferry's care: keep them few.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The value is wiped from memory when the last copy is dropped (a core
/// dump or a swapped page then holds less).
impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("sk-live-123");
        assert!(!format!("{s:?}").contains("sk-live"));
        assert!(!format!("{s}").contains("sk-live"));
        assert!(!format!("{:?}", Some(&s)).contains("sk-live"));
        assert_eq!(s.expose(), "sk-live-123");
    }
}
