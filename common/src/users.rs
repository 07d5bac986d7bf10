//! What Ferry keeps about one WeChat user, and forgetting it.
//!
//! When a user unfollows the account (the `unsubscribe` event) Ferry deletes
//! everything it keeps about them. Every per-user key is listed in
//! [`user_keys`]: a feature that starts keeping something per user adds its
//! key there, and unsubscribing forgets it too.
//!
//! Not covered here (they are not per-user keys): job records, which carry
//! the user's openid and message until they expire after
//! `FERRY_JOB_RETENTION`.

use redis::aio::ConnectionLike;

use crate::keys::Keys;

/// Every Redis key that holds something about the user `openid`.
pub fn user_keys(keys: &Keys, openid: &str) -> Vec<String> {
    vec![keys.conversation(openid), keys.dev_outbox(openid)]
}

/// Deletes everything Ferry keeps about `openid` in one `DEL`; returns how
/// many keys existed. Deleting is idempotent: calling it again is harmless.
///
/// The keys are fleet-wide keys under the one `{prefix}` hash tag, so the
/// multi-key `DEL` also runs on Redis Cluster.
pub async fn forget_user<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    openid: &str,
) -> Result<u64, redis::RedisError> {
    redis::cmd("DEL")
        .arg(user_keys(keys, openid))
        .query_async(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_keys_share_one_slot_and_name_the_user() {
        let keys = user_keys(&Keys::new("ferry"), "o_user");
        assert!(keys.contains(&"{ferry}:conv:o_user".to_owned()), "{keys:?}");
        for key in &keys {
            assert!(key.starts_with("{ferry}:"), "{key}");
            assert!(key.ends_with(":o_user"), "{key}");
        }
    }
}
