//! What Ferry keeps about one WeChat user, and forgetting it.
//!
//! When a user unfollows the account (the `unsubscribe` event) Ferry deletes
//! everything it keeps about them: every per-user key is built in
//! `keys.rs` from one list of kinds ([`UserKey`]), and unsubscribing deletes
//! one key of each kind.
//!
//! Not covered here (they are not per-user keys): job records, which carry
//! the user's openid and message until they expire after
//! `FERRY_JOB_RETENTION`.

#[cfg(doc)]
use crate::keys::UserKey;
use crate::store::{RedisError, Store};

/// Deletes everything Ferry keeps about `openid` in one `DEL`; returns how
/// many keys existed. Deleting is idempotent: calling it again is harmless.
///
/// The keys are fleet-wide keys under the one `{prefix}` hash tag, so the
/// multi-key `DEL` also runs on Redis Cluster.
pub async fn forget_user(store: &Store, openid: &str) -> Result<u64, RedisError> {
    let mut conn = store.conn().await?;
    Ok(redis::cmd("DEL")
        .arg(store.keys().user_keys(openid))
        .query_async(&mut conn)
        .await?)
}

#[cfg(test)]
mod tests {
    use crate::keys::{Keys, UserKey};

    #[test]
    fn every_kind_of_user_key_is_deleted() {
        // Exhaustive: a new kind fails to compile here until it is listed.
        let position = |kind: UserKey| match kind {
            UserKey::Conversation => 0,
            UserKey::Limit => 1,
            UserKey::LimitNotice => 2,
            UserKey::DevOutbox => 3,
            UserKey::CsQuota => 4,
            UserKey::CsSends => 5,
            UserKey::Continuation => 6,
        };
        for (i, kind) in UserKey::ALL.iter().enumerate() {
            assert_eq!(position(*kind), i, "{kind:?} listed once, in order");
        }
    }

    #[test]
    fn a_users_keys_share_one_slot_and_name_the_user() {
        let keys = Keys::new("ferry").user_keys("o_user");
        assert_eq!(keys.len(), UserKey::ALL.len());
        assert!(
            keys.contains(&"{ferry:user:o_user}:conv".to_owned()),
            "{keys:?}"
        );
        assert!(
            keys.contains(&"{ferry:user:o_user}:limit".to_owned()),
            "{keys:?}"
        );
        // One tag per user: one slot, so forgetting a user is one DEL on
        // a cluster too, and users spread over the cluster.
        for key in &keys {
            assert!(key.starts_with("{ferry:user:o_user}:"), "{key}");
        }
    }
}
