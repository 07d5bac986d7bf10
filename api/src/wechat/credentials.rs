//! The WeChat token and EncodingAESKey the api checks pushes with, swapped
//! on SIGHUP without refusing a single push.
//!
//! Rotating them is two steps that cannot happen at the same instant: the
//! api learns the new values (SIGHUP), and an operator saves them in the
//! official account's console, after which WeChat signs with them. In
//! between, WeChat still signs with the old ones. So after a swap the
//! previous credentials stay accepted for [`OVERLAP`]; a request is checked
//! against the current ones first, and a passive reply is signed and
//! encrypted with whichever set the request matched.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ferry_common::Secret;
use ferry_common::wechat::MessageCrypt;

/// How long the previous token and key stay accepted after a swap: time to
/// save the new values in the console.
pub const OVERLAP: Duration = Duration::from_secs(3600);

/// One token, with the AES key of compatible and safe modes when set.
pub struct WeChatCredentials {
    /// `WECHAT_TOKEN`: the signature key shared with WeChat.
    pub token: Secret,
    /// Present when `WECHAT_ENCODING_AES_KEY` and `WECHAT_APP_ID` are set.
    pub crypt: Option<MessageCrypt>,
}

struct Sets {
    current: Arc<WeChatCredentials>,
    previous: Option<(Arc<WeChatCredentials>, Instant)>,
}

/// The credentials in use, and the previous ones during a rotation.
pub struct CredentialStore {
    sets: RwLock<Sets>,
}

impl CredentialStore {
    pub fn new(current: WeChatCredentials) -> Self {
        Self {
            sets: RwLock::new(Sets {
                current: Arc::new(current),
                previous: None,
            }),
        }
    }

    /// The credentials to try, current first.
    pub fn candidates(&self) -> Vec<Arc<WeChatCredentials>> {
        self.candidates_at(Instant::now())
    }

    fn candidates_at(&self, now: Instant) -> Vec<Arc<WeChatCredentials>> {
        let sets = self.sets.read().unwrap_or_else(|e| e.into_inner());
        let mut out = vec![Arc::clone(&sets.current)];
        if let Some((previous, until)) = &sets.previous
            && now < *until
        {
            out.push(Arc::clone(previous));
        }
        out
    }

    /// Swaps in new credentials when the token or the AES key changed; the
    /// ones replaced stay accepted for [`OVERLAP`]. Returns whether
    /// anything changed.
    pub fn rotate(&self, next: WeChatCredentials) -> bool {
        self.rotate_at(next, Instant::now())
    }

    fn rotate_at(&self, next: WeChatCredentials, now: Instant) -> bool {
        let mut sets = self.sets.write().unwrap_or_else(|e| e.into_inner());
        if sets.current.token == next.token && sets.current.crypt == next.crypt {
            return false;
        }
        let replaced = std::mem::replace(&mut sets.current, Arc::new(next));
        sets.previous = Some((replaced, now + OVERLAP));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(token: &str) -> WeChatCredentials {
        WeChatCredentials {
            token: Secret::from(token.to_owned()),
            crypt: None,
        }
    }

    fn tokens(store: &CredentialStore, at: Instant) -> Vec<String> {
        store
            .candidates_at(at)
            .iter()
            .map(|c| c.token.expose().to_owned())
            .collect()
    }

    #[test]
    fn after_a_rotation_both_tokens_are_accepted_until_the_overlap_ends() {
        let store = CredentialStore::new(plain("old"));
        let t0 = Instant::now();
        assert_eq!(tokens(&store, t0), ["old"]);
        assert!(!store.rotate_at(plain("old"), t0));
        assert!(store.rotate_at(plain("new"), t0));
        assert_eq!(tokens(&store, t0), ["new", "old"]);
        assert_eq!(
            tokens(&store, t0 + OVERLAP - Duration::from_secs(1)),
            ["new", "old"]
        );
        assert_eq!(tokens(&store, t0 + OVERLAP), ["new"]);
    }
}
