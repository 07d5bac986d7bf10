//! Conversation memory: the last turns each WeChat user had with the AI.
//!
//! A chat that forgets answers every message as if it were the first. So
//! each user's recent turns (a message and its answer) are kept in Redis, in
//! a list at [`Keys::conversation`] of JSON messages `{role, content}`,
//! oldest first: in Redis because the user's next message may reach any
//! worker. The list keeps the last N turns and expires after a silence (both
//! configurable); unsubscribing deletes it (`ferry_common::users`).
//!
//! A turn is remembered once, when its answer is first obtained: the
//! `wechat.reply` handler notes the answer on the job record and remembers
//! the turn in the same step, and a retried attempt that reuses the noted
//! answer remembers nothing. The prompt is capped: the oldest turns are left
//! out until system prompt, history and new message fit.

use std::time::Duration;

use ferry_common::store::{RedisError, Store};
use tracing::warn;

use crate::providers::{ChatMessage, ChatRequest, Role};

/// How much of a conversation is kept and sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySettings {
    /// Turns kept per user; 0 turns memory off.
    pub turns: usize,
    /// A conversation silent this long is forgotten.
    pub ttl: Duration,
    /// Largest prompt sent, in characters: system + history + message.
    pub max_prompt_chars: usize,
}

/// Memory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("conversation memory: {0}")]
    Redis(#[from] RedisError),
}

ferry_common::wraps_redis_error!(MemoryError);

/// Each WeChat user's recent turns, in Redis.
#[derive(Clone)]
pub struct ConversationMemory {
    store: Store,
    settings: MemorySettings,
}

impl ConversationMemory {
    pub fn new(store: Store, settings: MemorySettings) -> Self {
        Self { store, settings }
    }

    pub fn settings(&self) -> &MemorySettings {
        &self.settings
    }

    /// The user's remembered messages, oldest first (at most the last
    /// `turns` turns). An entry that is not a stored message is skipped.
    pub async fn history(&self, openid: &str) -> Result<Vec<ChatMessage>, MemoryError> {
        if self.settings.turns == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.store.conn().await?;
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(self.store.keys().conversation(openid))
            .arg(-self.max_messages())
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        Ok(raw
            .iter()
            .filter_map(|entry| match serde_json::from_str::<ChatMessage>(entry) {
                Ok(m) if m.role != Role::System => Some(m),
                _ => {
                    warn!("skipping a conversation entry that is not a stored turn");
                    None
                }
            })
            .collect())
    }

    /// The prompt for `message`: the system prompt, as much of the user's
    /// history as fits (see [`fit_prompt`]), then the message.
    pub async fn prompt(
        &self,
        openid: &str,
        system: Option<&str>,
        message: &str,
    ) -> Result<ChatRequest, MemoryError> {
        let history = self.history(openid).await?;
        Ok(fit_prompt(
            system,
            history,
            message,
            self.settings.max_prompt_chars,
        ))
    }

    /// Appends one turn, keeps the last `turns` turns and restarts the
    /// expiry: one MULTI/EXEC, so a turn is never half-written nor left
    /// without its expiry.
    pub async fn remember(
        &self,
        openid: &str,
        message: &str,
        answer: &str,
    ) -> Result<(), MemoryError> {
        if self.settings.turns == 0 {
            return Ok(());
        }
        let key = self.store.keys().conversation(openid);
        let entry = |m: ChatMessage| serde_json::to_string(&m).expect("a message serializes");
        let mut conn = self.store.conn().await?;
        redis::pipe()
            .atomic()
            .cmd("RPUSH")
            .arg(&key)
            .arg(entry(ChatMessage::user(message)))
            .arg(entry(ChatMessage::assistant(answer)))
            .ignore()
            .cmd("LTRIM")
            .arg(&key)
            .arg(-self.max_messages())
            .arg(-1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(self.settings.ttl.as_secs().max(1))
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Messages kept: two per turn.
    fn max_messages(&self) -> i64 {
        i64::try_from(self.settings.turns.saturating_mul(2)).unwrap_or(i64::MAX)
    }
}

/// The system prompt, `history` and `message` as one conversation of at
/// most `max_chars` characters: the oldest turns are left out until it fits
/// (a turn at a time, so the history still starts with a user message). The
/// system prompt and the message are always sent, even when they alone are
/// longer: cutting either would change what is asked.
pub fn fit_prompt(
    system: Option<&str>,
    history: Vec<ChatMessage>,
    message: &str,
    max_chars: usize,
) -> ChatRequest {
    let chars = |s: &str| s.chars().count();
    let fixed = system.map_or(0, chars) + chars(message);
    let mut total = fixed + history.iter().map(|m| chars(&m.content)).sum::<usize>();
    let mut first = 0;
    while first < history.len() && (total > max_chars || history[first].role != Role::User) {
        total -= chars(&history[first].content);
        first += 1;
        // Leave out the rest of that turn: its answer, if any.
        while first < history.len() && history[first].role != Role::User {
            total -= chars(&history[first].content);
            first += 1;
        }
    }
    let mut messages = Vec::with_capacity(history.len() - first + 2);
    if let Some(system) = system {
        messages.push(ChatMessage::system(system));
    }
    messages.extend(history.into_iter().skip(first));
    messages.push(ChatMessage::user(message));
    ChatRequest::new(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns(n: usize) -> Vec<ChatMessage> {
        (1..=n)
            .flat_map(|i| {
                [
                    ChatMessage::user(format!("question {i}")),
                    ChatMessage::assistant(format!("answer {i}")),
                ]
            })
            .collect()
    }

    fn contents(req: &ChatRequest) -> Vec<&str> {
        req.messages.iter().map(|m| m.content.as_str()).collect()
    }

    #[test]
    fn a_prompt_that_fits_is_system_then_history_then_the_message() {
        let req = fit_prompt(Some("be brief"), turns(2), "question 3", 10_000);
        assert_eq!(
            contents(&req),
            [
                "be brief",
                "question 1",
                "answer 1",
                "question 2",
                "answer 2",
                "question 3"
            ]
        );
        let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
        use Role::*;
        assert_eq!(roles, [System, User, Assistant, User, Assistant, User]);
    }

    #[test]
    fn the_oldest_turns_are_left_out_until_the_prompt_fits() {
        // "s" (1) + "question 3" (10) + one turn (10 + 8) = 29 characters.
        let req = fit_prompt(Some("s"), turns(2), "question 3", 29);
        assert_eq!(
            contents(&req),
            ["s", "question 2", "answer 2", "question 3"]
        );
        let req = fit_prompt(Some("s"), turns(2), "question 3", 28);
        assert_eq!(contents(&req), ["s", "question 3"]);
    }

    #[test]
    fn system_and_message_are_sent_whole_even_when_they_alone_are_too_long() {
        let req = fit_prompt(Some("a long system prompt"), turns(3), "hi", 5);
        assert_eq!(contents(&req), ["a long system prompt", "hi"]);
    }

    #[test]
    fn characters_are_counted_not_bytes() {
        // Six characters of Chinese are 18 bytes.
        let history = vec![ChatMessage::user("你好"), ChatMessage::assistant("你好！")];
        let req = fit_prompt(None, history, "再见", 7);
        assert_eq!(req.messages.len(), 3);
    }

    #[test]
    fn a_history_never_starts_with_an_answer() {
        let mut history = turns(2);
        history.remove(0);
        let req = fit_prompt(None, history, "question 3", 10_000);
        assert_eq!(contents(&req), ["question 2", "answer 2", "question 3"]);
    }
}
