//! The rest of an answer the user has not seen yet, kept for their next
//! message (`migrations/ferry_wechat.lua`, `continuation`): what did not
//! fit WeChat's allowance or one passive reply (the user was told to write
//! 继续), or a whole passive answer that came too late for WeChat's tries
//! (`unseen`: any next message gets it).
//!
//! One entry per user, for 48 hours (WeChat's reply window), deleted with
//! the user's other keys on unsubscribe. A newer message's answer replaces
//! an older one's; an older one never replaces a newer one (each entry
//! carries its message's time).

use std::time::Duration;

use redis::Pipeline;

use super::cs_quota::millis;
use crate::functions::{fcall, run};
use crate::keys::UserKey;
use crate::store::{RedisError, Store};

/// How long the rest of an answer is kept: WeChat's 48-hour window.
pub const KEPT_FOR: Duration = Duration::from_secs(48 * 3600);

/// What is kept for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub text: String,
    /// The time of the message this answers (unix ms).
    pub at_ms: i64,
    /// The user saw none of it (a passive answer that came too late).
    pub unseen: bool,
}

/// What a 继续 found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Kept(Kept),
    /// Nothing is kept for the user.
    Nothing,
    /// Another 继续 of the user is sending it.
    Busy,
}

#[derive(Clone)]
pub struct KeptAnswers {
    store: Store,
}

impl KeptAnswers {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Keeps `text` as what is left of the answer to the message at
    /// `at_ms` (an empty `text` clears what an older message left). Returns
    /// false when a newer message's answer is kept: nothing changed.
    pub async fn keep(
        &self,
        openid: &str,
        at_ms: i64,
        text: &str,
        unseen: bool,
    ) -> Result<bool, RedisError> {
        let key = self.store.keys().user(UserKey::Continuation, openid);
        let mut pipe = Pipeline::new();
        fcall(&mut pipe, "ferry_keep", &[&key])
            .arg(at_ms)
            .arg(text)
            .arg(u8::from(unseen))
            .arg(millis(KEPT_FOR));
        let mut conn = self.store.conn().await?;
        let (kept,): (u8,) = run(&mut conn, &pipe).await?;
        Ok(kept == 1)
    }

    /// Takes what is kept for `claimer` (a 继续 job's id) to send. The
    /// claim ends when the claimer keeps what is left after sending
    /// ([`Self::keep`]); the claimer's retries claim it again.
    pub async fn claim(&self, openid: &str, claimer: &str) -> Result<Claim, RedisError> {
        let key = self.store.keys().user(UserKey::Continuation, openid);
        let mut pipe = Pipeline::new();
        fcall(&mut pipe, "ferry_kept_claim", &[&key]).arg(claimer);
        let mut conn = self.store.conn().await?;
        let (fields,): (Vec<String>,) = run(&mut conn, &pipe).await?;
        Ok(match fields.as_slice() {
            [] => Claim::Nothing,
            [busy] if busy == "busy" => Claim::Busy,
            fields => parse(fields).map_or(Claim::Nothing, Claim::Kept),
        })
    }

    /// What is kept, without taking it.
    pub async fn peek(&self, openid: &str) -> Result<Option<Kept>, RedisError> {
        let key = self.store.keys().user(UserKey::Continuation, openid);
        let mut conn = self.store.conn().await?;
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&key)
            .arg("text")
            .arg("at")
            .arg("unseen")
            .query_async(&mut conn)
            .await?;
        let fields: Option<Vec<String>> = fields.into_iter().collect();
        Ok(fields.as_deref().and_then(parse))
    }
}

/// `{text, at, unseen}` as the library answers them.
fn parse(fields: &[String]) -> Option<Kept> {
    match fields {
        [text, at, unseen] => Some(Kept {
            text: text.clone(),
            at_ms: at.parse().ok()?,
            unseen: unseen == "1",
        }),
        _ => None,
    }
}
