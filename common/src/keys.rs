//! Every Redis key name Ferry uses, built here and nowhere else.
//!
//! All keys of one queue share the hash tag `{<prefix>:<queue>}` so every
//! multi-key function call touches one slot and runs unchanged on Redis
//! Cluster. Fleet-wide keys that belong to no queue share `{<prefix>}`.

/// The consumer group every worker of a queue reads through.
pub const CONSUMER_GROUP: &str = "workers";

/// The kinds of key Ferry keeps per WeChat user. A feature that starts
/// keeping something about a user adds its kind here (and to [`Self::ALL`]):
/// unsubscribing deletes one key of every kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserKey {
    /// The user's recent conversation turns.
    Conversation,
    /// The user's message limit (GCRA state).
    Limit,
    /// Set while the user has had their one limit notice.
    LimitNotice,
    /// Replies recorded for `ferry simulate` (`ferry dev`).
    DevOutbox,
}

impl UserKey {
    pub const ALL: [UserKey; 4] = [
        UserKey::Conversation,
        UserKey::Limit,
        UserKey::LimitNotice,
        UserKey::DevOutbox,
    ];
}

/// Key builder for one deployment (one `FERRY_PREFIX`).
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The keys of one queue.
    pub fn queue(&self, queue: &str) -> QueueKeys {
        QueueKeys {
            tag: format!("{{{}:{}}}", self.prefix, queue),
        }
    }

    fn global(&self, rest: &str) -> String {
        format!("{{{}}}:{}", self.prefix, rest)
    }

    /// Hash recording the applied schema (version, checksum, when, by whom).
    pub fn schema(&self) -> String {
        self.global("schema")
    }

    /// Lock held by one `ferry migrate` at a time.
    pub fn migrate_lock(&self) -> String {
        self.global("schema:lock")
    }

    /// The fleet's one cached WeChat access token.
    pub fn wechat_token(&self) -> String {
        self.global("wechat:token")
    }

    /// Lock held by the one process refreshing the WeChat token.
    pub fn wechat_token_lock(&self) -> String {
        self.global("wechat:token:lock")
    }

    /// Sorted set of live workers, scored by their last heartbeat (ms).
    pub fn workers(&self) -> String {
        self.global("workers")
    }

    /// One worker's heartbeat record (expires when the worker stops beating).
    pub fn worker(&self, worker_id: &str) -> String {
        self.global(&format!("worker:{worker_id}"))
    }

    /// One of the keys Ferry keeps about the WeChat user `openid`. Every
    /// per-user key is built here, from [`UserKey`], so that
    /// [`Keys::user_keys`] (what unsubscribing deletes) names them all.
    pub fn user(&self, kind: UserKey, openid: &str) -> String {
        match kind {
            UserKey::Conversation => self.global(&format!("conv:{openid}")),
            UserKey::Limit => self.limit(&format!("user:{openid}")),
            UserKey::LimitNotice => self.global(&format!("limit_notice:{openid}")),
            UserKey::DevOutbox => self.global(&format!("dev:outbox:{openid}")),
        }
    }

    /// Every key Ferry keeps about the WeChat user `openid`.
    pub fn user_keys(&self, openid: &str) -> Vec<String> {
        UserKey::ALL
            .iter()
            .map(|kind| self.user(*kind, openid))
            .collect()
    }

    /// List of one WeChat user's last conversation turns (JSON messages,
    /// oldest first), expiring when the user falls silent.
    pub fn conversation(&self, openid: &str) -> String {
        self.user(UserKey::Conversation, openid)
    }

    /// The fleet-wide limiter, leases and breaker of one AI provider, under
    /// the hash tag `{<prefix>:provider:<name>}`.
    pub fn provider(&self, name: &str) -> ProviderKeys {
        ProviderKeys {
            tag: format!("{{{}:provider:{}}}", self.prefix, name),
        }
    }

    /// A fleet-wide GCRA limit on one subject: its theoretical arrival
    /// time. Built through [`UserKey::Limit`] and [`Keys::api_key_limit`].
    fn limit(&self, subject: &str) -> String {
        self.global(&format!("limit:{subject}"))
    }

    /// The submissions-per-minute limit of one API key (the principal's
    /// name).
    pub fn api_key_limit(&self, name: &str) -> String {
        self.limit(&format!("api_key:{name}"))
    }

    /// Set (with expiry) while a WeChat user over the per-user limit has
    /// had their one notice, so further messages in the window get none.
    pub fn limit_notice(&self, openid: &str) -> String {
        self.user(UserKey::LimitNotice, openid)
    }

    /// Stream of alert events (firing, resolved) from every api process,
    /// capped: the dashboard's and `ferry status`'s recent alerts.
    pub fn alerts(&self) -> String {
        self.global("alerts")
    }

    /// One signed-in dashboard session, named by the SHA-256 of its cookie
    /// (expiring), so a Redis dump holds no usable session id.
    pub fn admin_session(&self, id_hash: &str) -> String {
        self.global(&format!("admin_session:{id_hash}"))
    }

    /// Replies the console sink recorded for one user, read by
    /// `ferry simulate` through the dev api (only used by `ferry dev`).
    pub fn dev_outbox(&self, openid: &str) -> String {
        self.user(UserKey::DevOutbox, openid)
    }
}

/// The coordination keys of one provider (see `migrations/ferry_fleet.lua`),
/// in the order its functions take them.
#[derive(Clone, Debug)]
pub struct ProviderKeys {
    tag: String,
}

impl ProviderKeys {
    /// rate, tokens, leases, breaker, window.
    pub fn all(&self) -> [String; 5] {
        ["rate", "tokens", "leases", "breaker", "window"].map(|k| format!("{}:{k}", self.tag))
    }

    pub fn breaker(&self) -> String {
        format!("{}:breaker", self.tag)
    }

    pub fn window(&self) -> String {
        format!("{}:window", self.tag)
    }

    /// Sorted set of the provider's concurrency leases (calls in flight).
    pub fn leases(&self) -> String {
        format!("{}:leases", self.tag)
    }
}

/// The keys of one queue, all under its hash tag.
#[derive(Clone, Debug)]
pub struct QueueKeys {
    tag: String,
}

impl QueueKeys {
    /// The stream of job ids waiting for, or held by, workers.
    pub fn stream(&self) -> String {
        format!("{}:stream", self.tag)
    }

    /// The hash holding one job's record.
    pub fn job(&self, job_id: &str) -> String {
        format!("{}:job:{}", self.tag, job_id)
    }

    /// Idempotency / dedup key: maps a caller's key to the job it created.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{}", self.tag, key)
    }

    /// Sorted set of jobs waiting for a retry, scored by due time (ms).
    pub fn delayed(&self) -> String {
        format!("{}:delayed", self.tag)
    }

    /// Stream of dead-lettered jobs with their reasons.
    pub fn dead(&self) -> String {
        format!("{}:dead", self.tag)
    }

    /// Hash of one batch: status, counts, times, owner, webhook (see
    /// `migrations/ferry_batch.lua`). Under the queue's tag, so the function
    /// that records a job's outcome updates its batch in the same call.
    pub fn batch(&self, batch_id: &str) -> String {
        format!("{}:batch:{}", self.tag, batch_id)
    }

    /// Sorted set of recent batch ids by creation time (ms), for the
    /// dashboard's list; capped, and ids of expired batches are dropped as
    /// they are read.
    pub fn recent_batches(&self) -> String {
        format!("{}:batches", self.tag)
    }

    /// List of a batch's job ids, in line order (for its results).
    pub fn batch_jobs(&self, batch_id: &str) -> String {
        format!("{}:batch:{}:jobs", self.tag, batch_id)
    }

    /// Set of a batch's jobs a worker is running now.
    pub fn batch_running(&self, batch_id: &str) -> String {
        format!("{}:batch:{}:running", self.tag, batch_id)
    }

    /// Counter of one API key's jobs in flight (queued or running) on this
    /// queue, kept by the functions that enqueue and finish them.
    pub fn owner_in_flight(&self, owner: &str) -> String {
        format!("{}:owner:{}:in_flight", self.tag, owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_share_one_hash_tag() {
        let q = Keys::new("ferry").queue("wechat");
        for key in [
            q.stream(),
            q.job("wechat:1"),
            q.idempotency("m"),
            q.delayed(),
            q.dead(),
            q.batch("b"),
            q.batch_jobs("b"),
            q.batch_running("b"),
            q.recent_batches(),
            q.owner_in_flight("o"),
        ] {
            assert!(key.starts_with("{ferry:wechat}:"), "{key}");
        }
    }
}
