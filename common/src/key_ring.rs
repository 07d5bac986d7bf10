//! Several keys for one provider, used in turn, replaceable while running.
//!
//! Rotating a provider key without downtime needs two keys valid at once:
//! add the new key beside the old one, reload (SIGHUP), revoke the old one
//! upstream, remove it, reload again. Spreading calls over the keys also
//! spreads a per-key rate limit. A `KeyRing` is a cheap handle: clones share
//! the keys, so the process that reloads configuration replaces them for
//! every provider client at once.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::secret::Secret;

/// A provider's keys, handed out round-robin. `Debug` shows only how many.
#[derive(Clone, Default)]
pub struct KeyRing {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    keys: RwLock<Arc<[Secret]>>,
    turn: AtomicUsize,
}

impl KeyRing {
    pub fn new(keys: impl IntoIterator<Item = Secret>) -> Self {
        let ring = Self::default();
        ring.replace(keys);
        ring
    }

    /// The next key in turn; `None` when the ring is empty.
    pub fn next_key(&self) -> Option<Secret> {
        let keys = self.snapshot();
        if keys.is_empty() {
            return None;
        }
        let turn = self.inner.turn.fetch_add(1, Ordering::Relaxed);
        Some(keys[turn % keys.len()].clone())
    }

    /// Replaces every key at once (calls already under way keep the key they
    /// took); new keys are used from the first. Returns whether the keys
    /// changed.
    pub fn replace(&self, keys: impl IntoIterator<Item = Secret>) -> bool {
        let keys: Arc<[Secret]> = keys.into_iter().collect();
        let mut slot = self.inner.keys.write().unwrap_or_else(|e| e.into_inner());
        let changed = *slot != keys;
        if changed {
            *slot = keys;
            self.inner.turn.store(0, Ordering::Relaxed);
        }
        changed
    }

    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn snapshot(&self) -> Arc<[Secret]> {
        // A poisoned lock still holds a whole list: replace never panics
        // halfway through a write.
        self.inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[&str]) -> KeyRing {
        KeyRing::new(keys.iter().map(|k| Secret::new(*k)))
    }

    fn take(ring: &KeyRing, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| ring.next_key().unwrap().expose().to_owned())
            .collect()
    }

    #[test]
    fn keys_are_used_in_turn() {
        let r = ring(&["a", "b", "c"]);
        assert_eq!(take(&r, 7), ["a", "b", "c", "a", "b", "c", "a"]);
    }

    #[test]
    fn clones_share_the_turn_and_a_replacement() {
        let r = ring(&["a", "b"]);
        let handle = r.clone();
        assert_eq!(take(&r, 1), ["a"]);
        assert_eq!(take(&handle, 1), ["b"]);
        assert!(handle.replace([Secret::new("new")]));
        assert!(!handle.replace([Secret::new("new")]));
        assert_eq!(take(&r, 3), ["new", "new", "new"]);
        assert_eq!(r.len(), 1);
        assert!(r.replace([Secret::new("x"), Secret::new("y")]));
        assert_eq!(
            take(&handle, 3),
            ["x", "y", "x"],
            "a new list starts at its first key"
        );
    }

    #[test]
    fn an_empty_ring_has_no_key() {
        let r = KeyRing::default();
        assert!(r.is_empty());
        assert!(r.next_key().is_none());
    }

    #[test]
    fn many_threads_share_the_keys_evenly() {
        let r = ring(&["a", "b", "c", "d"]);
        let counts = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| take(&r, 1000))).collect();
            let mut counts = std::collections::HashMap::<String, usize>::new();
            for h in handles {
                for k in h.join().unwrap() {
                    *counts.entry(k).or_default() += 1;
                }
            }
            counts
        });
        assert_eq!(counts.len(), 4);
        assert!(counts.values().all(|&n| n == 1000), "{counts:?}");
    }

    #[test]
    fn debug_shows_the_count_only() {
        let dbg = format!("{:?}", ring(&["sk-secret-1", "sk-secret-2"]));
        assert_eq!(dbg, "KeyRing { keys: 2 }");
    }
}
