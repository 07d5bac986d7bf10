//! Passive mode (`WECHAT_REPLY_MODE=passive`, or `auto` once the fleet
//! switched): WeChat's push is held until its answer is ready, and the
//! answer is the response (`ferry_common::fleet::passive_replies`).
//!
//! WeChat gives each try 5 s and tries a push three times. A held try waits
//! on a notification: workers `PUBLISH` the reply slot's key when they fill
//! it, one subscriber per api process ([`listen`]) wakes the requests
//! holding that push, and each reads the slot once. No loop polls Redis.
//!
//! - The answer comes in time: every try of the push (a try that arrives
//!   later too) is answered with the slot's text, so WeChat never sees two
//!   different replies.
//! - Not the last try and no answer yet: the request is held past WeChat's
//!   5 s, so WeChat gives up on it and tries again (an early `success`
//!   would end WeChat's tries with nothing shown). If the answer comes
//!   meanwhile it is still sent.
//! - The last try (the third by the count, or a push older than 9 s: a
//!   try Redis did not count) after `FERRY_PASSIVE_WAIT_MS`: the slot is
//!   filled with
//!   `FERRY_PASSIVE_PENDING_TEXT` unless the answer won the race, and that
//!   is the reply; the answer, when it comes, is kept for the user's next
//!   message.
//!
//! Each try is counted first (so the worker knows someone holds the push:
//! a push that reached Redis only through the spool, its tries answered
//! without Redis, has no count, and its answer is kept for the next
//! message), then the push is handed to Redis or the spool within the
//! acknowledgement budget, deduplicated by MsgId: holding changes when
//! WeChat hears back, never whether the message is kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use ferry_common::config::ReplyMode;
use ferry_common::connection;
use ferry_common::fleet::PassiveReplies;
use ferry_common::fleet::passive_replies::WECHAT_TRIES;
use ferry_common::store::Store;

/// WeChat gives up on a try after 5 s; a try that is not the last is held
/// this long, past that, so WeChat tries again.
const PAST_WECHATS_TIMEOUT: Duration = Duration::from_secs(6);

/// A push this old is on its last try, whatever the count says.
const LAST_TRY_AGE: i64 = 9;

/// How often `auto` mode reads whether the fleet switched.
const MODE_REFRESH: Duration = Duration::from_secs(2);

/// What a held try answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// This text, as the passive reply.
    Reply(String),
    /// Nothing yet, and WeChat will try again (it has stopped listening to
    /// this try).
    NotYet,
}

/// How long a response was held for a passive answer, on the response:
/// the alert rules judge Ferry's own time, not the AI's.
#[derive(Debug, Clone, Copy)]
pub struct HeldFor(pub Duration);

pub struct PassiveIngress {
    mode: ReplyMode,
    /// How long the last try waits before the pending notice.
    wait: Duration,
    pending_text: String,
    /// How long counting a try may take (the acknowledgement budget): the
    /// push is handed off after it, within WeChat's patience.
    count_within: Duration,
    replies: PassiveReplies,
    store: Store,
    waiters: Waiters,
    /// `auto` mode: the fleet switched to passive replies.
    fleet_passive: AtomicBool,
}

impl PassiveIngress {
    pub fn new(
        store: Store,
        mode: ReplyMode,
        wait: Duration,
        pending_text: String,
        count_within: Duration,
    ) -> Self {
        Self {
            mode,
            wait,
            pending_text,
            count_within,
            replies: PassiveReplies::new(store.clone()),
            store,
            waiters: Waiters::default(),
            fleet_passive: AtomicBool::new(false),
        }
    }

    /// Whether pushes are answered passively now.
    pub fn is_on(&self) -> bool {
        match self.mode {
            ReplyMode::CustomerService => false,
            ReplyMode::Passive => true,
            ReplyMode::Auto => self.fleet_passive.load(Ordering::Relaxed),
        }
    }

    /// Holds one try of the push `push` of `openid` (WeChat's `CreateTime`
    /// `created`), which arrived at `arrived`, for its answer. The try is
    /// counted before `hand_off` (the push's enqueue or spool) runs, so a
    /// worker answering at once finds the push held; a try that finds the
    /// answer ready hands nothing off (the push is in Redis already).
    pub async fn hold<E>(
        &self,
        openid: &str,
        push: &str,
        created: i64,
        arrived: Instant,
        hand_off: impl Future<Output = Result<(), E>>,
    ) -> Result<Held, E> {
        let slot = self.store.keys().passive_reply(openid, push);
        let watch = self.waiters.watch(&slot);
        let mut notified = std::pin::pin!(watch.notify.notified());
        notified.as_mut().enable();
        let counting = tokio::time::timeout(self.count_within, self.replies.arrive(openid, push));
        let (counted, ready) = match counting.await {
            Ok(Ok(arrival)) => arrival,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "passive reply: Redis cannot count WeChat's tries");
                (0, None)
            }
            Err(_) => {
                tracing::warn!("passive reply: Redis did not count WeChat's try in time");
                (0, None)
            }
        };
        if let Some(reply) = ready {
            return Ok(Held::Reply(reply));
        }
        hand_off.await?;
        // By the count, or by the push's age when a try went uncounted
        // (tries start about 0, 5 and 10 s after CreateTime).
        let age = chrono::Utc::now().timestamp() - created;
        let by_age = if age >= LAST_TRY_AGE { WECHAT_TRIES } else { 1 };
        let last = counted.max(by_age) >= WECHAT_TRIES;
        let until = arrived
            + if last {
                self.wait
            } else {
                PAST_WECHATS_TIMEOUT
            };
        loop {
            if tokio::time::timeout_at(until, notified.as_mut())
                .await
                .is_err()
            {
                break;
            }
            // Woken: the slot was filled (or the subscriber reconnected).
            notified.set(watch.notify.notified());
            notified.as_mut().enable();
            match self.replies.reply(openid, push).await {
                Ok(Some(reply)) => return Ok(Held::Reply(reply)),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "passive reply: cannot read the answer"),
            }
        }
        if !last {
            return Ok(Held::NotYet);
        }
        Ok(
            match self.replies.give_up(openid, push, &self.pending_text).await {
                Ok(reply) => Held::Reply(reply),
                Err(e) => {
                    tracing::warn!(error = %e, "passive reply: answering WeChat's last try with the pending notice");
                    Held::Reply(self.pending_text.clone())
                }
            },
        )
    }
}

/// Requests holding a push, by the push's reply slot key.
#[derive(Default)]
struct Waiters(Mutex<HashMap<String, Arc<Notify>>>);

/// One request's interest in a slot; the entry goes with the last one.
struct Watch<'a> {
    waiters: &'a Waiters,
    slot: String,
    notify: Arc<Notify>,
}

impl Waiters {
    fn watch(&self, slot: &str) -> Watch<'_> {
        let notify = Arc::clone(
            self.0
                .lock()
                .expect("waiters lock")
                .entry(slot.to_owned())
                .or_default(),
        );
        Watch {
            waiters: self,
            slot: slot.to_owned(),
            notify,
        }
    }

    fn wake(&self, slot: &str) {
        if let Some(notify) = self.0.lock().expect("waiters lock").get(slot) {
            notify.notify_waiters();
        }
    }

    fn wake_all(&self) {
        for notify in self.0.lock().expect("waiters lock").values() {
            notify.notify_waiters();
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut map = self.waiters.0.lock().expect("waiters lock");
        // The map's reference and ours: no other request holds this push.
        if Arc::strong_count(&self.notify) <= 2 {
            map.remove(&self.slot);
        }
    }
}

/// Until `shutdown`: subscribes to the workers' announcements and wakes
/// the requests holding each announced push; in `auto` mode also follows
/// the fleet's switch to passive replies. Reconnects when Redis goes away
/// (waking every held request, which then reads its slot once).
pub async fn listen(ingress: Arc<PassiveIngress>, shutdown: CancellationToken) {
    if ingress.mode == ReplyMode::CustomerService {
        return;
    }
    if ingress.mode == ReplyMode::Auto {
        tokio::spawn(follow_fleet_mode(Arc::clone(&ingress), shutdown.clone()));
    }
    let channel = ingress.store.keys().passive_channel();
    let mut reported = false;
    while !shutdown.is_cancelled() {
        match subscribe(&ingress, &channel).await {
            Ok(mut pubsub) => {
                if reported {
                    tracing::info!("passive replies: listening for answers again");
                }
                reported = false;
                ingress.waiters.wake_all();
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(message) => {
                                if let Ok(slot) = message.get_payload::<String>() {
                                    ingress.waiters.wake(&slot);
                                }
                            }
                            None => break,
                        },
                        () = shutdown.cancelled() => return,
                    }
                }
            }
            Err(e) if !reported => {
                tracing::warn!(error = %e, "passive replies: cannot listen for answers; held pushes wait out their time");
                reported = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn subscribe(
    ingress: &PassiveIngress,
    channel: &str,
) -> Result<redis::aio::PubSub, connection::ConnectionError> {
    let mut pubsub = connection::pubsub(ingress.store.target()).await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

async fn follow_fleet_mode(ingress: Arc<PassiveIngress>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        if let Ok(passive) = ingress.replies.fleet_is_passive().await
            && passive != ingress.fleet_passive.swap(passive, Ordering::Relaxed)
        {
            tracing::info!(passive, "WeChat replies: the fleet's reply mode changed");
        }
        tokio::select! {
            () = tokio::time::sleep(MODE_REFRESH) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_woken_slot_wakes_its_holders_and_the_last_one_out_removes_it() {
        let waiters = Waiters::default();
        let first = waiters.watch("slot");
        let second = waiters.watch("slot");
        {
            let mut a = std::pin::pin!(first.notify.notified());
            a.as_mut().enable();
            let mut b = std::pin::pin!(second.notify.notified());
            b.as_mut().enable();
            waiters.wake("other");
            waiters.wake("slot");
            tokio::time::timeout(Duration::from_secs(1), async { tokio::join!(a, b) })
                .await
                .expect("both holders woken");
        }
        drop(first);
        assert!(waiters.0.lock().unwrap().contains_key("slot"));
        drop(second);
        assert!(waiters.0.lock().unwrap().is_empty());
    }
}
