//! Passive replies: for accounts without the customer-service API, the
//! answer travels in the HTTP response to WeChat's push (WECHAT.md,
//! "Messages pushed to the server"). WeChat tries a push three times, 5 s
//! each; the api holds each try while the worker answers.
//!
//! The worker puts the answer in the push's reply slot (`reply:<msg>`,
//! one minute) and announces it on a pub/sub channel; the api processes
//! wake the requests holding that push and answer them all with the slot's
//! text, so WeChat never sees two different replies. On the last try the
//! api fills an empty slot with the pending notice instead (`SET NX`): an
//! answer that comes later finds the slot taken and is kept, unseen, for
//! the user's next message ([`super::kept_answers`]). Slot and kept answer
//! share the user's hash tag, so each change is one atomic call
//! (`migrations/ferry_wechat.lua`).

use std::time::Duration;

use redis::Pipeline;

use super::cs_quota::millis;
use super::kept_answers::KEPT_FOR;
use crate::functions::{fcall, run};
use crate::keys::UserKey;
use crate::store::{RedisError, Store};

/// How long a push's reply slot lives: WeChat's three tries take 15 s.
pub const REPLY_SLOT_FOR: Duration = Duration::from_secs(60);

/// WeChat's tries of one push (the first and two retries).
pub const WECHAT_TRIES: u32 = 3;

/// How long after a push's `CreateTime` WeChat may still be trying it
/// (three tries of 5 s, and a second of clock difference).
pub const TRIES_LAST: Duration = Duration::from_secs(16);

/// Where a passive answer went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Into the push's reply slot (the rest, if any, kept for 继续).
    Replied,
    /// Kept, unseen, for the user's next message: the push was answered
    /// already (the pending notice) or WeChat stopped trying it.
    Kept,
}

#[derive(Clone)]
pub struct PassiveReplies {
    store: Store,
}

impl PassiveReplies {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The worker's side: delivers the answer to the push `msg` (at
    /// `at_ms`): `reply` (what one passive reply holds), `rest` (kept for
    /// 继续) and `whole` (kept instead when the push cannot take it).
    /// `fresh`: the push is young enough for WeChat to be trying it; it is
    /// held only if an api also counted its tries ([`Self::arrive`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn answer(
        &self,
        openid: &str,
        msg: &str,
        at_ms: i64,
        reply: &str,
        rest: &str,
        whole: &str,
        fresh: bool,
    ) -> Result<Delivered, RedisError> {
        let keys = self.store.keys();
        let slot = keys.passive_reply(openid, msg);
        let kept = keys.user(UserKey::Continuation, openid);
        let tries = keys.passive_tries(openid, msg);
        let mut pipe = Pipeline::new();
        fcall(&mut pipe, "ferry_passive_answer", &[&slot, &kept, &tries])
            .arg(at_ms)
            .arg(reply)
            .arg(rest)
            .arg(whole)
            .arg(millis(REPLY_SLOT_FOR))
            .arg(millis(KEPT_FOR))
            .arg(u8::from(fresh))
            .arg(keys.passive_channel());
        let mut conn = self.store.conn().await?;
        let (outcome,): (String,) = run(&mut conn, &pipe).await?;
        Ok(if outcome == "replied" {
            Delivered::Replied
        } else {
            Delivered::Kept
        })
    }

    /// The worker's side: makes the kept, unseen answer of the message at
    /// `kept_at_ms` the reply to the push `msg` (`reply`, with `rest` kept
    /// for 继续). False when it changed meanwhile, the push has a reply, or
    /// nobody holds the push (`fresh` as for [`Self::answer`]).
    pub async fn hand_over(
        &self,
        openid: &str,
        msg: &str,
        kept_at_ms: i64,
        reply: &str,
        rest: &str,
        fresh: bool,
    ) -> Result<bool, RedisError> {
        let keys = self.store.keys();
        let slot = keys.passive_reply(openid, msg);
        let kept = keys.user(UserKey::Continuation, openid);
        let tries = keys.passive_tries(openid, msg);
        let mut pipe = Pipeline::new();
        fcall(
            &mut pipe,
            "ferry_passive_hand_over",
            &[&slot, &kept, &tries],
        )
        .arg(kept_at_ms)
        .arg(reply)
        .arg(rest)
        .arg(millis(REPLY_SLOT_FOR))
        .arg(keys.passive_channel())
        .arg(u8::from(fresh));
        let mut conn = self.store.conn().await?;
        let (handed,): (u8,) = run(&mut conn, &pipe).await?;
        Ok(handed == 1)
    }

    /// The api's side, as a try of the push `msg` arrives (before the push
    /// is handed over, so a worker quick to answer finds it counted):
    /// counts it and reads the slot. Returns (which try this is, by the
    /// count, and the reply if ready).
    pub async fn arrive(
        &self,
        openid: &str,
        msg: &str,
    ) -> Result<(u32, Option<String>), RedisError> {
        let keys = self.store.keys();
        let tries = keys.passive_tries(openid, msg);
        let mut conn = self.store.conn().await?;
        let (n, reply): (u32, Option<String>) = redis::pipe()
            .cmd("INCR")
            .arg(&tries)
            .cmd("PEXPIRE")
            .arg(&tries)
            .arg(millis(REPLY_SLOT_FOR))
            .ignore()
            .cmd("GET")
            .arg(keys.passive_reply(openid, msg))
            .query_async(&mut conn)
            .await?;
        Ok((n, reply))
    }

    /// The api's side: the push's reply, if ready.
    pub async fn reply(&self, openid: &str, msg: &str) -> Result<Option<String>, RedisError> {
        let mut conn = self.store.conn().await?;
        Ok(redis::cmd("GET")
            .arg(self.store.keys().passive_reply(openid, msg))
            .query_async(&mut conn)
            .await?)
    }

    /// The api's side, on WeChat's last try: fills an empty slot with
    /// `notice` and returns what the slot holds (the answer, if it won the
    /// race, else the notice).
    pub async fn give_up(
        &self,
        openid: &str,
        msg: &str,
        notice: &str,
    ) -> Result<String, RedisError> {
        let mut conn = self.store.conn().await?;
        let before: Option<String> = redis::cmd("SET")
            .arg(self.store.keys().passive_reply(openid, msg))
            .arg(notice)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(millis(REPLY_SLOT_FOR))
            .query_async(&mut conn)
            .await?;
        Ok(before.unwrap_or_else(|| notice.to_owned()))
    }

    /// Whether the fleet switched to passive replies (`WECHAT_REPLY_MODE=auto`
    /// after a 48001).
    pub async fn fleet_is_passive(&self) -> Result<bool, RedisError> {
        let mut conn = self.store.conn().await?;
        let set: bool = redis::cmd("EXISTS")
            .arg(self.store.keys().wechat_passive_mode())
            .query_async(&mut conn)
            .await?;
        Ok(set)
    }

    /// Switches the fleet to passive replies, with `why` recorded; true
    /// for the one process that switched it (the one to log it).
    pub async fn switch_fleet_to_passive(&self, why: &str) -> Result<bool, RedisError> {
        let mut conn = self.store.conn().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.store.keys().wechat_passive_mode())
            .arg(why)
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }
}
